"""A small process supervisor, and the readiness checks it polls.

:class:`Beamline` starts named :class:`Service` subprocesses (``python -m trainstamp
...``) in order, waits for each to be ready, and stops them all in reverse order. Every
child runs in its own process group and gets SIGTERM from the kernel if the supervisor
dies (Linux parent-death signal), so no child outlives it. ``trainstamp up`` and
``trainstamp demo`` build their services in :mod:`trainstamp.beamline`.

:meth:`Beamline.supervise` keeps them running: a child that dies is restarted on its
own, nothing else is touched, after a delay that doubles with each consecutive failure
up to a cap (:class:`RestartPolicy`, the pure rule; :class:`RestartTracker` applies it
to one child). Every death, restart and return to service is reported.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from trainstamp._children import child_preexec, spawn, stop_group
from trainstamp._readiness import START_MARK, ca_ready, log_ready, tcp_ready
from trainstamp._wait import wait_until

__all__ = [
    "Beamline",
    "RestartPolicy",
    "RestartTracker",
    "Service",
    "ca_ready",
    "describe_exit",
    "log_ready",
    "tcp_ready",
]


# --- services and the supervisor ----------------------------------------------------------


@dataclass
class Service:
    """One supervised child: ``python -m trainstamp <argv>`` plus a readiness check.

    ``ready()`` is polled until it returns something truthy (exceptions mean "not yet")
    or ``ready_timeout`` passes. ``where`` tells the user how to reach the service.
    ``command``, if given, is the whole command line instead (any program).
    """

    name: str
    argv: list[str]
    ready: Callable[[], object] | None = None
    where: str = ""
    env: dict[str, str] = field(default_factory=dict)
    ready_timeout: float = 30.0
    command: list[str] | None = None

    def command_line(self) -> list[str]:
        if self.command is not None:
            return list(self.command)
        return [sys.executable, "-m", "trainstamp", *self.argv]


# --- restart rule (pure) ----------------------------------------------------------------


@dataclass(frozen=True)
class RestartPolicy:
    """When to restart a child that died: capped exponential backoff.

    The n-th consecutive failure waits ``first_delay * factor**(n-1)`` seconds, at most
    ``max_delay``. A failure is consecutive unless the child had been ready for
    ``stable_after`` seconds; then the count starts again at 1. A child that dies before
    it is ready, or is not ready within its ``ready_timeout``, fails again.
    ``max_restarts`` bounds the consecutive restarts (``None``: no bound, the backoff
    cap alone paces a child that keeps failing; ``0``: never restart).
    """

    first_delay: float = 0.5
    factor: float = 2.0
    max_delay: float = 30.0
    stable_after: float = 60.0
    max_restarts: int | None = None

    def __post_init__(self) -> None:
        if not (self.first_delay >= 0 and self.factor >= 1 and self.max_delay >= self.first_delay
                and self.stable_after >= 0):
            raise ValueError(f"bad restart policy {self}: need first_delay >= 0, factor >= 1, "
                             "max_delay >= first_delay, stable_after >= 0")
        if self.max_restarts is not None and self.max_restarts < 0:
            raise ValueError(f"max_restarts {self.max_restarts} must be >= 0 or None")

    def delay(self, failures: int) -> float:
        """Seconds to wait before restarting after ``failures`` (>= 1) in a row."""
        if failures < 1:
            raise ValueError(f"failures {failures} must be >= 1")
        exponent = min(failures - 1, 64)  # the cap is reached long before; no overflow
        return min(self.max_delay, self.first_delay * self.factor ** exponent)


class RestartTracker:
    """One child's consecutive failures under a :class:`RestartPolicy` (no I/O; the
    caller passes monotonic times)."""

    def __init__(self, policy: RestartPolicy) -> None:
        self.policy = policy
        self.failures = 0
        self.restarts = 0
        self.ready_at: float | None = None

    def ready(self, now: float) -> None:
        self.ready_at = now

    def failed(self, now: float) -> float | None:
        """Record a failure at ``now``; the delay before the restart, or None to give up."""
        if self.ready_at is not None and now - self.ready_at >= self.policy.stable_after:
            self.failures = 0
        self.ready_at = None
        self.failures += 1
        limit = self.policy.max_restarts
        if limit is not None and self.failures > limit:
            return None
        self.restarts += 1
        return self.policy.delay(self.failures)

    def attempt_text(self) -> str:
        limit = self.policy.max_restarts
        return f"restart {self.failures}" + (f" of {limit}" if limit is not None else "")


def describe_exit(returncode: int | None) -> str:
    """``exited with code 3`` / ``killed by SIGKILL (signal 9)`` for a Popen return code."""
    if returncode is None:
        return "still running"
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = "an unknown signal"
        return f"killed by {name} (signal {-returncode})"
    return f"exited with code {returncode}"


class _Child:
    def __init__(self, service: Service, log_path: Path) -> None:
        self.service = service
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        # supervise(): "running", "waiting" (to restart at due), "starting" (until deadline)
        self.state = "running"
        self.due = 0.0
        self.started_at = 0.0

    def start(self, base_env: Mapping[str, str]) -> None:
        """Start the child; its output goes to the log, after a start line (a restart
        appends, so the log keeps what the dead child said)."""
        env = {**base_env, **self.service.env, "PYTHONUNBUFFERED": "1"}
        self.starts += 1
        with open(self.log_path, "ab" if self.starts > 1 else "wb") as log:
            log.write(f"{START_MARK} {self.starts} of {self.service.name} at "
                      f"{time.strftime('%Y-%m-%d %H:%M:%S')} ===\n".encode())
            log.flush()
            self.proc = spawn(self.service.command_line(), env, log, preexec=child_preexec)
        self.started_at = time.monotonic()

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def is_ready(self) -> tuple[bool, BaseException | None]:
        """One poll of the readiness check: (ready, why not)."""
        if self.service.ready is None:
            return True, None
        try:
            return bool(self.service.ready()), None
        except Exception as exc:  # "not ready yet"
            return False, exc

    def wait_ready(self) -> None:
        """Wait for the readiness check; fail at once if the child dies meanwhile."""

        def ready_or_dead() -> bool:
            if not self.alive or self.service.ready is None:
                return True
            return bool(self.service.ready())  # an exception: not yet

        name, limit = self.service.name, self.service.ready_timeout
        try:
            wait_until(ready_or_dead, timeout=limit, interval=0.05, message=f"{name} ready")
        except TimeoutError as exc:
            raise TimeoutError(f"{name} not ready after {limit:g} s ({exc.__cause__!r}):\n"
                               f"{self.tail()}") from exc.__cause__
        if not self.alive:
            raise RuntimeError(f"{name} {describe_exit(self.proc.returncode if self.proc else None)}"
                               f":\n{self.tail()}")

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGINT the child's process group, then SIGKILL after ``timeout``."""
        return None if self.proc is None else stop_group(self.proc, timeout)


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
    restart : RestartPolicy, optional
        How :meth:`supervise` restarts a child that died (the default policy if None).
    """

    def __init__(
        self,
        services: Sequence[Service],
        *,
        env: Mapping[str, str] | None = None,
        log_dir: str | os.PathLike | None = None,
        out: Callable[[str], object] = print,
        restart: RestartPolicy | None = None,
    ) -> None:
        names = [s.name for s in services]
        if len(set(names)) != len(names):
            raise ValueError(f"service names must be unique, got {names}")
        self.services = list(services)
        self.env = dict(os.environ if env is None else env)
        self.log_dir = Path(log_dir) if log_dir else Path(tempfile.mkdtemp(prefix="trainstamp-"))
        self.out = out
        self.restart = restart or RestartPolicy()
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
        """Block until a service dies; return its name (KeyboardInterrupt ends it too).
        Nothing is restarted; :meth:`supervise` does that."""
        while True:
            if dead := self.dead():
                return dead[0]
            time.sleep(poll)

    def pids(self) -> dict[str, int | None]:
        """The PID of each service's current process (None while it waits to restart)."""
        return {c.service.name: (c.proc.pid if c.proc is not None and c.state != "waiting"
                                 else None) for c in self.children}

    def supervise(self, *, poll: float = 0.1, until: threading.Event | None = None) -> str | None:
        """Keep every service running: restart a child that dies, alone, with backoff.

        Returns the name of a service that failed more often in a row than
        ``restart.max_restarts`` allows (the caller then stops the beamline), or None
        when ``until`` is set. KeyboardInterrupt ends it too. Each death is reported
        with the exit code or signal, the attempt and the delay; each return with the
        new PID and how long it took.
        """
        trackers = {c.service.name: RestartTracker(self.restart) for c in self.children}
        now = time.monotonic()
        for child in self.children:
            child.state = "running"
            trackers[child.service.name].ready(now)
        while until is None or not until.is_set():
            for child in self.children:
                if (gave_up := self._tend(child, trackers[child.service.name])) is not None:
                    return gave_up
            if until is not None:
                until.wait(poll)
            else:
                time.sleep(poll)
        return None

    def _tend(self, child: _Child, tracker: RestartTracker) -> str | None:
        name, now = child.service.name, time.monotonic()
        if child.state == "waiting":
            if now >= child.due:
                child.start(self.env)
                child.state = "starting"
            return None
        if child.state == "starting":
            if child.alive:
                ok, why = child.is_ready()
                if ok:
                    child.state = "running"
                    tracker.ready(now)
                    assert child.proc is not None
                    self.out(f"trainstamp up: {name} is back: pid {child.proc.pid}, ready in "
                             f"{now - child.started_at:.1f} s ({tracker.attempt_text()})")
                    return None
                if now - child.started_at < child.service.ready_timeout:
                    return None
                child.stop(timeout=2.0)
                reason = f" ({why!r})" if why is not None else ""
                return self._failed(child, tracker, f"was not ready within "
                                    f"{child.service.ready_timeout:g} s{reason}; stopped it")
        elif child.alive:
            return None
        assert child.proc is not None
        return self._failed(child, tracker, f"(pid {child.proc.pid}) "
                            f"{describe_exit(child.proc.returncode)}")

    def _failed(self, child: _Child, tracker: RestartTracker, what: str) -> str | None:
        name = child.service.name
        if child.proc is not None:
            # What the dead child started in its group (the detector IOC's receiver) must
            # not outlive it and hold its ports against the restart.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(child.proc.pid, signal.SIGKILL)
        delay = tracker.failed(time.monotonic())
        log = f"log {child.log_path}"
        if delay is None:
            self.out(f"trainstamp up: {name} {what}; it failed {tracker.failures} times in a "
                     f"row, more than the {self.restart.max_restarts} restarts allowed ({log})")
            return name
        child.state, child.due = "waiting", time.monotonic() + delay
        self.out(f"trainstamp up: {name} {what}; {tracker.attempt_text()} in {delay:g} s, "
                 f"the other services keep running ({log})")
        return None

    def __enter__(self) -> Beamline:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
