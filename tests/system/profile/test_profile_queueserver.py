"""The profile's startup folder loads in bluesky-queueserver.

A private redis-server on a free loopback port, ``start-re-manager --startup-dir
profiles/profile_trainstamp/startup`` on free loopback ZMQ ports, then over the ZMQ
control API: open the worker environment and check that the trainstamp plans and
devices are listed. No IOC runs: the devices must be created without one.
(``test_queueserver_beamline.py`` runs plans through the queue against the beamline.)
"""

from __future__ import annotations

from pathlib import Path

import pytest
from queueserver_parts import re_manager, request, wait_for_environment

from trainstamp.testing import free_port, wait_until

pytestmark = pytest.mark.system


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


@pytest.mark.timeout(150)
def test_startup_dir_loads_in_the_queue_server(redis_addr, tmp_path):
    env = {
        "TRAINSTAMP_CONFIG": str(_config(tmp_path / "beamline.toml")),
        "TRAINSTAMP_DATA_DIR": str(tmp_path / "data"),
        "TRAINSTAMP_CONNECT_TIMEOUT": "0.5",
    }
    with re_manager(redis_addr, tmp_path, env) as manager:
        control = manager.control
        assert request(control, "environment_open")["success"]
        wait_for_environment(manager, exists=True)
        plans = request(control, "plans_allowed", {"user_group": "primary"})["plans_allowed"]
        devices = request(control, "devices_allowed", {"user_group": "primary"})["devices_allowed"]
        for plan in ("train_count", "train_scan", "train_fly", "g2_delay_scan", "count", "scan"):
            assert plan in plans, sorted(plans)
        assert "stamp_wrapper" not in plans
        for device in ("timeserver", "det", "tagger"):
            assert device in devices, sorted(devices)
        assert "corr1" in devices["tagger"].get("components", {})
        assert request(control, "environment_close")["success"]
        wait_for_environment(manager, exists=False, timeout=30)
        request(control, "manager_stop")
        wait_until(lambda: not manager.process.alive, timeout=30, message="manager to stop")
