"""Channel settings of the tagger (emulator side), validated against the instrument's limits.

:class:`TaggerSettings` holds what a user can set per input channel (test signal,
trigger level, input delay, dead time, event divider, signal source) and refuses
out-of-range values with a ValueError quoting the value and the limit. The emulator
applies it; :meth:`TaggerSettings.apply` is the control channel's vocabulary.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

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
