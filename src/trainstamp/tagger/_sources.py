"""Channel settings and vectorised tag generation for the tagger emulator.

:class:`TaggerSettings` holds what a user can set per input channel (test signal,
trigger level, input delay, dead time, event divider, source) and validates it; the
emulator applies it and the server validates against the same limits before forwarding.

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
from dataclasses import dataclass, field

import numba
import numpy as np

from trainstamp.tagger._wire import TAG_DTYPE, TagType

#: Test signal period: 1.25 µs, about 0.8 MHz like Swabian's built-in test signal.
TEST_SIGNAL_PERIOD_PS = 1_250_000
#: RMS jitter of each test-signal edge.
TEST_SIGNAL_JITTER_PS = 4.0
TRIGGER_LEVEL_RANGE_V = (-2.5, 2.5)
INPUT_DELAY_LIMIT_PS = 2_000_000
DEAD_TIME_RANGE_PS = (2_000, 1_000_000_000)
EVENT_DIVIDER_RANGE = (1, 65_535)
MAX_SOURCE_RATE_HZ = 50e6
SOURCE_KINDS = ("off", "poisson", "pair", "antibunched")


def _number(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise ValueError(f"{name} must be a number, got {value!r}")
    if not math.isfinite(float(value)):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return float(value)


def _in_range(name: str, value: object, lo: float, hi: float, unit: str = "") -> float:
    v = _number(name, value)
    if not lo <= v <= hi:
        raise ValueError(f"{name} {value!r}{unit} outside {lo:g}..{hi:g}{unit}")
    return v


@dataclass
class ChannelSettings:
    """One input channel. Times in ps, levels in V."""

    test_signal: bool = False
    trigger_level: float = 0.5
    input_delay: int = 0
    dead_time: int = 2_000
    event_divider: int = 1
    source: dict = field(default_factory=lambda: {"kind": "off"})

    def as_dict(self) -> dict:
        return {"test_signal": self.test_signal, "trigger_level": self.trigger_level,
                "input_delay": self.input_delay, "dead_time": self.dead_time,
                "event_divider": self.event_divider, "source": dict(self.source)}


class TaggerSettings:
    """Validated settings for input channels ``1..n_channels`` and one marker channel."""

    def __init__(self, n_channels: int = 8, marker_channel: int | None = None,
                 serial: str = "EMU-TT-0001") -> None:
        if not 1 <= n_channels <= 64:
            raise ValueError(f"n_channels {n_channels} outside 1..64")
        self.n_channels = n_channels
        self.marker_channel = n_channels + 1 if marker_channel is None else marker_channel
        if self.marker_channel < 1:
            raise ValueError(f"marker channel {self.marker_channel} must be >= 1")
        self.serial = serial
        self.channels = {c: ChannelSettings() for c in self.channel_list()}

    def channel_list(self) -> list[int]:
        chans = list(range(1, self.n_channels + 1))
        if self.marker_channel not in chans:
            chans.append(self.marker_channel)
        return chans

    def check_channel(self, channel: object) -> int:
        if isinstance(channel, bool) or not isinstance(channel, int | np.integer):
            raise ValueError(f"channel must be an integer, got {channel!r}")
        if int(channel) not in self.channels:
            raise ValueError(f"unknown channel {channel}; channels are {self.channel_list()}")
        return int(channel)

    # -- setters: validate, store, return the value actually set ----------------------
    def set_test_signal(self, channel: object, enabled: object) -> bool:
        c = self.check_channel(channel)
        if not isinstance(enabled, bool | int | np.integer):
            raise ValueError(f"test signal state must be a bool, got {enabled!r}")
        self.channels[c].test_signal = bool(enabled)
        return bool(enabled)

    def set_trigger_level(self, channel: object, volts: object) -> float:
        c = self.check_channel(channel)
        v = _in_range("trigger level", volts, *TRIGGER_LEVEL_RANGE_V, " V")
        self.channels[c].trigger_level = v
        return v

    def set_input_delay(self, channel: object, delay_ps: object) -> int:
        c = self.check_channel(channel)
        v = int(_in_range("input delay", delay_ps, -INPUT_DELAY_LIMIT_PS,
                          INPUT_DELAY_LIMIT_PS, " ps"))
        self.channels[c].input_delay = v
        return v

    def set_dead_time(self, channel: object, dead_ps: object) -> int:
        c = self.check_channel(channel)
        v = int(_in_range("dead time", dead_ps, *DEAD_TIME_RANGE_PS, " ps"))
        self.channels[c].dead_time = v
        return v

    def set_event_divider(self, channel: object, divider: object) -> int:
        c = self.check_channel(channel)
        v = _in_range("event divider", divider, *EVENT_DIVIDER_RANGE)
        if v != int(v):
            raise ValueError(f"event divider must be an integer, got {divider!r}")
        self.channels[c].event_divider = int(v)
        return int(v)

    def set_source(self, channel: object, spec: object) -> dict:
        c = self.check_channel(channel)
        spec = self.check_source(c, spec)
        self.channels[c].source = spec
        return dict(spec)

    def check_source(self, channel: int, spec: object) -> dict:
        if not isinstance(spec, dict):
            raise ValueError(f"source must be a dict, got {spec!r}")
        kind = spec.get("kind", "off")
        if kind not in SOURCE_KINDS:
            raise ValueError(f"source kind {kind!r} not one of {SOURCE_KINDS}")
        if channel == self.marker_channel and kind != "off":
            raise ValueError(f"channel {channel} is the marker channel; it takes no source")
        out: dict = {"kind": kind}
        if kind == "off":
            return out
        out["rate"] = _in_range("rate", spec.get("rate", 1e5), 0.0, MAX_SOURCE_RATE_HZ, " Hz")
        out["amplitude"] = _in_range("amplitude", spec.get("amplitude", 1.0), -5, 5, " V")
        out["amplitude_sigma"] = _in_range("amplitude_sigma", spec.get("amplitude_sigma", 0.15),
                                           0, 5, " V")
        if kind in ("pair", "antibunched"):
            partner = self.check_channel(spec.get("partner"))
            if partner in (channel, self.marker_channel):
                raise ValueError(f"partner channel {partner} must be another input channel")
            out["partner"] = partner
        if kind == "pair":
            out["delay_ps"] = int(_in_range("delay_ps", spec.get("delay_ps", 0),
                                            -INPUT_DELAY_LIMIT_PS, INPUT_DELAY_LIMIT_PS, " ps"))
            out["jitter_ps"] = _in_range("jitter_ps", spec.get("jitter_ps", 50.0),
                                         0, 1e6, " ps")
        if kind == "antibunched":
            out["lifetime_ps"] = _in_range("lifetime_ps", spec.get("lifetime_ps", 5_000.0),
                                           1.0, 1e9, " ps")
            if out["rate"] * out["lifetime_ps"] * 1e-12 >= 0.5:
                raise ValueError(f"antibunched rate {out['rate']:g} Hz too high for lifetime "
                                 f"{out['lifetime_ps']:g} ps (rate*lifetime must be < 0.5)")
        return out

    def describe(self) -> dict:
        return {"serial": self.serial, "channels": self.channel_list(),
                "marker_channel": self.marker_channel,
                "test_signal_period_ps": TEST_SIGNAL_PERIOD_PS,
                "settings": {str(c): s.as_dict() for c, s in self.channels.items()}}

    def apply(self, op: str, args: list) -> object:
        """Run one control operation by name (the control channel's vocabulary)."""
        ops = {"set_test_signal": self.set_test_signal,
               "set_trigger_level": self.set_trigger_level,
               "set_input_delay": self.set_input_delay,
               "set_dead_time": self.set_dead_time,
               "set_event_divider": self.set_event_divider,
               "set_source": self.set_source,
               "describe": self.describe}
        if op not in ops:
            raise ValueError(f"unknown operation {op!r}; known: {sorted(ops)}")
        if not isinstance(args, list):
            raise ValueError(f"arguments must be a list, got {args!r}")
        try:
            return ops[op](*args)
        except TypeError as exc:
            raise ValueError(f"{op}: bad arguments {args!r}: {exc}") from None


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
        #: Stream time up to which every tag has been emitted (no later tag precedes it).
        self.complete_to = int(t0_ps) - 1
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
        self.complete_to = max(self.complete_to, watermark - 1)
        order = np.argsort(t, kind="stable")
        t, c = t[order], c[order]
        return self._finish(t, c)

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
        self._pattern = gen.generate(self.period)
        self._times = np.ascontiguousarray(self._pattern["time"])
        self._rates = gen.expected_rates()
        self._index = gen._index
        self.rng = gen.rng
        self.t0 = int(t0_ps)
        self.complete_to = self.t0 - 1

    def generate(self, t1_ps: int, markers_ps: np.ndarray | None = None) -> np.ndarray:
        t0, t1 = self.t0, int(t1_ps)
        if t1 <= t0:
            return np.empty(0, TAG_DTYPE)
        parts = []
        for k in range(t0 // self.period, (t1 - 1) // self.period + 1):
            base = k * self.period
            lo = np.searchsorted(self._times, max(t0, base) - base)
            hi = np.searchsorted(self._times, min(t1, base + self.period) - base)
            part = self._pattern[lo:hi].copy()
            part["time"] += base
            parts.append(part)
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
