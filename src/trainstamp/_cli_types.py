"""Validated command-line argument types, shared by every ``trainstamp`` CLI.

Each is an ``argparse`` ``type=`` callable: it takes the text the user typed and
returns the value, or raises :class:`argparse.ArgumentTypeError` with a message that
quotes the text and says the limit, so argparse prints ``argument --port: port '70000'
outside 1..65535`` and exits with code 2 before anything starts.

- :func:`port`: a TCP/UDP port in 1..65535.
- :func:`port_or_zero`: 0..65535, for options whose help documents what 0 means
  ("0 picks one", "0 disables it").
- :func:`period_ms`: a train period setpoint in ms, within the TimeServer's limits.
- :func:`positive_float`, :func:`finite_float`: finite numbers (no ``nan``/``inf``).
- :func:`positive_int`, :func:`non_negative_int`: counts.
- :func:`train_id`: a train ID, 0..2**64-1.

This module imports only the pure timing core, so any CLI (and the IOC entry points)
can use it without importing another CLI module.
"""

from __future__ import annotations

import argparse
import math

from trainstamp.timing._core import check_period_ms
from trainstamp.timing._protocol import MAX_TRAIN_ID

__all__ = ["finite_float", "non_negative_int", "period_ms", "port", "port_or_zero",
           "positive_float", "positive_int", "train_id"]


def _digits(text: str) -> int | None:
    """``text`` as a whole number if it is only ASCII digits, else ``None``."""
    return int(text) if text.isascii() and text.isdigit() else None


def _port_in(text: str, lo: int) -> int:
    value = _digits(text)
    if value is None or not lo <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port {text!r} outside {lo}..65535")
    return value


def port(text: str) -> int:
    """A port in 1..65535."""
    return _port_in(text, 1)


def port_or_zero(text: str) -> int:
    """A port in 0..65535; the option's help says what 0 means."""
    return _port_in(text, 0)


def period_ms(text: str) -> float:
    """A train period in ms within the TimeServer's limits (1..60000 ms; not ``nan``)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"period {text!r} is not a number") from None
    try:
        return check_period_ms(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def finite_float(text: str) -> float:
    """Any finite number (``nan`` and ``inf`` are refused)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r}: expected a finite number")
    return value


def positive_float(text: str) -> float:
    """A finite number > 0 (periods, timeouts, rates)."""
    value = finite_float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a number > 0")
    return value


def non_negative_int(text: str) -> int:
    """A whole number >= 0 (counts)."""
    value = _digits(text)
    if value is None:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a whole number >= 0")
    return value


def positive_int(text: str) -> int:
    """A whole number >= 1 (sizes, counts that cannot be zero)."""
    value = _digits(text)
    if value is None or value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a whole number >= 1")
    return value


def train_id(text: str) -> int:
    """A train ID in 0..2**64-1."""
    value = _digits(text)
    if value is None or value > MAX_TRAIN_ID:
        raise argparse.ArgumentTypeError(f"train ID {text!r} is not an integer in 0..2**64-1")
    return value
