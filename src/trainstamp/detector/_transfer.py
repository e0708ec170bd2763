"""The data-transfer port: captured frames to a client on another host, over ZMQ.

team1k moves frames to its clients over ZMQ (``--zmq-port``, default 42005), so a client
needs no shared filesystem. Here the IOC captures into its HDF5 file as always
(``CMD:CAPTURE``), and this port serves frames of a capture file in the IOC's data
directory, in chunks, to whoever asks. The capture never waits for a client: the
transfer reads the file on its own thread, and a slow or vanished client costs only
its own reply.

Protocol (ZMQ REQ/REP, version 1). Each request is one JSON object, at most
:data:`MAX_REQUEST_BYTES`:

- ``{"op": "ping"}`` -> ``{"ok": true, "version": 1, "chunk_frames": 8}``
- ``{"op": "frames", "path": P, "first": i, "count": k}``, with ``P`` a capture file
  under the data directory (as ``CAPTURE:FULL_PATH`` names it) and ``1 <= k <=``
  :data:`CHUNK_FRAMES` -> two parts: a JSON header ``{"ok": true, "count": k,
  "first": i, "total": N, "shape": [k, 1024, 1024], "dtype": "<u2", "train_id": [...],
  "frame_number": [...], "complete": [...], "train_id_valid": [...]}`` and the k frames'
  raw little-endian uint16 pixels. ``count`` is less than asked at the end of the file.

Anything else gets ``{"ok": false, "error": "..."}`` (one part), and is counted.

The parsing and the encoding are pure functions (:func:`parse_request`,
:func:`frames_reply`, :func:`decode_reply`); :class:`FrameTransferServer` is the thread
around them.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from trainstamp.detector._capture import COMPLETE, DATA, FRAME_NUMBER, TRAIN_ID, TRAIN_ID_VALID
from trainstamp.detector._protocol import FRAME_COLS, FRAME_ROWS

log = logging.getLogger(__name__)

__all__ = ["CHUNK_FRAMES", "BadRequest", "FrameTransferServer", "decode_reply",
           "frames_reply", "parse_request"]

VERSION = 1
#: Frames per reply at most (8 frames: 16 MiB), which bounds the memory of a transfer.
CHUNK_FRAMES = 8
#: A request longer than this is refused (ZMQ drops the peer before it is read whole).
MAX_REQUEST_BYTES = 4096
FRAME_SHAPE = (FRAME_ROWS, FRAME_COLS)


class BadRequest(ValueError):
    """A request the transfer port refuses; its text goes back to the client."""


@dataclass(frozen=True)
class FramesRequest:
    path: Path
    first: int
    count: int


def _whole(body: dict, key: str, lo: int, hi: int) -> int:
    value = body.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise BadRequest(f"{key!r} must be a whole number in {lo}..{hi}, got {value!r}")
    return value


def parse_request(raw: bytes, data_dir: str | os.PathLike) -> FramesRequest | None:
    """A ``frames`` request, or None for ``ping``; :class:`BadRequest` for anything else.

    The path must name an existing ``.h5`` file inside ``data_dir`` (after resolving
    links and ``..``), so the port reads no other file.
    """
    if len(raw) > MAX_REQUEST_BYTES:
        raise BadRequest(f"request of {len(raw)} bytes, more than {MAX_REQUEST_BYTES}")
    try:
        body = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise BadRequest("a request is one JSON object (UTF-8)") from None
    if not isinstance(body, dict):
        raise BadRequest("a request is one JSON object")
    op = body.get("op")
    if op == "ping":
        return None
    if op != "frames":
        raise BadRequest(f"unknown op {str(op)[:40]!r}; expected 'frames' or 'ping'")
    path = body.get("path")
    if not isinstance(path, str) or not path or "\0" in path:
        raise BadRequest("'path' must be the capture file's path (CAPTURE:FULL_PATH)")
    root = Path(data_dir).resolve()
    target = (root / path).resolve()
    if not target.is_relative_to(root) or target.suffix != ".h5":
        raise BadRequest("'path' must be a capture file (.h5) inside the IOC's data directory")
    if not target.is_file():
        raise BadRequest("no such capture file in the IOC's data directory")
    first = _whole(body, "first", 0, 2**40)
    count = _whole(body, "count", 1, CHUNK_FRAMES)
    return FramesRequest(target, first, count)


def error_reply(text: str) -> list[bytes]:
    return [json.dumps({"ok": False, "error": text}).encode()]


def ping_reply() -> list[bytes]:
    return [json.dumps({"ok": True, "version": VERSION, "chunk_frames": CHUNK_FRAMES}).encode()]


def frames_reply(first: int, total: int, data: np.ndarray,
                 meta: dict[str, np.ndarray]) -> list[bytes | memoryview]:
    """The two parts of a ``frames`` reply: the header and the pixels of ``data`` (a
    view of the array's bytes, so ZMQ sends them without another copy)."""
    data = np.ascontiguousarray(data, dtype="<u2")
    header = {"ok": True, "count": int(data.shape[0]), "first": int(first), "total": int(total),
              "shape": list(data.shape), "dtype": "<u2"}
    for key, values in meta.items():
        header[key] = [int(v) for v in values]
    return [json.dumps(header).encode(), data.reshape(-1).view(np.uint8).data]


def decode_reply(parts: list[bytes]) -> tuple[dict, np.ndarray]:
    """The header and the frames (``(k, 1024, 1024)`` uint16) of a reply; a refusal or
    a malformed reply raises ``RuntimeError`` with the reason."""
    try:
        header = json.loads(parts[0].decode("utf-8"))
    except (IndexError, UnicodeDecodeError, ValueError):
        raise RuntimeError("malformed reply from the data-transfer port") from None
    if not isinstance(header, dict) or not header.get("ok"):
        raise RuntimeError(f"the data-transfer port refused: {header.get('error', header)}"
                           if isinstance(header, dict) else "malformed reply")
    if "count" not in header:
        return header, np.empty((0, *FRAME_SHAPE), np.uint16)
    count = header["count"]
    expected = count * FRAME_ROWS * FRAME_COLS * 2
    if len(parts) != 2 or len(parts[1]) != expected:
        raise RuntimeError(f"reply of {count} frames carries {len(parts[1]) if len(parts) > 1 else 0}"
                           f" bytes, not {expected}")
    frames = np.frombuffer(parts[1], dtype="<u2").reshape(count, *FRAME_SHAPE)
    return header, frames


def read_frames(path: Path, first: int, count: int) -> tuple[int, np.ndarray, dict[str, np.ndarray]]:
    """Frames ``first .. first+count`` of a capture file (fewer at its end): the file's
    frame count, the pixels and the per-frame metadata. Safe while the file is written."""
    import h5py

    with h5py.File(path, "r", swmr=True, libver="latest") as f:
        keys = [k for k in (DATA, TRAIN_ID, FRAME_NUMBER, COMPLETE, TRAIN_ID_VALID) if k in f]
        total = min(f[k].shape[0] for k in keys)
        stop = min(total, first + count)
        if first >= total and total:
            raise BadRequest(f"'first' {first} is past the file's {total} frames")
        data = f[DATA][first:stop] if stop > first else np.empty((0, *FRAME_SHAPE), np.uint16)
        meta = {name: f[key][first:stop] for name, key in
                (("train_id", TRAIN_ID), ("frame_number", FRAME_NUMBER), ("complete", COMPLETE),
                 ("train_id_valid", TRAIN_ID_VALID)) if key in f}
    return total, data, meta


@dataclass
class TransferStats:
    requests: int = 0
    bad_requests: int = 0
    frames_sent: int = 0
    last_error: str = ""
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)


