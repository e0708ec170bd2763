"""``trainstamp up``: start the simulated beamline and keep it running.

The supervisor (:class:`Beamline`, :class:`Service`, in :mod:`trainstamp._supervisor`)
starts a list of named subprocesses in order, waits for each to be ready (with a
deadline), prints where each one is, and then keeps them running: a child that dies is
restarted alone, with a capped exponential backoff (:class:`RestartPolicy`), and each
death and return is reported on the console. It stops them all, in reverse order, on
KeyboardInterrupt/SIGTERM (or when a child fails more often in a row than
``--max-restarts`` allows). Every child runs in its own process group (so its own
children go with it) and gets SIGTERM if the supervisor itself dies (Linux parent-death
signal), so no child is ever left behind.

What runs comes from the beamline configuration (:mod:`trainstamp.config`), through
:func:`services`:

1. ``timeserver``: the TimeServer IOC, with its tick broadcaster (the train-ID source
   of everything else);
2. ``det-emulator``: the TEAM1k FPGA emulator, externally triggered by the broadcaster
   (one frame per train, the train ID in the packet headers);
3. ``det``: the detector IOC, configured for that trigger mode at start;
4. ``tagger-emulator``: the time-tagger emulator, one marker tag per train from the
   broadcaster;
5. ``tagger``: the tagger IOC with its Pyro5 server.

An emulator is left out when its section says ``emulate = false`` (real hardware).
Each IOC serves Channel Access on its own port on its host; clients reach exactly those
with ``EPICS_CA_AUTO_ADDR_LIST=NO`` and ``EPICS_CA_ADDR_LIST``
(:func:`trainstamp.config.client_env`).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import tempfile
import tomllib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from trainstamp._ca_env import ca_server_env, pva_server_env
from trainstamp._cli_types import non_negative_int, period_ms, port
from trainstamp._runtime import data_dir_of, publish_running, withdraw_running
from trainstamp._supervisor import (
    Beamline,
    RestartPolicy,
    Service,
    ca_ready,
    log_ready,
    tcp_ready,
)
from trainstamp.config import BeamlineConfig, client_env, load_config

__all__ = ["Beamline", "BeamlineConfig", "RestartPolicy", "Service", "main", "services"]


# --- the simulated beamline -------------------------------------------------------------


def server_env(host: str, port: int) -> dict[str, str]:
    """Environment of one IOC: serve CA on ``port``, on ``host`` only; PV Access on
    ``host`` only too (its usual ports, beacons to ``host``)."""
    return ca_server_env(host, port) | pva_server_env(host)


def detector_data_dir(config: BeamlineConfig, data_dir: str | os.PathLike | None = None) -> Path:
    """Where the detector IOC writes captures: ``[detector].data_dir``, else the
    ``detector/`` folder of the storage data directory, so the catalog reads them back."""
    if config.detector.data_dir:
        return Path(config.detector.data_dir).expanduser().resolve()
    from trainstamp.storage import StorageConfig

    return StorageConfig.resolve(data_dir).detector_dir


def services(config: BeamlineConfig, run_dir: str | os.PathLike, *,
             data_dir: str | os.PathLike | None = None) -> list[Service]:
    """The beamline's services, in start order.

    ``run_dir`` is the supervisor's log directory (``<name>.log`` per service); the
    detector's start-up parameter file is written there too. ``data_dir`` is the
    storage data directory the detector captures go under (see :func:`detector_data_dir`).
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    ts, det, tt = config.timeserver, config.detector, config.tagger
    env = client_env(config)
    timeout = config.ready_timeout
    out: list[Service] = [Service(
        name="timeserver",
        argv=["ioc", "timeserver", "--prefix", ts.prefix, "--source", ts.source,
              "--period", f"{ts.period_ms:g}", "--broadcast-port", str(ts.broadcast_port),
              "--broadcast-bind", ts.host, "--interfaces", ts.host],
        env=server_env(ts.host, ts.ca_port),
        ready=ca_ready({ts.prefix + "ID": lambda v: float(v) > 0}, env),
        ready_timeout=timeout,
        where=f"{ts.prefix}* on CA {ts.host}:{ts.ca_port}; ticks on {ts.broadcast_uri}",
    )]
    if det.emulate:
        out.append(Service(
            name="det-emulator",
            argv=["emulate", "detector", "--bind", det.detector_ip,
                  "--register-port", str(det.register_port), "--data-port", str(det.data_port),
                  "--trains", ts.broadcast_uri, *(["--test-mode"] if det.test_mode else [])],
            ready=log_ready(run_dir / "det-emulator.log", "emulator ready"), ready_timeout=timeout,
            where=f"FPGA registers udp://{det.detector_ip}:{det.register_port}, "
                  f"data udp://{det.detector_ip}:{det.data_port}, trains from {ts.broadcast_uri}",
        ))
    params = run_dir / "detector-startup.cfg"
    params.write_text(f"# written by trainstamp up from {config.origin}\n"
                      f"trigger_mode {det.trigger_mode}\n"
                      f"integration_time {det.integration_time_ms:g}\n"
                      f"test_mode {int(det.test_mode)}\n")
    trigger = 1 if det.trigger_mode == "EXTERNAL" else 0
    captures = detector_data_dir(config, data_dir)
    out.append(Service(
        name=det.name,
        argv=["ioc", "detector", "--prefix", det.prefix, "--interfaces", det.host,
              "--detector-ip", det.detector_ip, "--register-port", str(det.register_port),
              "--data-port", str(det.data_port), "--data-dir", str(captures),
              "--zmq-port", str(det.zmq_port), "--zmq-bind", det.host, "--bellow-port", "none",
              "--config", str(params), "--ring-slots", "32", "--log-level", "WARNING"],
        env=server_env(det.host, det.ca_port),
        ready=ca_ready({det.prefix + "STATUS": lambda v: v == "OK",
                        det.prefix + "TRIGGER_MODE": lambda v: int(v) == trigger}, env),
        ready_timeout=timeout,
        where=f"{det.prefix}* on CA {det.host}:{det.ca_port}; frames on "
              f"tcp://{det.host}:{det.zmq_port}; captures in {captures}",
    ))
    if tt.emulate:
        out.append(Service(
            name="tagger-emulator",
            argv=["emulate", "tagger", "--bind", tt.tagger_host, "--port", str(tt.tag_port),
                  "--trains", ts.broadcast_uri, *tt.emulator_args],
            ready=log_ready(run_dir / "tagger-emulator.log", "listening on"),
            ready_timeout=timeout,
            where=f"tag stream tcp://{tt.tagger_host}:{tt.tag_port}, markers from "
                  f"{ts.broadcast_uri}",
        ))
    ioc_ready = ca_ready({tt.prefix + "CONNECTED": lambda v: bool(v),
                          tt.prefix + "LAST_TRAIN_ID": lambda v: float(v) > 0}, env)
    pyro_ready = tcp_ready(tt.host, tt.pyro_port)
    out.append(Service(
        name=tt.name,
        argv=["ioc", "tagger", "--prefix", tt.prefix, "--interfaces", tt.host,
              "--tagger", f"tcp://{tt.tagger_host}:{tt.tag_port}", "--trains", ts.broadcast_uri,
              "--pyro-host", tt.host, "--pyro-port", str(tt.pyro_port)],
        env=server_env(tt.host, tt.ca_port),
        ready=lambda: ioc_ready() and pyro_ready(),
        ready_timeout=timeout,
        where=f"{tt.prefix}* on CA {tt.host}:{tt.ca_port}; Pyro5 {tt.pyro_uri}",
    ))
    return out


