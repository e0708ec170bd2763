"""The pure parts of the put-refusal signals: how a refusal is worded."""

from __future__ import annotations

import caproto as ca
from ophyd.sim import FakeEpicsSignal, make_fake_device

from trainstamp.signals import EpicsSignal, PutRefused, _error_text, _plain, _status_text
from trainstamp.timing.device import TimeServer


def test_the_iocs_message_without_caprotos_wrapping():
    request = ca.WriteNotifyRequest(data=(5,), data_type=ca.ChannelType.LONG, data_count=1,
                                    sid=3, ioid=42)
    response = ca.ErrorResponse(request, cid=1, status=ca.CAStatus.ECA_PUTFAIL,
                                error_message="Python exception: ValueError unknown trigger mode 5")
    assert _error_text(response) == "unknown trigger mode 5"
    assert response.original_request.parameter2 == 42  # the ioid the shim routes by
    bare = ca.ErrorResponse(request, cid=1, status=ca.CAStatus.ECA_PUTFAIL, error_message="")
    assert _error_text(bare) == "ECA_PUTFAIL: Channel write request failed"


def test_status_codes_and_values_read_as_the_user_wrote_them():
    assert _status_text(160) == "ECA_PUTFAIL: Channel write request failed"
    assert _status_text(12345) == "CA status 12345"
    assert _plain((1.5,)) == 1.5 and _plain(b"abc\0") == "abc" and _plain([1, 2]) == [1, 2]
    exc = PutRefused("TS:PERIOD_SET", -1.0, "PERIOD_SET refused: must be > 0")
    assert str(exc) == "TS:PERIOD_SET = -1.0 refused by the IOC: PERIOD_SET refused: must be > 0"


def test_fake_devices_get_fake_signals():
    fake = make_fake_device(TimeServer)("TS:", name="ts")
    assert isinstance(fake.period_set, FakeEpicsSignal)
    assert issubclass(TimeServer.period_set.cls, EpicsSignal)
