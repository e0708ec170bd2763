"""train_scan, exact detector IDs and g2_delay_scan composition: simulator and a real
RunEngine on a fake TimeServer (no network)."""

from __future__ import annotations

import threading
import time

import pytest
from bluesky import RunEngine
from bluesky.simulators import RunEngineSimulator, assert_message_and_return_remaining
from ophyd import Component as Cpt
from ophyd import Device, Signal
from ophyd.sim import det1, motor
from plans_fakes import FIRST_ID

from trainstamp.plans import ExactTrainId, StopStamper, TrainStamp, train_scan
from trainstamp.plans._exact import exact_stamp_for, exact_train_id_of


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


class ExactDetector(Device):
    """Stands in for Team1k's reading: it reports the train of the last tick + 1 as the
    frame's packet-header ID (``train_id_key``)."""

    value = Cpt(Signal, value=1.0, kind="hinted")
    header_id = Cpt(Signal, value=0, kind="normal")

    def __init__(self, *args, timeserver=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.timeserver = timeserver

    @property
    def train_id_key(self):
        return self.header_id.name

    def trigger(self):
        tick = self.timeserver.last_tick
        self.header_id.put(0 if tick is None else tick.train_id + 1)
        return super().trigger()


@pytest.fixture
def live_timeserver():
    from ophyd.sim import make_fake_device

    from trainstamp.timing.device import TimeServer

    ts = make_fake_device(TimeServer)("TS:", name="timeserver", stale_after=10)
    ts.period.sim_put(20_000)
    ts.source.sim_put("local:internal")
    return ts


def test_message_sequence(fake_timeserver):
    ts = fake_timeserver
    stamp = TrainStamp(ts)
    sim = RunEngineSimulator()
    sim.add_read_handler_for_multiple(stamp, train_id=FIRST_ID, train_id_status="OK")
    msgs = sim.simulate_plan(train_scan([det1], motor, 0, 1, 2, 3, timeserver=ts, stamp=stamp,
                                        md={"sample": "x"}))
    msgs = assert_message_and_return_remaining(msgs, lambda m: m.command == "stage")
    msgs = assert_message_and_return_remaining(
        msgs, lambda m: m.command == "open_run" and m.kwargs["plan_name"] == "train_scan"
        and m.kwargs["num_points"] == 6 and m.kwargs["trains_per_point"] == 3
        and m.kwargs["sample"] == "x" and m.kwargs["train_id_start"] == FIRST_ID
        and m.kwargs["motors"] == ["motor"])
    for position in (0.0, 1.0):
        msgs = assert_message_and_return_remaining(
            msgs, lambda m, p=position: m.command == "set" and m.obj is motor and m.args[0] == p)
        for _ in range(3):
            msgs = assert_message_and_return_remaining(
                msgs, lambda m: m.command == "trigger" and m.obj is ts)
            msgs = assert_message_and_return_remaining(
                msgs, lambda m: m.command == "read" and m.obj is motor)
            msgs = assert_message_and_return_remaining(
                msgs, lambda m: m.command == "read" and m.obj is stamp)
            msgs = assert_message_and_return_remaining(msgs, lambda m: m.command == "save")
    msgs = assert_message_and_return_remaining(msgs, lambda m: m.command == "close_run")
    assert_message_and_return_remaining(msgs, lambda m: m.command == "unstage")


@pytest.mark.parametrize(("args", "message"), [
    ((0, 1), "num must be an integer >= 1, got 0"),
    ((2, 0), "trains_per_point must be an integer >= 1, got 0"),
    ((2.5, 1), "num must be an integer >= 1, got 2.5"),
])
def test_counts_are_checked(fake_timeserver, args, message):
    with pytest.raises(ValueError, match=message):
        list(train_scan([det1], motor, 0, 1, *args, timeserver=fake_timeserver))


def test_composes_with_bluesky_preprocessors(fake_timeserver):
    from bluesky.preprocessors import baseline_wrapper

    ts = fake_timeserver
    msgs = RunEngineSimulator().simulate_plan(
        baseline_wrapper(train_scan([det1], motor, 0, 1, 2, timeserver=ts), [det1]))
    creates = [m.kwargs.get("name") for m in msgs if m.command == "create"]
    assert creates.count("baseline") == 2 and creates.count("primary") == 2


def test_real_runengine_scan_keeps_the_contract(live_timeserver):
    ts = live_timeserver
    docs = []
    RE = RunEngine(context_managers=[])
    RE.subscribe(StopStamper(lambda name, doc: docs.append((name, doc)), ts))
    with Ticker(ts, period_s=0.02):
        RE(train_scan([det1], motor, -1, 1, 3, 2, timeserver=ts))
    events = [d for n, d in docs if n == "event"]
    descriptors = [d for n, d in docs if n == "descriptor"]
    assert len(events) == 6 and len(descriptors) == 1
    ids = [e["data"]["train_id"] for e in events]
    assert all(b > a for a, b in zip(ids, ids[1:], strict=False)), ids
    assert [e["data"]["motor"] for e in events] == [-1, -1, 0, 0, 1, 1]
    assert {e["data"]["train_id_status"] for e in events} == {"OK"}
    assert "timeserver_stamp" in descriptors[0]["configuration"]


def test_detector_with_exact_ids_gives_the_event_train_id(live_timeserver):
    ts = live_timeserver
    det = ExactDetector(name="det", timeserver=ts)
    docs = []
    RE = RunEngine(context_managers=[])
    RE.subscribe(lambda name, doc: docs.append((name, doc)))
    with Ticker(ts, period_s=0.02):
        RE(train_scan([det], motor, 0, 1, 2, 2, timeserver=ts))
    events = [d for n, d in docs if n == "event"]
    (descriptor,) = [d for n, d in docs if n == "descriptor"]
    assert len(events) == 4
    for e in events:
        assert e["data"]["train_id"] == e["data"]["det_header_id"]  # exact, not interpolated
        assert e["data"]["train_id_status"] == "EXACT"
    assert descriptor["data_keys"]["train_id"]["source"] == "det:packet_header"
    assert "timeserver_exact" in descriptor["configuration"]  # TimeServer configuration


def test_exact_id_missing_is_flagged_invalid_never_zero(fake_timeserver):
    ts = fake_timeserver
    det = ExactDetector(name="det", timeserver=ts)
    assert exact_train_id_of([det], {"det_header_id": {"value": 0}}) is None
    assert exact_train_id_of([det], {"det_header_id": {"value": [7, 8]}}) == ("det", 7)
    exact = exact_stamp_for(ts)
    assert exact is exact_stamp_for(ts)  # one object per TimeServer: one descriptor
    exact.set_exact("det", None, time.time())
    reading = exact.read()
    assert reading["train_id"]["value"] == -1
    assert reading["train_id_status"]["value"] == "INVALID"
    with pytest.raises(ValueError, match="must be > 0, got 0"):
        ExactTrainId(ts).set_exact("det", 0, 0.0)


def test_g2_delay_scan_composes_settings_and_scan(fake_timeserver):
    from ophyd.sim import make_fake_device

    from trainstamp.plans import g2_delay_scan
    from trainstamp.tagger.device import TimeTagger

    ts = fake_timeserver
    tt = make_fake_device(TimeTagger)("TT:", name="tt")
    msgs = RunEngineSimulator().simulate_plan(
        g2_delay_scan(tt, 4, -1000, 1000, 3, timeserver=ts, trains_per_measurement=7,
                      binwidth_ps=100, md={"sample": "pairs"}))
    sets = [(m.obj.name, m.args[0]) for m in msgs if m.command == "set"]
    assert sets[:2] == [("tt_corr1_n_trains", 7), ("tt_corr1_binwidth", 100)]
    assert sets[2:] == [("tt_ch4_delay", -1000.0), ("tt_ch4_delay", 0.0), ("tt_ch4_delay", 1000.0)]
    (open_run,) = [m for m in msgs if m.command == "open_run"]
    assert open_run.kwargs["plan_name"] == "g2_delay_scan"
    assert open_run.kwargs["sample"] == "pairs" and open_run.kwargs["delay_channel"] == 4
    assert sum(m.command == "trigger" and m.obj is tt for m in msgs) == 3
    with pytest.raises(ValueError, match="no input channel 12"):
        list(g2_delay_scan(tt, 12, 0, 1, 2, timeserver=ts))
