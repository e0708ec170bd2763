"""train_count: message sequence (simulator) and a real RunEngine on a fake TimeServer."""

from __future__ import annotations

import threading

import pytest
from bluesky import RunEngine
from bluesky.simulators import RunEngineSimulator, assert_message_and_return_remaining
from ophyd.sim import det1, det2
from plans_fakes import FIRST_ID

from trainstamp.plans import StopStamper, TrainStamp, train_count


def test_message_sequence(fake_timeserver):
    ts = fake_timeserver
    stamp = TrainStamp(ts)
    sim = RunEngineSimulator()
    sim.add_read_handler_for_multiple(stamp, train_id=FIRST_ID, train_id_status="OK")
    msgs = sim.simulate_plan(train_count([det1], 2, timeserver=ts, stamp=stamp,
                                         md={"sample": "x"}))
    msgs = assert_message_and_return_remaining(msgs, lambda m: m.command == "stage")
    msgs = assert_message_and_return_remaining(
        msgs, lambda m: m.command == "trigger" and m.obj is ts)
    msgs = assert_message_and_return_remaining(
        msgs, lambda m: m.command == "open_run" and m.kwargs["plan_name"] == "train_count"
        and m.kwargs["num_trains"] == 2 and m.kwargs["sample"] == "x"
        and m.kwargs["train_id_start"] == FIRST_ID
        and m.kwargs["hints"]["dimensions"] == [(["train_id"], "primary")])
    for _ in range(2):
        msgs = assert_message_and_return_remaining(
            msgs, lambda m: m.command == "trigger" and m.obj is ts)
        msgs = assert_message_and_return_remaining(
            msgs, lambda m: m.command == "trigger" and m.obj is det1)
        msgs = assert_message_and_return_remaining(msgs, lambda m: m.command == "create")
        msgs = assert_message_and_return_remaining(
            msgs, lambda m: m.command == "read" and m.obj is stamp)
        msgs = assert_message_and_return_remaining(msgs, lambda m: m.command == "save")
    msgs = assert_message_and_return_remaining(msgs, lambda m: m.command == "close_run")
    msgs = assert_message_and_return_remaining(
        msgs, lambda m: m.command == "stop" and m.obj is ts)
    assert_message_and_return_remaining(msgs, lambda m: m.command == "unstage")


def test_failure_while_waiting_for_a_train_still_cleans_up(fake_timeserver, monkeypatch):
    """A TimeServer that never ticks: the plan fails, detectors are unstaged, no waiters."""
    from bluesky.utils import FailedStatus
    from ophyd import Staged

    import trainstamp.timing.device as device

    monkeypatch.setattr(device, "MIN_TRIGGER_TIMEOUT", 0.2)
    ts = fake_timeserver
    ts.period.sim_put(10_000)
    docs = []
    RE = RunEngine(context_managers=[])
    with pytest.raises(FailedStatus):
        RE(train_count([det1], 2, timeserver=ts), lambda name, doc: docs.append(name))
    assert docs == []  # it failed before opening a run: nothing half-recorded
    assert det1._staged is Staged.no
    assert ts._waiters == []


def test_timeserver_among_detectors_is_read_not_triggered_twice(fake_timeserver):
    ts = fake_timeserver
    msgs = RunEngineSimulator().simulate_plan(train_count([ts, det1], 3, timeserver=ts))
    assert sum(m.command == "trigger" and m.obj is ts for m in msgs) == 1 + 3
    assert sum(m.command == "read" and m.obj is ts for m in msgs) == 3


@pytest.mark.parametrize("bad", [0, -1, 2.5, True])
def test_num_trains_is_checked(fake_timeserver, bad):
    with pytest.raises(ValueError, match=f"num_trains must be an integer >= 1, got {bad!r}"):
        list(train_count([det1], bad, timeserver=fake_timeserver))


class Ticker:
    """Drive the fake TimeServer's ID monitor from a thread, as the IOC would."""

    def __init__(self, ts, period_s: float) -> None:
        self.ts, self.period_s = ts, period_s
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        train_id = FIRST_ID
        while not self.stop.wait(self.period_s):  # a clock source, not a wait for a condition
            train_id += 1
            self.ts.train_id.sim_put(train_id)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(5)


def test_real_runengine_documents_keep_the_contract(clock):
    from ophyd.sim import make_fake_device

    from trainstamp.timing.device import TimeServer

    # Real wall clock; a loaded machine may delay a read by several periods, which would
    # rightly be flagged STALE, so this structural test allows for 10 periods.
    ts = make_fake_device(TimeServer)("TS:", name="timeserver", stale_after=10)
    ts.period.sim_put(20_000)
    ts.source.sim_put("local:internal")
    docs = []
    RE = RunEngine(context_managers=[])
    RE.subscribe(StopStamper(lambda name, doc: docs.append((name, doc)), ts))
    with Ticker(ts, period_s=0.02):
        (uid,) = RE(train_count([det1, det2], 10, timeserver=ts))
    start = next(d for n, d in docs if n == "start")
    stop = next(d for n, d in docs if n == "stop")
    descriptors = [d for n, d in docs if n == "descriptor"]
    events = [d for n, d in docs if n == "event"]
    assert len(events) == 10 and len(descriptors) == 1
    ids = [e["data"]["train_id"] for e in events]
    assert all(b > a for a, b in zip(ids, ids[1:], strict=False)), ids
    assert all(e["data"]["train_id_status"] == "OK" for e in events)
    assert FIRST_ID < start["train_id_start"] <= ids[0]
    assert start["train_id_start_status"] == "OK"
    assert stop["train_id_end"] >= ids[-1] and stop["train_id_end_status"] == "OK"
    config = descriptors[0]["configuration"]["timeserver_stamp"]["data"]
    assert config["timeserver_source"] == "local:internal"
    assert descriptors[0]["data_keys"]["train_id"]["dtype"] == "integer"
