"""``trainstamp up``: start the simulated beamline and keep it running.

A small process supervisor. A :class:`Beamline` starts a list of named
:class:`Service` subprocesses in order, waits for each to be ready (with a deadline),
prints where each one is, and stops them all, in reverse order, on exit, on
KeyboardInterrupt/SIGTERM or when one of them dies. Every child runs in its own process
group (so its own children go with it) and gets SIGTERM if the supervisor itself dies
(Linux parent-death signal), so no child is ever left behind.

What runs is described by :class:`BeamlineConfig`: today the TimeServer IOC on its
internal source; the detector and tagger emulators and IOCs are added as more
:class:`Service` entries in :meth:`BeamlineConfig.services`. Everything listens on
127.0.0.1. Each IOC gets its own Channel Access port (``ca_port`` + n) because two
servers cannot share a UDP search port on loopback, and clients reach them with
``EPICS_CA_AUTO_ADDR_LIST=NO`` and ``EPICS_CA_ADDR_LIST`` naming exactly those ports
(:meth:`BeamlineConfig.client_env`).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from trainstamp.timing._core import check_period_ms
from trainstamp.timing._pvnames import DEFAULT_BROADCAST_PORT, DEFAULT_PREFIX, PV

__all__ = ["Beamline", "BeamlineConfig", "Service", "main"]

#: First Channel Access server port of ``trainstamp up`` (one port per IOC from here).
DEFAULT_CA_PORT = 5164
HOST = "127.0.0.1"


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
                self.out(f"  {service.name:<12} pid {child.proc.pid:<7} ready in "
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


# --- the simulated beamline ------------------------------------------------------------


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


def ca_ready(pv: str, client_env: Mapping[str, str]) -> Callable[[], bool]:
    """A readiness check that reads ``pv`` once over CA with ``client_env``."""

    def check() -> bool:
        from caproto.sync.client import read

        with _environ(client_env):
            # repeater=False: do not spawn a caproto-repeater that would outlive us.
            read(pv, timeout=0.5, repeater=False)
        return True

    return check


def _free_port() -> int:
    import socket

    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind((HOST, 0))
            port = tcp.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind((HOST, port))
                except OSError:
                    continue
            return port


@dataclass
class BeamlineConfig:
    """Ports, prefixes and rates of the simulated beamline.

    ``ca_port`` is the first CA server port (IOC n uses ``ca_port + n``); ``None`` picks
    free ports, as the demo does so it never collides with a running ``trainstamp up``.
    ``broadcast_port`` ``None`` likewise picks a free port.
    """

    ca_port: int | None = DEFAULT_CA_PORT
    timeserver_prefix: str = DEFAULT_PREFIX
    period_ms: float = 100.0
    source: str = "local:internal"
    broadcast_port: int | None = DEFAULT_BROADCAST_PORT
    ready_timeout: float = 30.0
    _ports: dict[str, int] = field(default_factory=dict, repr=False)

    #: The IOCs of the beamline, in CA port order: IOC n serves on ``ca_port + n``.
    #: A new IOC appends its name here and its :class:`Service` in :meth:`services`.
    IOCS = ("timeserver",)

    def ca_port_of(self, ioc: str) -> int:
        """The CA server port of ``ioc`` (one of :attr:`IOCS`)."""
        return self.ca_port_map()[ioc]

    def ca_port_map(self) -> dict[str, int]:
        if not self._ports:
            for i, name in enumerate(self.IOCS):
                port = _free_port() if self.ca_port is None else self.ca_port + i
                self._ports[name] = port
        return dict(self._ports)

    def ca_ports(self) -> list[int]:
        """Every CA server port of the beamline, in :attr:`IOCS` order."""
        return list(self.ca_port_map().values())

    def resolved_broadcast_port(self) -> int:
        if self.broadcast_port is None:
            self.broadcast_port = _free_port()
        return self.broadcast_port

    def client_env(self) -> dict[str, str]:
        """The EPICS environment a client of this beamline needs."""
        return {
            "EPICS_CA_AUTO_ADDR_LIST": "NO",
            "EPICS_CA_ADDR_LIST": " ".join(f"{HOST}:{p}" for p in self.ca_ports()),
            "OPHYD_CONTROL_LAYER": "caproto",
        }

    def server_env(self, port: int) -> dict[str, str]:
        """Environment of one IOC: serve on ``port``, on loopback only."""
        return {
            "EPICS_CA_SERVER_PORT": str(port),
            "EPICS_CAS_INTF_ADDR_LIST": HOST,
            "EPICS_CAS_AUTO_BEACON_ADDR_LIST": "NO",
            "EPICS_CAS_BEACON_ADDR_LIST": HOST,
        }

    @property
    def broadcast_uri(self) -> str:
        return f"tcp://{HOST}:{self.resolved_broadcast_port()}"

    def services(self) -> list[Service]:
        """The beamline's services, in start order."""
        ts_port = self.ca_port_of("timeserver")
        prefix = self.timeserver_prefix
        timeserver = Service(
            name="timeserver",
            argv=["ioc", "timeserver", "--prefix", prefix, "--source", self.source,
                  "--period", f"{self.period_ms:g}",
                  "--broadcast-port", str(self.resolved_broadcast_port()),
                  "--interfaces", HOST],
            env=self.server_env(ts_port),
            ready=ca_ready(prefix + PV.ID, self.client_env()),
            ready_timeout=self.ready_timeout,
            where=f"PVs {prefix}* on CA {HOST}:{ts_port}, ticks on {self.broadcast_uri}",
        )
        return [timeserver]


