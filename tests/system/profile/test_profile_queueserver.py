"""The profile's startup folder loads in bluesky-queueserver.

A private redis-server on a free loopback port, ``start-re-manager --startup-dir
profiles/profile_trainstamp/startup`` on free loopback ZMQ ports, then over the ZMQ
control API: open the worker environment and check that the trainstamp plans and
devices are listed. No IOC runs: the devices must be created without one.
"""

from __future__ import annotations

import os
import shutil
import socket
import sys
from pathlib import Path

import pytest

from trainstamp.session import default_profile_dir
from trainstamp.testing import Subprocess, free_port, wait_until

pytestmark = pytest.mark.system

REDIS = shutil.which("redis-server") or "/usr/bin/redis-server"
START = Path(sys.executable).with_name("start-re-manager")
STARTUP = default_profile_dir() / "startup"


def _config(path: Path) -> Path:
    """A beamline config whose IOCs (not running) are on free ports, never default ones."""
    ports = [free_port() for _ in range(3)]
    path.write_text("\n".join([
        f"[timeserver]\nca_port = {ports[0]}\nbroadcast_port = {free_port()}",
        f"[detector]\nca_port = {ports[1]}\nregister_port = {free_port()}\n"
        f"data_port = {free_port()}",
        f"[tagger]\nca_port = {ports[2]}\npyro_port = {free_port()}\ntag_port = {free_port()}",
        ""]))
    return path


def _listening(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=0.5):
        return True


@pytest.fixture
def redis_addr():
    if not Path(REDIS).exists():
        pytest.skip("redis-server is not installed (Debian package redis-server; "
                    "`make` installs it)")
    port = free_port()
    args = [REDIS, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "no"]
    with Subprocess(args, python_module=False, ready=lambda: _listening(port), timeout=20,
                    stop_timeout=5):
        yield f"127.0.0.1:{port}"


def request(addr: str, method: str, params: dict | None = None, timeout: float = 5000):
    from bluesky_queueserver.manager.comms import zmq_single_request

    msg, err = zmq_single_request(method, params, zmq_server_address=addr, timeout=timeout)
    assert not err, f"{method}: {err}"
    return msg


@pytest.mark.timeout(150)
def test_startup_dir_loads_in_the_queue_server(redis_addr, tmp_path):
    if not START.exists():
        pytest.skip(f"bluesky-queueserver is not installed ({START} missing)")
    control = f"tcp://127.0.0.1:{free_port()}"
    env = {
        "TRAINSTAMP_CONFIG": str(_config(tmp_path / "beamline.toml")),
        "TRAINSTAMP_DATA_DIR": str(tmp_path / "data"),
        "TRAINSTAMP_CONNECT_TIMEOUT": "0.5",
        "MPLBACKEND": "Agg",
    }
    args = [str(START), "--startup-dir", str(STARTUP),
            "--redis-addr", redis_addr, "--redis-name-prefix", "trainstamp_test",
            "--zmq-control-addr", control,
            "--zmq-info-addr", f"tcp://127.0.0.1:{free_port()}",
            "--zmq-publish-console", "OFF",
            "--existing-plans-devices", str(tmp_path / "existing_plans_and_devices.yaml"),
            "--user-group-permissions", str(STARTUP / "user_group_permissions.yaml")]
    with Subprocess(args, env={**os.environ, **env}, python_module=False,
                    ready=lambda: request(control, "status", timeout=500), timeout=60,
                    stop_timeout=15) as manager:
        assert request(control, "environment_open")["success"]

        def opened():
            status = request(control, "status", timeout=1000)
            return status["worker_environment_exists"] and status["manager_state"] == "idle"

        wait_until(opened, timeout=90, message=lambda: f"environment to open:\n{manager.output()}")
        plans = request(control, "plans_allowed", {"user_group": "primary"})["plans_allowed"]
        devices = request(control, "devices_allowed", {"user_group": "primary"})["devices_allowed"]
        for plan in ("train_count", "count", "scan"):
            assert plan in plans, sorted(plans)
        assert "stamp_wrapper" not in plans
        for device in ("timeserver", "det", "tagger"):
            assert device in devices, sorted(devices)
        assert "corr1" in devices["tagger"].get("components", {})
        assert request(control, "environment_close")["success"]
        wait_until(lambda: not request(control, "status", timeout=1000)["worker_environment_exists"],
                   timeout=30, message="environment to close")
        request(control, "manager_stop")
        wait_until(lambda: not manager.alive, timeout=30, message="manager to stop")