# --- command line -----------------------------------------------------------------------


def _toml_value(text: str) -> object:
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text  # a bare word is a string


def _setting(text: str) -> tuple[str, str, object]:
    key, eq, value = text.partition("=")
    section, dot, name = key.strip().partition(".")
    if not eq or not dot or not name:
        raise argparse.ArgumentTypeError(f"--set {text!r}: expected SECTION.KEY=VALUE, "
                                         "e.g. detector.prefix=DET1:")
    return section, name, _toml_value(value.strip())


def _restarts(text: str) -> int | None:
    if text in ("none", "unlimited"):
        return None
    try:
        return non_negative_int(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"--max-restarts {text!r}: a number >= 0, or none") \
            from None


def add_beamline_arguments(parser: argparse.ArgumentParser, *, free_ports: bool) -> None:
    """The options shared by ``trainstamp up`` and ``trainstamp demo``."""
    parser.add_argument("--config", default=None,
                        help="beamline configuration file (TOML; default $TRAINSTAMP_CONFIG, "
                             "else the packaged default; see docs/beamline.md)")
    parser.add_argument("--set", dest="settings", type=_setting, action="append", default=[],
                        metavar="SECTION.KEY=VALUE",
                        help="override one configuration key, e.g. --set timeserver.period_ms=50 "
                             "(repeatable; the value is TOML, a bare word is a string)")
    if free_ports:
        parser.add_argument("--fixed-ports", action="store_true",
                            help="use the configured ports instead of free loopback ports")
    else:
        parser.add_argument("--free-ports", action="store_true",
                            help="move every service to a free port on 127.0.0.1")
        parser.add_argument("--ca-port", type=port, default=None,
                            help="CA server ports PORT, PORT+1, PORT+2 for the three IOCs")
        parser.add_argument("--broadcast-port", type=port, default=None,
                            help="TCP port of the TimeServer's tick broadcaster")
    parser.add_argument("--timeserver-prefix", default=None, help="TimeServer PV prefix")
    parser.add_argument("--period", type=period_ms, default=None,
                        help="train period in ms (1..60000)")
    parser.add_argument("--log-dir", default=None,
                        help="directory for the children's logs (default: a temp directory)")


