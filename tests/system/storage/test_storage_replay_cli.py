"""``trainstamp replay`` as a real subprocess: it stores a spooled run, refuses a damaged
spool naming the line, and refuses a catalog another process writes."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from event_model import compose_run
from storage_frames import Holder

from trainstamp.storage import StorageConfig, catalog
from trainstamp.storage._spool_file import encode_line

pytestmark = pytest.mark.system


def spool_a_run(spool_dir) -> tuple[str, object]:
    run = compose_run(metadata={"plan_name": "spooled"})
    desc = run.compose_descriptor(name="primary", data_keys={
        "train_id": {"dtype": "integer", "shape": [], "source": "stamp"},
        "h": {"dtype": "array", "shape": [3], "source": "sim", "dtype_numpy": "<i4"}})
    docs = [("start", run.start_doc), ("descriptor", desc.descriptor_doc)]
    for i in range(3):
        docs.append(("event", desc.compose_event(
            data={"train_id": 500 + i, "h": np.arange(3, dtype=np.int32) + i},
            timestamps={"train_id": 1.0 + i, "h": 1.0 + i})))
    docs.append(("stop", run.compose_stop()))
    spool_dir.mkdir(parents=True, exist_ok=True)
    path = spool_dir / f"{run.start_doc['uid']}.jsonl"
    path.write_text("".join(encode_line(*d) for d in docs))
    return run.start_doc["uid"], path


def replay_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "trainstamp", "replay", *args],
                          capture_output=True, text=True, timeout=120)


def test_replay_stores_a_spooled_run_into_the_data_dir_it_sits_in(tmp_path):
    cfg = StorageConfig.resolve(tmp_path / "data", environ={})
    uid, path = spool_a_run(cfg.spool_dir)
    proc = replay_cli(str(cfg.spool_dir))
    assert proc.returncode == 0, proc.stderr
    assert f"into the embedded Tiled catalog in {cfg.data_dir}" in proc.stdout
    assert f"run {uid} stored (events: primary 3)" in proc.stdout
    assert not path.exists() and (cfg.spool_dir / "replayed" / path.name).exists()
    with catalog(config=cfg) as client:
        data = client[uid]["primary"].read()
        assert data["train_id"].values.tolist() == [500, 501, 502]
        assert data["h"].values.tolist() == [[0, 1, 2], [1, 2, 3], [2, 3, 4]]
        assert data["h"].dtype == np.int32
    # The same file once more: the run is complete in the catalog, nothing is written.
    again = replay_cli(str(cfg.spool_dir / "replayed" / path.name), "--keep")
    assert again.returncode == 0, again.stderr
    assert "already complete in the catalog; nothing written" in again.stdout


def test_replay_refuses_a_damaged_spool_and_writes_nothing(tmp_path):
    cfg = StorageConfig.resolve(tmp_path / "data", environ={})
    _, path = spool_a_run(cfg.spool_dir)
    lines = path.read_text().splitlines(keepends=True)
    lines[2] = '{"name": "event", "doc": \n'
    path.write_text("".join(lines))
    proc = replay_cli(str(path), "--data-dir", str(cfg.data_dir))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert f"{path}:3: not a JSON document line" in proc.stderr
    assert "nothing written" in proc.stderr and path.exists()
    with catalog(config=cfg) as client:
        assert len(client) == 0


def test_replay_refuses_a_catalog_another_process_writes(tmp_path):
    cfg = StorageConfig.resolve(tmp_path / "data", environ={})
    _, path = spool_a_run(cfg.spool_dir)
    holder = Holder(cfg.data_dir, "open")
    try:
        proc = replay_cli(str(path))
    finally:
        holder.close()
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert f"in use by process {holder.proc.pid}" in proc.stderr
    assert path.exists()


def test_replay_without_spool_files_says_so(tmp_path):
    proc = replay_cli("/nonexistent/spool")
    assert proc.returncode == 2
    assert "no such file or directory: /nonexistent/spool" in proc.stderr
    proc = replay_cli(str(tmp_path))
    assert proc.returncode == 2
    assert f"no spool files found in {tmp_path}" in proc.stderr
