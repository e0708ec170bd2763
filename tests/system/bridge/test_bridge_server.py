"""The bridge server on a loopback socket, read with ``karabo_bridge.Client``; frames
from a real capture file written by the detector's writer."""

from __future__ import annotations

import numpy as np
import pytest
import zmq
from karabo_bridge import Client

from trainstamp.bridge import Bridge, BridgeServer, CaptureFrames, Part
from trainstamp.detector._capture import CaptureFile
from trainstamp.detector._protocol import FRAME_COLS, FRAME_ROWS

pytestmark = pytest.mark.system

T, D = "TRAINSTAMP/TIMESERVER/ts", "TRAINSTAMP/DET/det:daqOutput"


def tick(tid: int) -> Part:
    return Part({"trainId": tid, "tickTime": tid / 10}, tid * 100_000_000)


@pytest.fixture
def server():
    with BridgeServer(queue_depth=1) as s:
        yield s


def test_default_bind_is_loopback(server):
    assert server.host == "127.0.0.1" and server.endpoint.startswith("tcp://127.0.0.1:")


def test_client_gets_each_train_with_its_id_in_every_source(server):
    bridge = Bridge(server, [T, D])
    image = np.arange(FRAME_ROWS * FRAME_COLS, dtype=np.uint16).reshape(FRAME_ROWS, FRAME_COLS)
    with Client(server.endpoint, timeout=10) as client:
        for tid in (100, 101, 102):
            bridge.add(T, tid, tick(tid))
            bridge.add(D, tid, Part({"data.trainId": tid}, tid, {"data.image": lambda: image}))
            data, meta = client.next()
            assert {m["timestamp.tid"] for m in meta.values()} == {tid}
            assert data[T]["trainId"] == tid and data[D]["data.trainId"] == tid
            assert (data[D]["data.image"] == image).all()
    s = bridge.stats()
    assert (s.released, s.sent, s.skipped, s.incomplete) == (3, 3, 0, 0)


def test_a_slow_client_gets_the_newest_train_and_the_rest_are_counted(server):
    bridge = Bridge(server, [T])
    with Client(server.endpoint, timeout=10) as client:
        for tid in range(1, 51):  # fifty trains before the client asks
            bridge.add(T, tid, tick(tid))
        data, meta = client.next()
        assert meta[T]["timestamp.tid"] == 50
        bridge.add(T, 51, tick(51))
        _, meta = client.next()
        assert meta[T]["timestamp.tid"] == 51
    assert bridge.stats().skipped == 49 and bridge.stats().sent == 2


def test_a_deeper_queue_lets_the_client_catch_up():
    with BridgeServer(queue_depth=4) as server, Client(server.endpoint, timeout=10) as client:
        bridge = Bridge(server, [T])
        for tid in range(1, 11):
            bridge.add(T, tid, tick(tid))
        got = [client.next()[1][T]["timestamp.tid"] for _ in range(4)]
        assert got == [7, 8, 9, 10] and bridge.stats().skipped == 6


def test_a_client_waits_for_the_next_train(server):
    bridge = Bridge(server, [T])
    ctx = zmq.Context()
    try:
        req = ctx.socket(zmq.REQ)
        req.setsockopt(zmq.LINGER, 0)
        req.connect(server.endpoint)
        req.send(b"next")
        assert not req.poll(200)  # nothing yet: the request waits for a train
        bridge.add(T, 7, tick(7))
        assert req.poll(10_000)
        assert len(req.recv_multipart()) == 2
        req.send(b"hello")
        assert req.poll(10_000) and req.recv().startswith(b"Error: bad request")
        assert bridge.stats().bad_requests == 1
    finally:
        ctx.destroy(linger=0)


def test_frames_are_read_by_train_id_from_a_capture_file_being_written(tmp_path):
    path = tmp_path / "cap.h5"
    cap = CaptureFile(path, flush_interval=0)
    frames = CaptureFrames(lambda: str(path))
    try:
        images = {}
        for k, tid in enumerate((500, 501, 0, 503)):
            img = np.full((FRAME_ROWS, FRAME_COLS), k + 1, dtype="<u2")
            cap.append(img.view(np.uint8).ravel(), k, tid, True, train_id_valid=bool(tid))
            images[tid] = img
            if tid == 501:
                cap.flush()
                assert (frames.frame(501) == images[501]).all()  # while being written
                assert frames.frame(503) is None
        cap.flush()
        assert (frames.frame(503) == images[503]).all()
        assert (frames.frame(500) == images[500]).all()
        assert frames.frame(0) is None and frames.frame(9) is None
    finally:
        frames.close()
        cap.close()


def test_stop_ends_the_thread_with_a_request_pending():
    server = BridgeServer().start()
    ctx = zmq.Context()
    try:
        req = ctx.socket(zmq.REQ)
        req.setsockopt(zmq.LINGER, 0)
        req.connect(server.endpoint)
        req.send(b"next")
        assert not req.poll(100)  # no train: the server holds the request
    finally:
        server.stop()
        ctx.destroy(linger=0)
    assert server._thread is None


def test_a_train_that_cannot_be_encoded_is_passed_over():
    with BridgeServer(queue_depth=2) as server, Client(server.endpoint, timeout=10) as client:
        bridge = Bridge(server, [T])
        bridge.add(T, 1, Part({"bad": object()}, 0))  # msgpack cannot pack it
        bridge.add(T, 2, tick(2))
        _, meta = client.next()
    assert meta[T]["timestamp.tid"] == 2 and bridge.stats().errors == 1


def test_a_port_in_use_is_refused_with_its_endpoint(server):
    with pytest.raises(OSError, match=f"cannot bind tcp://127.0.0.1:{server.port}"):
        BridgeServer(port=server.port).start()
