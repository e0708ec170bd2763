"""Time-difference histograms: Correlation, Histogram and StartStop."""

from __future__ import annotations

import numpy as np

from trainstamp.tagger.engine import _kernels as K
from trainstamp.tagger.engine._measurement import Measurement, tagger_of
from trainstamp.tagger.engine._tags import CHANNEL_UNUSED, MAX_BINS, check_binning

_I32_MAX = np.iinfo(np.int32).max
_EMPTY = np.empty(0, np.int64)


def _to_int32(a: np.ndarray) -> np.ndarray:
    """int64 counts as int32, saturating instead of wrapping past 2**31 - 1."""
    return np.minimum(a, _I32_MAX).astype(np.int32)


class _PairHistogram(Measurement):
    """Counts pairs (x, y) of tags by ``dt = t_y - t_x`` into ``n_bins`` bins.

    A pair lands in bin ``(dt + offset) // binwidth`` when that is in range. The
    kernels keep the tags within reach of the block end, so pairs across block
    boundaries are counted exactly once (see :func:`._kernels.cross_stream`).
    """

    def __init__(self, tagger, x_channel, y_channel, binwidth, n_bins, offset, symmetric):
        super().__init__(tagger)
        self._bw, self._nb = check_binning(binwidth, n_bins)
        self._x = x_channel
        self._y = y_channel
        self._auto = x_channel == y_channel
        self._off = offset(self._bw * self._nb)
        self._sym = symmetric
        span = self._bw * self._nb
        self._dmax = span - 1 - self._off  # largest dt with a bin
        self._dmin = -self._off  # smallest dt with a bin
        self._hist = np.zeros(self._nb, np.int64)
        self._nx = 0
        self._ny = 0
        self._activate()

    def _clear(self):
        self._hist[:] = 0
        self._nx = 0
        self._ny = 0

    def _reset_history(self):
        self._tail_x = _EMPTY
        if not hasattr(self, "_st"):
            self._st = np.zeros(8, np.int64)
            self._bufs = tuple(np.empty(2 * K.CHUNK, np.int64) for _ in range(7))
        self._nx += int(self._st[2])
        self._ny += int(self._st[3])
        self._st[:] = 0

    def _counts(self) -> tuple[int, int]:
        return self._nx + int(self._st[2]), self._ny + int(self._st[3])

    def _accumulate(self, times, chans, seg, lo, hi):
        # A symmetric auto-correlation is the cross kernel with both channels the same
        # (each ordered pair once from each side); a same-channel Histogram is not.
        if self._auto and not self._sym:
            x = K.select_times(times, chans, self._x, self._tail_x)
            n_old = self._tail_x.shape[0]
            K.auto_pairs(x, n_old, self._bw, self._off, self._nb, self._hist, self._sym)
            self._nx += x.shape[0] - n_old
            reach = max(self._dmax, self._off if self._sym else -1)
            self._tail_x = x[np.searchsorted(x, hi - reach, "left") :].copy()
            return
        self._bufs = K.cross_stream(
            times,
            chans,
            self._x,
            self._y,
            self._bw,
            self._off,
            self._nb,
            self._hist,
            *self._bufs,
            self._st,
        )

    def getData(self) -> np.ndarray:
        """Counts per bin, int32 (saturating at 2**31 - 1)."""
        with self._lock():
            return _to_int32(self._hist)

    def getBinwidth(self) -> int:
        self._check_alive()
        return self._bw

    def getNBins(self) -> int:
        self._check_alive()
        return self._nb


