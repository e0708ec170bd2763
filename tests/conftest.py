"""Session-wide test setup.

The CA client environment is fixed here, at import time, before any test creates an
ophyd signal or a caproto client context: every IOC a test starts binds one port from
``ca_ports`` and the client searches exactly those ports on 127.0.0.1.
"""

from __future__ import annotations

import os

import pytest

from trainstamp.testing import CAPortPool

CA_PORTS = CAPortPool()
CA_PORTS.install()
os.environ.setdefault("OPHYD_CONTROL_LAYER", "caproto")


@pytest.fixture(scope="session", autouse=True)
def ca_repeater():
    """One CA repeater for the session, on the pool's repeater port, stopped at the end.

    caproto's sync client spawns a repeater that outlives the test run unless one is
    already listening; running our own keeps the machine clean.
    """
    with CA_PORTS.repeater() as proc:
        yield proc


@pytest.fixture(scope="session")
def ca_ports() -> CAPortPool:
    """The session's pool of loopback CA server ports (see :class:`CAPortPool`)."""
    return CA_PORTS