def config_from_args(args: argparse.Namespace, parser: argparse.ArgumentParser) -> BeamlineConfig:
    """The configuration named by ``--config``, with the command-line overrides applied;
    a bad file or value exits through ``parser.error`` (code 2) with the reason."""
    try:
        config = load_config(args.config)
        if getattr(args, "free_ports", False) or not getattr(args, "fixed_ports", True):
            config = config.with_free_ports()
        if getattr(args, "ca_port", None):
            for i, section in enumerate(("timeserver", "detector", "tagger")):
                if args.ca_port + i > 65535:
                    raise ValueError(f"--ca-port {args.ca_port}: needs 3 ports up to 65535")
                config = config.replace_section(section, ca_port=args.ca_port + i)
        if getattr(args, "broadcast_port", None):
            config = config.replace_section("timeserver", broadcast_port=args.broadcast_port)
        if args.timeserver_prefix is not None:
            config = config.replace_section("timeserver", prefix=args.timeserver_prefix)
        if args.period is not None:
            config = config.replace_section("timeserver", period_ms=args.period)
        for section, key, value in args.settings:
            config = config.replace_section(section, **{key: value})
    except (ValueError, TypeError) as exc:
        parser.error(str(exc))
    return config


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Turn SIGTERM and SIGINT into KeyboardInterrupt, so ``with Beamline(...)`` cleans
    up. SIGINT too: started in the background by a non-interactive shell, a process
    inherits SIGINT ignored, and Ctrl-C (or ``kill -INT``) would then do nothing."""

    def handler(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    previous_int = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGINT, previous_int)


def print_endpoints(config: BeamlineConfig, out: Callable[[str], object] = print) -> None:
    """The client's view: device names, PV prefixes, Pyro5 URI and the EPICS environment."""
    ts, det, tt = config.timeserver, config.detector, config.tagger
    out("\ndevices (trainstamp.session.make_devices):")
    out(f"  {ts.name:<10} TimeServer  {ts.prefix}")
    out(f"  {det.name:<10} Team1k      {det.prefix}")
    out(f"  {tt.name:<10} TimeTagger  {tt.prefix}   Pyro5 {tt.pyro_uri}")
    out("\nclients need this environment:")
    for key, value in client_env(config).items():
        out(f"  export {key}='{value}'")


def main(argv: Sequence[str]) -> int:
    """``trainstamp up``: start the simulated beamline and run until Ctrl-C."""
    parser = argparse.ArgumentParser(
        prog="trainstamp up",
        description="Start the simulated beamline (TimeServer IOC with its broadcaster, "
                    "detector FPGA emulator and IOC, tagger emulator and IOC with Pyro5) "
                    "and keep it running until Ctrl-C.")
    add_beamline_arguments(parser, free_ports=False)
    parser.add_argument("--data-dir", default=None,
                        help="storage data directory; detector captures go to its detector/ "
                             "folder (default $TRAINSTAMP_DATA_DIR or ./data)")
    default = RestartPolicy()
    parser.add_argument("--max-restarts", type=_restarts, default=None, metavar="N",
                        help="restart a service that dies at most N times in a row, then "
                             "stop the beamline (default: none, no bound; 0: stop the "
                             "beamline when any service dies). Restarts wait "
                             f"{default.first_delay:g} s, doubling up to {default.max_delay:g} s; "
                             f"{default.stable_after:g} s of service reset the count")
    args = parser.parse_args(list(argv))
    config = config_from_args(args, parser)
    data_dir = data_dir_of(args.data_dir)
    log_dir = Path(args.log_dir) if args.log_dir else Path(tempfile.mkdtemp(prefix="trainstamp-up-"))
    say = lambda s: print(s, flush=True)  # noqa: E731
    say(f"trainstamp up: starting the simulated beamline from {config.origin} "
        f"(logs in {log_dir}):")
    try:
        policy = RestartPolicy(max_restarts=args.max_restarts)
        with sigterm_as_interrupt(), Beamline(services(config, log_dir, data_dir=data_dir),
                                              log_dir=log_dir, out=say,
                                              restart=policy) as beamline:
            print_endpoints(config, say)
            running = publish_running(config, data_dir)
            say(f"\nThese ports are published in {running} for `trainstamp session` and the "
                "queue server's startup on the same data directory.")
            bound = ("without bound" if policy.max_restarts is None
                     else f"at most {policy.max_restarts} times in a row")
            say(f"\nA service that dies is restarted on its own ({bound}). "
                "Ctrl-C stops everything.")
            name = beamline.supervise()
            print(f"trainstamp up: {name} keeps failing; stopping the beamline "
                  f"(see {log_dir / (name + '.log')})", file=sys.stderr)
            return 1
    except KeyboardInterrupt:
        say("\nstopped.")
        return 0
    except (RuntimeError, TimeoutError, OSError) as exc:
        print(f"trainstamp up: {exc}", file=sys.stderr)
        return 1
    finally:
        withdraw_running(data_dir)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
