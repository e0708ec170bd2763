"""Helpers for network-free plan tests: a hand-moved clock and a fake tick."""

from __future__ import annotations

PERIOD_US = 100_000
FIRST_ID = 1_000_000


class Clock:
    """A wall clock the test moves by hand (integer ns)."""

    def __init__(self, t_ns: int = 1_800_000_000 * 10**9) -> None:
        self.t_ns = t_ns

    def __call__(self) -> int:
        return self.t_ns


def tick(ts, train_id: int, t_ns: int) -> None:
    """Deliver a tick at ``t_ns`` through the device's ID monitor callback."""
    ts.train_id._readback = train_id
    ts._on_id(value=train_id, timestamp=t_ns / 1e9)
