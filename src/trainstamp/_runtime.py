"""The running beamline's own description: which ports ``trainstamp up`` really uses.

``trainstamp up --free-ports`` (or ``--ca-port``, ``--set ...``) starts the services on
ports no configuration file names. So that a session, the queue server's startup or a
script finds that beamline and not the configured one, ``up`` writes the configuration
it started with to ``<data dir>/beamline.running.json`` once every service is ready, and
removes the file when it stops. The file holds the process ID of ``up``; a file whose
process is gone (``up`` was killed with -9) is stale and is ignored, with a note.

The file is JSON, written atomically (to a temporary name, then renamed), and read back
through the same validated model as a configuration file
(:class:`~trainstamp.config.BeamlineConfig`), so a damaged file is refused with the
reason rather than half-used.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from trainstamp.config import BeamlineConfig

__all__ = ["RUNNING_FILE", "RunningBeamline", "publish_running", "read_running", "session_config",
           "withdraw_running"]

#: The file's name in the data directory.
RUNNING_FILE = "beamline.running.json"
_SECTIONS = ("timeserver", "detector", "tagger")


@dataclass(frozen=True)
class RunningBeamline:
    """What a running ``trainstamp up`` published."""

    config: BeamlineConfig
    pid: int
    started: float  #: UNIX time the file was written
    path: Path


def data_dir_of(data_dir: str | os.PathLike | None = None, *,
                environ: dict[str, str] | None = None) -> Path:
    """The storage data directory: ``data_dir``, else ``$TRAINSTAMP_DATA_DIR``, else
    ``./data`` (as :class:`~trainstamp.storage.StorageConfig` resolves it)."""
    from trainstamp.storage._config import DEFAULT_DATA_DIR, ENV_DATA_DIR

    env = os.environ if environ is None else environ
    return Path(data_dir or env.get(ENV_DATA_DIR) or DEFAULT_DATA_DIR).expanduser().resolve()


def pid_alive(pid: int) -> bool:
    """Whether a process with this ID exists (signal 0 checks without sending)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    return True


def publish_running(config: BeamlineConfig, data_dir: str | os.PathLike, *,
                    pid: int | None = None) -> Path:
    """Write ``config`` as the running beamline of ``data_dir``; returns the file."""
    directory = Path(data_dir)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / RUNNING_FILE
    body = {
        "pid": os.getpid() if pid is None else pid,
        "started": time.time(),
        "origin": config.origin,
        "config": {s: dict(getattr(config, s)) for s in _SECTIONS}
        | {"ready_timeout": config.ready_timeout},
    }
    tmp = path.with_name(f".{RUNNING_FILE}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(body, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def withdraw_running(data_dir: str | os.PathLike, *, pid: int | None = None) -> bool:
    """Remove the file if this process (or ``pid``) wrote it; True if removed."""
    path = Path(data_dir) / RUNNING_FILE
    owner = os.getpid() if pid is None else pid
    try:
        if json.loads(path.read_text(encoding="utf-8")).get("pid") != owner:
            return False  # another beamline took over the directory since
        path.unlink()
    except (OSError, ValueError, AttributeError):
        return False
    return True


def read_running(data_dir: str | os.PathLike) -> tuple[RunningBeamline | None, str]:
    """The beamline running on ``data_dir``, or None; and a note on why not (or "").

    Never raises: a stale, unreadable or invalid file gives None and says so.
    """
    path = Path(data_dir) / RUNNING_FILE
    try:
        body = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None, ""
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        return None, f"{path} is unreadable ({exc}); ignored"
    if not isinstance(body, dict) or not isinstance(body.get("config"), dict):
        return None, f"{path} holds no beamline configuration; ignored"
    pid = body.get("pid")
    if isinstance(pid, bool) or not isinstance(pid, int) or pid <= 0:
        return None, f"{path} names no process; ignored"
    if not pid_alive(pid):
        return None, (f"{path} is left from trainstamp up (pid {pid}), which is no longer "
                      "running; ignored")
    try:
        config = BeamlineConfig(**body["config"],
                                origin=f"{path} (trainstamp up, pid {pid})")
    except (ValueError, TypeError) as exc:
        return None, f"{path} is not a valid configuration: {exc}; ignored"
    started = body.get("started")
    return RunningBeamline(config, pid, float(started) if isinstance(started, int | float)
                           else 0.0, path), ""


def session_config(*, environ: dict[str, str] | None = None, out=print) -> BeamlineConfig:
    """The configuration a session (or the queue server's startup) should use.

    The beamline ``trainstamp up`` runs on this data directory (``$TRAINSTAMP_DATA_DIR``
    or ``./data``) if there is one, so its real ports are found; otherwise the
    configuration file (:func:`~trainstamp.config.load_config`). Says which, via ``out``.
    """
    from trainstamp.config import load_config

    env = os.environ if environ is None else environ
    data_dir = data_dir_of(environ=env)
    running, note = read_running(data_dir)
    if note:
        out(f"trainstamp: {note}")
    if running is None:
        return load_config(environ=env)
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(running.started))
    out(f"beamline: the one trainstamp up runs on {data_dir} (pid {running.pid}, since "
        f"{when}), from {running.path}")
    return running.config
