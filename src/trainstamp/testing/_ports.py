"""Free loopback ports, and waiting for a TCP listener to come up."""

from __future__ import annotations

from trainstamp._readiness import free_ports, tcp_ready
from trainstamp._wait import wait_until


def free_port(kind: str = "tcp", host: str = "127.0.0.1") -> int:
    """A port free on ``host`` for ``kind`` ("tcp", "udp" or "both").

    On loopback it is a session-reserved port (:func:`~trainstamp.testing._ca.reserve_port`):
    outside the ephemeral range, so no outgoing connection of the test takes it before
    the service it is meant for binds it, and never given to two services of a session.
    """
    if host == "127.0.0.1":
        from trainstamp.testing._ca import reserve_port

        return reserve_port()
    return free_ports(1, host, kind)[0]


def wait_for_tcp(host: str, port: int, timeout: float = 10.0) -> None:
    """Wait until something accepts TCP connections on ``host:port``."""
    wait_until(tcp_ready(host, port), timeout=timeout, message=f"TCP listener on {host}:{port}")
