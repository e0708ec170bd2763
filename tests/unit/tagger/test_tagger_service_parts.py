"""Pure parts of the tagger service: replay generation, RPC value conversion, PV names."""

from __future__ import annotations

import numpy as np
import pytest

from trainstamp.tagger._adapters import encode_array, to_plain
from trainstamp.tagger._fastpath import decode_array
from trainstamp.tagger._settings import TaggerSettings
from trainstamp.tagger._sources import ReplayGenerator
from trainstamp.tagger.engine import TagType


def test_replay_repeats_the_pattern_sorted_with_markers():
    s = TaggerSettings()
    s.set_source(1, {"kind": "poisson", "rate": 1e6})
    g = ReplayGenerator(s, 10**11, seed=1)
    blocks = [g.generate(k * 3 * 10**10, np.array([k * 3 * 10**10 - 7]) if k % 3 == 0 else None)
              for k in range(1, 20)]
    tags = np.concatenate(blocks)
    assert np.all(np.diff(tags["time"]) >= 0)
    assert np.count_nonzero(tags["channel"] == 9) == 6
    first = tags["time"][(tags["channel"] == 1) & (tags["time"] < 10**11)]
    second = tags["time"][(tags["channel"] == 1) & (tags["time"] >= 10**11)
                          & (tags["time"] < 2 * 10**11)]
    np.testing.assert_array_equal(second - 10**11, first)
    with pytest.raises(ValueError, match="must be > 0"):
        ReplayGenerator(s, 0)


def test_to_plain_and_fast_path_envelope():
    assert to_plain(np.arange(3, dtype=np.int32)) == [0, 1, 2]
    assert to_plain((np.int64(5), {"a": np.float32(1.5)})) == [5, {"a": 1.5}]
    assert to_plain(TagType.MissedEvents) == 4 and type(to_plain(TagType.MissedEvents)) is int
    arr = np.arange(12, dtype=np.int32).reshape(3, 4)
    np.testing.assert_array_equal(decode_array(encode_array(arr)), arr)
    assert decode_array(encode_array(7)) == 7
    import base64

    env = encode_array(arr)
    env["data"] = {"data": base64.b64encode(env["data"]).decode(), "encoding": "base64"}
    np.testing.assert_array_equal(decode_array(env), arr)  # serpent's form of bytes


def _device_pvs(device_cls, prefix: str) -> set[str]:
    from ophyd import Device, EpicsSignal, EpicsSignalRO

    names = set()
    for cpt in device_cls._sig_attrs.values():
        if isinstance(cpt.cls, type) and issubclass(cpt.cls, Device):
            names |= _device_pvs(cpt.cls, prefix + cpt.suffix)
        elif issubclass(cpt.cls, EpicsSignal | EpicsSignalRO):
            names.add(prefix + cpt.suffix)
    return names


def test_device_pvs_exist_in_the_ioc():
    from trainstamp.tagger._ioc import make_ioc_class
    from trainstamp.tagger.device import TimeTagger

    ioc = make_ioc_class(8)(prefix="TT:", service=None, instrument=None)
    missing = _device_pvs(TimeTagger, "TT:") - set(ioc.pvdb)
    assert not missing


@pytest.mark.parametrize(("n", "d"), [(0, float("inf")), (0, float("nan")), (float("inf"), 0),
                                      (-1, 1.0), (0, -1.0)])
def test_device_deadline_is_always_finite(n, d):
    """DURATION inf once gave trigger() an infinite deadline (a count ran > 75 s)."""
    from trainstamp.tagger.device import TimeTagger

    tt = TimeTagger("TTNOSUCH:", name="tt")
    with pytest.raises(ValueError, match="bounded deadline"):
        tt.corr1.trigger_timeout_s(n, d)
    assert tt.corr1.trigger_timeout_s(2, 0.0) < 100


@pytest.mark.parametrize(("check", "value"), [
    ("check_duration", float("nan")), ("check_duration", float("inf")),
    ("check_duration", -1.0), ("check_duration", 1e300), ("check_duration", "1"),
    ("check_n_trains", float("inf")), ("check_n_trains", -1), ("check_n_trains", 1.5),
    ("check_n_trains", 1e300), ("check_switch", 2), ("check_switch", float("nan")),
])
def test_slot_checks_refuse_nonsense(check, value):
    from trainstamp.tagger import _checks

    with pytest.raises(ValueError):
        getattr(_checks, check)(value)
