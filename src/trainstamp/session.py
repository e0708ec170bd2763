"""``trainstamp session``: the IPython Bluesky session, and the pieces of its profile.

The profile lives in ``profiles/profile_trainstamp/startup/`` (numbered files, run in
order by IPython and by bluesky-queueserver's ``start-re-manager --startup-dir``). The
startup files stay short; what they do is here, so it can be tested and reused:

- :func:`apply_client_env`, :func:`choose_matplotlib_backend`: environment first.
- :func:`make_best_effort_callback`, :func:`install_progress_bars`: live feedback
  that works without a display.
- :func:`make_devices`: the three ophyd devices of the beamline configuration.
- :func:`report_connections`: wait briefly for the IOCs and say which answered.
- :func:`open_session_catalog`: the run catalog, with the RunEngine subscribed;
  :func:`report_spools`: runs the catalog could not take, waiting in the spool.
- :func:`load_startup`: run the startup files into a namespace (``--check`` and tests);
  :func:`close_session`: disconnect the devices and close the catalog at the end.
- :func:`main`: ``trainstamp session [--profile-dir DIR] [--config FILE]
  [--data-dir DIR] [--check] [-- IPYTHON ARGS]``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trainstamp._wait import wait_until

if TYPE_CHECKING:
    from trainstamp.config import BeamlineConfig

__all__ = [
    "ENV_CONNECT_TIMEOUT",
    "ENV_KEEP_EPICS_ENV",
    "ENV_PROFILE_DIR",
    "apply_client_env",
    "banner",
    "choose_matplotlib_backend",
    "close_session",
    "default_profile_dir",
    "has_display",
    "install_progress_bars",
    "load_startup",
    "main",
    "make_best_effort_callback",
    "make_devices",
    "open_session_catalog",
    "report_connections",
    "report_spools",
]

#: Profile directory to use instead of the one in the source tree.
ENV_PROFILE_DIR = "TRAINSTAMP_PROFILE_DIR"
#: Seconds the profile waits for the IOCs before it goes on (default 2).
ENV_CONNECT_TIMEOUT = "TRAINSTAMP_CONNECT_TIMEOUT"
#: Set to 1 to keep an EPICS_CA_* environment that is already set.
ENV_KEEP_EPICS_ENV = "TRAINSTAMP_KEEP_EPICS_ENV"
DEFAULT_CONNECT_TIMEOUT = 2.0


# --- the pieces of the profile -----------------------------------------------------------


def make_devices(config: BeamlineConfig | None = None) -> dict[str, Any]:
    """The ophyd devices of the beamline, by the names users type.

    Returns ``{timeserver.name: TimeServer, detector.name: Team1k, tagger.name:
    TimeTagger}`` (by default ``timeserver``, ``det``, ``tagger``), not yet connected.
    The CA client environment (:func:`trainstamp.config.client_env`) must already be in
    place, since ophyd reads it when the first signal connects. ``config`` defaults to
    :func:`trainstamp.config.load_config`. It lives here, not in :mod:`trainstamp.config`,
    so that reading a configuration never imports the device classes.
    """
    from trainstamp.config import load_config
    from trainstamp.detector import Team1k
    from trainstamp.tagger import TimeTagger
    from trainstamp.timing.device import TimeServer

    config = config or load_config()
    ts, det, tt = config.timeserver, config.detector, config.tagger
    return {
        ts.name: TimeServer(ts.prefix, name=ts.name),
        det.name: Team1k(det.prefix, name=det.name),
        tt.name: TimeTagger(tt.prefix, name=tt.name),
    }


def apply_client_env(config: Any, environ: Any = None) -> dict[str, str]:
    """Put the beamline's CA client environment into ``environ`` (``os.environ``).

    Must run before the first ophyd signal is created. With ``TRAINSTAMP_KEEP_EPICS_ENV=1``
    an ``EPICS_CA_ADDR_LIST`` already set is kept. An ``OPHYD_CONTROL_LAYER`` already set
    (``pyepics``) is kept too. Returns what was applied.
    """
    env = os.environ if environ is None else environ
    wanted = dict(config.client_env())
    if env.get("OPHYD_CONTROL_LAYER"):
        wanted.pop("OPHYD_CONTROL_LAYER", None)
    if env.get(ENV_KEEP_EPICS_ENV) == "1" and env.get("EPICS_CA_ADDR_LIST"):
        wanted = {k: v for k, v in wanted.items() if not k.startswith("EPICS_CA_")}
    env.update(wanted)
    return wanted


def has_display(environ: Mapping[str, str] | None = None) -> bool:
    """Whether a graphical display is available (X11 or Wayland)."""
    env = os.environ if environ is None else environ
    return bool(env.get("DISPLAY") or env.get("WAYLAND_DISPLAY"))


def choose_matplotlib_backend(environ: Any = None) -> str:
    """Use matplotlib's Agg backend when there is no display; return the backend.

    ``MPLBACKEND`` set by the user is left alone.
    """
    env = os.environ if environ is None else environ
    if not has_display(env) and not env.get("MPLBACKEND"):
        env["MPLBACKEND"] = "Agg"
        if "matplotlib" in sys.modules:
            import matplotlib

            matplotlib.use("Agg")
    return env.get("MPLBACKEND", "")


def make_best_effort_callback(*, plots: bool | None = None) -> Any:
    """A BestEffortCallback that prints tables, and plots only if a display is there.

    ``plots=None`` decides from :func:`has_display`; without a display (a terminal over
    ssh, the queue server, tests) plotting is disabled, so no figure window is ever
    asked for.
    """
    from bluesky.callbacks.best_effort import BestEffortCallback

    bec = BestEffortCallback()
    if not (has_display() if plots is None else plots):
        bec.disable_plots()
    return bec


def install_progress_bars(RE: Any, *, force: bool = False) -> bool:
    """Show tqdm progress bars for long statuses (bluesky's ProgressBarManager).

    Only in an interactive IPython session (or with ``force``): in a queue server or a
    script the bars would only clutter the log. Returns whether they were installed.
    """
    interactive = False
    try:
        from IPython import get_ipython

        interactive = get_ipython() is not None
    except ImportError:
        pass
    if not (interactive or force):
        return False
    from bluesky.utils import ProgressBarManager

    RE.waiting_hook = ProgressBarManager()
    return True


def _connected(device: Any) -> bool:
    return bool(getattr(device, "connected", False))


def report_connections(
    devices: Mapping[str, Any],
    config: Any = None,
    *,
    timeout: float | None = None,
    out: Any = print,
) -> dict[str, bool]:
    """Wait up to ``timeout`` s for ``devices`` to connect; report each, never raise.

    The devices keep connecting in the background after this returns, so an IOC that
    comes up later is picked up without restarting the session.
    """
    if timeout is None:
        try:
            timeout = float(os.environ.get(ENV_CONNECT_TIMEOUT, DEFAULT_CONNECT_TIMEOUT))
        except ValueError:
            timeout = DEFAULT_CONNECT_TIMEOUT
    state: dict[str, bool] = {}

    def all_connected() -> bool:
        state.update({name: _connected(dev) for name, dev in devices.items()})
        return all(state.values())

    with contextlib.suppress(TimeoutError):  # who did not connect is reported below
        wait_until(all_connected, timeout=max(0.0, timeout), interval=0.05)
    where = config.ca_endpoints() if config is not None else {}
    by_name = {}
    if config is not None:
        by_name = {getattr(config, s).name: s for s in where}
    for name, ok in state.items():
        prefix = getattr(devices[name], "prefix", "")
        section = by_name.get(name)
        host = f" at {where[section][0]}:{where[section][1]}" if section in where else ""
        if ok:
            out(f"  {name:<12} connected ({prefix}*{host})")
        else:
            out(f"  {name:<12} NOT connected: no IOC answers for {prefix}*{host} within "
                f"{timeout:g} s; it connects when the IOC comes up (start it with "
                "`trainstamp up`)")
    return state


def open_session_catalog(RE: Any, timeserver: Any = None, *, out: Any = print) -> Any:
    """Open the run catalog (:func:`trainstamp.storage.open_catalog` settings from the
    environment) and subscribe ``RE`` to it; return the client.

    If the catalog cannot be opened (for example another process writes the embedded
    catalog: :class:`~trainstamp.storage.CatalogInUse` names it), say so loudly and
    return None: runs are then NOT stored. Runs waiting in the spool (a catalog that
    failed earlier) are reported too.
    """
    from trainstamp.storage import CatalogInUse, StorageConfig, open_catalog, subscribe

    try:
        config = StorageConfig.resolve()
        client = open_catalog(config=config)
        subscribe(RE, client, timeserver=timeserver)
    except CatalogInUse as exc:
        out(f"  WARNING: runs will NOT be stored: {exc}")
        return None
    except Exception as exc:
        out(f"  WARNING: runs will NOT be stored: cannot open the catalog ({exc}). "
            "Set TRAINSTAMP_DATA_DIR to a free directory, or TRAINSTAMP_TILED_URI to a "
            "Tiled server.")
        return None
    out(f"  runs go to the {config.describe()}")
    report_spools(config, out=out)
    return client


def report_spools(config: Any, *, out: Any = print) -> list[Path]:
    """Say which runs wait in the spool of ``config`` (a StorageConfig); return them."""
    from trainstamp.storage import pending_spools

    pending = pending_spools(config.spool_dir)
    if pending:
        out(f"  WARNING: {len(pending)} run(s) are in the spool {config.spool_dir}, not in "
            "the catalog (it failed while they were taken). Store them with "
            "replay_all(db) (from trainstamp.storage) in this session, or "
            f"`trainstamp replay {config.spool_dir}` when no session holds the catalog.")
    return pending


def banner(devices: Mapping[str, Any], db: Any) -> str:
    """A short summary of the session for the end of the startup files."""
    names = list(devices)
    storage = "db: the run catalog" if db is not None else "db: None (runs are not stored)"
    text = f"trainstamp session: devices {', '.join(names)}; RE, bec, stamp; {storage}."
    if len(names) == 3:  # the configuration's order: timeserver, detector, tagger
        ts, det, tagger = names
        text += f"\n  e.g. RE(train_count([{det}, {tagger}], 10, timeserver={ts}))"
    return text


def close_session(ns: Mapping[str, Any]) -> None:
    """Disconnect the session's devices and close its catalog (before the interpreter
    shuts down, so no Channel Access callback arrives into a dying process)."""
    import logging

    # Updates already on the wire for a circuit being closed are dropped; caproto logs
    # each as an error with a traceback, which says nothing useful at exit.
    logging.getLogger("caproto.circ").setLevel(logging.CRITICAL)
    for device in dict(ns.get("devices") or {}).values():
        with contextlib.suppress(Exception):  # closing anyway
            device.destroy()
    db = ns.get("db")
    if db is not None:
        from trainstamp.storage import close_catalog

        with contextlib.suppress(Exception):
            close_catalog(db)


# --- running the profile ---------------------------------------------------------------


def default_profile_dir() -> Path:
    """``$TRAINSTAMP_PROFILE_DIR``, else ``profiles/profile_trainstamp`` of the source tree."""
    env = os.environ.get(ENV_PROFILE_DIR)
    if env:
        return Path(env).expanduser().resolve()
    return Path(__file__).resolve().parents[2] / "profiles" / "profile_trainstamp"


def startup_files(profile_dir: str | os.PathLike) -> list[Path]:
    """The ``startup/*.py`` files of a profile, in the order IPython runs them."""
    startup = Path(profile_dir) / "startup"
    if not startup.is_dir():
        raise ValueError(f"profile directory {str(profile_dir)!r} has no startup/ folder")
    return sorted(startup.glob("*.py"))


def load_startup(
    profile_dir: str | os.PathLike, namespace: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Run a profile's startup files in order into ``namespace``; return it.

    This is what IPython does at start-up (without IPython), so a check or a test can
    load the session and inspect it. An exception in a file propagates.
    """
    ns = {"__name__": "__main__"} if namespace is None else namespace
    for path in startup_files(profile_dir):
        code = compile(path.read_text(encoding="utf-8"), str(path), "exec")
        exec(code, ns)  # the profile's own startup code
    return ns


def _check(profile_dir: Path) -> int:
    t0 = time.monotonic()
    try:
        ns = load_startup(profile_dir)
    except Exception as exc:
        import traceback

        traceback.print_exc()
        print(f"trainstamp session --check: the profile failed to load: {exc}", file=sys.stderr)
        return 1
    from inspect import isgeneratorfunction

    plans = sorted(k for k, v in ns.items() if isgeneratorfunction(v) and not k.startswith("_"))
    print(f"profile {profile_dir} loaded in {time.monotonic() - t0:.1f} s")
    print(f"RE: {type(ns.get('RE')).__name__}; devices: {', '.join(ns.get('devices', {}))}")
    print(f"plans: {', '.join(plans)}")
    problems = [f"{name} is NOT connected" for name, ok in ns.get("connections", {}).items()
                if not ok]
    if "db" in ns and ns["db"] is None:
        problems.append("runs would NOT be stored: the catalog did not open (see above)")
    elif ns.get("db") is not None:
        from trainstamp.storage import config_of, pending_spools

        if pending := pending_spools(config_of(ns["db"]).spool_dir):
            problems.append(f"{len(pending)} run(s) wait in the spool, not in the catalog")
    close_session(ns)
    for problem in problems:
        print(f"trainstamp session --check: {problem}", file=sys.stderr)
    return 1 if problems else 0


def main(argv: Sequence[str] | None = None) -> int:
    """``trainstamp session``: open IPython with the trainstamp profile."""
    parser = argparse.ArgumentParser(
        prog="trainstamp session",
        description="Open an IPython Bluesky session with the trainstamp profile: the "
                    "RunEngine subscribed to the run catalog, the beamline's devices and "
                    "the train-synchronous plans. Arguments after -- go to IPython.")
    parser.add_argument("--profile-dir", default=None,
                        help=f"IPython profile directory (default ${ENV_PROFILE_DIR} or "
                             "profiles/profile_trainstamp of the source tree)")
    parser.add_argument("--config", default=None,
                        help="beamline configuration TOML (sets TRAINSTAMP_CONFIG)")
    parser.add_argument("--data-dir", default=None,
                        help="data directory of the embedded catalog (sets TRAINSTAMP_DATA_DIR)")
    parser.add_argument("--tiled-uri", default=None,
                        help="store runs on this Tiled server (sets TRAINSTAMP_TILED_URI)")
    parser.add_argument("--check", action="store_true",
                        help="run the startup files without IPython, print what they "
                             "define, and exit: 0 if they all loaded, every device "
                             "connected and runs will be stored; 1 if a device did not "
                             "connect, the catalog did not open or runs wait in its spool")
    args, rest = parser.parse_known_args(list(sys.argv[1:] if argv is None else argv))
    if rest and rest[0] == "--":
        rest = rest[1:]
    profile_dir = Path(args.profile_dir).expanduser().resolve() if args.profile_dir \
        else default_profile_dir()
    try:
        startup_files(profile_dir)
        if args.config is not None:
            from trainstamp.config import load_config

            load_config(args.config)  # refuse a bad file before IPython starts
            os.environ["TRAINSTAMP_CONFIG"] = str(Path(args.config).expanduser().resolve())
    except ValueError as exc:
        print(f"trainstamp session: {exc}", file=sys.stderr)
        return 2
    if args.data_dir is not None:
        os.environ["TRAINSTAMP_DATA_DIR"] = str(Path(args.data_dir).expanduser().resolve())
    if args.tiled_uri is not None:
        os.environ["TRAINSTAMP_TILED_URI"] = args.tiled_uri
    if args.check:
        return _check(profile_dir)
    import IPython
    from IPython.terminal.ipapp import TerminalIPythonApp

    try:
        IPython.start_ipython(argv=[f"--profile-dir={profile_dir}", *rest])
    finally:
        if TerminalIPythonApp.initialized():
            shell = TerminalIPythonApp.instance().shell
            if shell is not None:
                close_session(shell.user_ns)
    return 0


if __name__ == "__main__":
    sys.exit(main())
