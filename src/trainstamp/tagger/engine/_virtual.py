"""Virtual channels: DelayedChannel, GatedChannel, Coincidence(s) and Combiner.

A virtual channel turns tags of other channels into tags on new channel numbers
(from ``VIRTUAL_CHANNEL_BASE`` up) that measurements use like physical ones. Its
output is merged into the block after all tags of equal time, and an output tag is
only released once the stream has passed its time; both rules make the merged stream
the same however the input was cut into blocks.
"""

from __future__ import annotations

import numpy as np

from trainstamp.tagger.engine import _kernels as K
from trainstamp.tagger.engine._measurement import tagger_of
from trainstamp.tagger.engine._tagger import Segment
from trainstamp.tagger.engine._tags import (
    MAX_SPAN_PS,
    CoincidenceTimestamp,
    GatedChannelInitial,
    TaggerFreedError,
    as_int,
)

_E64 = np.empty(0, np.int64)
_E32 = np.empty(0, np.int32)
_NEVER = -(1 << 62)


class _VirtualChannel:
    """Base: channel allocation, the release-when-passed buffer and free()."""

    def __init__(self, tagger):
        self._tagger = tagger_of(tagger)
        self._alive = True
        self._pend_t = _E64
        self._pend_c = _E32

    def _register(self, n_outputs: int = 1) -> None:
        self._outs = self._tagger._register_virtual(self, n_outputs)

    def getChannel(self) -> int:
        """The (first) channel number of this virtual channel."""
        self._check_alive()
        return self._outs[0]

    def getChannels(self) -> list[int]:
        """All channel numbers of this virtual channel."""
        self._check_alive()
        return list(self._outs)

    def free(self) -> None:
        """Remove the channel from the tagger; measurements on it get no more tags."""
        with self._tagger._lock:
            if self._alive:
                self._tagger._unregister_virtual(self)
                self._detach()

    def _detach(self) -> None:
        self._alive = False

    def _check_alive(self) -> None:
        if not self._alive or not self._tagger._alive:
            raise TaggerFreedError(f"{type(self).__name__} has been freed (or its tagger has)")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.free()

    def _feed(self, seg: Segment) -> tuple[np.ndarray, np.ndarray]:
        """Compute outputs for a segment; return those whose time the stream has passed."""
        if seg.reset:
            self._on_reset()
        t, c = self._compute(seg.times, seg.chans)
        if t.shape[0]:
            if self._pend_t.shape[0]:
                t = np.concatenate([self._pend_t, t])
                c = np.concatenate([self._pend_c, c])
        else:
            t, c = self._pend_t, self._pend_c
        k = int(np.searchsorted(t, seg.t_end, "left"))
        self._pend_t, self._pend_c = t[k:], c[k:]
        return t[:k], c[:k]

    def _on_reset(self) -> None:
        """Forget state that must not span an overflow."""

    def _compute(self, times, chans) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError


class DelayedChannel(_VirtualChannel):
    """A copy of ``input_channel`` delayed by ``delay`` ps (0 <= delay <= 2**62)."""

    def __init__(self, tagger, input_channel, delay):
        super().__init__(tagger)
        self._in = self._tagger._check_channel(input_channel, "input_channel")
        d = as_int(delay, "delay")
        if d < 0 or d > MAX_SPAN_PS:
            raise ValueError(f"delay must be in 0..{MAX_SPAN_PS} ps, got {d}")
        self._delay = d
        self._register()

    def setDelay(self, delay) -> None:
        """Change the delay for tags that arrive from now on (not below 0)."""
        d = as_int(delay, "delay")
        if d < 0 or d > MAX_SPAN_PS:
            raise ValueError(f"delay must be in 0..{MAX_SPAN_PS} ps, got {d}")
        with self._tagger._lock:
            self._check_alive()
            if d < self._delay and self._pend_t.shape[0]:
                raise ValueError(
                    f"cannot shorten the delay from {self._delay} to {d} ps while delayed tags are pending"
                )
            self._delay = d

    def _compute(self, times, chans):
        t = np.ascontiguousarray(times[chans == self._in]) + self._delay
        return t, np.full(t.shape[0], self._outs[0], np.int32)


