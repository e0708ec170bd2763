"""Vectorised tag generation for the tagger emulator.

Channel settings live in :mod:`trainstamp.tagger._settings`.

:class:`TagGenerator` turns a time interval into a sorted block of tags. Time is passed
in (tagger picoseconds), so it is pure and testable. Per interval it:

1. draws raw events for every source (Poisson, correlated pairs, antibunched emitter
   split over two channels) and the internal test signal, with numpy;
2. keeps an event if its pulse amplitude (Gaussian) exceeds the channel's trigger level;
3. adds the channel's input delay and holds back events that a later interval could
   still precede (a watermark), so output is sorted across blocks;
4. applies the dead time (a small numba loop per channel, state carried over blocks)
   and the event divider (every n-th event, counter carried over blocks).
"""

from __future__ import annotations

import math

import numba
import numpy as np

from trainstamp.tagger._settings import (
    TEST_SIGNAL_JITTER_PS,
    TEST_SIGNAL_PERIOD_PS,
    TaggerSettings,
)
from trainstamp.tagger._wire import TAG_DTYPE, TagType


@numba.njit(cache=True, nogil=True)
def _dead_time_keep(times, channels, chan_index, dead, last_kept):  # pragma: no cover - numba
    keep = np.empty(times.shape[0], dtype=np.bool_)
    for i in range(times.shape[0]):
        k = chan_index[channels[i]]
        if k < 0:
            keep[i] = True
            continue
        if times[i] - last_kept[k] >= dead[k]:
            keep[i] = True
            last_kept[k] = times[i]
        else:
            keep[i] = False
    return keep


