"""The readiness checks :class:`~trainstamp._supervisor.Beamline` polls for each service,
and the free ports it (and the tests) give them.

Each check is a function of no arguments that returns something truthy once the service
is ready; an exception means "not yet".
"""

from __future__ import annotations

import contextlib
import os
import random
import socket
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

__all__ = ["START_MARK", "ca_ready", "ephemeral_range", "free_ports", "log_ready", "port_candidates",
           "port_is_free", "tcp_ready"]

#: The line the supervisor writes into a child's log before each start; readiness
#: checks on the log (:func:`log_ready`) look only at what follows the last one.
START_MARK = "=== trainstamp supervisor: start"


@contextlib.contextmanager
def _environ(env: Mapping[str, str]) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _ca_value(pv: str) -> object:
    from caproto.sync.client import read

    # repeater=False: do not spawn a caproto-repeater that would outlive us.
    data = read(pv, timeout=0.5, repeater=False).data
    if len(data) and isinstance(data[0], bytes):
        return b"".join(data).decode(errors="replace")
    return data[0] if len(data) == 1 else data


def ca_ready(checks: Mapping[str, Callable[[object], bool] | None],
             env: Mapping[str, str]) -> Callable[[], bool]:
    """A readiness check: every PV in ``checks`` answers a CA read (with ``env``) and
    its value passes the predicate (``None``: any value)."""

    def check() -> bool:
        with _environ(env):
            for pv, ok in checks.items():
                value = _ca_value(pv)
                if ok is not None and not ok(value):
                    raise RuntimeError(f"{pv} = {value!r}")
        return True

    return check


def log_ready(log_path: Path, text: str) -> Callable[[], bool]:
    """A readiness check: ``text`` appears in the child's log since its last start."""

    def check() -> bool:
        return text in log_path.read_text(errors="replace").rsplit(START_MARK, 1)[-1]

    return check


def tcp_ready(host: str, port: int) -> Callable[[], bool]:
    """A readiness check: something accepts TCP connections on ``host:port``."""

    def check() -> bool:
        with socket.create_connection((host, port), timeout=0.5):
            return True

    return check


def ephemeral_range() -> tuple[int, int]:
    """The kernel's range for ports bound to 0 (Linux default 32768..60999)."""
    try:
        low, high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    except (OSError, ValueError):
        low, high = 32768, 60999
    return low, high


def port_candidates() -> list[int]:
    """Every port from 10000 up that lies outside the ephemeral range, shuffled.

    A port bound to 0 lands inside the ephemeral range, and so does the local end of
    every outgoing TCP connection (a CA circuit, a Pyro5 proxy, an HTTP request). A port
    chosen that way and handed to a child to bind later can be taken in between by any
    such connection ("Address already in use"); a port outside the range cannot.
    """
    low, high = ephemeral_range()
    ports = [p for p in (*range(10_000, low), *range(high + 1, 65_536)) if p > 1023]
    random.SystemRandom().shuffle(ports)
    return ports


def port_is_free(port: int, host: str = "127.0.0.1", kind: str = "both") -> bool:
    """Whether ``port`` can be bound on ``host`` now, for "tcp", "udp" or "both"."""
    kinds = {"tcp": (socket.SOCK_STREAM,), "udp": (socket.SOCK_DGRAM,),
             "both": (socket.SOCK_STREAM, socket.SOCK_DGRAM)}[kind]
    for sock_kind in kinds:
        with socket.socket(socket.AF_INET, sock_kind) as sock:
            try:
                sock.bind((host, port))
            except OSError:
                return False
    return True


def free_ports(n: int, host: str = "127.0.0.1", kind: str = "both") -> list[int]:
    """``n`` distinct ports free on ``host`` right now, for ``kind``: "tcp", "udp" or
    "both" (free for TCP and UDP alike, as a detector's register and data ports are).

    They lie outside the ephemeral range (:func:`port_candidates`), so no outgoing
    connection takes one before the service it is meant for binds it.
    """
    if kind not in ("tcp", "udp", "both"):
        raise ValueError(f"kind must be 'tcp', 'udp' or 'both', got {kind!r}")
    ports: list[int] = []
    for port in port_candidates():
        if port_is_free(port, host, kind):
            ports.append(port)
            if len(ports) == n:
                return ports
    raise OSError(f"fewer than {n} free {kind} ports on {host} outside the ephemeral range")
