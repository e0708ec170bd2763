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

A parameter file named over Channel Access is untrusted input, so:

- it must resolve (symlinks followed) inside one of the configured parameter
  directories (:func:`confine_parameter_file`), as capture paths stay under the data
  directory;
- it is opened without blocking and only if it is a regular file (a FIFO, a device such
  as ``/dev/zero`` or a directory is refused before a byte is read), and at most
  :data:`MAX_FILE_BYTES` + 1 bytes are ever read, whatever ``st_size`` says;
- no refusal quotes the file's contents: a bad line is named by its number, and by its
  parameter name only when that is a known name, with the rule the value broke.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from trainstamp.detector._regclient import (
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


#: What each parameter accepts, for refusals (which never quote the file's text).
RULES = {
    "exposure_mode": "0..3 or ROLLING_SHUTTER, ROLLING_SHUTTER_CDS, GLOBAL_SHUTTER, GLOBAL_SHUTTER_CDS",
    "trigger_mode": "0/1 or INTERNAL/EXTERNAL",
    "integration_time": "0.001..10000 ms",
    "frame_period": "0..100000 ms",
    "adc_clock_freq": "an Si570 frequency in 10..280 MHz",
    "adc_data_delay": "0..0x3FF",
    "test_mode": "0/1, on/off, true/false",
    "register": "'address value' of a known, writable, non-command register with a value in its range",
}


def parse_parameters(text: str, source: str = "<parameters>") -> list[Setting]:
    """Parse parameter-file text; ``ValueError`` naming ``source:line`` on the first bad line.

    The message never quotes the text: the line number, the parameter name if it is a
    known one, and the rule its value broke.
    """
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
            raise ValueError(f"{source}:{lineno}: unknown parameter; known: {', '.join(sorted(PARSERS))}")
        if not value:
            raise ValueError(f"{source}:{lineno}: parameter {key} has no value")
        try:
            out.append(Setting(key, PARSERS[key](value), lineno))
        except (ValueError, PermissionError, OverflowError):
            raise ValueError(f"{source}:{lineno}: {key}: bad value (expected {RULES[key]})") from None
    return out


def confine_parameter_file(dirs: Sequence[str | os.PathLike], name: str) -> Path:
    """The real path of parameter file ``name``, which must lie inside one of ``dirs``.

    A relative ``name`` is taken relative to the first directory. ``ValueError`` if no
    directory is configured, or the path (after ``..`` and symlinks) leaves them all.
    """
    if not dirs:
        raise ValueError("no parameter directory is configured (--param-dir): parameter files are refused")
    if not name or "\0" in name:
        raise ValueError("parameter file name is empty or contains a NUL byte")
    roots = [Path(d).resolve() for d in dirs]
    p = Path(name)
    target = (p if p.is_absolute() else roots[0] / p).resolve()
    for root in roots:
        if target == root or root in target.parents:
            return target
    raise ValueError(f"parameter file {name!r} is outside the parameter directories "
                     f"{', '.join(str(r) for r in roots)}")


def read_parameter_file(path: str | os.PathLike, limit: int = MAX_FILE_BYTES) -> str:
    """The text of a regular file of at most ``limit`` bytes, read without blocking.

    ``O_NONBLOCK`` keeps a FIFO from blocking the open; ``fstat`` on the opened file
    refuses anything that is not a regular file; at most ``limit + 1`` bytes are read, so
    a file that lies about its size (``/dev/zero`` says 0) cannot exhaust memory.
    """
    shown = str(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0))
    except OSError as exc:
        raise ValueError(f"cannot read parameter file {shown!r}: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ValueError(f"parameter file {shown!r} is not a regular file")
        chunks, got = [], 0
        while got <= limit:
            chunk = os.read(fd, min(65536, limit + 1 - got))
            if not chunk:
                break
            chunks.append(chunk)
            got += len(chunk)
    except OSError as exc:
        raise ValueError(f"cannot read parameter file {shown!r}: {exc.strerror}") from None
    finally:
        os.close(fd)
    if got > limit:
        raise ValueError(f"parameter file {shown!r} is larger than the limit of {limit} bytes")
    try:
        return b"".join(chunks).decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"cannot read parameter file {shown!r}: not UTF-8 text") from None


def parse_parameter_file(path: str | os.PathLike) -> list[Setting]:
    """Read (see :func:`read_parameter_file`) and parse a parameter file."""
    return parse_parameters(read_parameter_file(path), str(path))


def apply_settings(config, settings: list[Setting]) -> None:
    """Apply parsed settings in file order through a
    :class:`~trainstamp.detector._config.DetectorConfig`, which keeps them."""
    for s in settings:
        if s.key == "register":
            address, value = s.value  # type: ignore[misc]
            config.set_register(address, value)
        else:
            config.set(s.key, s.value)
