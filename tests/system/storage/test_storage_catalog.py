"""Storage round trips against a real embedded Tiled catalog (SQLite + DuckDB) in tmp_path."""

from __future__ import annotations

import time

import numpy as np
import pytest
from bluesky import RunEngine
from bluesky.plans import count
from ophyd.sim import det1, make_fake_device

from trainstamp.plans import TrainStamp, stamp_wrapper
from trainstamp.storage import (
    StorageConfig,
    close_catalog,
    find_runs,
    last_run,
    open_catalog,
    read_train_ids,
    subscribe,
)
from trainstamp.timing.device import TimeServer

pytestmark = pytest.mark.system

FIRST_ID = 5_000_000
P_NS = 100_000_000
#: The only tick, at import time, so the stop document (real time, a few s later) still
#: interpolates to a train ID (STALE) and the run spans FIRST_ID .. train_id_end.
T0 = time.time_ns()


class SteppingClock:
    """Each call is one train later than the last (deterministic stamps, no threads)."""

    def __init__(self) -> None:
        self.t_ns = T0 + P_NS // 2 - P_NS

    def __call__(self) -> int:
        self.t_ns += P_NS
        return self.t_ns


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("catalog")


@pytest.fixture(scope="module")
def stored(data_dir):
    """One stamped run of 6 events stored in an embedded catalog; the client is closed."""
    ts = make_fake_device(TimeServer)("TS:", name="timeserver")
    ts.period.sim_put(P_NS // 1000)
    ts.source.sim_put("local:internal")
    ts._on_id(value=FIRST_ID, timestamp=T0 / 1e9)
    stamp = TrainStamp(ts, clock_ns=SteppingClock())
    client = open_catalog(data_dir)
    RE = RunEngine(context_managers=[])
    subscribe(RE, client, timeserver=ts)
    (uid,) = RE(stamp_wrapper(count([det1], 6), stamp))
    close_catalog(client)
    return uid


def test_layout_of_the_data_directory(stored, data_dir):
    cfg = StorageConfig.resolve(data_dir)
    for path in (cfg.catalog_db, cfg.duckdb, cfg.array_dir, cfg.detector_dir):
        assert path.exists(), path


def test_run_reads_back_after_reopening(stored, data_dir):
    client = open_catalog(data_dir)
    try:
        run = client[stored]
        assert last_run(client).metadata["start"]["uid"] == stored
        data = run["primary"].read()
        # Stamp reads: 1 for train_id_start, then one per event, each one train later.
        assert read_train_ids(run).tolist() == list(range(FIRST_ID + 1, FIRST_ID + 7))
        assert data["train_id"].dtype == np.int64
        # Three or more periods past the (only) tick: flagged STALE, not silently OK.
        assert data["train_id_status"].values.tolist() == ["OK", "OK", "STALE", "STALE",
                                                           "STALE", "STALE"]
        start, stop = run.metadata["start"], run.metadata["stop"]
        assert (start["train_id_start"], start["train_id_start_status"]) == (FIRST_ID, "OK")
        assert stop["train_id_end_status"] in ("OK", "STALE")  # STALE: seconds after the tick
        assert stop["train_id_end"] > FIRST_ID
        config = run["primary"].metadata["configuration"]["timeserver_stamp"]["data"]
        assert config["timeserver_source"] == "local:internal"
    finally:
        close_catalog(client)


def test_second_run_appends(stored, data_dir):
    client = open_catalog(data_dir)
    try:
        RE = RunEngine(context_managers=[])
        subscribe(RE, client)
        (uid,) = RE(count([det1], 2))
        assert len(client) == 2
        assert last_run(client).metadata["start"]["uid"] == uid
        with pytest.raises(KeyError, match="no 'train_id' data key"):
            read_train_ids(client[uid])
    finally:
        close_catalog(client)


def test_find_runs_by_train_id(stored, data_dir):
    client = open_catalog(data_dir)
    try:
        start = client[stored].metadata["start"]["train_id_start"]
        end = client[stored].metadata["stop"]["train_id_end"]
        assert end is not None and end >= start
        for train_id in (start, (start + end) // 2, end):
            assert list(find_runs(client, train_id)) == [stored]
        assert list(find_runs(client, start - 1)) == []
        assert list(find_runs(client, end + 1)) == []
        with pytest.raises(ValueError, match="train_id must be an integer, got '5'"):
            find_runs(client, "5")
    finally:
        close_catalog(client)


def test_config_precedence(tmp_path):
    env = {"TRAINSTAMP_DATA_DIR": str(tmp_path / "env"),
           "TRAINSTAMP_TILED_URI": "http://tiled.example:8000",
           "TRAINSTAMP_TILED_API_KEY": "secret",
           "TRAINSTAMP_READABLE_STORAGE": f"{tmp_path / 'a'}:{tmp_path / 'b'}"}
    cfg = StorageConfig.resolve(environ=env)
    assert cfg.data_dir == tmp_path / "env"
    assert (cfg.tiled_uri, cfg.api_key, cfg.embedded) == ("http://tiled.example:8000",
                                                          "secret", False)
    assert cfg.readable_storage == (tmp_path / "a", tmp_path / "b")
    cfg = StorageConfig.resolve(tmp_path / "arg", tiled_uri="https://other", environ=env)
    assert (cfg.data_dir, cfg.tiled_uri) == (tmp_path / "arg", "https://other")
    cfg = StorageConfig.resolve(environ={})
    assert cfg.embedded and cfg.data_dir.name == "data"


def test_bad_tiled_uri_is_refused():
    with pytest.raises(ValueError, match="Tiled URI must start with http:// or https://, "
                                         "got 'ftp://x'"):
        StorageConfig.resolve(tiled_uri="ftp://x", environ={})
