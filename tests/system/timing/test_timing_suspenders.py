"""A train-ID outage suspends a run instead of stamping it, and the run resumes.

A real TimeServer IOC follows a facility train-ID server (``tcp://``). The session's
suspenders (:mod:`trainstamp.timing.suspenders`, as the profile installs them) watch the
ophyd device. Mid-plan the train-ID server is killed and restarted: the run suspends,
resumes when ticks come back, finishes, and no event is stamped OK while the
TimeServer was not ON.
"""

from __future__ import annotations

import threading
import time

import pytest
from bluesky import RunEngine
from bluesky.plans import count
from timing_servers import Ticker

from trainstamp.plans import StopStamper, TrainStamp, stamp_wrapper, train_count
from trainstamp.testing import wait_until
from trainstamp.timing import PV
from trainstamp.timing.device import TimeServer
from trainstamp.timing.suspenders import install_timeserver_suspenders

pytestmark = pytest.mark.system

PERIOD_MS = 50
EVENTS = 40


@pytest.fixture
def ticker():
    t = Ticker(start=70_000, period_s=PERIOD_MS / 1000)
    yield t
    t.close()


@pytest.fixture
def device(timeserver, ticker):
    ts_ioc = timeserver("--source", f"tcp://127.0.0.1:{ticker.port}", "--period", str(PERIOD_MS))
    dev = TimeServer(ts_ioc.prefix, name="timeserver")
    dev.wait_for_connection(timeout=10)
    wait_until(lambda: dev.ticking.get() == 1, timeout=10, message="the device ticking")
    yield ts_ioc, dev
    dev.destroy()


class Timeline:
    """When the device heard the TimeServer leave ON and come back (local times)."""

    def __init__(self, dev: TimeServer) -> None:
        self.changes: list[tuple[float, bool]] = [(time.time(), dev.healthy)]
        self._dev = dev
        dev.state.subscribe(self._changed, run=False)
        dev.train_id.subscribe(self._changed, run=False)

    def _changed(self, **kwargs) -> None:
        healthy = self._dev.healthy
        if healthy != self.changes[-1][1]:
            self.changes.append((time.time(), healthy))

    def healthy_at(self, t: float) -> bool:
        state = self.changes[0][1]
        for when, healthy in self.changes:
            if when > t:
                break
            state = healthy
        return state


@pytest.mark.parametrize("plan", ["count", "train_count"])
def test_outage_mid_run_suspends_and_resumes_and_nothing_is_stamped_ok_meanwhile(
        device, ticker, plan):
    ts_ioc, dev = device
    RE = RunEngine(context_managers=[])
    suspenders = install_timeserver_suspenders(RE, dev, sleep=0.5)
    states: list[str] = []
    RE.state_hook = lambda new, old: states.append(new)
    docs: list[tuple[str, dict]] = []
    RE.subscribe(StopStamper(lambda name, doc: docs.append((name, doc)), dev))
    timeline = Timeline(dev)
    outage: dict[str, float] = {}

    def events() -> int:
        return sum(1 for name, _ in docs if name == "event")

    def break_the_source() -> None:
        wait_until(lambda: events() >= 10, timeout=30, message="10 events before the outage")
        outage["kill"] = time.time()
        ticker.kill()  # the facility server crashes mid-run
        wait_until(lambda: any(s.tripped for s in suspenders), timeout=10,
                   message="a suspender to trip")
        outage["tripped"] = time.time()
        # Down until the IOC has failed to reconnect once, then the server is back.
        ts_ioc.wait(PV.STATUS, lambda s: "Connection refused" in s, timeout=15)
        outage["restart"] = time.time()
        ticker.restart()

    helper = threading.Thread(target=break_the_source, daemon=True)
    helper.start()
    if plan == "count":  # a plain bluesky plan, stamped as the profile does it
        (uid,) = RE(stamp_wrapper(count([dev], EVENTS), TrainStamp(dev)))
    else:  # one checkpoint per train: the run resumes from the train it was in
        (uid,) = RE(train_count([dev], EVENTS, timeserver=dev))
    helper.join(30)
    assert set(outage) == {"kill", "tripped", "restart"}, outage

    stop = next(d for n, d in docs if n == "stop")
    assert stop["exit_status"] == "success"
    event_docs = [d for n, d in docs if n == "event"]
    assert len(event_docs) == EVENTS
    # The run was suspended (and only came back after the server did).
    assert "suspending" in states, states
    resumed = [d["time"] for d in event_docs if d["time"] > outage["kill"]]
    assert resumed and min(resumed) > outage["restart"], (outage, resumed[:3])
    # Nothing was stamped OK while the device knew the TimeServer was not ON.
    assert timeline.changes[1:], "the device never saw the outage"
    for event in event_docs:
        status = event["data"]["train_id_status"]
        read_at = event["timestamps"]["train_id"]
        assert status in ("OK", "STALE"), event
        if status == "OK":
            assert timeline.healthy_at(read_at), (read_at, timeline.changes)
    ok_ids = [e["data"]["train_id"] for e in event_docs if e["data"]["train_id_status"] == "OK"]
    assert ok_ids == sorted(ok_ids) and len(set(ok_ids)) == len(ok_ids)
    assert ts_ioc.get(PV.DISCONTINUITIES) == 1  # the trains missed during the outage
