"""The lifecycle every measurement shares, and SynchronizedMeasurements.

A measurement runs as soon as it is created. While running it sees every tag whose
time lies in its capture window; the window opens at the stream time of ``start()``
(or at a marker tag, for ``startForTrains``) and closes at ``stop()``, at the end of a
``startFor`` duration or after the requested number of trains. Windows are half-open
``[begin, end)`` in tag time, so a result never depends on how the stream was cut into
blocks. The tagger calls :meth:`Measurement._feed` with its lock held; every public
method takes the same lock, so readers on other threads see whole blocks only.
"""

from __future__ import annotations

import threading

import numpy as np

from trainstamp.tagger.engine._tagger import Segment, TimeTaggerVirtual
from trainstamp.tagger.engine._tags import TaggerFreedError, as_int, check_duration
from trainstamp.trainid import SOURCE_JUMP_TRAINS


def resolve_tagger(tagger):
    """Return ``(tagger, sync_group)`` for a tagger or a SynchronizedMeasurements proxy."""
    if isinstance(tagger, _SyncTaggerProxy):
        return tagger._tagger, tagger._sync
    if isinstance(tagger, TimeTaggerVirtual):
        return tagger, None
    raise ValueError(f"tagger must be a TimeTaggerVirtual, got {type(tagger).__name__}")


def tagger_of(tagger) -> TimeTaggerVirtual:
    """The live tagger behind ``tagger`` (a tagger or a sync proxy); raises if freed."""
    t, _ = resolve_tagger(tagger)
    t._check_alive()
    return t


#: A marker this many trains before ``first_train_id`` means the train source restarted.
_RESTART_TRAINS = SOURCE_JUMP_TRAINS


