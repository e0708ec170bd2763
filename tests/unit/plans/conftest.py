"""Fake TimeServer for network-free plan tests: the real device class, fake signals."""

from __future__ import annotations

import pytest
from ophyd.sim import make_fake_device
from plans_fakes import PERIOD_US, Clock

from trainstamp.timing.device import TimeServer


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def fake_timeserver(clock):
    """A TimeServer built from fake signals, with period 100 ms and an injected clock.

    ``plans_fakes.tick(ts, train_id, t_ns)`` delivers a tick as the ``ID`` monitor would.
    """
    ts = make_fake_device(TimeServer)("TS:", name="timeserver", clock_ns=clock)
    ts.period.sim_put(PERIOD_US)
    ts.source.sim_put("local:internal")
    ts.period_set.sim_put(100.0)
    ts.broadcast_uri.sim_put("")  # an IOC without a broadcaster: ticks from the monitor
    return ts
