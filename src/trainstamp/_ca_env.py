"""The EPICS Channel Access and PV Access environments of a client and of a server,
built in one place.

A client confined to a beamline searches exactly its IOCs (``EPICS_CA_ADDR_LIST``, no
automatic address list); a server serves on one port of one interface and sends its
beacons there only. ``trainstamp up``, the session and the tests all use these.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["ca_client_env", "ca_server_env", "pva_client_env", "pva_server_env"]


def ca_client_env(endpoints: Iterable[str]) -> dict[str, str]:
    """A CA client that searches exactly ``endpoints`` (``"host:port"``, duplicates
    dropped, order kept) and nothing else."""
    return {
        "EPICS_CA_AUTO_ADDR_LIST": "NO",
        "EPICS_CA_ADDR_LIST": " ".join(dict.fromkeys(endpoints)),
    }


def ca_server_env(host: str, port: int | None = None) -> dict[str, str]:
    """A CA server on ``host`` only (and on ``port``, if given), beaconing to ``host``."""
    env = {
        "EPICS_CAS_INTF_ADDR_LIST": host,
        "EPICS_CAS_AUTO_BEACON_ADDR_LIST": "NO",
        "EPICS_CAS_BEACON_ADDR_LIST": host,
    }
    if port is not None:
        env["EPICS_CA_SERVER_PORT"] = str(port)
    return env


def pva_server_env(host: str, server_port: int | None = None,
                   broadcast_port: int | None = None) -> dict[str, str]:
    """A PV Access server (p4p, pvxs) on ``host`` only, beaconing to ``host`` only.

    ``server_port`` (TCP) and ``broadcast_port`` (UDP searches), if given; port 0
    lets the server pick a free one (pvxs also falls back to a free TCP port when
    the one asked for is taken).
    """
    env = {
        "EPICS_PVAS_INTF_ADDR_LIST": host,
        "EPICS_PVA_ADDR_LIST": host,
        "EPICS_PVA_AUTO_ADDR_LIST": "NO",
    }
    if server_port is not None:
        env["EPICS_PVA_SERVER_PORT"] = str(server_port)
    if broadcast_port is not None:
        env["EPICS_PVA_BROADCAST_PORT"] = str(broadcast_port)
    return env


def pva_client_env(host: str, broadcast_port: int) -> dict[str, str]:
    """A PV Access client that searches ``host`` on UDP ``broadcast_port`` and nothing else."""
    return {
        "EPICS_PVA_ADDR_LIST": host,
        "EPICS_PVA_AUTO_ADDR_LIST": "NO",
        "EPICS_PVA_BROADCAST_PORT": str(broadcast_port),
    }
