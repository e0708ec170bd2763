"""Free loopback ports, and waiting for a TCP listener to come up."""

from __future__ import annotations

import socket

from trainstamp.testing._wait import wait_until


def free_port(kind: str = "tcp", host: str = "127.0.0.1") -> int:
    """Return a port that is free on ``host`` for ``kind`` ("tcp", "udp" or "both")."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind((host, 0))
            port = tcp.getsockname()[1]
            if kind == "tcp":
                return port
            try:
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                    udp.bind((host, port))
            except OSError:
                continue
            return port


def wait_for_tcp(host: str, port: int, timeout: float = 10.0) -> None:
    """Wait until something accepts TCP connections on ``host:port``."""

    def connects() -> bool:
        with socket.create_connection((host, port), timeout=0.5):
            return True

    wait_until(connects, timeout=timeout, message=f"TCP listener on {host}:{port}")
