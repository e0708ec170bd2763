"""Fake TimeServer for network-free plan tests: the real device class, fake signals."""

from __future__ import annotations

import pytest
from ophyd.sim import make_fake_device

from trainstamp.timing.device import TimeServer

PERIOD_US = 100_000
FIRST_ID = 1_000_000


class Clock:
    """A wall clock the test moves by hand (integer ns)."""

    def __init__(self, t_ns: int = 1_800_000_000 * 10**9) -> None:
        self.t_ns = t_ns

    def __call__(self) -> int:
        return self.t_ns


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def fake_timeserver(clock):
    """A TimeServer built from fake signals, with period 100 ms and an injected clock.

    ``tick(ts, train_id)`` delivers a tick as the ``ID`` monitor would.
    """
    ts = make_fake_device(TimeServer)("TS:", name="timeserver", clock_ns=clock)
    ts.period.sim_put(PERIOD_US)
    ts.source.sim_put("local:internal")
    ts.period_set.sim_put(100.0)
    return ts


def tick(ts, train_id: int, t_ns: int) -> None:
    """Deliver a tick at ``t_ns`` through the device's ID monitor callback."""
    ts.train_id._readback = train_id
    ts._on_id(value=train_id, timestamp=t_ns / 1e9)
