"""The run-end stamp is put on the RunEngine's stop document before it is dispatched, so
every subscriber (a publisher to other processes too) gets the same stamped document."""

from __future__ import annotations

import time

import msgpack
import pytest
from bluesky import RunEngine
from bluesky.plans import count
from ophyd.sim import det1, make_fake_device

from trainstamp.timing.device import TimeServer
from trainstamp.trainid import (
    TRAIN_ID_END_KEY,
    StopStamper,
    _StampingProcess,
    stamp_stop_documents,
)

FIRST_ID = 7_000_000
P_US = 100_000


def timeserver(ticked: bool = True):
    ts = make_fake_device(TimeServer)("TS:", name="timeserver")
    ts.period.sim_put(P_US)
    ts.source.sim_put("local:internal")
    if ticked:
        ts._on_id(value=FIRST_ID, timestamp=time.time())
    return ts


class Recorder:
    def __init__(self) -> None:
        self.stops: list[dict] = []

    def __call__(self, name: str, doc: dict) -> None:
        if name == "stop":
            self.stops.append(doc)


def test_every_subscriber_sees_the_stamp_whenever_it_subscribed():
    ts = timeserver()
    RE = RunEngine(context_managers=[])
    before, after = Recorder(), Recorder()
    RE.subscribe(before)
    stamp_stop_documents(RE, ts)
    RE.subscribe(after)
    RE(count([det1], 2))
    (stop,) = before.stops
    assert after.stops == [stop]
    expected = ts.train_id_at(t_ns=round(stop["time"] * 1e9))
    assert stop[TRAIN_ID_END_KEY] == expected.train_id >= FIRST_ID
    assert stop[f"{TRAIN_ID_END_KEY}_status"] == expected.status.name


def test_stamping_twice_wraps_once_and_takes_the_new_timeserver():
    first, second = timeserver(), timeserver(ticked=False)
    RE = RunEngine(context_managers=[])
    stamp_stop_documents(RE, first)
    stamp_stop_documents(RE, second)
    process = vars(RE.dispatcher)["process"]
    assert isinstance(process, _StampingProcess) and process.timeserver is second
    assert not isinstance(process.process, _StampingProcess)
    seen = Recorder()
    RE.subscribe(StopStamper(seen, first))  # a writer's own stamper leaves it alone
    RE(count([det1], 1))
    (stop,) = seen.stops
    assert stop[TRAIN_ID_END_KEY] is None and stop[f"{TRAIN_ID_END_KEY}_status"] == "INVALID"


@pytest.mark.parametrize("ticked", [True, False], ids=["ok", "invalid"])
def test_the_stamped_stop_document_survives_msgpack(ticked):
    """What bluesky-kafka's publisher does to a document: msgpack out, msgpack in."""
    RE = RunEngine(context_managers=[])
    stamp_stop_documents(RE, timeserver(ticked))
    wire: list[bytes] = []
    RE.subscribe(lambda name, doc: wire.append(msgpack.packb((name, doc))))
    RE(count([det1], 1))
    received = [tuple(msgpack.unpackb(packet)) for packet in wire]
    (stop,) = [doc for name, doc in received if name == "stop"]
    if ticked:
        assert stop[TRAIN_ID_END_KEY] >= FIRST_ID
        assert stop[f"{TRAIN_ID_END_KEY}_status"] in ("OK", "STALE")  # STALE on a slow machine
    else:
        assert stop[TRAIN_ID_END_KEY] is None
        assert stop[f"{TRAIN_ID_END_KEY}_status"] == "INVALID"
