"""Parameter files: a list of detector settings applied in order, all or nothing.

Format (one setting per line; ``#`` starts a comment; blank lines are ignored; the key
and value are separated by whitespace or ``=``; keys are case-insensitive)::

    exposure_mode     GLOBAL_SHUTTER_CDS   # name or 0..3
    trigger_mode      EXTERNAL             # INTERNAL / EXTERNAL or 0 / 1
    integration_time  6.0                  # ms
    frame_period      0                    # ms, 0 = as fast as integration allows
    adc_clock_freq    60.0                 # MHz (Si570)
    adc_data_delay    0x1A7                # 0..0x3FF
    test_mode         0                    # 0 / 1
    register          0x0015 0x1A7         # raw register write: address value

:func:`parse_parameter_file` checks every line before anything is applied: the first bad
line raises ``ValueError("<file>:<line>: ...")`` and the caller applies nothing.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from trainstamp.detector._regclient import (
    DetectorCommands,
    check_exposure_mode,
    check_trigger_mode,
    integration_us,
)
from trainstamp.detector._registers import MAX_ADC_DATA_DELAY, REGISTER_SPECS, Reg
from trainstamp.detector._si570 import solve

MAX_FILE_BYTES = 1 << 20


@dataclass(frozen=True)
class Setting:
    key: str
    value: object
    line: int


def _int(text: str) -> int:
    return int(text, 0)


def _bool(text: str) -> int:
    v = {"0": 0, "1": 1, "off": 0, "on": 1, "false": 0, "true": 1}.get(text.lower())
    if v is None:
        raise ValueError(f"expected 0/1, got {text!r}")
    return v


def _delay(text: str) -> int:
    v = _int(text)
    if not 0 <= v <= MAX_ADC_DATA_DELAY:
        raise ValueError(f"ADC data delay {v} outside 0..0x{MAX_ADC_DATA_DELAY:X}")
    return v


def _clock(text: str) -> float:
    mhz = float(text)
    solve(mhz * 1e6)  # raises with the range if the Si570 cannot make it
    return mhz


def _period(text: str) -> float:
    ms = float(text)
    if not 0 <= ms <= 100_000:
        raise ValueError(f"frame period {ms} ms outside 0..100000 ms")
    return ms


def _integration(text: str) -> float:
    ms = float(text)
    integration_us(ms)
    return ms


def _register(text: str) -> tuple[int, int]:
    parts = text.split()
    if len(parts) != 2:
        raise ValueError(f"register needs 'address value', got {text!r}")
    address, value = _int(parts[0]), _int(parts[1])
    try:
        reg = Reg(address)
    except ValueError:
        raise ValueError(f"unknown register address 0x{address:04x}") from None
    if reg in (Reg.DAQ_CONTROL, Reg.RESET):
        raise ValueError(f"register {reg.name} is a command, not a parameter")
    REGISTER_SPECS[reg].check(reg, value)
    return address, value


PARSERS = {
    "exposure_mode": lambda t: int(check_exposure_mode(t)),
    "trigger_mode": lambda t: int(check_trigger_mode(t)),
    "integration_time": _integration,
    "frame_period": _period,
    "adc_clock_freq": _clock,
    "adc_data_delay": _delay,
    "test_mode": _bool,
    "register": _register,
}


def parse_parameters(text: str, source: str = "<parameters>") -> list[Setting]:
    """Parse parameter-file text; ``ValueError`` naming ``source:line`` on the first bad line."""
    out = []
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if "=" in line:
            key, _, value = line.partition("=")
        else:
            key, _, value = line.partition(" ")
            if not value and "\t" in key:
                key, _, value = key.partition("\t")
        key, value = key.strip().lower(), value.strip()
        if key not in PARSERS:
            raise ValueError(f"{source}:{lineno}: unknown parameter {key!r}; known: {sorted(PARSERS)}")
        if not value:
            raise ValueError(f"{source}:{lineno}: parameter {key!r} has no value")
        try:
            out.append(Setting(key, PARSERS[key](value), lineno))
        except (ValueError, PermissionError) as exc:
            raise ValueError(f"{source}:{lineno}: {key} {value!r}: {exc}") from None
    return out


def parse_parameter_file(path: str | os.PathLike) -> list[Setting]:
    """Read and parse a parameter file (at most 1 MiB of UTF-8 text)."""
    p = Path(path)
    try:
        size = p.stat().st_size
    except OSError as exc:
        raise ValueError(f"cannot read parameter file {str(p)!r}: {exc.strerror}") from None
    if size > MAX_FILE_BYTES:
        raise ValueError(f"parameter file {str(p)!r} is {size} bytes, limit {MAX_FILE_BYTES}")
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read parameter file {str(p)!r}: {exc}") from None
    return parse_parameters(text, str(p))


def apply_settings(cmd: DetectorCommands, settings: list[Setting]) -> None:
    """Apply parsed settings in file order through the register client."""
    for s in settings:
        if s.key == "exposure_mode":
            cmd.set_exposure_mode(s.value)  # type: ignore[arg-type]
        elif s.key == "trigger_mode":
            cmd.set_trigger_mode(s.value)  # type: ignore[arg-type]
        elif s.key == "integration_time":
            cmd.set_integration_time(s.value)  # type: ignore[arg-type]
        elif s.key == "frame_period":
            cmd.set_frame_period(s.value)  # type: ignore[arg-type]
        elif s.key == "adc_clock_freq":
            cmd.set_adc_clock_freq(s.value)  # type: ignore[arg-type]
        elif s.key == "adc_data_delay":
            cmd.set_adc_data_delay(s.value)  # type: ignore[arg-type]
        elif s.key == "test_mode":
            cmd.set_test_mode(bool(s.value))
        elif s.key == "register":
            address, value = s.value  # type: ignore[misc]
            cmd.regs.write(address, value)
