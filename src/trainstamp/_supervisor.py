"""A small process supervisor, and the readiness checks it polls.

:class:`Beamline` starts named :class:`Service` subprocesses (``python -m trainstamp
...``) in order, waits for each to be ready, and stops them all in reverse order. Every
child runs in its own process group and gets SIGTERM from the kernel if the supervisor
dies (Linux parent-death signal), so no child outlives it. ``trainstamp up`` and
``trainstamp demo`` build their services in :mod:`trainstamp.beamline`.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Beamline", "Service", "ca_ready", "log_ready", "tcp_ready"]


# --- services and the supervisor ----------------------------------------------------------


@dataclass
class Service:
    """One supervised child: ``python -m trainstamp <argv>`` plus a readiness check.

    ``ready()`` is polled until it returns something truthy (exceptions mean "not yet")
    or ``ready_timeout`` passes. ``where`` tells the user how to reach the service.
    """

    name: str
    argv: list[str]
    ready: Callable[[], object] | None = None
    where: str = ""
    env: dict[str, str] = field(default_factory=dict)
    ready_timeout: float = 30.0


def _load_prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


_PRCTL = _load_prctl()  # loaded here: a child between fork and exec must not dlopen
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # runs in the child between fork and exec
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, signal.SIGTERM)


class _Child:
    def __init__(self, service: Service, log_path: Path) -> None:
        self.service = service
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, base_env: Mapping[str, str]) -> None:
        env = {**base_env, **self.service.env, "PYTHONUNBUFFERED": "1"}
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "trainstamp", *self.service.argv],
                env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,
                preexec_fn=_die_with_parent if _PRCTL is not None else None,
            )

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def wait_ready(self) -> None:
        check, deadline = self.service.ready, time.monotonic() + self.service.ready_timeout
        last: BaseException | None = None
        while check is not None:
            if not self.alive:
                raise RuntimeError(f"{self.service.name} exited with code "
                                   f"{self.proc.returncode if self.proc else None}:\n{self.tail()}")
            try:
                if check():
                    return
            except Exception as exc:  # "not ready yet" until the deadline
                last = exc
            if time.monotonic() >= deadline:
                raise TimeoutError(f"{self.service.name} not ready after "
                                   f"{self.service.ready_timeout:g} s ({last!r}):\n{self.tail()}")
            time.sleep(0.05)

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGINT the child's process group, then SIGKILL after ``timeout``."""
        if self.proc is None:
            return None
        for sig, wait in ((signal.SIGINT, timeout), (signal.SIGKILL, timeout)):
            if self.proc.poll() is not None:
                break
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(wait)
        # Anything the child left in its group goes too.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        return self.proc.returncode


class Beamline:
    """Start services in order, each ready before the next; stop them all in reverse.

    Parameters
    ----------
    services : sequence of Service
        What to run.
    env : mapping, optional
        Base environment of every child (``os.environ`` by default).
    log_dir : path, optional
        Where each child's output goes (``<name>.log``); a new temp directory by default.
    out : callable, optional
        Where progress lines go (``print`` by default).
    """

    def __init__(
        self,
        services: Sequence[Service],
        *,
        env: Mapping[str, str] | None = None,
        log_dir: str | os.PathLike | None = None,
        out: Callable[[str], object] = print,
    ) -> None:
        names = [s.name for s in services]
        if len(set(names)) != len(names):
            raise ValueError(f"service names must be unique, got {names}")
        self.services = list(services)
        self.env = dict(os.environ if env is None else env)
        self.log_dir = Path(log_dir) if log_dir else Path(tempfile.mkdtemp(prefix="trainstamp-"))
        self.out = out
        self.children: list[_Child] = []

    def start(self) -> Beamline:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        try:
            for service in self.services:
                child = _Child(service, self.log_dir / f"{service.name}.log")
                self.children.append(child)
                t0 = time.monotonic()
                child.start(self.env)
                child.wait_ready()
                assert child.proc is not None
                self.out(f"  {service.name:<15} pid {child.proc.pid:<7} ready in "
                         f"{time.monotonic() - t0:4.1f} s  {service.where}")
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        while self.children:
            self.children.pop().stop()

    def dead(self) -> list[str]:
        """Names of services that have exited."""
        return [c.service.name for c in self.children if not c.alive]

    def wait(self, poll: float = 0.5) -> str:
        """Block until a service dies; return its name (KeyboardInterrupt ends it too)."""
        while True:
            if dead := self.dead():
                return dead[0]
            time.sleep(poll)

    def __enter__(self) -> Beamline:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()



# --- readiness checks -------------------------------------------------------------------


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
    """A readiness check: ``text`` appears in the child's log."""

    def check() -> bool:
        return text in log_path.read_text(errors="replace")

    return check


def tcp_ready(host: str, port: int) -> Callable[[], bool]:
    """A readiness check: something accepts TCP connections on ``host:port``."""

    def check() -> bool:
        with socket.create_connection((host, port), timeout=0.5):
            return True

    return check
