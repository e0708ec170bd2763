"""A fly scan holds the TimeServer suspenders off; on release they judge the TimeServer
as it is then."""

from __future__ import annotations

from bluesky import RunEngine
from ophyd import Signal

from trainstamp.timing.suspenders import hold_off, install_timeserver_suspenders, release


class FakeTimeServer:
    """The two signals the suspenders watch, as soft signals."""

    def __init__(self) -> None:
        self.name, self.prefix = "ts", "TS:"
        self.state = Signal(name="ts_state", value="ON")
        self.ticking = Signal(name="ts_ticking", value=1)


def test_an_outage_while_held_does_not_trip_and_trips_on_release():
    ts = FakeTimeServer()
    RE = RunEngine(context_managers=[])
    suspenders = install_timeserver_suspenders(RE, ts, sleep=0)
    hold_off(ts)
    ts.ticking.put(0)
    ts.state.put("UNKNOWN")
    assert not any(s.tripped for s in suspenders)
    release(ts)
    assert all(s.tripped for s in suspenders)


def test_release_after_recovery_leaves_them_untripped_and_holds_nest():
    ts = FakeTimeServer()
    RE = RunEngine(context_managers=[])
    suspenders = install_timeserver_suspenders(RE, ts, sleep=0)
    hold_off(ts)
    hold_off(ts)
    ts.ticking.put(0)
    release(ts)
    assert not any(s.tripped for s in suspenders)  # one hold is still on
    ts.ticking.put(1)
    release(ts)
    assert not any(s.tripped for s in suspenders)
    ts.ticking.put(0)  # no hold any more: trips as before
    assert suspenders[1].tripped