class GatedChannel(_VirtualChannel):
    """Tags of ``input_channel`` that arrive while a gate is open.

    A ``gate_start_channel`` tag opens the gate and a ``gate_stop_channel`` tag closes
    it; the gate starts closed, or open with ``initial=GatedChannelInitial.Open``. Tags
    are taken in stream order, so an input tag after a gate tag of the same time sees
    the new gate state.
    """

    def __init__(self, tagger, input_channel, gate_start_channel, gate_stop_channel,
                 initial=GatedChannelInitial.Closed):
        super().__init__(tagger)
        t = self._tagger
        self._in = t._check_channel(input_channel, "input_channel")
        self._open = t._check_channel(gate_start_channel, "gate_start_channel")
        self._close = t._check_channel(gate_stop_channel, "gate_stop_channel")
        if self._open == self._close:
            raise ValueError(f"gate start and stop channels must differ, both are {self._open}")
        try:
            self._state = GatedChannelInitial(as_int(initial, "initial")) == GatedChannelInitial.Open
        except ValueError:
            raise ValueError(f"initial must be GatedChannelInitial.Closed (0) or Open (1), "
                             f"got {initial!r}") from None
        self._register()

    def _compute(self, times, chans):
        out, self._state = K.gate(times, chans, self._in, self._open, self._close, self._state)
        return out, np.full(out.shape[0], self._outs[0], np.int32)


class Coincidences(_VirtualChannel):
    """One virtual channel per group of channels that click within ``coincidenceWindow``.

    A tag on a channel of a group makes a coincidence of that group when every other
    channel of the group has its latest tag no more than ``coincidenceWindow`` ps
    earlier (ties included). The coincidence tag has the time of that last tag
    (``CoincidenceTimestamp.Last``, the only timestamp supported).
    """

    def __init__(
        self, tagger, coincidenceGroups, coincidenceWindow=1000, timestamp=CoincidenceTimestamp.Last
    ):
        super().__init__(tagger)
        t = self._tagger
        try:
            groups = [list(g) for g in coincidenceGroups]
        except TypeError:
            raise ValueError(
                f"coincidenceGroups must be a list of channel lists, got {coincidenceGroups!r}"
            ) from None
        if not groups or len(groups) > 1024:
            raise ValueError(f"coincidenceGroups must have 1..1024 groups, got {len(groups)}")
        slots: dict[int, int] = {}
        rows = []
        for g in groups:
            if len(g) < 2 or len(g) > 64:
                raise ValueError(f"a coincidence group needs 2..64 channels, got {g}")
            chs = [t._check_channel(c, "coincidence channel") for c in g]
            if len(set(chs)) != len(chs):
                raise ValueError(f"a coincidence group has a repeated channel: {chs}")
            rows.append([slots.setdefault(c, len(slots)) for c in chs])
        w = as_int(coincidenceWindow, "coincidenceWindow")
        if w < 0 or w > MAX_SPAN_PS:
            raise ValueError(f"coincidenceWindow must be in 0..{MAX_SPAN_PS} ps, got {w}")
        ts = as_int(timestamp, "timestamp")
        if ts != CoincidenceTimestamp.Last:
            raise ValueError(
                f"only CoincidenceTimestamp.Last ({int(CoincidenceTimestamp.Last)}) is supported, got {ts}"
            )
        self._window = w
        width = max(len(r) for r in rows)
        self._groups = np.full((len(rows), width), -1, np.int64)
        self._glen = np.array([len(r) for r in rows], np.int64)
        for i, r in enumerate(rows):
            self._groups[i, : len(r)] = r
        chans = list(slots)
        lo, hi = min(chans), max(chans)
        self._lut = np.full(hi - lo + 1, -1, np.int64)
        for c, s in slots.items():
            self._lut[c - lo] = s
        self._lo = lo
        self._latest = np.full(len(slots), _NEVER, np.int64)
        self._register(len(rows))
        self._out_arr = np.array(self._outs, np.int32)

    def _on_reset(self):
        self._latest[:] = _NEVER

    def _compute(self, times, chans):
        t, g = K.coincidences(
            times, chans, self._lut, self._lo, self._groups, self._glen, self._window, self._latest
        )
        return t, self._out_arr[g]


class Coincidence(Coincidences):
    """A single coincidence group on one virtual channel (see :class:`Coincidences`)."""

    def __init__(
        self, tagger, channels, coincidenceWindow=1000, timestamp=CoincidenceTimestamp.Last
    ):
        try:
            group = list(channels)
        except TypeError:
            raise ValueError(f"channels must be a list of channels, got {channels!r}") from None
        super().__init__(tagger, [group], coincidenceWindow, timestamp)


class Combiner(_VirtualChannel):
    """Every tag of any of ``channels`` again, on one virtual channel."""

    def __init__(self, tagger, channels):
        super().__init__(tagger)
        try:
            chs = list(channels)
        except TypeError:
            raise ValueError(f"channels must be a list of channels, got {channels!r}") from None
        if not chs or len(chs) > 4096:
            raise ValueError(f"channels must list 1..4096 channels, got {len(chs)}")
        self._in = np.array(
            [self._tagger._check_channel(c, "channels entry") for c in chs], np.int32
        )
        self._register()

    def _compute(self, times, chans):
        t = np.ascontiguousarray(times[np.isin(chans, self._in)])
        return t, np.full(t.shape[0], self._outs[0], np.int32)