class TagGenerator:
    """Sorted tag blocks for successive intervals of tagger time (see module doc)."""

    def __init__(self, settings: TaggerSettings, seed: int | None = None, t0_ps: int = 0) -> None:
        self.settings = settings
        self.rng = np.random.default_rng(seed)
        self.t0 = int(t0_ps)
        #: Stream time up to which every tag has been emitted (no later tag precedes it);
        #: nothing is promised before the first block.
        self.complete_to = -(1 << 62)
        #: Events that a settings change moved before ``complete_to`` (sent as MissedEvents).
        self.late_events = 0
        chans = settings.channel_list()
        self._index = np.full(max(chans) + 1, -1, dtype=np.int64)
        for i, c in enumerate(chans):
            self._index[c] = i
        self._last_kept = np.full(len(chans), -(1 << 62), dtype=np.int64)
        self._divider_count = np.zeros(len(chans), dtype=np.int64)
        self._pending_t = np.empty(0, np.int64)
        self._pending_c = np.empty(0, np.int32)
        self._renewal_last: dict[int, float] = {}
        self._ts_skew = {c: (c * 37) % 200 - 100 for c in chans}

    # -- raw events ------------------------------------------------------------------
    def _poisson(self, rate: float, t0: int, t1: int) -> np.ndarray:
        n = self.rng.poisson(rate * (t1 - t0) * 1e-12)
        return np.sort(self.rng.integers(t0, t1, size=n, dtype=np.int64))

    def _antibunched(self, channel: int, spec: dict, t0: int, t1: int) -> np.ndarray:
        tau = spec["lifetime_ps"]
        mean = 1e12 / spec["rate"] if spec["rate"] > 0 else math.inf
        if not math.isfinite(mean):
            return np.empty(0, np.int64)
        exc_mean = max(mean - tau, 1.0)
        last = self._renewal_last.get(channel, float(t0))
        last = max(last, t0 - 10 * mean)
        out = []
        while True:
            n = int((t1 - last) / mean * 1.2) + 16
            steps = self.rng.exponential(exc_mean, n) + self.rng.exponential(tau, n)
            inside = last + np.cumsum(steps)
            inside = inside[inside < t1]
            out.append(inside)
            if len(inside):
                last = float(inside[-1])
            if len(inside) < n:  # the renewal sequence crossed t1
                break
        self._renewal_last[channel] = last
        times = np.concatenate(out)
        return times[times >= t0].astype(np.int64)

    def _detected(self, spec: dict, level: float, n: int) -> np.ndarray:
        amp = self.rng.normal(spec["amplitude"], spec["amplitude_sigma"], n)
        return amp > level

    def _raw(self, t0: int, t1: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
        s = self.settings
        times: list[np.ndarray] = []
        chans: list[np.ndarray] = []

        def add(channel: int, t: np.ndarray, spec: dict | None) -> None:
            cs = s.channels[channel]
            if cs.test_signal:
                return  # the test signal replaces the input
            if spec is not None and len(t):
                t = t[self._detected(spec, cs.trigger_level, len(t))]
            times.append(t + cs.input_delay)
            chans.append(np.full(len(t), channel, np.int32))

        for c, cs in s.channels.items():
            if cs.test_signal:
                k0 = -(-t0 // TEST_SIGNAL_PERIOD_PS)
                k1 = -(-t1 // TEST_SIGNAL_PERIOD_PS)
                edges = np.arange(k0, k1, dtype=np.int64) * TEST_SIGNAL_PERIOD_PS
                jitter = np.rint(self.rng.normal(0, TEST_SIGNAL_JITTER_PS, len(edges)))
                times.append(edges + self._ts_skew[c] + jitter.astype(np.int64) + cs.input_delay)
                chans.append(np.full(len(edges), c, np.int32))
            spec = cs.source
            kind = spec["kind"]
            if kind == "poisson":
                add(c, self._poisson(spec["rate"], t0, t1), spec)
            elif kind == "pair":
                t = self._poisson(spec["rate"], t0, t1)
                sigma = spec["jitter_ps"]
                jit = np.clip(self.rng.normal(0, sigma, len(t)), -5 * sigma, 5 * sigma) \
                    if sigma > 0 else np.zeros(len(t))
                add(c, t, spec)
                add(spec["partner"], t + spec["delay_ps"] + np.rint(jit).astype(np.int64), spec)
            elif kind == "antibunched":
                t = self._antibunched(c, spec, t0, t1)
                side = self.rng.random(len(t)) < 0.5
                add(c, t[side], spec)
                add(spec["partner"], t[~side], spec)
        return times, chans

    def _min_offset(self) -> int:
        """Lowest (event time - interval start) any future interval can produce."""
        s = self.settings
        low = 0
        for cs in s.channels.values():
            low = min(low, cs.input_delay - 200)  # 200: test-signal skew and jitter room
            spec = cs.source
            if spec["kind"] == "pair":
                p = spec["partner"]
                low = min(low, spec["delay_ps"] - int(5 * spec["jitter_ps"]) - 1
                          + s.channels[p].input_delay)
        return low

    # -- public ----------------------------------------------------------------------
    def generate(self, t1_ps: int, markers_ps: np.ndarray | None = None) -> np.ndarray:
        """Tags for ``[t0, t1_ps)``, plus marker tags at ``markers_ps``; advances t0."""
        t0, t1 = self.t0, int(t1_ps)
        if t1 <= t0:
            return np.empty(0, TAG_DTYPE)
        times, chans = self._raw(t0, t1)
        if markers_ps is not None and len(markers_ps):
            m = np.asarray(markers_ps, np.int64)
            mc = self.settings.marker_channel
            times.append(m + self.settings.channels[mc].input_delay)
            chans.append(np.full(len(m), mc, np.int32))
        self.t0 = t1
        all_t = np.concatenate([self._pending_t, *times])
        all_c = np.concatenate([self._pending_c, *chans])
        watermark = t1 + self._min_offset()
        ready = all_t < watermark
        self._pending_t, self._pending_c = all_t[~ready], all_c[~ready]
        t, c = all_t[ready], all_c[ready]
        promised = self.complete_to
        self.complete_to = max(self.complete_to, watermark - 1)
        order = np.argsort(t, kind="stable")
        t, c = t[order], c[order]
        # A delay made more negative since the last block can move events before the
        # end already promised; they cannot be sent in order, so they are reported.
        n_late = int(np.searchsorted(t, promised, side="right"))
        late = None
        if n_late:
            chans_late, counts = np.unique(c[:n_late], return_counts=True)
            late = np.zeros(len(chans_late), TAG_DTYPE)
            late["type"] = TagType.MissedEvents
            late["channel"] = chans_late
            late["missed_events"] = np.minimum(counts, 65535)
            late["time"] = promised + 1
            self.late_events += n_late
            t, c = t[n_late:], c[n_late:]
        tags = self._finish(t, c)
        return tags if late is None else np.concatenate([late, tags])

    def _finish(self, t: np.ndarray, c: np.ndarray) -> np.ndarray:
        s = self.settings
        dead = np.array([s.channels[ch].dead_time for ch in s.channel_list()], np.int64)
        keep = _dead_time_keep(t, c, self._index, dead, self._last_kept)
        t, c = t[keep], c[keep]
        dividers = np.array([s.channels[ch].event_divider for ch in s.channel_list()])
        if np.any(dividers > 1):
            idx = self._index[c]
            keep = np.ones(len(t), bool)
            for k in np.nonzero(dividers > 1)[0]:
                sel = np.nonzero(idx == k)[0]
                n = self._divider_count[k] + np.arange(len(sel))
                keep[sel[n % dividers[k] != 0]] = False
                self._divider_count[k] += len(sel)
            t, c = t[keep], c[keep]
        tags = np.zeros(len(t), TAG_DTYPE)
        tags["type"] = TagType.TimeTag
        tags["channel"] = c
        tags["time"] = t
        return tags

    def expected_rates(self) -> np.ndarray:
        """Rough tag rate per channel (Hz), to estimate events skipped when behind."""
        s = self.settings
        rates = np.zeros(len(s.channel_list()))
        for c, cs in s.channels.items():
            k = self._index[c]
            if cs.test_signal:
                rates[k] += 1e12 / TEST_SIGNAL_PERIOD_PS
            spec = cs.source
            if spec["kind"] == "poisson":
                rates[k] += spec["rate"]
            elif spec["kind"] in ("pair", "antibunched"):
                share = 1.0 if spec["kind"] == "pair" else 0.5
                rates[k] += spec["rate"] * share
                rates[self._index[spec["partner"]]] += spec["rate"] * share
        return rates

    def skip(self, t1_ps: int) -> dict[int, int]:
        """Jump to ``t1_ps`` without generating; return estimated events per channel."""
        dt = max(0, int(t1_ps) - self.t0) * 1e-12
        self.t0 = max(self.t0, int(t1_ps))
        counts = self.rng.poisson(self.expected_rates() * dt)
        return {c: int(counts[self._index[c]]) for c in self.settings.channel_list()
                if counts[self._index[c]]}


class ReplayGenerator:
    """A :class:`TagGenerator` stand-in that repeats a pre-generated pattern (benchmarks).

    The sources are generated once for ``period_ps`` of tagger time; every interval is
    then cut from that pattern, shifted by whole periods, so the emulator is limited by
    sending rather than by generating. Markers are merged in as usual. Settings changed
    after construction do not affect the pattern.
    """

    def __init__(self, settings: TaggerSettings, period_ps: int, seed: int | None = None,
                 t0_ps: int = 0) -> None:
        if period_ps <= 0:
            raise ValueError(f"replay period {period_ps} ps must be > 0")
        self.settings = settings
        self.period = int(period_ps)
        gen = TagGenerator(settings, seed=seed, t0_ps=0)
        pattern = gen.generate(self.period)
        # Kept as two int64 columns (first 8 bytes of each tag, then its time), so a
        # block is two contiguous column copies instead of a structured copy + add.
        packed = pattern.view(np.int64).reshape(-1, 2)
        self._head = np.ascontiguousarray(packed[:, 0])
        self._times = np.ascontiguousarray(packed[:, 1])
        self._rates = gen.expected_rates()
        self._index = gen._index
        self.rng = gen.rng
        self.t0 = int(t0_ps)
        self.complete_to = self.t0 - 1

    def generate(self, t1_ps: int, markers_ps: np.ndarray | None = None) -> np.ndarray:
        t0, t1 = self.t0, int(t1_ps)
        if t1 <= t0:
            return np.empty(0, TAG_DTYPE)
        spans = []
        for k in range(t0 // self.period, (t1 - 1) // self.period + 1):
            base = k * self.period
            lo = int(np.searchsorted(self._times, max(t0, base) - base))
            hi = int(np.searchsorted(self._times, min(t1, base + self.period) - base))
            spans.append((base, lo, hi))
        out = np.empty((sum(hi - lo for _, lo, hi in spans), 2), np.int64)
        i = 0
        for base, lo, hi in spans:
            out[i:i + hi - lo, 0] = self._head[lo:hi]
            np.add(self._times[lo:hi], base, out=out[i:i + hi - lo, 1])
            i += hi - lo
        parts = [out.reshape(-1).view(TAG_DTYPE)]
        if markers_ps is not None and len(markers_ps):
            m = np.zeros(len(markers_ps), TAG_DTYPE)
            m["channel"] = self.settings.marker_channel
            m["time"] = np.asarray(markers_ps, np.int64)
            parts.append(m)
        tags = np.concatenate(parts) if parts else np.empty(0, TAG_DTYPE)
        if markers_ps is not None and len(markers_ps):
            tags = tags[np.argsort(tags["time"], kind="stable")]
        self.t0 = t1
        self.complete_to = t1 - 1
        return tags

    def expected_rates(self) -> np.ndarray:
        return self._rates

    def skip(self, t1_ps: int) -> dict[int, int]:
        dt = max(0, int(t1_ps) - self.t0) * 1e-12
        self.t0 = max(self.t0, int(t1_ps))
        self.complete_to = self.t0 - 1
        counts = self.rng.poisson(self._rates * dt)
        return {c: int(counts[self._index[c]]) for c in self.settings.channel_list()
                if counts[self._index[c]]}