class Measurement:
    """Base of all measurements: start/stop/startFor/startForTrains and capture time."""

    def __init__(self, tagger):
        self._tagger, sync = resolve_tagger(tagger)
        self._tagger._check_alive()
        self._alive = True
        self._done = threading.Event()
        self._running = False
        self._t_start: int | None = None  # None while waiting for the first data/marker
        self._t_stop: int | None = None
        self._duration: int | None = None  # startFor duration not yet anchored
        self._trains_left: int | None = None  # startForTrains: markers still to pass
        self._waiting_marker = False
        self._min_train = 0  # startForTrains(first_train_id=...): earliest opening train
        self._capture = 0
        self._first_train = 0
        self._last_train = 0
        self._sync = sync

    def _activate(self) -> None:
        """Register with the tagger and start, as Swabian measurements do on creation.

        Subclasses call this at the end of ``__init__`` once their state exists.
        """
        with self._tagger._lock:
            self._tagger._register_measurement(self)
            self._clear_all()
            if self._sync is not None:
                self._sync.registerMeasurement(self)
            else:
                self._start()

    # -------------------------------------------------------------- public
    def start(self) -> None:
        """Start (or resume) accumulating from the current stream time, without clearing."""
        with self._lock():
            self._start()

    def startFor(self, capture_duration, clear: bool = True) -> None:
        """Accumulate for ``capture_duration`` ps of tag time, then stop by itself."""
        d = check_duration(capture_duration)
        with self._lock():
            if clear:
                self._clear_all()
            self._start(anchor=True)
            if self._t_start is None:
                self._duration = d
            else:
                self._t_stop = self._t_start + d

    def startForTrains(self, n_trains, clear: bool = True, *, first_train_id=None) -> None:
        """Accumulate over ``n_trains`` whole trains, from the next marker tag on.

        The window opens at the next marker tag and closes at the marker ``n_trains``
        markers later; :meth:`getTrainRange` then gives the first and last train ID.
        With ``first_train_id`` the window opens instead at the first marker whose train
        ID is at least ``first_train_id`` (or unknown, 0), so a caller who knows the
        train in force (the TimeServer's latest tick) gets those trains even while the
        tag stream still runs behind it.
        """
        n = as_int(n_trains, "n_trains")
        if n <= 0 or n > (1 << 31):
            raise ValueError(f"n_trains must be in 1..{1 << 31}, got {n}")
        first = 0 if first_train_id is None else as_int(first_train_id, "first_train_id")
        if first < 0:
            raise ValueError(f"first_train_id must be >= 0, got {first}")
        with self._lock():
            if self._tagger.getMarkerChannel() is None:
                raise ValueError(
                    "startForTrains needs a tagger with a marker_channel; this one has none"
                )
            if clear:
                self._clear_all()
            self._start(anchor=True)
            self._t_start = None
            self._waiting_marker = True
            self._min_train = first
            self._trains_left = n

    def stop(self) -> None:
        """Stop accumulating; data stay readable."""
        with self._lock():
            self._stop()

    def abort(self) -> None:
        """Stop and discard the data at once (Swabian's abort; here as safe as stop)."""
        with self._lock():
            self._stop()
            self._clear_all()

    def clear(self) -> None:
        """Discard data, capture time and train range; a running measurement keeps running."""
        with self._lock():
            self._clear_all()

    def isRunning(self) -> bool:
        """True while accumulating (including while waiting for the first marker)."""
        with self._lock():
            return self._running

    def waitUntilFinished(self, timeout=-1) -> bool:
        """Wait until the measurement stops; ``timeout`` in ms, negative = forever.

        Returns True if it has stopped. Waits without holding the tagger lock.
        """
        self._check_alive()
        t = as_int(timeout, "timeout")
        return self._done.wait(None if t < 0 else t / 1000.0)

    def getCaptureDuration(self) -> int:
        """Tag time (ps) accumulated since the last clear."""
        with self._lock():
            return int(self._capture)

    def getTrainRange(self) -> tuple[int, int] | None:
        """First and last train ID covered by the data, or None if no train is known."""
        with self._lock():
            if self._first_train <= 0:
                return None
            return (int(self._first_train), int(self._last_train))

    def free(self) -> None:
        """Detach from the tagger; later calls raise TaggerFreedError."""
        with self._tagger._lock:
            if self._alive:
                if self._sync is not None:
                    self._sync._forget(self)
                self._tagger._unregister_measurement(self)
                self._detach()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.free()

    # ------------------------------------------------------------ internals
    def _detach(self) -> None:
        self._alive = False
        self._running = False
        self._done.set()

    def _check_alive(self) -> None:
        if not self._alive or not self._tagger._alive:
            raise TaggerFreedError(f"{type(self).__name__} has been freed (or its tagger has)")

    def _lock(self):
        self._check_alive()
        return self._tagger._lock

    def _start(self, *, anchor: bool = False) -> None:
        """Open a capture window at the current stream time.

        A plain ``start()`` of a measurement already running without an end keeps its
        window; ``anchor`` (startFor, startForTrains) always opens a new one.
        """
        unbounded = self._t_stop is None and not self._waiting_marker and self._duration is None
        if self._running and unbounded and not anchor:
            return
        self._running = True
        self._done.clear()
        self._t_start = self._tagger._now
        self._t_stop = None
        self._duration = None
        self._trains_left = None
        self._waiting_marker = False
        self._reset_history()
        if self._first_train <= 0:
            self._first_train = self._tagger._last_train_id
            self._last_train = self._first_train

    def _stop(self) -> None:
        self._running = False
        self._done.set()

    def _clear_all(self) -> None:
        self._capture = 0
        self._first_train = self._tagger._last_train_id if self._running else 0
        self._last_train = self._first_train
        self._reset_history()
        self._clear()

    def _feed(self, seg: Segment) -> None:
        """Take the part of a segment that lies in the capture window.

        Time windows are ``[start, stop)`` in tag time. A window opened or closed by a
        marker tag starts at that marker and ends just before the closing marker in
        stream order, so tags at the same time as a marker fall on the side where the
        stream put them, however it is cut into blocks.
        """
        if not self._running:
            return
        if seg.reset:
            self._reset_history()
        times, chans = seg.times, seg.chans
        lo = seg.t_begin if self._t_start is None else max(self._t_start, seg.t_begin)
        mt, mid = seg.marker_times, seg.marker_ids
        m0 = 0
        i0 = None  # index of an opening marker in this segment
        i1 = None  # index of a closing marker in this segment
        if self._waiting_marker:
            j = 0
            if self._min_train > 0:  # markers of earlier trains do not open the window
                # (an ID far below it means the train source restarted: open there)
                ok = np.flatnonzero((mid >= self._min_train) | (mid <= 0)
                                    | (mid < self._min_train - _RESTART_TRAINS))
                j = int(ok[0]) if ok.shape[0] else mt.shape[0]
            if j >= mt.shape[0]:
                return
            lo = int(mt[j])
            i0 = None
            for k in range(j + 1):  # the j-th marker tag, in stream order
                i0 = self._marker_index(times, chans, int(mt[k]), after=i0)
            self._t_start = lo
            self._waiting_marker = False
            self._first_train = int(mid[j])
            self._last_train = self._first_train
            m0 = j + 1
        elif self._t_start is None:
            self._t_start = lo
        if self._duration is not None:
            self._t_stop = self._t_start + self._duration
            self._duration = None
        n_marks = mt.shape[0]
        if self._trains_left is not None:
            k = m0 + self._trains_left - 1  # index of the closing marker in this segment
            if k < mt.shape[0]:
                self._t_stop = int(mt[k])
                i1 = self._marker_index(times, chans, self._t_stop, after=i0)
                n_marks = k
                self._trains_left = None
            else:
                self._trains_left -= mt.shape[0] - m0
        hi = seg.t_end if self._t_stop is None else min(seg.t_end, self._t_stop)
        if hi >= lo:
            if i0 is None:
                i0 = 0 if lo <= seg.t_begin else int(np.searchsorted(times, lo, "left"))
            if i1 is None:
                bounded = self._t_stop is not None and self._t_stop <= seg.t_end
                i1 = int(np.searchsorted(times, hi, "left")) if bounded else times.shape[0]
                if bounded:
                    n_marks = int(np.searchsorted(mt, hi, "left"))
            self._capture += hi - lo
            mts = seg.missed_times
            if mts.shape[0]:  # missed-event reports follow the same window as tags
                m_lo = 0 if lo <= seg.t_begin else int(np.searchsorted(mts, lo, "left"))
                closed = self._t_stop is not None and self._t_stop <= seg.t_end
                m_hi = int(np.searchsorted(mts, hi, "left")) if closed else mts.shape[0]
                self._missed = slice(m_lo, m_hi)
            else:
                self._missed = slice(0, 0)
            self._accumulate(times[i0:i1], chans[i0:i1], seg, lo, hi)
            ids = mid[int(np.searchsorted(mt[:n_marks], lo, "left")) : n_marks]
            if ids.shape[0]:
                if self._first_train <= 0:
                    self._first_train = int(ids[0])
                self._last_train = int(ids[-1])
        if self._running and self._t_stop is not None and seg.t_end >= self._t_stop:
            self._close_window(self._t_stop)
            self._stop()

    def _marker_index(self, times, chans, t: int, after: int | None = None) -> int:
        """Index of the marker tag at time ``t`` (the first one after ``after``)."""
        i = int(np.searchsorted(times, t, "left"))
        if after is not None:
            i = max(i, after + 1)
        mc = self._tagger._marker
        while chans[i] != mc:
            i += 1
        return i

    # ---------------------------------------------------- subclass hooks
    def _clear(self) -> None:
        """Reset accumulated data."""

    def _reset_history(self) -> None:
        """Forget tags kept from earlier blocks (a new capture interval or an overflow)."""

    def _close_window(self, t_end: int) -> None:
        """The capture window has reached its end at ``t_end`` (startFor, trains)."""

    def _accumulate(self, times, chans, seg: Segment, lo: int, hi: int) -> None:
        """Add the tags ``times``/``chans`` (all in ``[lo, hi)``) to the data."""
        raise NotImplementedError


