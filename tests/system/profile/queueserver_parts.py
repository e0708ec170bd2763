"""A private redis-server and bluesky-queueserver's RE Manager for the profile tests.

Both are real subprocesses on free loopback ports, started with a deadline and always
stopped: redis keeps nothing on disk, and the manager loads
``profiles/profile_trainstamp/startup`` with the profile's user groups and writes its
list of plans and devices into the test's own directory.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

from trainstamp.session import default_profile_dir
from trainstamp.testing import Subprocess, free_port, random_prefix, wait_until

REDIS = shutil.which("redis-server") or "/usr/bin/redis-server"
START = Path(sys.executable).with_name("start-re-manager")
STARTUP = default_profile_dir() / "startup"


def _listening(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=0.5):
        return True


@contextlib.contextmanager
def redis_server(workdir: Path) -> Iterator[str]:
    """A redis-server on a free loopback port, run in ``workdir``, nothing saved; yields
    its ``host:port``. Skips the test when redis-server is not installed."""
    if not Path(REDIS).exists():
        pytest.skip("redis-server is not installed (Debian package redis-server; "
                    "`make` installs it)")
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    args = [REDIS, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "no", "--dir", str(workdir)]
    with Subprocess(args, python_module=False, ready=lambda: _listening(port), timeout=20,
                    stop_timeout=5):
        yield f"127.0.0.1:{port}"


def request(addr: str, method: str, params: dict | None = None, timeout: float = 5000):
    """One request to the manager's control socket; the answer (asserts no error)."""
    from bluesky_queueserver.manager.comms import zmq_single_request

    msg, err = zmq_single_request(method, params, zmq_server_address=addr, timeout=timeout)
    assert not err, f"{method}: {err}"
    return msg


@dataclass
class Manager:
    """A running RE Manager: its process and its control and info addresses."""

    process: Subprocess
    control: str
    info: str

    def output(self) -> str:
        return self.process.output()


@contextlib.contextmanager
def re_manager(redis_addr: str, workdir: Path, env: Mapping[str, str]) -> Iterator[Manager]:
    """``start-re-manager`` on the profile's startup folder, on free loopback ports, with
    ``env`` added to the environment; stopped (``manager_stop``, then the process) on
    exit. Skips the test when bluesky-queueserver is not installed."""
    if not START.exists():
        pytest.skip(f"bluesky-queueserver is not installed ({START} missing)")
    control = f"tcp://127.0.0.1:{free_port()}"
    info = f"tcp://127.0.0.1:{free_port()}"
    args = [str(START), "--startup-dir", str(STARTUP),
            "--redis-addr", redis_addr, "--redis-name-prefix", random_prefix("qs").rstrip(":"),
            "--zmq-control-addr", control, "--zmq-info-addr", info,
            "--zmq-publish-console", "OFF",
            "--existing-plans-devices", str(workdir / "existing_plans_and_devices.yaml"),
            "--user-group-permissions", str(STARTUP / "user_group_permissions.yaml")]
    with Subprocess(args, env={**os.environ, "MPLBACKEND": "Agg", **env}, python_module=False,
                    ready=lambda: request(control, "status", timeout=500), timeout=60,
                    stop_timeout=15) as process:
        manager = Manager(process, control, info)
        try:
            yield manager
        finally:
            if process.alive:
                with contextlib.suppress(AssertionError, OSError):
                    request(control, "manager_stop", {"option": "safe_off"})
                    wait_until(lambda: not process.alive, timeout=30, message="manager to stop")


def wait_for_environment(manager: Manager, *, exists: bool, timeout: float = 90) -> None:
    """Wait until the worker environment exists (or is gone) and the manager is idle."""

    def reached() -> bool:
        status = request(manager.control, "status", timeout=1000)
        return (status["worker_environment_exists"] == exists
                and status["manager_state"] == "idle")

    word = "open" if exists else "close"
    wait_until(reached, timeout=timeout,
               message=lambda: f"environment to {word}:\n{manager.output()[-4000:]}")
