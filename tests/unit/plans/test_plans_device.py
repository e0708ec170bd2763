"""The ophyd TimeServer device without an IOC: protocols, PV names, tick and interpolation."""

from __future__ import annotations

import pytest
from bluesky.protocols import Configurable, Readable, Triggerable
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from plans_fakes import FIRST_ID, PERIOD_US, tick

from trainstamp.timing import MAX_TRAIN_ID, PV, StampStatus
from trainstamp.timing._ioc import TimeServerIOC
from trainstamp.timing.device import TimeServer

P_NS = PERIOD_US * 1000


def test_device_satisfies_bluesky_protocols(fake_timeserver):
    assert isinstance(fake_timeserver, Readable)
    assert isinstance(fake_timeserver, Configurable)
    assert isinstance(fake_timeserver, Triggerable)


def test_device_pvs_are_the_iocs_pvs():
    """Device and IOC take their names from the same constants; compare the results."""
    ioc = TimeServerIOC(prefix="TS:", broadcast_port=0)
    ioc_suffixes = {name[len("TS:"):] for name in ioc.pvdb}
    ts = TimeServer("TS:", name="ts")
    device_suffixes = set()
    for walk in ts.walk_signals():
        for attr in ("pvname", "setpoint_pvname"):
            pv = getattr(walk.item, attr, None)
            if pv:
                device_suffixes.add(pv[len("TS:"):])
    assert device_suffixes == ioc_suffixes == set(PV.ALL)
    ts.destroy()


def test_read_hints_and_configuration(fake_timeserver):
    ts = fake_timeserver
    assert ts.hints == {"fields": ["timeserver_train_id"]}
    assert set(ts.read()) == {"timeserver_train_id", "timeserver_period", "timeserver_state"}
    assert set(ts.read_configuration()) == {"timeserver_source", "timeserver_period_set"}


def test_interpolation_from_the_monitored_tick(fake_timeserver, clock):
    ts = fake_timeserver
    assert ts.train_id_at().status is StampStatus.INVALID
    assert ts.train_id_at().train_id is None
    tick(ts, FIRST_ID, clock.t_ns)
    assert ts.last_tick.train_id == FIRST_ID and ts.last_tick.period_us == PERIOD_US
    assert ts.train_id_at(t_ns=clock.t_ns + P_NS // 2).train_id == FIRST_ID
    assert ts.train_id_at(t_ns=clock.t_ns + 2 * P_NS + 1).train_id == FIRST_ID + 2
    assert ts.train_id_at(t_ns=clock.t_ns - 1).train_id == FIRST_ID - 1
    assert ts.train_id_at(t=clock.t_ns / 1e9 + 0.15).train_id == FIRST_ID + 1
    stale = ts.train_id_at(t_ns=clock.t_ns + 3 * P_NS)
    assert (stale.train_id, stale.status) == (FIRST_ID + 3, StampStatus.STALE)


def test_zero_id_is_not_a_tick(fake_timeserver, clock):
    """An IOC that has not ticked yet serves ID 0: never taken as a train ID."""
    tick(fake_timeserver, 0, clock.t_ns)
    assert fake_timeserver.last_tick is None
    assert fake_timeserver.train_id_at().status is StampStatus.INVALID


def test_trigger_completes_at_the_next_tick(fake_timeserver, clock):
    ts = fake_timeserver
    tick(ts, FIRST_ID, clock.t_ns)
    status = ts.trigger()
    tick(ts, FIRST_ID, clock.t_ns)  # the same tick again is not a new train
    assert not status.done
    tick(ts, FIRST_ID + 1, clock.t_ns + P_NS)
    status.wait(5)
    assert status.success


def test_trigger_skips_a_train_whose_monitor_is_late(fake_timeserver, clock):
    """If the clock says train N+1 has begun but its tick has not arrived, wait for N+2."""
    ts = fake_timeserver
    tick(ts, FIRST_ID, clock.t_ns)
    clock.t_ns += P_NS + 1_000_000
    status = ts.trigger()
    tick(ts, FIRST_ID + 1, clock.t_ns - 1_000_000)
    assert not status.done
    tick(ts, FIRST_ID + 2, clock.t_ns - 1_000_000 + P_NS)
    status.wait(5)
    assert status.success


def test_trigger_times_out_without_ticks(fake_timeserver, monkeypatch):
    import trainstamp.timing.device as device

    monkeypatch.setattr(device, "MIN_TRIGGER_TIMEOUT", 0.2)
    ts = fake_timeserver
    ts.period.sim_put(10_000)  # 10 ms: timeout max(0.2 s, 5 periods) = 0.2 s
    status = ts.trigger()
    with pytest.raises(Exception, match="timeout|Timeout"):
        status.wait(5)


def test_stop_fails_pending_triggers(fake_timeserver):
    status = fake_timeserver.trigger()
    fake_timeserver.stop()
    with pytest.raises(RuntimeError, match="stopped while waiting"):
        status.wait(5)


def test_stale_after_is_checked():
    with pytest.raises(ValueError, match="stale_after 0"):
        TimeServer("TS:", name="ts", stale_after=0)


@given(value=st.one_of(st.floats(allow_nan=True, allow_infinity=True),
                       st.integers(min_value=-(2**70), max_value=2**70),
                       st.text(max_size=5), st.none()),
       timestamp=st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.none()))
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_bad_monitor_updates_never_become_ticks(fake_timeserver, value, timestamp):
    """Whatever a monitor delivers, the device never crashes and never keeps a bad tick."""
    ts = fake_timeserver
    ts._tick = None
    ts._on_id(value=value, timestamp=timestamp)
    tick = ts.last_tick
    if tick is not None:
        assert 0 < tick.train_id <= MAX_TRAIN_ID and tick.train_id == float(value)
        assert tick.sec > 0
    assert ts.train_id_at().train_id != 0


@given(value=st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.none(),
                       st.integers(min_value=-(2**40), max_value=2**40)))
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_bad_period_updates_are_ignored(fake_timeserver, value):
    ts = fake_timeserver
    ts._on_period(value=value)
    assert ts._period_us >= 0
