"""The EPICS Channel Access environment of a client and of a server, built in one place.

A client confined to a beamline searches exactly its IOCs (``EPICS_CA_ADDR_LIST``, no
automatic address list); a server serves on one port of one interface and sends its
beacons there only. ``trainstamp up``, the session and the tests all use these.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["ca_client_env", "ca_server_env"]


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
