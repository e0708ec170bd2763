"""Free loopback ports, and waiting for a TCP listener to come up."""

from __future__ import annotations

from trainstamp._readiness import free_ports, tcp_ready
from trainstamp._wait import wait_until


def free_port(kind: str = "tcp", host: str = "127.0.0.1") -> int:
    """Return a port that is free on ``host`` for ``kind`` ("tcp", "udp" or "both")."""
    return free_ports(1, host, kind)[0]


def wait_for_tcp(host: str, port: int, timeout: float = 10.0) -> None:
    """Wait until something accepts TCP connections on ``host:port``."""
    wait_until(tcp_ready(host, port), timeout=timeout, message=f"TCP listener on {host}:{port}")
