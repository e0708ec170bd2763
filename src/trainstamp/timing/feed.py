"""A blocking train-ID feed consumer, for emulators and other hardware-side programs.

The detector and tagger emulators take their triggers from the TimeServer's broadcaster
(or any facility train-ID TCP server) with :class:`TrainFeed`: a daemon thread that
connects, splits and parses messages with :mod:`trainstamp.timing._protocol` (the same
parse path as the TimeServer's ``tcp://`` source, pause rule included), stamps each ID
with the wall clock at the time its last byte arrived, and reconnects with capped
exponential backoff. Bad messages (ID 0 among them) are counted and skipped; the log
gets the first few and then one summary line per interval.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass

from trainstamp._tcp_link import ReconnectingLink
from trainstamp.timing._core import parse_tcp_uri
from trainstamp.timing._model import RateLimit
from trainstamp.timing._protocol import BadMessage, MessageSplitter

log = logging.getLogger(__name__)


@dataclass
class FeedStats:
    """What a :class:`TrainFeed` has seen so far."""

    received: int = 0
    bad_messages: int = 0
    connects: int = 0
    last_train_id: int | None = None
    last_recv_ns: int | None = None


class TrainFeed(ReconnectingLink):
    """Consume ``tcp://host:port`` train IDs on a daemon thread.

    ``on_train(train_id, recv_ns)`` is called from the feed thread for every good
    message; ``recv_ns`` is ``time.time_ns()`` when its last byte arrived. A message
    without terminator ends after ``pause_ms`` without a byte (only until the first
    terminator on a connection; the broadcaster always terminates).
    """

    def __init__(
        self,
        uri: str,
        on_train: Callable[[int, int], None],
        *,
        backoff_initial: float = 0.1,
        backoff_max: float = 5.0,
        name: str = "train-feed",
        pause_ms: float = 25.0,
    ) -> None:
        host, port = parse_tcp_uri(uri)
        super().__init__(host, port, name=name, backoff_initial_s=backoff_initial,
                         backoff_max_s=backoff_max)
        self.uri = uri
        self.on_train = on_train
        self.stats = FeedStats()
        self.pause_ns = round(pause_ms * 1e6)
        self._log_limit = RateLimit()

    def _on_connect(self, sock: socket.socket) -> None:
        self.stats.connects += 1

    def _read(self, sock: socket.socket) -> None:
        splitter = MessageSplitter(pause_ns=self.pause_ns)
        while not self.stopping:
            deadline = splitter.deadline_ns
            wait = 0.2 if deadline is None else max(0.0, (deadline - time.monotonic_ns()) / 1e9)
            sock.settimeout(min(0.2, wait) or 1e-4)
            try:
                data = sock.recv(65536)
            except TimeoutError:
                self._deliver(splitter, splitter.flush_ids(time.monotonic_ns()))
                continue
            if not data:
                self._deliver(splitter, splitter.finish_ids())
                return
            self._deliver(splitter, splitter.feed_ids(data, time.monotonic_ns()))

    def _deliver(self, splitter: MessageSplitter, items) -> None:
        # Pauses are measured on the monotonic clock; IDs are stamped on the wall clock.
        to_wall = time.time_ns() - time.monotonic_ns()
        for train_id in items:
            if isinstance(train_id, BadMessage):
                self.stats.bad_messages += 1
                now = time.monotonic_ns()
                held = self._log_limit.summary(now)
                if held:
                    log.warning("train feed %s: %d more bad messages not logged", self.uri, held)
                if self._log_limit.hit(now):
                    log.warning("train feed %s: bad message: %s", self.uri, train_id)
                continue
            assert splitter.t_ns is not None
            recv_ns = splitter.t_ns + to_wall
            self.stats.received += 1
            self.stats.last_train_id = train_id
            self.stats.last_recv_ns = recv_ns
            self.on_train(train_id, recv_ns)
