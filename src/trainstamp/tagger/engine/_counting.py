"""Event counting: Countrate, Counter and CountBetweenMarkers."""

from __future__ import annotations

import numpy as np

from trainstamp.tagger.engine import _kernels as K
from trainstamp.tagger.engine._histograms import _to_int32
from trainstamp.tagger.engine._measurement import Measurement, tagger_of
from trainstamp.tagger.engine._tags import CHANNEL_UNUSED, MAX_BINS, check_binning


def _channel_list(tagger, channels, name="channels") -> list[int]:
    if isinstance(channels, (int, np.integer)):
        channels = [channels]
    try:
        chans = list(channels)
    except TypeError:
        raise ValueError(f"{name} must be a list of channels, got {channels!r}") from None
    if not chans:
        raise ValueError(f"{name} must not be empty")
    if len(chans) > 4096:
        raise ValueError(f"{name} has {len(chans)} entries, the limit is 4096")
    return [tagger._check_channel(c, f"{name} entry") for c in chans]


def _slot_lut(chans: list[int]) -> tuple[np.ndarray, int]:
    """Map channel -> index in ``chans`` (-1 elsewhere), as an array from ``lo``."""
    lo, hi = min(chans), max(chans)
    lut = np.full(hi - lo + 1, -1, np.int64)
    for s, c in enumerate(chans):
        if lut[c - lo] < 0:
            lut[c - lo] = s
    return lut, lo


def _spread(chans: list[int], per_unique: np.ndarray) -> np.ndarray:
    """Expand per-first-slot results to every listed channel (duplicates allowed)."""
    first = {}
    for s, c in enumerate(chans):
        first.setdefault(c, s)
    return per_unique[[first[c] for c in chans]]


class Countrate(Measurement):
    """Average rate per channel over the capture: ``getData`` in Hz, ``getCountsTotal``.

    Events reported as missed in an overflow (MissedEvents tags) are included, so the
    rate stays right when the link overflows.
    """

    def __init__(self, tagger, channels):
        t = tagger_of(tagger)
        super().__init__(tagger)
        self._chans = _channel_list(t, channels)
        self._lut, self._lo = _slot_lut(self._chans)
        self._counts = np.zeros(len(self._chans), np.int64)
        self._activate()

    def _clear(self):
        self._counts[:] = 0

    def _accumulate(self, times, chans, seg, lo, hi):
        K.count_channels(chans, self._lut, self._lo, self._counts)
        if seg.missed_chans.shape[0]:
            sel = self._missed  # the reports inside the capture window
            for c, n in zip(
                seg.missed_chans[sel].tolist(), seg.missed_counts[sel].tolist(), strict=True
            ):
                k = c - self._lo
                if 0 <= k < self._lut.shape[0] and self._lut[k] >= 0:
                    self._counts[self._lut[k]] += n

    def getCountsTotal(self) -> np.ndarray:
        """Events per channel since the last clear (int64)."""
        with self._lock():
            return _spread(self._chans, self._counts.copy())

    def getData(self) -> np.ndarray:
        """Average rate per channel in Hz (0 before any capture time has passed)."""
        with self._lock():
            if self._capture <= 0:
                return np.zeros(len(self._chans), np.float64)
            return _spread(self._chans, self._counts / (self._capture * 1e-12))


