"""The stamping contract: TrainStamp readings, stamp_wrapper, StopStamper (no network)."""

from __future__ import annotations

import bluesky.plan_stubs as bps
import pytest
from bluesky.plans import count
from bluesky.protocols import Readable
from bluesky.simulators import RunEngineSimulator, assert_message_and_return_remaining
from ophyd.sim import det1
from plans_fakes import FIRST_ID, PERIOD_US, tick

from trainstamp.plans import NO_TRAIN_ID, StopStamper, TrainStamp, stamp_wrapper

P_NS = PERIOD_US * 1000


def test_stamp_is_readable_and_carries_timeserver_configuration(fake_timeserver):
    stamp = TrainStamp(fake_timeserver)
    assert isinstance(stamp, Readable)
    assert stamp.name == "timeserver_stamp"
    assert set(stamp.describe()) == {"train_id", "train_id_status"}
    assert stamp.describe()["train_id"]["dtype"] == "integer"
    assert stamp.read_configuration() == dict(fake_timeserver.read_configuration())
    assert stamp.describe_configuration() == dict(fake_timeserver.describe_configuration())


@pytest.mark.parametrize(
    ("offset_ns", "expected_id", "status"),
    [
        (P_NS // 10, FIRST_ID, "OK"),
        (P_NS + 1, FIRST_ID + 1, "OK"),
        (-1, FIRST_ID - 1, "OK"),
        (3 * P_NS, FIRST_ID + 3, "STALE"),
        (50 * P_NS, FIRST_ID + 50, "STALE"),
    ],
)
def test_stamp_reading_after_a_tick(fake_timeserver, clock, offset_ns, expected_id, status):
    t0 = clock.t_ns
    tick(fake_timeserver, FIRST_ID, t0)
    clock.t_ns = t0 + offset_ns
    reading = TrainStamp(fake_timeserver, clock_ns=clock).read()
    assert reading["train_id"]["value"] == expected_id
    assert reading["train_id_status"]["value"] == status
    assert reading["train_id"]["timestamp"] == pytest.approx(clock.t_ns / 1e9)


def test_stamp_before_the_first_tick_is_invalid_and_never_zero(fake_timeserver, clock):
    reading = TrainStamp(fake_timeserver, clock_ns=clock).read()
    assert reading["train_id"]["value"] == NO_TRAIN_ID != 0
    assert reading["train_id_status"]["value"] == "INVALID"


def _stamped_count(ts, stamp, n=2):
    return stamp_wrapper(count([det1], n), stamp)


def test_wrapper_adds_start_id_and_stamps_every_event(fake_timeserver):
    stamp = TrainStamp(fake_timeserver)
    sim = RunEngineSimulator()
    sim.add_read_handler_for_multiple(stamp, train_id=FIRST_ID, train_id_status="OK")
    msgs = sim.simulate_plan(_stamped_count(fake_timeserver, stamp))
    msgs = assert_message_and_return_remaining(
        msgs, lambda m: m.command == "read" and m.obj is stamp)
    msgs = assert_message_and_return_remaining(
        msgs, lambda m: m.command == "open_run" and m.kwargs["train_id_start"] == FIRST_ID
        and m.kwargs["train_id_start_status"] == "OK")
    for _ in range(2):
        msgs = assert_message_and_return_remaining(msgs, lambda m: m.command == "create")
        msgs = assert_message_and_return_remaining(
            msgs, lambda m: m.command == "read" and m.obj is det1)
        msgs = assert_message_and_return_remaining(
            msgs, lambda m: m.command == "read" and m.obj is stamp)
        msgs = assert_message_and_return_remaining(msgs, lambda m: m.command == "save")
    assert [m.command for m in msgs][-2:] == ["close_run", "unstage"]


def test_wrapper_leaves_events_that_already_carry_train_id(fake_timeserver):
    """A device that knows its exact train (e.g. from packet headers) keeps its own ID."""
    stamp = TrainStamp(fake_timeserver)
    sim = RunEngineSimulator()
    sim.add_read_handler_for_multiple(stamp, train_id=FIRST_ID, train_id_status="OK")
    sim.add_read_handler_for_multiple(det1, det1=1.0, train_id=FIRST_ID + 7,
                                      train_id_status="EXACT")
    msgs = sim.simulate_plan(_stamped_count(fake_timeserver, stamp, n=1))
    stamp_reads = [m for m in msgs if m.command == "read" and m.obj is stamp]
    assert len(stamp_reads) == 1  # only the one for train_id_start


def test_wrapper_keeps_a_start_id_the_plan_set(fake_timeserver):
    stamp = TrainStamp(fake_timeserver)
    plan = stamp_wrapper(count([det1], 1, md={"train_id_start": 42}), stamp)
    msgs = RunEngineSimulator().simulate_plan(plan)
    (open_run,) = [m for m in msgs if m.command == "open_run"]
    assert open_run.kwargs["train_id_start"] == 42


def test_wrapper_without_a_reading_asks_the_stamp(fake_timeserver, clock):
    """Under a simulator read returns nothing: the start ID comes from the stamp itself."""
    tick(fake_timeserver, FIRST_ID, clock.t_ns)
    stamp = TrainStamp(fake_timeserver, clock_ns=clock)
    msgs = RunEngineSimulator().simulate_plan(stamp_wrapper(count([det1], 1), stamp))
    (open_run,) = [m for m in msgs if m.command == "open_run"]
    assert open_run.kwargs["train_id_start"] == FIRST_ID


def test_wrapper_does_not_stamp_dropped_bundles(fake_timeserver):
    stamp = TrainStamp(fake_timeserver)

    def plan():
        yield from bps.open_run()
        yield from bps.create()
        yield from bps.read(det1)
        yield from bps.drop()
        yield from bps.close_run()

    msgs = RunEngineSimulator().simulate_plan(stamp_wrapper(plan(), stamp))
    assert [m.command for m in msgs] == ["read", "open_run", "create", "read", "drop",
                                         "close_run"]


def test_stop_stamper_adds_the_end_id(fake_timeserver, clock):
    seen = []
    stamper = StopStamper(lambda name, doc: seen.append((name, doc)), fake_timeserver)
    stop = {"uid": "u", "time": clock.t_ns / 1e9, "run_start": "s", "exit_status": "success"}
    stamper("stop", stop)
    assert seen[-1][1]["train_id_end"] is None
    assert seen[-1][1]["train_id_end_status"] == "INVALID"
    assert "train_id_end" not in stop  # the RunEngine's own document is not modified
    tick(fake_timeserver, FIRST_ID, clock.t_ns)
    stamper("stop", {**stop, "time": (clock.t_ns + P_NS + 5) / 1e9})
    assert seen[-1][1]["train_id_end"] == FIRST_ID + 1
    assert seen[-1][1]["train_id_end_status"] == "OK"
    stamper("start", {"uid": "s", "time": 0.0})
    assert seen[-1] == ("start", {"uid": "s", "time": 0.0})


def test_wrapper_as_a_runengine_preprocessor_stamps_plain_bluesky_plans(fake_timeserver, clock):
    """``RE.preprocessors.append(...)`` makes every plan of a session keep the contract."""
    from bluesky import RunEngine
    from bluesky.preprocessors import baseline_wrapper

    tick(fake_timeserver, FIRST_ID, clock.t_ns)
    stamp = TrainStamp(fake_timeserver, clock_ns=clock)
    RE = RunEngine(context_managers=[])
    RE.preprocessors.append(lambda plan: stamp_wrapper(plan, stamp))
    docs = []
    RE(baseline_wrapper(count([det1], 2), [det1]), lambda name, doc: docs.append((name, doc)))
    events = [d for n, d in docs if n == "event"]
    streams = {d["uid"]: d["name"] for n, d in docs if n == "descriptor"}
    assert sorted(streams[e["descriptor"]] for e in events) == ["baseline", "baseline",
                                                                 "primary", "primary"]
    assert all(e["data"]["train_id"] == FIRST_ID for e in events)
    assert docs[0][1]["train_id_start"] == FIRST_ID


class ExactDevice:
    """A readable that knows its train exactly, as a detector reading packet headers."""

    name, parent = "exact", None

    def __init__(self) -> None:
        self.train_id = FIRST_ID

    def describe(self):
        return {"train_id": {"source": "header", "dtype": "integer", "shape": []},
                "train_id_status": {"source": "header", "dtype": "string", "shape": []}}

    def read(self):
        self.train_id += 1
        return {"train_id": {"value": self.train_id, "timestamp": 0.0},
                "train_id_status": {"value": "EXACT", "timestamp": 0.0}}

    def read_configuration(self):
        return {}

    def describe_configuration(self):
        return {}


def test_declared_streams_with_and_without_exact_ids(fake_timeserver, clock):
    from bluesky import RunEngine

    tick(fake_timeserver, FIRST_ID, clock.t_ns)
    stamp = TrainStamp(fake_timeserver, clock_ns=clock)
    exact = ExactDevice()

    def plan():
        yield from bps.open_run()
        yield from bps.declare_stream(det1, name="stamped")
        yield from bps.declare_stream(exact, name="exact")
        for _ in range(2):
            yield from bps.trigger_and_read([det1], name="stamped")
            yield from bps.trigger_and_read([exact], name="exact")
            yield from bps.create("mine")  # the plan reads the stamp itself: not twice
            yield from bps.read(det1)
            yield from bps.read(stamp)
            yield from bps.save()
        yield from bps.close_run()

    docs = []
    RunEngine(context_managers=[])(stamp_wrapper(plan(), stamp),
                                   lambda name, doc: docs.append((name, doc)))
    streams = {d["uid"]: d["name"] for n, d in docs if n == "descriptor"}
    by_stream: dict[str, list] = {}
    for n, d in docs:
        if n == "event":
            by_stream.setdefault(streams[d["descriptor"]], []).append(d["data"])
    assert [e["train_id"] for e in by_stream["exact"]] == [FIRST_ID + 1, FIRST_ID + 2]
    assert {e["train_id_status"] for e in by_stream["exact"]} == {"EXACT"}
    assert [e["train_id"] for e in by_stream["stamped"]] == [FIRST_ID, FIRST_ID]
    assert [e["train_id"] for e in by_stream["mine"]] == [FIRST_ID, FIRST_ID]


def test_collect_streams_are_left_alone(fake_timeserver):
    stamp = TrainStamp(fake_timeserver)

    def plan():
        yield from bps.open_run()
        yield from bps.declare_stream(det1, name="fly", collect=True)
        yield from bps.close_run()

    msgs = RunEngineSimulator().simulate_plan(stamp_wrapper(plan(), stamp))
    (declare,) = [m for m in msgs if m.command == "declare_stream"]
    assert declare.args == (det1,)


@pytest.mark.parametrize("fault", ["state UNKNOWN", "state INIT", "ID in alarm",
                                   "ID disconnected"])
def test_nothing_is_stamped_ok_while_the_timeserver_is_not_on(fake_timeserver, clock, fault):
    """Events, the start document and the stop document taken while the TimeServer is
    not ON, or while its ID is in alarm, are STALE, never OK."""
    from bluesky import RunEngine

    ts = fake_timeserver
    tick(ts, FIRST_ID, clock.t_ns)
    clock.t_ns += P_NS // 2  # well within one period: OK if the TimeServer vouches for it
    assert TrainStamp(ts, clock_ns=clock).read()["train_id_status"]["value"] == "OK"
    if fault.startswith("state"):
        ts.state.sim_put(fault.split()[1])
    elif fault == "ID in alarm":
        ts._on_id(value=FIRST_ID, timestamp=(clock.t_ns - P_NS // 2) / 1e9, severity=3)
    else:
        ts._on_id_meta(connected=False)
    stamp = TrainStamp(ts, clock_ns=clock)
    reading = stamp.read()
    assert reading["train_id"]["value"] == FIRST_ID  # still the best guess, but flagged
    assert reading["train_id_status"]["value"] == "STALE"
    docs = []
    RE = RunEngine(context_managers=[])
    RE.subscribe(StopStamper(lambda name, doc: docs.append((name, doc)), ts))
    RE(stamp_wrapper(count([det1], 3), stamp))
    events = [d for n, d in docs if n == "event"]
    assert [e["data"]["train_id_status"] for e in events] == ["STALE"] * 3
    (start,) = [d for n, d in docs if n == "start"]
    assert start["train_id_start_status"] == "STALE"
    # The stop document, at a time the tick would cover: STALE as well.
    StopStamper(lambda name, doc: docs.append((name, doc)), ts)(
        "stop", {"uid": "u", "time": clock.t_ns / 1e9, "run_start": "s",
                 "exit_status": "success"})
    assert docs[-1][1]["train_id_end"] == FIRST_ID
    assert docs[-1][1]["train_id_end_status"] == "STALE"
