"""Plans queued in bluesky-queueserver run against the simulated beamline.

``trainstamp up`` starts the beamline from a configuration file (random prefixes, free
loopback ports), and ``start-re-manager`` loads the profile with the same file and data
directory, as an operator runs them. Through bluesky-queueserver-api the test opens the
environment, queues ``train_count`` and ``train_fly`` with the devices by name, starts
the queue and waits for it; then it reads both runs back from the catalog with their
train IDs.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pytest
from queueserver_parts import re_manager

from trainstamp.plans import check_train_consistency
from trainstamp.testing import Subprocess, free_port, random_prefix

pytestmark = pytest.mark.system

N_COUNT = 5
N_FLY = 20


def write_config(path: Path) -> Path:
    """A beamline of its own: random PV prefixes, every port free, 10 Hz trains."""
    path.write_text(textwrap.dedent(f"""
        [timeserver]
        prefix = "{random_prefix('QTS')}"
        ca_port = {free_port()}
        broadcast_port = {free_port()}
        period_ms = 100.0
        [detector]
        prefix = "{random_prefix('QDET')}"
        ca_port = {free_port()}
        register_port = {free_port('udp')}
        data_port = {free_port('udp')}
        test_mode = true
        [tagger]
        prefix = "{random_prefix('QTT')}"
        ca_port = {free_port()}
        pyro_port = {free_port()}
        tag_port = {free_port()}
    """))
    return path


@pytest.fixture
def beamline(tmp_path):
    """``trainstamp up`` on its own configuration; yields (config, data dir, process)."""
    config = write_config(tmp_path / "beamline.toml")
    data = tmp_path / "data"
    up = Subprocess(["up", "--config", str(config), "--data-dir", str(data),
                     "--log-dir", str(tmp_path / "logs")], timeout=120, stop_timeout=30)
    up.ready = lambda: "Ctrl-C stops everything" in up.output()
    with up:
        yield config, data, up


def _run_uid(item: dict) -> str:
    result = item["result"]
    assert result["exit_status"] == "completed", item
    (uid,) = result["run_uids"]
    return uid


def _stamped(run) -> tuple[int, int]:
    start, stop = run.metadata["start"], run.metadata["stop"]
    assert start["train_id_start_status"] == "OK", start
    assert stop["train_id_end_status"] == "OK", stop
    assert stop["exit_status"] == "success", stop
    return start["train_id_start"], stop["train_id_end"]


@pytest.mark.timeout(240)
def test_queued_train_count_and_train_fly_run_and_are_stored(beamline, redis_addr, tmp_path):
    from bluesky_queueserver_api import BPlan
    from bluesky_queueserver_api.zmq import REManagerAPI

    from trainstamp.storage import catalog

    config, data, up = beamline
    env = {"TRAINSTAMP_CONFIG": str(config), "TRAINSTAMP_DATA_DIR": str(data),
           "TRAINSTAMP_CONNECT_TIMEOUT": "20"}
    with re_manager(redis_addr, tmp_path, env) as manager:
        RM = REManagerAPI(zmq_control_addr=manager.control, zmq_info_addr=manager.info)
        try:
            RM.environment_open()
            RM.wait_for_idle(timeout=90)
            assert RM.status()["worker_environment_exists"], manager.output()[-4000:]
            RM.item_add(BPlan("train_count", ["det"], N_COUNT, timeserver="timeserver",
                              md={"sample": "queued count"}))
            RM.item_add(BPlan("train_fly", ["det"], N_FLY, timeserver="timeserver",
                              tagger="tagger", click_channel=1, md={"sample": "queued fly"}))
            RM.queue_start()
            RM.wait_for_idle(timeout=120)
            history = RM.history_get()["items"]
            RM.environment_close()
            RM.wait_for_idle(timeout=30)  # the worker has closed the catalog
        finally:
            RM.close()
    assert up.alive, up.output()[-4000:]
    assert [item["name"] for item in history] == ["train_count", "train_fly"], history
    count_uid, fly_uid = (_run_uid(item) for item in history)

    with catalog(data) as client:
        run = client[count_uid]
        first, last = _stamped(run)
        assert run.metadata["start"]["plan_name"] == "train_count"
        assert run.metadata["start"]["sample"] == "queued count"
        primary = run["primary"].read()
        trains = primary["train_id"].values.astype(int)
        assert len(trains) == N_COUNT and np.all(np.diff(trains) > 0), trains
        assert set(primary["train_id_status"].values) == {"EXACT"}  # the detector's headers
        assert first <= trains[0] and trains[-1] <= last

        run = client[fly_uid]
        first, last = _stamped(run)
        assert run.metadata["start"]["plan_name"] == "train_fly"
        assert set(run) == {"timeserver", "detector", "tagger"}
        frames = run["detector"].read()
        assert len(frames["train_id"]) == N_FLY
        assert set(frames["train_id_status"].values) == {"EXACT"}
        assert len(run["tagger"].read()["train_id"]) == N_FLY
        result = check_train_consistency(run, min_overlap=N_FLY // 2)
        assert result.ok, result.problems
        assert first <= result.streams["detector"].first <= result.streams["detector"].last <= last
