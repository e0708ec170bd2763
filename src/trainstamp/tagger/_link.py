"""The listener of the tag link: one TCP connection to the tagger, kept up.

:class:`TaggerLink` connects to ``tcp://host:port`` (reconnecting with capped backoff,
:class:`~trainstamp._tcp_link.ReconnectingLink`), splits the byte stream with
:class:`~trainstamp.tagger._wire.FrameReader`, hands each tag block to its callback
(the processor's queue, :class:`~trainstamp.tagger._stream.TagService`) and answers
control requests (:meth:`TaggerLink.request`) with the tagger's replies.
"""

from __future__ import annotations

import itertools
import socket
import threading
import time
from collections.abc import Callable

import numpy as np

from trainstamp._tcp_link import ReconnectingLink
from trainstamp.tagger._wire import FrameReader, Kind, encode_message
from trainstamp.timing.feed import parse_tcp_uri

__all__ = ["TaggerLink"]


class TaggerLink(ReconnectingLink):
    """Receive tag blocks from a tagger and send it control requests."""

    def __init__(self, uri: str, on_block: Callable[[np.ndarray, int, int, int], None], *,
                 backoff_initial: float = 0.1, backoff_max: float = 2.0,
                 request_timeout: float = 3.0) -> None:
        host, port = parse_tcp_uri(uri)
        super().__init__(host, port, name="tagger-link", backoff_initial_s=backoff_initial,
                         backoff_max_s=backoff_max, rcvbuf_bytes=8 << 20)
        self.uri = uri
        self.on_block = on_block
        self.request_timeout = request_timeout
        self.reader = FrameReader()
        self.hello: dict | None = None
        self._sock: socket.socket | None = None
        self._send_lock = threading.Lock()
        self._ids = itertools.count(1)
        self._waiting: dict[int, tuple[threading.Event, list]] = {}

    def request(self, op: str, *args: object) -> object:
        """Run one control operation on the tagger; ValueError if it refuses."""
        return self.request_reply(op, *args).get("result")

    def request_reply(self, op: str, *args: object) -> dict:
        """:meth:`request`, returning the whole reply (``effective_ps`` included)."""
        sock = self._sock
        if sock is None or not self.connected:
            raise ConnectionError(f"tagger at {self.uri} is not connected")
        req_id = next(self._ids)
        done, box = threading.Event(), []
        self._waiting[req_id] = (done, box)
        try:
            data = encode_message(Kind.CONTROL, {"id": req_id, "op": op, "args": list(args)})
            with self._send_lock:
                sock.sendall(data)
            if not done.wait(self.request_timeout):
                raise TimeoutError(f"tagger did not answer {op} within {self.request_timeout} s")
        except OSError as exc:
            raise ConnectionError(f"tagger at {self.uri}: {exc}") from None
        finally:
            self._waiting.pop(req_id, None)
        reply = box[0]
        if not reply.get("ok"):
            raise ValueError(str(reply.get("error", "tagger refused the request")))
        return reply

    def _on_connect(self, sock: socket.socket) -> None:
        self._sock = sock

    def _on_disconnect(self) -> None:
        self._sock = None
        self.reader.reset()
        for done, box in list(self._waiting.values()):
            box.append({"ok": False, "error": "tagger connection lost"})
            done.set()

    def _read(self, sock: socket.socket) -> None:
        buf = bytearray(4 << 20)
        view = memoryview(buf)
        while not self.stopping:
            try:
                n = sock.recv_into(view)
            except TimeoutError:
                continue
            if n == 0:
                return
            now = time.time_ns()
            for frame in self.reader.feed(view[:n], now):
                if frame.kind == Kind.TAGS:
                    self.on_block(frame.tags, frame.flags, frame.end_time, now)
                elif frame.kind == Kind.REPLY and frame.message is not None:
                    waiter = self._waiting.get(frame.message.get("id"))
                    if waiter is not None:
                        waiter[1].append(frame.message)
                        waiter[0].set()
                elif frame.kind == Kind.HELLO:
                    self.hello = frame.message
                    self.on_hello(frame.message)

    def on_hello(self, message: dict | None) -> None:
        """Hook: the tagger (re)introduced itself (serial, channels, settings)."""
