"""The ophyd TimeServer never stamps OK what its IOC does not vouch for (fake signals)."""

import time

import pytest
from ophyd.sim import make_fake_device

from trainstamp.testing import wait_until
from trainstamp.timing import StampStatus
from trainstamp.timing.device import TimeServer

PERIOD_US = 100_000
T0_NS = 1_800_000_000 * 10**9
P_NS = PERIOD_US * 1000


class Clock:
    def __init__(self, t_ns: int = T0_NS) -> None:
        self.t_ns = t_ns

    def __call__(self) -> int:
        return self.t_ns


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def ts(clock):
    device = make_fake_device(TimeServer)("TS:", name="timeserver", clock_ns=clock)
    device.period.sim_put(PERIOD_US)
    device.state.sim_put("ON")
    yield device
    device.destroy()


def update(ts, train_id, t_ns, severity=0):
    """An ID monitor update, as the CA client delivers it."""
    ts._on_id(value=float(train_id), timestamp=t_ns / 1e9, severity=severity)


def test_an_update_in_invalid_alarm_is_no_tick(ts, clock):
    update(ts, 0, T0_NS, severity=3)  # the IOC before its first tick
    assert ts.last_tick is None and ts.train_id_at().status is StampStatus.INVALID
    update(ts, 1000, T0_NS, severity=3)  # a frozen old ID while UNKNOWN
    assert ts.last_tick is None
    update(ts, 1001, T0_NS)
    assert ts.train_id_at().status is StampStatus.OK and ts.ticking.get() == 1


def test_id_going_into_alarm_makes_every_stamp_stale(ts, clock):
    update(ts, 1000, T0_NS)
    clock.t_ns = T0_NS + P_NS // 2
    assert ts.train_id_at().status is StampStatus.OK
    update(ts, 1000, T0_NS, severity=3)  # the IOC lost its source: same value, INVALID
    stamp = ts.train_id_at()
    assert (stamp.train_id, stamp.status) == (1000, StampStatus.STALE)
    assert ts.ticking.get() == 0 and "in alarm" in ts.health
    assert ts.train_id_at(t_ns=T0_NS + 1).status is StampStatus.STALE  # any time asked for
    clock.t_ns = T0_NS + 7 * P_NS + 1
    update(ts, 1007, T0_NS + 7 * P_NS)  # ON again, a fresh tick
    assert ts.train_id_at().status is StampStatus.OK and ts.ticking.get() == 1


def test_state_not_on_makes_every_stamp_stale(ts, clock):
    update(ts, 1000, T0_NS)
    ts.state.sim_put("UNKNOWN")
    assert ts.train_id_at().status is StampStatus.STALE
    assert ts.health == "TimeServer STATE is UNKNOWN" and ts.ticking.get() == 0
    ts.state.sim_put("INIT")
    assert ts.train_id_at().status is StampStatus.STALE
    ts.state.sim_put("ON")
    assert ts.train_id_at().status is StampStatus.OK and ts.ticking.get() == 1


def test_inexact_id_in_major_alarm_is_stale(ts, clock):
    update(ts, 2**53 + 2, T0_NS, severity=2)
    assert ts.last_tick is not None  # a tick, but the IOC says it is inexact over CA
    assert ts.train_id_at().status is StampStatus.STALE


def test_a_disconnected_id_makes_every_stamp_stale(ts, clock):
    update(ts, 1000, T0_NS)
    ts._on_id_meta(connected=False)
    assert ts.train_id_at().status is StampStatus.STALE and "disconnected" in ts.health
    ts._on_id_meta(connected=True)
    assert ts.train_id_at().status is StampStatus.OK


def test_ticking_goes_low_when_ticks_stop():
    ts = make_fake_device(TimeServer)("TS:", name="timeserver", stale_after=3)
    try:
        ts.period.sim_put(10_000)  # 10 ms
        ts.state.sim_put("ON")
        now = time.time_ns()
        update(ts, 5000, now)
        assert ts.ticking.get() == 1
        t_low = wait_until(lambda: ts.ticking.get() == 0 and time.time_ns(), timeout=5,
                           message="ticking to go low after 3 missed periods")
        assert t_low - now >= 3 * 10_000_000  # never before the missed periods
        update(ts, 5009, time.time_ns())
        assert ts.ticking.get() == 1
    finally:
        ts.destroy()


def test_a_backwards_jump_completes_a_trigger(ts, clock):
    update(ts, 1000, T0_NS)
    status = ts.trigger()
    update(ts, 1, T0_NS + P_NS)  # the facility server restarted from the beginning
    status.wait(1)
    assert status.success and ts.last_tick.train_id == 1


def test_state_reads_on_under_both_control_layers():
    """caproto's monitors give the enum name; pyepics' give the index, or its digits.
    Read as the raw "1", every stamp of a healthy IOC was STALE under pyepics."""
    import numpy as np

    from trainstamp.timing.device import state_name

    for value in ("ON", 1, "1", np.int16(1)):
        assert state_name(value) == "ON", value
    assert state_name(2) == "UNKNOWN" and state_name("0") == "INIT"
    assert state_name(None) is None and state_name(7) == "state 7"
    assert state_name(True) == "True"  # not an index