def _period(text: str) -> float:
    try:
        return check_period_ms(float(text))  # the IOC's own limits
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _port(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"port {text!r} outside 1..65535")
    return int(text)


def add_beamline_arguments(parser: argparse.ArgumentParser, *, free_ports: bool) -> None:
    """The options shared by ``trainstamp up`` and ``trainstamp demo``."""
    where = "free ports" if free_ports else f"{DEFAULT_CA_PORT}"
    parser.add_argument("--ca-port", type=_port, default=None if free_ports else DEFAULT_CA_PORT,
                        help=f"first Channel Access server port, one per IOC (default {where})")
    parser.add_argument("--timeserver-prefix", default=DEFAULT_PREFIX,
                        help=f"TimeServer PV prefix (default {DEFAULT_PREFIX})")
    parser.add_argument("--period", type=_period, default=100.0,
                        help="train period in ms (default 100, i.e. 10 Hz)")
    parser.add_argument("--broadcast-port", type=_port,
                        default=None if free_ports else DEFAULT_BROADCAST_PORT,
                        help="TCP port of the TimeServer's tick broadcaster (default "
                             f"{'a free port' if free_ports else DEFAULT_BROADCAST_PORT})")
    parser.add_argument("--log-dir", default=None,
                        help="directory for the children's logs (default: a temp directory)")


def config_from_args(args: argparse.Namespace) -> BeamlineConfig:
    return BeamlineConfig(ca_port=args.ca_port, timeserver_prefix=args.timeserver_prefix,
                          period_ms=args.period, broadcast_port=args.broadcast_port)


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Turn SIGTERM into KeyboardInterrupt, so ``with Beamline(...)`` cleans up."""

    def handler(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: Sequence[str]) -> int:
    """``trainstamp up``: start the simulated beamline and run until Ctrl-C."""
    parser = argparse.ArgumentParser(
        prog="trainstamp up",
        description="Start the simulated beamline on 127.0.0.1 (today: the TimeServer IOC "
                    "on its internal source) and keep it running until Ctrl-C.")
    add_beamline_arguments(parser, free_ports=False)
    args = parser.parse_args(list(argv))
    config = config_from_args(args)
    print("starting the simulated beamline:", flush=True)
    try:
        with sigterm_as_interrupt(), Beamline(config.services(), log_dir=args.log_dir,
                                              out=lambda s: print(s, flush=True)) as beamline:
            print(f"logs in {beamline.log_dir}")
            print("\nclients need this environment:")
            for key, value in config.client_env().items():
                print(f"  export {key}='{value}'")
            print("\nCtrl-C stops everything.", flush=True)
            name = beamline.wait()
            print(f"trainstamp up: {name} exited; stopping the beamline", file=sys.stderr)
            return 1
    except KeyboardInterrupt:
        print("\nstopped.")
        return 0
    except (RuntimeError, TimeoutError, OSError) as exc:
        print(f"trainstamp up: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