class Counter(Measurement):
    """Counts per channel in consecutive bins of ``binwidth`` ps, the last ``n_values`` kept.

    Bins are aligned to the start of the capture. A bin enters the buffer once the
    stream has passed its end; ``getData(rolling=True)`` gives the oldest bin first
    and the newest last, zero-padded at the front until ``n_values`` bins are complete.
    """

    def __init__(self, tagger, channels, binwidth=1_000_000_000, n_values=1):
        t = tagger_of(tagger)
        super().__init__(tagger)
        self._chans = _channel_list(t, channels)
        self._bw, self._nv = check_binning(binwidth, n_values, n_bins_name="n_values")
        if self._nv * len(self._chans) > MAX_BINS:
            raise ValueError(
                f"n_values * channels = {self._nv * len(self._chans)} exceeds the limit {MAX_BINS}"
            )
        self._lut, self._lo = _slot_lut(self._chans)
        nc = len(self._chans)
        self._ring = np.zeros((nc, self._nv), np.int64)
        self._open = np.zeros(nc, np.int64)
        self._total = np.zeros(nc, np.int64)
        self._activate()

    def _clear(self):
        self._ring[:] = 0
        self._open[:] = 0
        self._total[:] = 0
        self._done_bins = 0
        self._align()

    def _align(self):
        self._t0 = None  # bins start at the beginning of the next window
        self._acc = 0

    def _start(self, *, anchor=False):
        was = self._running
        super()._start(anchor=anchor)
        if not was:
            self._align()
            self._open[:] = 0

    def _accumulate(self, times, chans, seg, lo, hi):
        if self._t0 is None:
            self._t0 = lo
        bw, nv = self._bw, self._nv
        upto = (hi - self._t0) // bw  # bins < upto are complete
        base = max(self._acc, upto - nv)
        counts = np.zeros((len(self._chans), upto - base + 1), np.int64)
        K.counter_bins(times, chans, self._lut, self._lo, self._t0, bw, base, counts)
        K.count_channels(chans, self._lut, self._lo, self._total)
        if self._acc >= base:
            counts[:, self._acc - base] += self._open
        n_new = upto - self._acc
        if n_new > 0:
            first_kept = base - self._acc  # bins [acc, base) fell out of the ring anyway
            b = np.arange(base, upto)
            slots = (self._done_bins + first_kept + (b - base)) % nv
            self._ring[:, slots] = counts[:, b - base]
            self._done_bins += n_new
        self._open = counts[:, upto - base].copy()
        self._acc = upto

    def getData(self, rolling: bool = True) -> np.ndarray:
        """(channels, n_values) int32 counts; see the class docstring for the order."""
        with self._lock():
            return _to_int32(self._ordered(rolling))

    def getDataNormalized(self, rolling: bool = True) -> np.ndarray:
        """:meth:`getData` as rates in Hz."""
        with self._lock():
            return self._ordered(rolling) / (self._bw * 1e-12)

    def _ordered(self, rolling: bool) -> np.ndarray:
        nv, d = self._nv, self._done_bins
        if not rolling:
            out = self._ring.copy()
        elif d >= nv:
            out = self._ring[:, (d + np.arange(nv)) % nv]
        else:
            out = np.zeros_like(self._ring)
            out[:, nv - d :] = self._ring[:, :d]
        return _spread(self._chans, out)

    def getIndex(self) -> np.ndarray:
        """Bin start relative to the first bin, in ps: ``arange(n_values) * binwidth``."""
        self._check_alive()
        return np.arange(self._nv, dtype=np.int64) * self._bw

    def getDataTotalCounts(self) -> np.ndarray:
        """All counts per channel since the last clear, including the open bin."""
        with self._lock():
            return _spread(self._chans, self._total.copy())


#: No marker seen yet (below any tag time).
_NO_TIME = np.iinfo(np.int64).min


