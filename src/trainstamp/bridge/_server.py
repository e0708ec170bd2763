"""The shell of the karabo-bridge stream: the ZeroMQ REP server thread, the
:class:`Bridge` that feeds it, and the reader of frames from capture files.

``karabo_bridge.Client`` (REQ) sends ``b"next"`` and waits for one multipart message.
The server thread answers each request with the next train from the
:class:`~trainstamp.bridge._core.NewestQueue`, waiting for one if none is there; it
reads the train's frame (the lazy part) and encodes it only then, so the producer
(a RunEngine callback, the tick feed, the file tail) does no more than a dict update and
a non-blocking put, and a slow or absent client never delays the capture.
(``karabo_bridge.ServerInThread`` does not fit here: its ``feed`` blocks, or raises,
when its queue is full, where this one drops the oldest train and counts it.)
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import h5py
import numpy as np
import zmq

from trainstamp.bridge._core import Assembler, NewestQueue, Part, Train, encode, resolve
from trainstamp.detector._capture import DATA, TRAIN_ID

log = logging.getLogger(__name__)

__all__ = ["DEFAULT_BIND", "Bridge", "BridgeServer", "BridgeStats", "CaptureFrames"]

#: The default interface: loopback, so nothing is served off the host unless asked.
DEFAULT_BIND = "127.0.0.1"


@dataclass
class BridgeStats:
    """What the bridge has done: trains released, sent, skipped (the client was slower
    than the trains; the queue dropped them), incomplete (a required source was
    missing), late parts, restarts of the train source (IDs that jumped back), and
    frames that could not be read for a sent train."""

    released: int = 0
    sent: int = 0
    restarts: int = 0
    skipped: int = 0
    incomplete: int = 0
    late: int = 0
    frames_missing: int = 0
    bad_requests: int = 0
    errors: int = 0


class BridgeServer:
    """A karabo-bridge REP server on ``tcp://host:port`` in a daemon thread.

    :meth:`feed` puts a :class:`~trainstamp.bridge._core.Train` in the queue and never
    blocks. ``port`` 0 takes a free port (:attr:`port` then tells it).
    """

    def __init__(self, host: str = DEFAULT_BIND, port: int = 0, *, queue_depth: int = 1) -> None:
        self.host = host
        self.port = port
        self.queue = NewestQueue(queue_depth)
        self.sent = 0
        self.frames_missing = 0
        self.bad_requests = 0
        self.errors = 0
        self._ctx: zmq.Context | None = None
        self._sock: zmq.Socket | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    @property
    def endpoint(self) -> str:
        return f"tcp://{self.host}:{self.port}"

    def start(self) -> BridgeServer:
        self._ctx = zmq.Context()
        sock = self._ctx.socket(zmq.REP)
        sock.setsockopt(zmq.LINGER, 0)
        try:
            if self.port:
                sock.bind(f"tcp://{self.host}:{self.port}")
            else:
                self.port = sock.bind_to_random_port(f"tcp://{self.host}")
        except zmq.ZMQError as exc:
            sock.close(linger=0)
            self._ctx.term()
            self._ctx = None
            raise OSError(f"karabo-bridge server cannot bind {self.endpoint}: {exc}") from exc
        self._sock = sock
        self._thread = threading.Thread(target=self._run, name="karabo-bridge", daemon=True)
        self._thread.start()
        log.info("karabo-bridge server on %s", self.endpoint)
        return self

    def feed(self, train: Train) -> None:
        self.queue.put(train)

    def _next_train(self) -> Train | None:
        while not self._stop.is_set():
            train = self.queue.get(timeout=0.1)
            if train is not None:
                return train
        return None

    def _next_message(self) -> list | None:
        """The next train's message; a train that cannot be encoded is logged, counted
        in ``errors`` and passed over for the one after it."""
        while (train := self._next_train()) is not None:
            try:
                sources, times, missing = resolve(train)
                message = encode(train.train_id, sources, times)
            except Exception as exc:
                self.errors += 1
                log.error("train %d not sent: %s", train.train_id, exc)
                continue
            self.frames_missing += missing
            return message
        return None

    def _run(self) -> None:
        sock = self._sock
        assert sock is not None
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        try:
            while not self._stop.is_set():
                if not poller.poll(100):
                    continue
                request = sock.recv()
                if request != b"next":
                    self.bad_requests += 1
                    sock.send(b"Error: bad request %b" % request[:64])
                    continue
                message = self._next_message()
                if message is None:
                    break  # stopping; the socket is closed with the request unanswered
                sock.send_multipart(message, copy=False)
                self.sent += 1
        except zmq.ZMQError as exc:
            if not self._stop.is_set():
                log.error("karabo-bridge server stopped: %s", exc)
        finally:
            sock.close(linger=0)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        if self._ctx is not None:
            self._ctx.term()
            self._ctx = None

    def __enter__(self) -> BridgeServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


class Bridge:
    """An :class:`~trainstamp.bridge._core.Assembler` feeding a :class:`BridgeServer`,
    behind one lock, so any thread may :meth:`add` parts (a RunEngine callback, the tick
    feed, a file tail). :meth:`reset` starts over with new sources (a new run).
    ``max_wait_s``: how long a train that has its required sources waits for the others
    (by default until a later train has them all)."""

    def __init__(self, server: BridgeServer, sources: Iterable[str] = (),
                 required: Iterable[str] | None = None, *, max_pending: int = 200,
                 max_wait_s: float | None = None) -> None:
        self.server = server
        self.max_pending = max_pending
        self.max_wait_ns = None if max_wait_s is None else round(max_wait_s * 1e9)
        self._lock = threading.Lock()
        self._done = BridgeStats()  # counts of the assemblers already replaced
        self._assembler = self._new(sources, required)

    def reset(self, sources: Iterable[str], required: Iterable[str] | None = None, *,
              restart: bool = False) -> None:
        """Send what is pending and take new sources. Train IDs must go on increasing
        from the last train, unless ``restart`` (a new run: the source may have been
        restarted)."""
        with self._lock:
            self._publish(self._assembler.flush())
            self._fold()
            last = 0 if restart else self._assembler.last_train_id
            self._assembler = self._new(sources, required)
            self._assembler.last_train_id = last

    def _new(self, sources: Iterable[str], required: Iterable[str] | None) -> Assembler:
        return Assembler(sources, required, max_pending=self.max_pending,
                         max_wait_ns=self.max_wait_ns)

    def _fold(self) -> None:
        a = self._assembler
        self._done.released += a.released
        self._done.incomplete += a.incomplete
        self._done.late += a.late
        self._done.restarts += a.restarts
        a.released = a.incomplete = a.late = a.restarts = 0

    def add(self, source: str, train_id: int, part: Part) -> None:
        with self._lock:
            self._publish(self._assembler.add(source, train_id, part, time.monotonic_ns()))

    def expire(self) -> None:
        """Release the trains that waited ``max_wait_s`` for a source not required."""
        with self._lock:
            self._publish(self._assembler.expire(time.monotonic_ns()))

    def flush(self) -> None:
        with self._lock:
            self._publish(self._assembler.flush())

    def _publish(self, trains: list[Train]) -> None:
        for train in trains:
            self.server.feed(train)

    @property
    def sources(self) -> frozenset[str]:
        return self._assembler.sources

    def stats(self) -> BridgeStats:
        with self._lock:
            a, d, s = self._assembler, self._done, self.server
            return BridgeStats(released=d.released + a.released, sent=s.sent,
                               skipped=s.queue.skipped, incomplete=d.incomplete + a.incomplete,
                               late=d.late + a.late, restarts=d.restarts + a.restarts,
                               frames_missing=s.frames_missing,
                               bad_requests=s.bad_requests, errors=s.errors)


class CaptureFrames:
    """Frames of one capture file by train ID, read while the IOC writes it (SWMR).

    ``path`` is the file, or a callable giving it (the detector's
    ``CAPTURE:FULL_PATH``), asked on the first read only, so the read happens in the
    server thread and never in the producer's. The train ID → row index grows with the
    file; rows without a train ID (0) are never indexed.
    """

    def __init__(self, path: str | Callable[[], str]) -> None:
        self._path = path
        self._file: h5py.File | None = None
        self._rows: dict[int, int] = {}
        self._indexed = 0
        self._lock = threading.Lock()

    def _open(self) -> h5py.File | None:
        if self._file is None:
            path = self._path() if callable(self._path) else self._path
            if not path:
                return None
            self._file = h5py.File(path, "r", libver="latest", swmr=True)
        return self._file

    def frame(self, train_id: int) -> np.ndarray | None:
        """The image of ``train_id`` (uint16, rows × columns), or ``None`` if the file
        has no such frame (yet)."""
        with self._lock:
            try:
                f = self._open()
            except OSError as exc:
                log.warning("capture file not readable: %s", exc)
                return None
            if f is None:
                return None
            try:
                return self._read(f, train_id)
            except Exception as exc:  # a file cut short or replaced: no frame, say why
                log.warning("frame of train %d not readable: %s", train_id, exc)
                return None

    def _read(self, f: h5py.File, train_id: int) -> np.ndarray | None:
        if train_id not in self._rows:
            ids, data = f[TRAIN_ID], f[DATA]
            ids.refresh()
            data.refresh()
            n = min(ids.shape[0], data.shape[0])
            if n > self._indexed:
                new = ids[self._indexed:n]
                for k, tid in enumerate(new.tolist(), start=self._indexed):
                    if tid:
                        self._rows.setdefault(int(tid), k)
                self._indexed = n
        row = self._rows.get(train_id)
        return None if row is None else f[DATA][row]

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None
