"""train_fly with a real RunEngine on a fake TimeServer (ticks only, no network): event
pages, the stamping contract, argument checks and the tagger bin arithmetic."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from bluesky import RunEngine
from ophyd.status import Status
from plans_fakes import FIRST_ID

from trainstamp.plans import StopStamper, train_fly
from trainstamp.tagger import MarkerCountCollector
from trainstamp.timing import TickCollector


class Ticker:
    def __init__(self, ts, period_s: float, skip=()) -> None:
        self.ts, self.period_s, self.skip = ts, period_s, set(skip)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        train_id = FIRST_ID
        while not self.stop.wait(self.period_s):  # a clock source, not a wait for a condition
            train_id += 1
            if train_id not in self.skip:
                self.ts.train_id.sim_put(train_id)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(5)


@pytest.fixture
def live_timeserver():
    from ophyd.sim import make_fake_device

    from trainstamp.timing.device import TimeServer

    ts = make_fake_device(TimeServer)("TS:", name="timeserver", stale_after=10)
    ts.period.sim_put(10_000)
    ts.source.sim_put("local:internal")
    ts.broadcast_uri.sim_put("")  # an IOC without a broadcaster: ticks from the monitor
    return ts


def test_every_tick_in_event_pages(live_timeserver):
    ts = live_timeserver
    docs = []
    RE = RunEngine(context_managers=[])
    RE.subscribe(StopStamper(lambda name, doc: docs.append((name, doc)), ts))
    with Ticker(ts, 0.01):
        (uid,) = RE(train_fly([], 50, timeserver=ts, poll_period_s=0.05, md={"sample": "s"}))
    names = [n for n, _ in docs]
    assert "event" not in names and "event_page" in names
    (descriptor,) = [d for n, d in docs if n == "descriptor"]
    assert descriptor["name"] == "timeserver"
    assert "timeserver_ticks" in descriptor["configuration"]  # the TimeServer's configuration
    pages = [d for n, d in docs if n == "event_page"]
    ids = [i for p in pages for i in p["data"]["train_id"]]
    assert len(ids) == 50 and ids == list(range(ids[0], ids[0] + 50))
    assert {s for p in pages for s in p["data"]["train_id_status"]} == {"OK"}
    start = next(d for n, d in docs if n == "start")
    stop = next(d for n, d in docs if n == "stop")
    assert start["plan_name"] == "train_fly" and start["sample"] == "s"
    assert start["streams"] == ["timeserver"]
    # Ticks are recorded from staging, a train or two before the run opens.
    assert start["train_id_start_status"] == "OK" and abs(start["train_id_start"] - ids[0]) <= 3
    assert stop["exit_status"] == "success" and stop["train_id_end"] >= ids[-1]


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"num_trains": 0}, "num_trains must be an integer >= 1, got 0"),
    ({"num_trains": 5, "poll_period_s": 0}, "poll_period_s must be > 0, got 0"),
])
def test_arguments_are_checked(fake_timeserver, kwargs, message):
    n = kwargs.pop("num_trains")
    with pytest.raises(ValueError, match=message):
        list(train_fly([], n, timeserver=fake_timeserver, **kwargs))


def test_held_ticks_run_until_told(fake_timeserver):
    ts = fake_timeserver
    ticks = TickCollector(ts, 2)
    ticks.hold = True
    ticks.stage()
    try:
        for i in range(1, 5):
            ticks._on_id(value=FIRST_ID + i, timestamp=1.0 + i)
        assert not ticks.complete().done  # held past num_trains
        ticks.finish_at(FIRST_ID + 6)
        ticks._on_id(value=FIRST_ID + 6, timestamp=7.0)
        assert ticks.complete().done and ticks.complete().success
        assert ticks.ids_from(FIRST_ID + 3) == [FIRST_ID + 3, FIRST_ID + 4, FIRST_ID + 6]
        (page,) = ticks.collect_pages()
        assert page["data"]["train_id"] == [FIRST_ID + i for i in (1, 2, 3, 4, 6)]
        # bad updates are never ticks
        for bad in (None, "x", 0, -5, 2.5):
            ticks._on_id(value=bad, timestamp=1.0)
        assert list(ticks.collect_pages()) == []
    finally:
        ticks.unstage()


def test_tagger_bins_take_the_trains_the_timeserver_issued(fake_timeserver):
    ts = fake_timeserver
    ticks = TickCollector(ts, 10)
    ticks._ids = [100, 101, 103, 104, 105]  # the TimeServer skipped 102
    tagger = MarkerCountCollector("PYRO:x@127.0.0.1:1", 1, ts, 4, ticks=ticks)
    assert tagger._bin_ids(100, 4) == [100, 101, 103, 104]
    tagger._taken = 2
    assert tagger._bin_ids(100, 4) == [103, 104]
    with pytest.raises(RuntimeError, match="first marker's train 99 is not among"):
        tagger._bin_ids(99, 4)
    alone = MarkerCountCollector("PYRO:x@127.0.0.1:1", 1, ts, 4)
    assert alone._bin_ids(100, 3) == [100, 101, 102]



class FakeCountBetweenMarkers:
    """What the collector asks of the server's CountBetweenMarkers."""

    def __init__(self, n: int) -> None:
        self.widths = np.zeros(n, np.int64)
        self.data = np.zeros(n, np.int64)
        self.first = self.last = 0
        self.running = True

    def fill(self, k: int, train: int) -> None:
        self.widths[k], self.data[k] = 1000, 1
        self.first, self.last = self.first or train, train

    def _pyroClaimOwnership(self):
        pass

    def getBinWidths(self):
        return self.widths.tolist()

    def getData(self):
        return self.data.tolist()

    def getTrainRange(self):
        return (self.first, self.last) if self.first else None

    def isRunning(self):
        return self.running


def test_a_window_that_ends_with_bins_lost_fails_at_once_saying_so(fake_timeserver):
    ticks = TickCollector(fake_timeserver, 10)
    ticks._ids = [100, 101, 102, 103]
    tagger = MarkerCountCollector("PYRO:x@127.0.0.1:1", 1, fake_timeserver, 3, ticks=ticks)
    m = tagger._measurement = FakeCountBetweenMarkers(3)
    tagger._done = Status(obj=tagger)
    m.fill(0, 100)
    m.fill(1, 102)
    m.running = False  # the window of 3 markers is over: one bin was lost in an overflow
    list(tagger.collect_pages())
    assert tagger.complete().done and not tagger.complete().success
    assert tagger.lost == 1
    assert "ended with 2 bins: 1 lost" in str(tagger.complete().exception())


def test_unstage_fails_what_is_pending_and_releases_the_monitor(fake_timeserver):
    from trainstamp.timing import suspenders

    ticks = TickCollector(fake_timeserver, 5)
    ticks.stage()
    assert suspenders._held(fake_timeserver)
    ticks.kickoff()
    ticks.unstage()  # the plan ended before the ticks were all there
    assert ticks.complete().done and not ticks.complete().success
    assert "timeserver_ticks: plan ended" in str(ticks.complete().exception())
    assert not suspenders._held(fake_timeserver)
    ticks._on_id(value=FIRST_ID + 1, timestamp=1.0)  # no longer recorded
    assert list(ticks.collect_pages()) == []
    tagger = MarkerCountCollector("PYRO:x@127.0.0.1:1", 1, fake_timeserver, 3)
    tagger._measurement = FakeCountBetweenMarkers(3)
    tagger._done = Status(obj=tagger)
    tagger.unstage()  # releases its proxies (a fake one here) and fails its status
    assert tagger._measurement is None and not tagger.complete().success