class CountBetweenMarkers(Measurement):
    """Counts ``click_channel`` tags in bins opened by ``begin_channel`` tags.

    A bin closes at the next ``end_channel`` tag, or, with ``end_channel`` unused, at
    the next begin tag (which opens the following bin); a bin still open when a
    ``startFor``/``startForTrains`` window ends closes with the window. After
    ``n_values`` bins the measurement is ready and stops by itself. With the marker
    channel as begin channel this counts per train: ``startForTrains(n)`` gives
    exactly n bins.

    :meth:`getBinTrainIds` (a trainstamp extension) gives the train ID of the marker
    that opened each bin, so a bin is tied to its train by the marker itself: a bin lost
    to an overflow leaves its train out instead of shifting the trains after it.
    """

    def __init__(
        self, tagger, click_channel, begin_channel, end_channel=CHANNEL_UNUSED, n_values=1000
    ):
        t = tagger_of(tagger)
        super().__init__(tagger)
        self._click = t._check_channel(click_channel, "click_channel")
        self._begin = t._check_channel(begin_channel, "begin_channel")
        end = t._check_channel(end_channel, "end_channel", allow_unused=True)
        self._end = self._begin if end == CHANNEL_UNUSED else end
        _, self._nv = check_binning(1, n_values, n_bins_name="n_values")
        self._data = np.zeros(self._nv, np.int64)
        self._widths = np.zeros(self._nv, np.int64)
        self._starts = np.zeros(self._nv, np.int64)
        self._train_ids = np.zeros(self._nv, np.int64)
        self._open_marker = (_NO_TIME, 0)  # (time, train ID) of the open bin's marker
        self._state = np.zeros(4, np.int64)
        self._activate()

    def _clear(self):
        self._data[:] = 0
        self._widths[:] = 0
        self._starts[:] = 0
        self._train_ids[:] = 0
        self._state[:] = 0

    def _reset_history(self):
        if hasattr(self, "_state"):
            self._state[1] = 0  # an open bin does not survive a gap or overflow
            self._state[3] = 0

    def _accumulate(self, times, chans, seg, lo, hi):
        k0 = int(self._state[0])
        K.between_markers(
            times, chans, self._click, self._begin, self._end,
            self._state, self._data, self._widths, self._starts,
        )  # fmt: skip
        self._label_bins(k0, int(self._state[0]), seg.marker_times, seg.marker_ids)
        if self._state[0] >= self._nv:
            self._stop()

    def _label_bins(self, k0, k1, marker_times, marker_ids):
        """Train IDs of bins ``k0..k1-1`` from the markers that opened them (in this
        segment, or the bin left open before it); 0 where no marker matches."""

        def train_at(t: int) -> int:
            j = int(np.searchsorted(marker_times, t))
            if j < marker_times.shape[0] and int(marker_times[j]) == t:
                return int(marker_ids[j])
            return self._open_marker[1] if self._open_marker[0] == t else 0

        for k in range(k0, k1):
            self._train_ids[k] = train_at(int(self._starts[k]))
        if self._state[1] == 1:  # the bin still open: remember its marker's train
            t_open = int(self._state[2])
            self._open_marker = (t_open, train_at(t_open))

    def _close_window(self, t_end):
        st = self._state
        if st[1] == 1 and st[0] < self._nv:  # the last bin ends with the window
            k = st[0]
            self._data[k] = st[3]
            self._widths[k] = t_end - st[2]
            self._starts[k] = st[2]
            if self._open_marker[0] == int(st[2]):
                self._train_ids[k] = self._open_marker[1]
            st[0] += 1
            st[1] = 0
            st[3] = 0

    def ready(self) -> bool:
        """True once all ``n_values`` bins are filled."""
        with self._lock():
            return bool(self._state[0] >= self._nv)

    def getData(self) -> np.ndarray:
        """Counts per bin (int32); unfilled bins are 0."""
        with self._lock():
            return _to_int32(self._data)

    def getBinWidths(self) -> np.ndarray:
        """Length of each bin in ps (int64); unfilled bins are 0."""
        with self._lock():
            return self._widths.copy()

    def getBinTrainIds(self) -> np.ndarray:
        """Train ID of the marker that opened each bin (int64); 0 where unknown or
        unfilled (a trainstamp extension: Swabian's class has no train IDs)."""
        with self._lock():
            return self._train_ids.copy()

    def getIndex(self) -> np.ndarray:
        """Tag time (ps) of the begin marker of each bin (int64); unfilled bins are 0."""
        with self._lock():
            return self._starts.copy()
