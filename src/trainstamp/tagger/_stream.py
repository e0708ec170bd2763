"""The server's side of the tag link: the processor thread behind the listener.

The listener, :class:`~trainstamp.tagger._link.TaggerLink`, connects to the tagger and
hands tag blocks to a bounded queue. :class:`TagService` (the *processor*) owns the
marker mapper and the set of engine taggers (one per Pyro client tagger plus the
IOC's). It takes blocks and train ticks from one queue, pairs markers with train IDs,
and calls ``process(tags, marker_train_ids)`` on every registered tagger, in stream
order, on one thread. When the queue is full the listener stops reading, so TCP pushes
back and the tagger's own overflow marking takes over: nothing is dropped silently.

Neither thread may die silently. An exception in the processor (a bug, or input no
check foresaw) is caught per item: it is counted (``ServiceStats.faults``), its text
kept (``fault``, shown in the IOC's ``STATUS``), the blocks it held are delivered with
unknown train IDs and an ``Error`` tag in front (so every engine tagger counts an
overflow over the lost stretch instead of silently missing it), the marker mapper is
re-anchored, and processing goes on with the next item. Acquisitions of the IOC that
were running when a fault happened fail with its text. The link thread likewise
survives anything a tagger sends: an exception while reading drops the connection
(counted, ``link.faults``) and reconnects.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass

import numpy as np

from trainstamp.tagger._link import TaggerLink
from trainstamp.tagger._markers import MarkerMapper
from trainstamp.tagger._wire import TagType

log = logging.getLogger(__name__)


@dataclass
class ServiceStats:
    blocks: int = 0
    tags: int = 0
    overflows: int = 0
    missed_events: int = 0
    errors: int = 0
    process_errors: int = 0
    faults: int = 0  # processor exceptions (each caught, counted and survived)
    fault: str = ""  # the latest one's text
    dropped_ticks: int = 0  # train ticks lost because the processor queue was full
    last_tag_ps: int = 0
    last_end_ps: int = 0
    last_train_id: int = -1
    clock_restarts: int = 0  # the tagger came back with its clock behind the stream's
    reconnects: int = 0  # the link came back with the clock ahead: the stretch between is lost


class TagService:
    """Pair markers with train IDs and feed every registered engine tagger in order."""

    def __init__(self, tagger_uri: str, trains_uri: str | None = None,
                 marker_channel: int | None = None, queue_blocks: int = 512) -> None:
        self.mapper = MarkerMapper()
        self.marker_channel_override = marker_channel
        self.stats = ServiceStats()
        self.counts = np.zeros(0, np.int64)  # per channel index, rising edges only
        self._queue: queue.Queue = queue.Queue(maxsize=queue_blocks)
        self._waiting: list[tuple[np.ndarray, int, int]] = []  # blocks waiting for markers
        self._resolved: list[tuple[int, int]] = []
        # Stream time (the service's, rebased) up to which every sink has processed.
        self.delivered_ps = -(1 << 62)
        self._delivered = threading.Condition()
        # A tagger that restarts (or reconnects) begins its clock again near 0: its tags
        # are shifted to continue after the stream's end (see _rebase).
        self._rebase_next = False
        self._offset_ps = 0
        self._last_error_log = 0.0
        self._sinks: list = []
        self._sink_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tagger-processor", daemon=True)
        self.link = TaggerLink(tagger_uri, self._on_block)
        self.link.on_hello = self._on_hello
        self.hello_event = threading.Event()
        self.feed = None
        self.current_train_id = 0  # latest tick of the train feed (0: none yet)
        if trains_uri:
            from trainstamp.timing.feed import TrainFeed

            self.feed = TrainFeed(trains_uri, self._on_tick, name="tagger-server-trains")

    # -- configuration learned from the tagger -----------------------------------------
    @property
    def marker_channel(self) -> int | None:
        if self.marker_channel_override is not None:
            return self.marker_channel_override
        return None if self.link.hello is None else self.link.hello.get("marker_channel")

    @property
    def channels(self) -> list[int]:
        return [] if self.link.hello is None else list(self.link.hello.get("channels", []))

    def _on_hello(self, message: dict | None) -> None:
        chans = self.channels
        if chans and len(self.counts) < max(chans) + 1:
            self.counts = np.zeros(max(chans) + 1, np.int64)
        self._queue.put(("hello", None, 0))
        self.hello_event.set()

    # -- sinks -------------------------------------------------------------------------
    def add_sink(self, tagger) -> None:
        with self._sink_lock:
            self._sinks.append(tagger)

    def remove_sink(self, tagger) -> None:
        with self._sink_lock:
            self._sinks = [s for s in self._sinks if s is not tagger]

    @property
    def n_sinks(self) -> int:
        return len(self._sinks)

    # -- lifecycle ---------------------------------------------------------------------
    def start(self, feed_timeout: float = 2.0) -> TagService:
        """Start the processor, the train feed and then the tag link.

        The link waits (up to ``feed_timeout``) for the feed, so that the first markers
        already have their ticks.
        """
        self._thread.start()
        if self.feed is not None:
            self.feed.start()
            self.feed.wait_connected(feed_timeout)
        self.link.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self.link.stop()
        if self.feed is not None:
            self.feed.stop()
        self._thread.join(5)

    # -- producers (other threads) -----------------------------------------------------
    def _on_block(self, tags: np.ndarray, flags: int, end_time: int, arrival_ns: int) -> None:
        while not self._stop.is_set():
            try:
                self._queue.put(("block", (tags, end_time), arrival_ns), timeout=0.2)
                return
            except queue.Full:
                continue  # back-pressure: the tagger's overflow marking takes over

    def _on_tick(self, train_id: int, recv_ns: int) -> None:
        # The train in force now, ahead of the tag stream (whose markers wait for
        # their pairing): acquisitions of N trains start from it.
        self.current_train_id = train_id
        try:
            self._queue.put_nowait(("tick", train_id, recv_ns))
        except queue.Full:
            self.stats.dropped_ticks += 1

    # -- the processor thread ----------------------------------------------------------
    @property
    def backlog(self) -> int:
        """Items waiting for the processor (blocks and ticks); see ``queue_limit``."""
        return self._queue.qsize()

    @property
    def queue_limit(self) -> int:
        return self._queue.maxsize

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._step()
            except Exception as exc:  # never stop processing: count, surface, go on
                self._recover(exc)

    def _step(self) -> None:
        try:
            kind, payload, when = self._queue.get(timeout=0.05)
        except queue.Empty:
            self._flush(time.time_ns())
            return
        if kind == "tick":
            self.mapper.add_tick(payload, when)
        elif kind == "hello":
            self._flush(time.time_ns(), force=True)
            self.mapper.reset_anchor()
            self.mapper.set_link((self.link.hello or {}).get("stream_latency_ps"))
            self._rebase_next = True
        else:
            self._accept(*payload, when)
        self._flush(time.time_ns())

    def _recover(self, exc: Exception) -> None:
        """After a processor exception: flag what it held as lost, re-anchor, go on."""
        st = self.stats
        st.faults += 1
        st.fault = f"{type(exc).__name__}: {exc}"[:200]
        log.error("tagger processor fault %d: %s", st.faults, st.fault, exc_info=exc)
        waiting, self._waiting, self._resolved = self._waiting, [], []
        self.mapper.drop_pending()
        self.mapper.reset_anchor()
        for tags, n, end_time in waiting:
            try:
                self._deliver(_with_error_tag(tags), np.zeros(n, np.int64), end_time)
            except Exception:  # the block itself is what fails: it is lost, and counted
                st.process_errors += 1

    def _rebase(self, tags: np.ndarray, end_time: int) -> tuple[np.ndarray, int]:
        """Tag times of a new connection, continuing the stream's.

        Every consumer (the engine's measurements, the marker pairing) needs time that
        only goes forward. After a hello the first block sets the shift: none if the
        tagger's clock is still ahead of the stream (a reconnect), else enough to put
        the block just after the stream's end (the tagger restarted). Either way that
        block gets an ``Error`` tag in front, so a measurement across the break sees the
        stretch as lost: what the tagger sent while the link was down never arrived.
        """
        gap = False
        if self._rebase_next:
            self._rebase_next = False
            first = int(tags["time"][0]) if len(tags) else int(end_time)
            last = self.stats.last_end_ps
            # Whatever the tagger sent while the link was down is gone, restart or not.
            gap = self.stats.blocks > 0
            self._offset_ps = last + 1 - first if gap and first <= last else 0
            if self._offset_ps:
                self.stats.clock_restarts += 1
                log.warning("the tagger's clock restarted (%d ps, the stream was at %d ps): "
                            "its tags continue from there", first, last)
            elif gap:
                self.stats.reconnects += 1
                log.warning("the tag link reconnected: the stream from %d ps to %d ps is "
                            "lost and flagged", last, first)
        if self._offset_ps:
            tags = tags.copy()
            tags["time"] += self._offset_ps
            end_time = int(end_time) + self._offset_ps
        return (_with_error_tag(tags) if gap else tags), end_time

    def _accept(self, tags: np.ndarray, end_time: int, arrival_ns: int) -> None:
        tags, end_time = self._rebase(tags, end_time)
        self.mapper.add_block(arrival_ns, end_time)
        mc = self.marker_channel
        is_marker = np.zeros(len(tags), bool)
        if mc is not None and len(tags):
            is_marker = (tags["channel"] == mc) & (tags["type"] == TagType.TimeTag)
            if is_marker.any():
                self.mapper.add_markers(tags["time"][is_marker], arrival_ns,
                                        int(tags["time"][-1]))
        self._waiting.append((tags, int(np.count_nonzero(is_marker)), end_time))

    def _flush(self, now_ns: int, force: bool = False) -> None:
        if not self._waiting:
            return
        resolved = self.mapper.resolve(now_ns + (10**15 if force else 0))
        self._resolved += resolved
        while self._waiting and len(self._resolved) >= self._waiting[0][1]:
            tags, n, end_time = self._waiting.pop(0)
            ids = np.array([i for _, i in self._resolved[:n]], np.int64)
            del self._resolved[:n]
            self._deliver(tags, ids, end_time)

    def _deliver(self, tags: np.ndarray, train_ids: np.ndarray, end_time: int) -> None:
        st = self.stats
        st.blocks += 1
        st.tags += len(tags)
        if len(tags):
            st.last_tag_ps = int(tags["time"][-1])
            ch = tags["channel"]
            if tags["type"].any():  # stream events (TimeTag is 0): rare
                special = tags["type"] != TagType.TimeTag
                types = tags["type"][special]
                st.overflows += int(np.count_nonzero(types == TagType.OverflowBegin))
                st.errors += int(np.count_nonzero(types == TagType.Error))
                st.missed_events += int(tags["missed_events"][special][
                    types == TagType.MissedEvents].sum())
                ch = ch[~special]
            n = len(self.counts)
            if n:  # rising-edge counts; anything outside 1..n-1 lands in bins 0 and n
                self.counts[1:] += np.bincount(np.clip(ch, 0, n), minlength=n + 1)[1:n]
        if len(train_ids):
            st.last_train_id = int(train_ids[-1])
        # the engine's convention: 0 is "unknown train"
        engine_ids = np.where(train_ids < 0, 0, train_ids)
        end = max(end_time, st.last_tag_ps)
        st.last_end_ps = end
        with self._sink_lock:
            sinks = list(self._sinks)
        try:
            self._process_sinks(sinks, tags, engine_ids, end)
        finally:
            with self._delivered:
                self.delivered_ps = end
                self._delivered.notify_all()

    def wait_delivered(self, tagger_ps: int, timeout: float) -> bool:
        """Wait until every sink has processed the stream up to ``tagger_ps``.

        ``tagger_ps`` is on the tagger's own clock (as in a control reply's
        ``effective_ps``). True once there; False after ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        with self._delivered:
            while self.delivered_ps < tagger_ps + self._offset_ps:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._delivered.wait(left)
        return True

    def _process_sinks(self, sinks, tags: np.ndarray, engine_ids: np.ndarray, end: int) -> None:
        st = self.stats
        for sink in sinks:
            try:
                sink.process(tags, engine_ids, end_time=end)
            except Exception:  # one broken consumer must not stop the others
                st.process_errors += 1
                now = time.monotonic()
                if now - self._last_error_log > 10.0:  # at most one trace per 10 s
                    self._last_error_log = now
                    log.exception("engine tagger %r failed on a block (%d failures so far)",
                                  sink, st.process_errors)



def _with_error_tag(tags: np.ndarray) -> np.ndarray:
    """``tags`` with an ``Error`` tag in front: every consumer sees the stretch as lost."""
    err = np.zeros(1, tags.dtype)
    err["type"] = TagType.Error
    if not len(tags):
        return tags  # nothing was lost but stream time, which the block still advances
    err["time"] = tags["time"][0]
    return np.concatenate([err, tags])
