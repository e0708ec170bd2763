"""The attached form of the bridge: a running beamline's ticks and frames, no RunEngine.

- Ticks: the TimeServer's broadcaster (the IOC publishes it in ``BROADCAST_URI``), read
  with :class:`~trainstamp.timing.feed.TrainFeed`, the same lossless TCP stream the
  emulators take their triggers from; ``tickTime`` is when the tick arrived here.
- Frames: the detector's capture file (``CAPTURE:FULL_PATH``), tailed every
  ``poll_period_s`` seconds (HDF5, SWMR; the IOC's writer is never waited on): new rows
  of the per-frame datasets become parts, the image is read only when the train is sent.
  A file already open when the bridge attaches is tailed from its end; a file opened
  later (the next run) from its first frame.

- Counts (with ``tagger_uri``, the tagger IOC's ``PYRO_URI``): the bridge's own
  ``CountBetweenMarkers`` on the tagger server, its begin channel the marker channel, in
  windows of ``window`` trains one after the other; each bin carries the train ID of the
  marker that opened it (``getBinTrainIds``). Between two windows a train or two may
  have no counts: such a train goes without the tagger source.

Every train sent has the tick and the frame; ticks without a frame (between runs) are
dropped as incomplete. A train waits for its counts until a later train has all three
sources or for the bridge's ``max_wait_s`` (``trainstamp bridge --max-wait``, 1 s), so
the tagger never holds the stream up.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from typing import Any

import h5py

from trainstamp.bridge._core import Part, detector_source, tagger_source, timeserver_source
from trainstamp.bridge._server import Bridge, CaptureFrames
from trainstamp.detector._capture import COMPLETE, FRAME_NUMBER, TRAIN_ID
from trainstamp.timing.feed import TrainFeed

log = logging.getLogger(__name__)

__all__ = ["Attachment"]


class _Tail:
    """New rows of one capture file's per-frame datasets."""

    def __init__(self, path: str, from_end: bool) -> None:
        self.path = path
        self.file = h5py.File(path, "r", libver="latest", swmr=True)
        self.frames = CaptureFrames(path)
        self.done = self._length() if from_end else 0

    def _length(self) -> int:
        n = None
        for p in (TRAIN_ID, FRAME_NUMBER, COMPLETE):
            ds = self.file[p]
            ds.refresh()
            n = ds.shape[0] if n is None else min(n, ds.shape[0])
        return int(n or 0)

    def new_rows(self) -> list[tuple[int, int, bool]]:
        n = self._length()
        if n <= self.done:
            return []
        lo, self.done = self.done, n
        f = self.file
        return list(zip(f[TRAIN_ID][lo:n].tolist(), f[FRAME_NUMBER][lo:n].tolist(),
                        f[COMPLETE][lo:n].astype(bool).tolist(), strict=True))

    def close(self) -> None:
        self.frames.close()
        self.file.close()


class _Counts:
    """Counts per train from a ``CountBetweenMarkers`` on the tagger server (Pyro5), in
    back-to-back windows of ``window`` trains. Used from one thread only."""

    def __init__(self, uri: str, click_channel: int, window: int = 100) -> None:
        import Pyro5.api

        self.window = window
        self._module = Pyro5.api.Proxy(uri)
        self._tagger = self._module.createTimeTagger()
        marker = self._tagger.getMarkerChannel()
        if marker is None:
            raise RuntimeError(f"the tagger at {uri} announces no marker channel")
        self._m = self._module.CountBetweenMarkers(self._tagger, int(click_channel),
                                                   int(marker), n_values=window)
        self._m.startForTrains(window)
        self._taken = 0
        self._last = 0

    def new_bins(self) -> list[tuple[int, int, int]]:
        """(train ID, counts, width in ps) of the bins filled since the last call."""
        m = self._m
        running = m.isRunning()  # first: a window that ends meanwhile is read whole
        widths = [int(w) for w in m.getBinWidths()]
        filled = next((k for k, w in enumerate(widths) if w <= 0), len(widths))
        out = []
        if filled > self._taken:
            ids = [int(i) for i in m.getBinTrainIds()]
            counts = [int(c) for c in m.getData()]
            for k in range(self._taken, filled):
                if ids[k] > self._last:
                    out.append((ids[k], counts[k], widths[k]))
                    self._last = ids[k]
            self._taken = filled
        if not running:
            m.startForTrains(self.window, first_train_id=self._last + 1)
            self._taken = 0
        return out

    def close(self) -> None:
        with contextlib.suppress(Exception):  # the server went away: nothing to stop
            self._m.stop()
        for proxy in (self._m, self._tagger, self._module):
            with contextlib.suppress(Exception):
                proxy._pyroRelease()


