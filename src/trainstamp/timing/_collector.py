"""The ``timeserver`` stream of :func:`~trainstamp.plans.train_fly`: every TimeServer
tick, one event per train, collected in event pages while the fly runs.

The ticks come from the Channel Access monitor on the TimeServer's ``ID`` or from its
tick broadcaster (TCP, the ASCII train-ID protocol); the other streams of a fly take
their train IDs from these ticks (the tagger's bins) or are checked against them.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
from ophyd.status import Status

from trainstamp.plans._collectors import Collector, id_keys, page
from trainstamp.timing import suspenders
from trainstamp.timing.feed import TrainFeed
from trainstamp.trainid import TRAIN_ID_KEY, TRAIN_ID_STATUS_KEY

__all__ = ["TickCollector"]

log = logging.getLogger(__name__)

#: Seconds ``stage`` waits for the broadcaster to accept the connection.
FEED_CONNECT_TIMEOUT = 5.0


class TickCollector(Collector):
    """Every TimeServer tick from ``stage`` (or ``kickoff``) until ``num_trains`` ticks
    have come.

    With ``hold`` set it keeps going past ``num_trains`` until :meth:`finish_at` names
    the last train wanted, so the ticks cover every train the other streams recorded.

    The ticks come from the Channel Access monitor on the TimeServer's ``ID``, or,
    with ``feed_uri``, from the TimeServer's own tick broadcaster (TCP, the ASCII
    train-ID protocol). A CA monitor may skip an update when the client is busy
    (observed here: about 1 in 150 at 100 Hz on a loaded machine), so a lossless
    record of every tick needs the broadcaster; ``<timeserver>_tick_time`` is then the
    receive time rather than the tick time.

    Parameters
    ----------
    timeserver : TimeServer
        Its ``train_id`` signal is monitored; each new whole ID above 0 is one tick.
    num_trains : int
        Ticks to record.
    timeout_s : float
        Seconds without a tick after which ``complete`` fails.
    feed_uri : str, optional
        ``tcp://host:port`` of the TimeServer's broadcaster (as its IOC publishes it in
        ``BROADCAST_URI``: :meth:`~trainstamp.timing.device.TimeServer.collector`).
    feed_fallback : bool
        If the broadcaster cannot be reached at ``stage``, take the ticks from the CA
        monitor (with a warning; ``feed_uri`` is then None) rather than fail.
    """

    def __init__(self, timeserver: Any, num_trains: int, *, name: str | None = None,
                 timeout_s: float = 5.0, feed_uri: str | None = None,
                 feed_fallback: bool = False) -> None:
        super().__init__(name or f"{timeserver.name}_ticks", timeserver)
        self.feed_uri = feed_uri
        self.feed_fallback = feed_fallback
        self._feed = None
        self.num_trains = num_trains
        self.timeout_s = timeout_s
        self._lock = threading.Lock()
        self._ids: list[int] = []
        self._times: list[float] = []
        self._taken = 0
        self._last = 0
        self._cid = None
        self._watch: threading.Thread | None = None
        self._until: int | None = None
        self._ticking_cid = None
        self._holding = False
        self.hold = False

    def finish_at(self, train_id: int) -> None:
        """Keep recording until a tick at or above ``train_id`` (then finish)."""
        with self._lock:
            self._until, self.hold = int(train_id), False
            done = bool(self._ids) and self._ids[-1] >= self._until
        if done:
            self._stop_monitor()
            self._finish()

    def _full(self) -> bool:
        if self.hold or len(self._ids) < self.num_trains:
            return False
        return self._until is None or self._ids[-1] >= self._until

    def _on_id(self, value=None, timestamp=None, **kwargs) -> None:
        try:
            number = float(value)
        except (TypeError, ValueError):
            return
        if not number.is_integer() or number <= 0 or int(number) == self._last:
            return
        with self._lock:
            if self._done is None or self._done.done:
                return
            self._last = int(number)
            self._ids.append(int(number))
            self._times.append(float(timestamp or time.time()))
            full = self._full()
        if full:
            self._stop_monitor()
            self._finish()

    def ids_from(self, train_id: int) -> list[int]:
        """The ticks recorded so far at or after ``train_id``."""
        with self._lock:
            ids = list(self._ids)
        i = int(np.searchsorted(np.asarray(ids, dtype=np.int64), train_id, "left"))
        return ids[i:]

    def _on_feed(self, train_id: int, recv_ns: int) -> None:
        self._on_id(value=train_id, timestamp=recv_ns / 1e9)

    def _on_ticking(self, value=None, **kwargs) -> None:
        """The TimeServer stopped vouching for its ticks (not ON, ``ID`` in alarm or
        disconnected): a fly cannot rewind and resume part-way, so it fails now and says
        why, instead of recording unvouched IDs."""
        if value or self._done is None or self._done.done:
            return
        why = getattr(self.timeserver, "health", "")
        if not why:
            # Only late (a busy client, a slow network): the ticks themselves still
            # come, and the watchdog fails the fly if they stop for ``timeout_s``.
            return
        self._stop_monitor()
        where = getattr(self.timeserver, "prefix", "") or self.timeserver.name
        self._finish(RuntimeError(
            f"TimeServer {where} gave no valid train ID during the fly ({why}) after "
            f"{len(self._ids)} of {self.num_trains} ticks; a fly records consecutive "
            "trains and cannot resume part-way: run it again once the TimeServer is ON"))

    def _stop_monitor(self) -> None:
        cid, self._ticking_cid = self._ticking_cid, None
        if cid is not None:
            self.timeserver.ticking.unsubscribe(cid)
        cid, self._cid = self._cid, None
        if cid is not None:
            self.timeserver.train_id.unsubscribe(cid)
        feed, self._feed = self._feed, None
        if feed is not None:
            feed.stop()

    def stage(self) -> list[Any]:
        """Start recording ticks now (before the other devices start), so the stream
        covers every train they record, even ones they buffered before kickoff."""
        self._stop_monitor()
        with self._lock:
            self._ids, self._times, self._taken = [], [], 0
            self._last = int(self.timeserver.train_id.get() or 0)  # the tick already in force
            self._done = Status(obj=self)
        if self.feed_uri is not None:
            self._feed = TrainFeed(self.feed_uri, self._on_feed, name=f"{self.name}-feed").start()
            if not self._feed.wait_connected(FEED_CONNECT_TIMEOUT):
                self._stop_monitor()
                if not self.feed_fallback:
                    raise TimeoutError(f"{self.name}: cannot connect to the tick feed "
                                       f"{self.feed_uri}")
                log.warning("%s: cannot connect to the tick feed %s within %g s: the ticks "
                            "come from the CA monitor on ID, which may skip one at high "
                            "rates", self.name, self.feed_uri, FEED_CONNECT_TIMEOUT)
                self.feed_uri = None
        if self.feed_uri is None:
            self._cid = self.timeserver.train_id.subscribe(self._on_id, run=False)
        if not self._holding:
            suspenders.hold_off(self.timeserver)  # see trainstamp.timing.suspenders
            self._holding = True
        if hasattr(self.timeserver, "ticking"):
            self._ticking_cid = self.timeserver.ticking.subscribe(self._on_ticking, run=True)
        self._watch = threading.Thread(target=self._watchdog, daemon=True,
                                       name=f"{self.name}-watchdog")
        self._watch.start()
        return [self]

    def unstage(self) -> list[Any]:
        """Fail a fly still pending, stop the monitor (or feed) and its watchdog, and
        let the TimeServer's suspenders judge it again."""
        super().unstage()
        if self._holding:
            self._holding = False
            suspenders.release(self.timeserver)
        return [self]

    def kickoff(self) -> Status:
        if (self._cid is None and self._feed is None) or self._done is None or self._done.done:
            self.stage()
        status = Status(obj=self)
        status.set_finished()
        return status

    def _watchdog(self) -> None:
        seen, since = -1, time.monotonic()
        while self._done is not None and not self._done.done:
            n = len(self._ids)
            if n != seen:
                seen, since = n, time.monotonic()
            elif time.monotonic() - since > self.timeout_s:
                self._stop_monitor()
                self._finish(TimeoutError(f"{self.name}: no tick for {self.timeout_s} s "
                                          f"after {n} of {self.num_trains}"))
            time.sleep(0.05)

    def stop(self, *, success: bool = False) -> None:
        self._stop_monitor()
        self._finish(None if success else RuntimeError(f"{self.name} stopped"))

    def close(self) -> None:
        self._stop_monitor()

    def describe_collect(self) -> dict[str, Any]:
        source = f"{self.timeserver.name}:tick" if self.feed_uri is None else self.feed_uri
        keys = id_keys(source)
        keys[f"{self.timeserver.name}_tick_time"] = {"source": source, "dtype": "number",
                                                     "shape": [], "units": "s"}
        return keys

    def collect_pages(self) -> Iterator[dict[str, Any]]:
        with self._lock:
            ids, times = self._ids[self._taken:], self._times[self._taken:]
            self._taken = len(self._ids)
        if ids:
            yield page({TRAIN_ID_KEY: ids, TRAIN_ID_STATUS_KEY: ["OK"] * len(ids),
                         f"{self.timeserver.name}_tick_time": times}, times)
