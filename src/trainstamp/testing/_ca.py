"""Channel Access environments confined to loopback ports chosen by the test.

Client-side ``EPICS_CA_*`` variables are read when a client context is created, so a test
session must fix its address list before the first ophyd signal exists. A
:class:`CAPortPool` reserves a handful of ports up front, puts them all in
``EPICS_CA_ADDR_LIST`` and hands them to IOC subprocesses one by one.

The pool's ports lie outside the kernel's ephemeral range
(``/proc/sys/net/ipv4/ip_local_port_range``). A client socket bound to port 0 can
therefore never get one of them. That matters because the CA clients search every
pool port: caproto's sync client binds its search socket to port 0, and if that port
were a pool port with no IOC on it, the client would get its own search request back.
It reads that request as a search response (the same command, and its own cid), and
connects to a bogus address: "Disconnected during initialization". Each pool port is
also locked in a file under the temporary directory, so that test sessions running at
the same time on one machine never share a port.
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import os
import sys
import tempfile
import uuid
from collections.abc import Iterable, Iterator, MutableMapping
from pathlib import Path

from trainstamp._ca_env import ca_client_env, ca_server_env, pva_client_env, pva_server_env
from trainstamp._readiness import ephemeral_range, port_candidates, port_is_free

__all__ = ["CAPortPool", "PVAPorts", "ca_env", "ephemeral_range", "random_prefix", "reserve_port"]


def random_prefix(stem: str = "TST") -> str:
    """A PV prefix no other test will use, such as ``TST3f9a1c:``."""
    return f"{stem}{uuid.uuid4().hex[:6]}:"


def ca_env(
    server_ports: Iterable[int],
    repeater_port: int | None = None,
    base: MutableMapping[str, str] | None = None,
    server_port: int | None = None,
) -> dict[str, str]:
    """Environment for a CA client (and optionally a server) confined to loopback.

    ``server_ports`` are every UDP search port a client should reach.
    ``server_port``, if given, is the port a server started with this environment binds.
    ``OPHYD_CONTROL_LAYER`` stays as it is in ``base`` (a test session run under
    pyepics hands pyepics on), and is ``caproto`` if unset.

    An IOC's PV Access server (on by default) is confined too: loopback only, on free
    ports it picks itself (TCP and UDP port 0), beaconing to loopback; a test that
    talks PVA to an IOC gives it ports of its own (``pva_server_env``).
    """
    env = dict(os.environ if base is None else base)
    ports = list(server_ports)
    env.update(ca_client_env(f"127.0.0.1:{p}" for p in ports))
    env.update(ca_server_env("127.0.0.1", server_port))
    env.update(pva_server_env("127.0.0.1", 0, 0))
    env["OPHYD_CONTROL_LAYER"] = env.get("OPHYD_CONTROL_LAYER") or "caproto"
    if repeater_port is not None:
        env["EPICS_CA_REPEATER_PORT"] = str(repeater_port)
        # Beacons go to the session's repeater: on the default port nothing listens,
        # and every beacon would log "Failed to send beacon".
        env["EPICS_CAS_BEACON_PORT"] = str(repeater_port)
    return env


class CAPortPool:
    """A fixed set of CA server ports for one test session.

    The pool is large so that a port comes round again only long after the IOC that
    last used it has gone, and a search can never reach a lingering predecessor.

    ``install()`` writes the client environment into ``os.environ``; call it before any
    CA client context is created. ``next_port()`` hands out the ports round-robin, so
    concurrent IOCs in one session never share a search port.
    """

    def __init__(self, size: int = 40) -> None:
        self._locks: list[int] = []  # open, locked file descriptors: one per port
        ports = list(itertools.islice(_reserve_ports(self._locks), size + 1))
        *self.ports, self.repeater_port = ports
        self._cycle = itertools.cycle(self.ports)

    def next_port(self) -> int:
        return next(self._cycle)

    def env(self, server_port: int | None = None) -> dict[str, str]:
        return ca_env(self.ports, self.repeater_port, server_port=server_port)

    def install(self) -> None:
        os.environ.update(self.env())

    def repeater(self):
        """A CA repeater subprocess on this pool's repeater port (a context manager).

        While it runs, caproto clients find a repeater and do not spawn their own
        detached one, which would outlive the tests.
        """
        from caproto.sync.repeater import RepeaterAlreadyRunning, check_for_running_repeater

        from trainstamp.testing._process import Subprocess

        def running() -> bool:
            try:
                check_for_running_repeater(("0.0.0.0", self.repeater_port)).close()
            except RepeaterAlreadyRunning:
                return True
            return False

        return Subprocess([sys.executable, "-m", "caproto.commandline.repeater", "--quiet"],
                          env=self.env(), ready=running, python_module=False)


class PVAPorts:
    """A TCP and a UDP port for one PV Access server of a test, and the environment of
    that server and of a client that finds it (and nothing else).

    The ports lie outside the ephemeral range and are locked like a :class:`CAPortPool`'s,
    so no CA IOC and no other test session gets them.
    """

    def __init__(self) -> None:
        self._locks: list[int] = []
        self.server_port, self.broadcast_port = itertools.islice(_reserve_ports(self._locks), 2)

    def server_env(self) -> dict[str, str]:
        """``EPICS_PVA*`` of the server: loopback, on these two ports."""
        return pva_server_env("127.0.0.1", self.server_port, self.broadcast_port)

    def client_conf(self) -> dict[str, str]:
        """``EPICS_PVA*`` of a client (p4p ``Context(conf=..., useenv=False)``)."""
        return pva_client_env("127.0.0.1", self.broadcast_port)


def _reserve_ports(locks: list[int]) -> Iterator[int]:
    """Ports outside the ephemeral range, free now, each locked for this process."""
    lock_dir = Path(tempfile.gettempdir()) / "trainstamp-ca-ports"
    lock_dir.mkdir(exist_ok=True)
    for port in port_candidates():
        fd = os.open(lock_dir / f"{port}.lock", os.O_CREAT | os.O_RDWR, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # another test session holds it
            os.close(fd)
            continue
        if not port_is_free(port):
            with contextlib.suppress(OSError):
                fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
            continue
        locks.append(fd)  # held until the process exits
        yield port


_SESSION_LOCKS: list[int] = []
_SESSION_PORTS: Iterator[int] | None = None


def reserve_port() -> int:
    """A port for one service of a test: outside the ephemeral range, free for TCP and
    UDP now, never handed out twice in this process, and locked against other test
    sessions on the machine (like a :class:`CAPortPool`'s)."""
    global _SESSION_PORTS
    if _SESSION_PORTS is None:
        _SESSION_PORTS = _reserve_ports(_SESSION_LOCKS)
    return next(_SESSION_PORTS)