class Attachment:
    """Feeds ``bridge`` from a running beamline: ticks from ``broadcast_uri``, frames
    from the file ``capture_path()`` names (a callable: the detector's
    ``CAPTURE:FULL_PATH``, asked every poll)."""

    def __init__(self, bridge: Bridge, broadcast_uri: str, capture_path: Any, *,
                 timeserver_name: str = "timeserver", detector_name: str = "det",
                 tagger_uri: str | None = None, tagger_name: str = "tagger",
                 click_channel: int = 1, poll_period_s: float = 0.1) -> None:
        self.bridge = bridge
        self.tick_source = timeserver_source(timeserver_name)
        self.frame_source = detector_source(detector_name)
        self.tagger_source = tagger_source(tagger_name) if tagger_uri else None
        self.tagger_uri = tagger_uri
        self.click_channel = click_channel
        self._counts: _Counts | None = None
        self._counts_retry = 0.0
        self.capture_path = capture_path
        self.poll_period_s = poll_period_s
        self.feed = TrainFeed(broadcast_uri, self._on_tick, name="bridge-ticks")
        self._tail: _Tail | None = None
        self._first_path = True
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bridge-frames", daemon=True)

    def start(self) -> Attachment:
        required = {self.tick_source, self.frame_source}
        sources = required | ({self.tagger_source} if self.tagger_source else set())
        self.bridge.reset(sources, required=required)
        self.feed.start()
        self._thread.start()
        return self

    def _on_tick(self, train_id: int, recv_ns: int) -> None:
        self.bridge.add(self.tick_source, train_id,
                        Part({"trainId": train_id, "tickTime": recv_ns / 1e9}, recv_ns))

    def _run(self) -> None:
        while not self._stop.wait(self.poll_period_s):
            try:
                self._poll()
            except Exception as exc:  # a file being replaced or removed: try again
                log.warning("capture file tail: %s", exc)
                self._close_tail()
            if self.tagger_uri:
                self._poll_counts()
            self.bridge.expire()
        if self._counts is not None:
            self._counts.close()

    def _poll_counts(self) -> None:
        try:
            if self._counts is None:
                if time.monotonic() < self._counts_retry:
                    return
                self._counts = _Counts(self.tagger_uri, self.click_channel)
                log.info("counting channel %d per train on %s", self.click_channel,
                         self.tagger_uri)
            now = time.time_ns()
            for tid, counts, width in self._counts.new_bins():
                self.bridge.add(self.tagger_source, tid, Part(
                    {"counts.counts": counts, "counts.width": width,
                     "counts.firstTrainId": tid, "counts.lastTrainId": tid}, now))
        except Exception as exc:  # the tagger server away: try again in a while
            log.warning("tagger counts: %s", exc)
            if self._counts is not None:
                self._counts.close()
            self._counts = None
            self._counts_retry = time.monotonic() + 2.0

    def _poll(self) -> None:
        path = self.capture_path() or ""
        if self._tail is not None and self._tail.path != path:
            self._close_tail()
        from_end, self._first_path = self._first_path, False
        if self._tail is None and path:
            self._tail = _Tail(path, from_end=from_end)
            log.info("tailing capture file %s from frame %d", path, self._tail.done)
        if self._tail is None:
            return
        now = time.time_ns()
        frames = self._tail.frames
        for tid, number, complete in self._tail.new_rows():
            if tid <= 0:
                continue  # a frame without a train ID is never sent under one
            self.bridge.add(self.frame_source, tid, Part(
                {"data.trainId": tid, "data.frameNumber": number, "data.complete": complete},
                now, {"data.image": lambda t=tid: frames.frame(t)}))

    def _close_tail(self) -> None:
        if self._tail is not None:
            try:
                self._tail.close()
            finally:
                self._tail = None

    def stop(self) -> None:
        self._stop.set()
        self.feed.stop()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        self._close_tail()