class Correlation(_PairHistogram):
    """Histogram of ``t(channel_2) - t(channel_1)`` over both signs, g2 on request.

    Bins are centred on ``getIndex()`` and symmetric around 0: bin i covers
    ``[c_i - binwidth/2, c_i + binwidth/2)`` with ``c_i = (i - (n_bins - 1)/2) * binwidth``.
    With ``channel_2`` unused (or equal to ``channel_1``) it is the auto-correlation of
    ``channel_1`` over all ordered pairs of distinct tags.
    """

    def __init__(self, tagger, channel_1, channel_2=CHANNEL_UNUSED, binwidth=1000, n_bins=1000):
        t = tagger_of(tagger)
        c1 = t._check_channel(channel_1, "channel_1")
        c2 = t._check_channel(channel_2, "channel_2", allow_unused=True)
        if c2 == CHANNEL_UNUSED:
            c2 = c1
        super().__init__(tagger, c1, c2, binwidth, n_bins, lambda span: span // 2, True)

    def getIndex(self) -> np.ndarray:
        """Bin centres in ps (int64, rounded down where a centre is a half ps)."""
        self._check_alive()
        i = np.arange(self._nb, dtype=np.int64)
        return ((2 * i - (self._nb - 1)) * self._bw) // 2

    def getDataNormalized(self) -> np.ndarray:
        """g2 = counts * T / (binwidth * N1 * N2); zeros while any factor is 0."""
        with self._lock():
            n1, n2 = self._counts()
            if self._auto:
                n2 = n1
            den = float(self._bw) * float(n1) * float(n2)
            if den == 0.0 or self._capture == 0:
                return np.zeros(self._nb, np.float64)
            return self._hist * (float(self._capture) / den)

    def getCounts(self) -> tuple[int, int]:
        """Tags counted on channel_1 and channel_2 during the capture."""
        with self._lock():
            n1, n2 = self._counts()
            return (n1, n1 if self._auto else n2)


class Histogram(_PairHistogram):
    """Multi-start, multi-stop histogram of ``t(click) - t(start)`` in ``[0, n_bins * binwidth)``.

    Bin i covers ``[i * binwidth, (i + 1) * binwidth)``; ``getIndex`` gives the left
    edges. A click at the same time as a start counts (dt = 0). With ``start_channel``
    unused the click channel is its own start channel (pairs of distinct tags).
    """

    def __init__(
        self, tagger, click_channel, start_channel=CHANNEL_UNUSED, binwidth=1000, n_bins=1000
    ):
        t = tagger_of(tagger)
        click = t._check_channel(click_channel, "click_channel")
        start = t._check_channel(start_channel, "start_channel", allow_unused=True)
        if start == CHANNEL_UNUSED:
            start = click
        super().__init__(tagger, start, click, binwidth, n_bins, lambda span: 0, False)

    def getIndex(self) -> np.ndarray:
        """Left bin edges in ps."""
        self._check_alive()
        return np.arange(self._nb, dtype=np.int64) * self._bw


class StartStop(Measurement):
    """Histogram of ``click - start`` for the first click after each start; unbounded range.

    ``getData`` returns an (N, 2) int64 array of (bin time in ps, count) for the
    non-empty bins only, bin time being the left edge. At most ``MAX_BINS`` distinct
    bins are kept; pairs that would need more are counted by :meth:`getDroppedPairs`.
    """

    def __init__(self, tagger, click_channel, start_channel=CHANNEL_UNUSED, binwidth=1000):
        t = tagger_of(tagger)
        super().__init__(tagger)
        self._click = t._check_channel(click_channel, "click_channel")
        start = t._check_channel(start_channel, "start_channel", allow_unused=True)
        self._start_ch = self._click if start == CHANNEL_UNUSED else start
        self._bw, _ = check_binning(binwidth, 1)
        self._activate()

    def _clear(self):
        self._keys = np.empty(0, np.int64)
        self._vals = np.empty(0, np.int64)
        self._dropped = 0

    def _reset_history(self):
        self._have = False
        self._pend = 0

    def _accumulate(self, times, chans, seg, lo, hi):
        out = np.empty(times.shape[0], np.int64)
        m, self._have, self._pend = K.start_stop(
            times, chans, self._click, self._start_ch, self._have, self._pend, self._bw, out
        )
        if m == 0:
            return
        keys, counts = np.unique(out[:m], return_counts=True)
        new = np.union1d(self._keys, keys)
        if new.shape[0] > MAX_BINS:
            known = np.isin(keys, self._keys)
            self._dropped += int(counts[~known].sum())
            keys, counts = keys[known], counts[known]
            new = self._keys
        vals = np.zeros(new.shape[0], np.int64)
        vals[np.searchsorted(new, self._keys)] += self._vals
        vals[np.searchsorted(new, keys)] += counts
        self._keys, self._vals = new, vals

    def getData(self) -> np.ndarray:
        """(N, 2) int64: left bin edge in ps and count, for non-empty bins."""
        with self._lock():
            return np.stack([self._keys * self._bw, self._vals], axis=1)

    def getBinwidth(self) -> int:
        self._check_alive()
        return self._bw

    def getDroppedPairs(self) -> int:
        """Pairs not recorded because the bin table reached MAX_BINS entries."""
        with self._lock():
            return self._dropped
