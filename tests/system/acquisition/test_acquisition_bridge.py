"""The karabo-bridge stream of a ``train_fly`` at 10 Hz on the simulated beamline, read
with ``karabo_bridge.Client``: as a RunEngine subscription, and attached
(``trainstamp bridge``) with no RunEngine of its own."""

from __future__ import annotations

import os
import threading

import numpy as np
import pytest
from acquisition_stack import CLICK_CHANNEL, acquisition_stack, connect_devices
from bluesky import RunEngine
from karabo_bridge import Client

from trainstamp.bridge import detector_source, subscribe_bridge, tagger_source, timeserver_source
from trainstamp.detector import read_capture
from trainstamp.plans import train_fly
from trainstamp.testing import Subprocess, free_port, wait_until

pytestmark = [pytest.mark.system, pytest.mark.slow]

TS, DET, TT = (timeserver_source("timeserver"), detector_source("team1k"),
               tagger_source("tagger"))


@pytest.fixture(scope="module")
def line(tmp_path_factory, ca_ports):
    data = tmp_path_factory.mktemp("bridge") / "data"
    with acquisition_stack(ca_ports, data, period_ms=100) as stack:
        ts, det, tt = connect_devices(stack)
        yield stack, ts, det, tt
        for dev in (ts, det, tt):
            dev.destroy()
        assert not stack.dead(), stack.dead()


class Reader:
    """A karabo_bridge.Client in a thread, keeping what each message held."""

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self.got: list[tuple[dict, dict]] = []
        self.done = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            with Client(self.endpoint, timeout=1) as client:
                while not self.done.is_set():
                    try:
                        self.got.append(client.next())
                    except TimeoutError:
                        continue
        except BaseException as exc:
            self.error = exc

    def __enter__(self) -> Reader:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.done.set()
        self.thread.join(10)
        assert not self.thread.is_alive()
        assert self.error is None, self.error


def _tid(message) -> int:
    return next(iter(message[1].values()))["timestamp.tid"]


def _stored_frames(det) -> dict[int, np.ndarray]:
    cap = read_capture(det.capture_full_path.get())
    return {int(t): img for t, img, ok in zip(cap["train_id"], cap["data"],
                                              cap["train_id_valid"], strict=True) if ok}


def _check_messages(got, stored, sources):
    ids = []
    for data, meta in got:
        assert set(data) == sources, set(data)
        (tid,) = {m["timestamp.tid"] for m in meta.values()}  # one train ID in every source
        assert data[DET]["data.trainId"] == tid and data[TS]["trainId"] == tid
        assert (data[DET]["data.image"] == stored[tid]).all(), tid
        ids.append(tid)
    assert ids == sorted(set(ids)), ids  # strictly increasing
    return ids


def test_fly_at_10_hz_as_a_run_engine_subscription(line):
    stack, ts, det, tt = line
    RE = RunEngine(context_managers=[])
    n = 30
    # Trains come in bursts (the tagger's counts arrive a page at a time): a queue as deep
    # as the run lets this client have every train; the default depth of 1 keeps only
    # the newest (the next test).
    bridge, token = subscribe_bridge(RE, detectors=[det], queue_depth=64)
    try:
        with Reader(bridge.server.endpoint) as reader:
            RE(train_fly([det], n, timeserver=ts, tagger=tt, click_channel=CLICK_CHANNEL))
            stats = bridge.stats()
            assert stats.released >= n // 2 and stats.skipped == 0
            wait_until(lambda: len(reader.got) == stats.released,
                       timeout=10, message="the client to read the last trains")
    finally:
        RE.unsubscribe(token)
        bridge.server.stop()
    stored = _stored_frames(det)
    ids = _check_messages(reader.got, stored, {TS, DET, TT})
    assert set(ids) <= set(stored)
    counts = [data[TT]["counts.counts"] for data, _ in reader.got]
    assert sum(counts) > 0
    assert all(data[TT]["counts.firstTrainId"] == meta[TT]["timestamp.tid"]
               for data, meta in reader.got)
    assert bridge.stats().frames_missing == 0


def test_capture_is_not_delayed_when_no_client_reads_and_a_late_client_gets_the_newest(line):
    stack, ts, det, tt = line
    RE = RunEngine(context_managers=[])
    bridge, token = subscribe_bridge(RE, detectors=[det])
    n = 20
    try:
        (uid,) = RE(train_fly([det], n, timeserver=ts))
        stats = bridge.stats()
        stored = _stored_frames(det)
        assert len(stored) == n  # every frame was captured
        assert stats.sent == 0 and stats.released >= 1
        assert stats.skipped == stats.released - 1  # the newest one waits in the queue
        # a client that comes late gets the newest train: the run's last frame
        with Client(bridge.server.endpoint, timeout=10) as client:
            data, meta = client.next()
        assert meta[DET]["timestamp.tid"] == max(stored)
        assert (data[DET]["data.image"] == stored[max(stored)]).all()
    finally:
        RE.unsubscribe(token)
        bridge.server.stop()


def test_attached_bridge_serves_the_trains_of_a_fly_it_did_not_start(line):
    stack, ts, det, tt = line
    bport = free_port()
    env = dict(os.environ, TRAINSTAMP_KEEP_EPICS_ENV="1")
    child = Subprocess(["bridge", "--port", str(bport), "--timeserver", stack.ts_prefix,
                        "--detector", stack.det_prefix, "--tagger", stack.tt_prefix,
                        "--click-channel", str(CLICK_CHANNEL), "--queue", "64"],
                       env=env, timeout=60)
    child.ready = lambda: "bridge ready on tcp://127.0.0.1:" in child.output()  # loopback
    RE = RunEngine(context_managers=[])
    n = 20
    with child, Reader(f"tcp://127.0.0.1:{bport}") as reader:
        RE(train_fly([det], n, timeserver=ts))
        stored = _stored_frames(det)
        wait_until(lambda: reader.got and _tid(reader.got[-1]) == max(stored),
                   timeout=10, message=lambda: f"the last train:\n{child.output()[-2000:]}")
    (det_name,) = {d.split("/")[2].split(":")[0] for data, _ in reader.got for d in data
                   if "/DET/" in d}
    det_src = detector_source(det_name)
    ts_src = next(s for s in reader.got[0][0] if "/TIMESERVER/" in s)
    tt_src = next(s for data, _ in reader.got for s in data if "/TAGGER/" in s)
    ids, with_counts = [], 0
    for data, meta in reader.got:
        assert {det_src, ts_src} <= set(data) <= {det_src, ts_src, tt_src}
        (tid,) = {m["timestamp.tid"] for m in meta.values()}
        assert data[det_src]["data.trainId"] == tid and data[ts_src]["trainId"] == tid
        assert (data[det_src]["data.image"] == stored[tid]).all()
        if tt_src in data:
            assert data[tt_src]["counts.firstTrainId"] == tid
            with_counts += data[tt_src]["counts.counts"] > 0
        ids.append(tid)
    assert ids == sorted(set(ids)) and ids[-1] == max(stored)
    # every frame of the run after the bridge attached went out (the queue held them all)
    assert ids == [t for t in sorted(stored) if t >= ids[0]]
    # the bridge's own counting windows: counts for (nearly) every train, never shifted
    assert with_counts >= len(ids) // 2, (with_counts, len(ids))