class FrameTransferServer:
    """The ZMQ REP socket on ``bind:port`` and the thread that answers it.

    The socket is bound when the object is made, so a port in use fails the IOC's
    start-up with the reason; ``port`` 0 takes a free one (see :attr:`port`).
    """

    def __init__(self, data_dir: str | os.PathLike, bind: str = "127.0.0.1", port: int = 0) -> None:
        import zmq

        self.data_dir = Path(data_dir).resolve()
        self.stats = TransferStats()
        self._ctx = zmq.Context()
        self._sock = self._ctx.socket(zmq.REP)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.setsockopt(zmq.MAXMSGSIZE, MAX_REQUEST_BYTES)
        self._sock.setsockopt(zmq.SNDHWM, 4)
        try:
            if port:
                self._sock.bind(f"tcp://{bind}:{port}")
                self.port = port
            else:
                self.port = self._sock.bind_to_random_port(f"tcp://{bind}")
        except zmq.ZMQError as exc:
            self._sock.close()
            self._ctx.term()
            raise OSError(f"data-transfer port tcp://{bind}:{port}: {exc}") from None
        self.bind = bind
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="team1k-transfer", daemon=True)

    @property
    def uri(self) -> str:
        return f"tcp://{self.bind}:{self.port}"

    @property
    def alive(self) -> bool:
        """Whether the thread still answers (False once it died, or was closed)."""
        return self._thread.is_alive()

    def start(self) -> FrameTransferServer:
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)
        self._sock.close()
        self._ctx.term()

    def answer(self, raw: bytes) -> list[bytes]:
        """The reply to one request (never raises: a refusal is a reply)."""
        stats = self.stats
        with stats.lock:
            stats.requests += 1
        try:
            request = parse_request(raw, self.data_dir)
            if request is None:
                return ping_reply()
            total, data, meta = read_frames(request.path, request.first, request.count)
        except (BadRequest, OSError, KeyError) as exc:
            text = str(exc) if isinstance(exc, BadRequest) else f"cannot read the capture file: {exc}"
            with stats.lock:
                stats.bad_requests += 1
                stats.last_error = text
            return error_reply(text)
        with stats.lock:
            stats.frames_sent += int(data.shape[0])
        return frames_reply(request.first, total, data, meta)

    def _serve(self) -> None:
        try:
            self._serve_forever()
        except Exception as exc:  # the port is gone: say so, DATA:URI empties
            log.exception("data-transfer port %s died", self.uri)
            with self.stats.lock:
                self.stats.last_error = f"the data-transfer port died: {exc}"

    def _serve_forever(self) -> None:
        import zmq

        poller = zmq.Poller()
        poller.register(self._sock, zmq.POLLIN)
        while not self._stop.is_set():
            if not dict(poller.poll(200)):
                continue
            try:
                parts = self._sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                continue
            except zmq.ZMQError as exc:  # the context is closing
                log.debug("transfer: %s", exc)
                break
            # a request of several parts is malformed: answered as bad JSON
            reply = self.answer(parts[0] if len(parts) == 1 else b"\xff")
            try:
                self._sock.send_multipart(reply, copy=False)
            except zmq.ZMQError as exc:
                log.warning("transfer: reply not sent: %s", exc)