class _SyncTaggerProxy:
    """Pass this instead of a tagger to create measurements inside a sync group."""

    def __init__(self, tagger: TimeTaggerVirtual, sync: SynchronizedMeasurements):
        self._tagger = tagger
        self._sync = sync

    def __getattr__(self, name):
        return getattr(self._tagger, name)


class SynchronizedMeasurements:
    """Start, stop and clear a group of measurements at the same stream time.

    Measurements created with :meth:`getTagger` (or added with
    :meth:`registerMeasurement`) share one capture window exactly, because the group
    acts on all of them under the tagger lock, between two blocks.
    """

    def __init__(self, tagger):
        self._tagger, _ = resolve_tagger(tagger)
        self._tagger._check_alive()
        self._members: list[Measurement] = []

    def getTagger(self):
        """A tagger stand-in: measurements created with it join this group, stopped."""
        return _SyncTaggerProxy(self._tagger, self)

    def registerMeasurement(self, measurement: Measurement) -> None:
        """Add a measurement of the same tagger to the group (it is stopped)."""
        if not isinstance(measurement, Measurement):
            raise ValueError(f"expected a measurement, got {type(measurement).__name__}")
        if measurement._tagger is not self._tagger:
            raise ValueError("measurement belongs to another tagger")
        with self._tagger._lock:
            measurement._check_alive()
            measurement._stop()
            measurement._sync = self
            if measurement not in self._members:
                self._members.append(measurement)

    def unregisterMeasurement(self, measurement: Measurement) -> None:
        """Remove a measurement from the group (it keeps its state)."""
        with self._tagger._lock:
            self._forget(measurement)

    def _forget(self, measurement) -> None:
        if measurement in self._members:
            self._members.remove(measurement)
            measurement._sync = None

    def _each(self, fn) -> None:
        with self._tagger._lock:
            self._tagger._check_alive()
            for m in list(self._members):
                if m._alive:
                    fn(m)

    def start(self) -> None:
        self._each(lambda m: m.start())

    def startFor(self, capture_duration, clear: bool = True) -> None:
        d = check_duration(capture_duration)
        self._each(lambda m: m.startFor(d, clear=clear))

    def startForTrains(self, n_trains, clear: bool = True, *, first_train_id=None) -> None:
        self._each(lambda m: m.startForTrains(n_trains, clear=clear,
                                              first_train_id=first_train_id))

    def stop(self) -> None:
        self._each(lambda m: m.stop())

    def clear(self) -> None:
        self._each(lambda m: m.clear())

    def isRunning(self) -> bool:
        with self._tagger._lock:
            return any(m._running for m in self._members if m._alive)

    def waitUntilFinished(self, timeout=-1) -> bool:
        """Wait for every member; ``timeout`` in ms for the whole group, negative = forever."""
        import time

        t = as_int(timeout, "timeout")
        deadline = None if t < 0 else time.monotonic() + t / 1000.0
        for m in list(self._members):
            left = -1 if deadline is None else max(0, int((deadline - time.monotonic()) * 1000))
            if not m.waitUntilFinished(left):
                return False
        return True
