"""Two processes on one embedded catalog (real SQLite + DuckDB files): the second writer
is refused when it opens the catalog, and a catalog that fails mid-run loses nothing."""

from __future__ import annotations

import copy
import os
import signal
import subprocess
import sys
import textwrap

import bluesky.plan_stubs as bps
import numpy as np
import pytest
from bluesky import RunEngine
from storage_frames import (
    FIRST_ID,
    FrameDetector,
    Holder,
    SQLiteLocker,
    fake_timeserver,
    frame_of,
)

from trainstamp.config import BeamlineConfig
from trainstamp.plans import stamp_wrapper
from trainstamp.storage import (
    CatalogInUse,
    StorageConfig,
    close_catalog,
    open_catalog,
    pending_spools,
    replay,
    subscribe,
)
from trainstamp.testing import random_prefix, wait_until

pytestmark = pytest.mark.system

@pytest.mark.parametrize("mode", ["open", "write"])
def test_a_second_writer_is_refused_at_open_with_the_holders_pid(tmp_path, mode):
    """Before the fix the second open succeeded and every run failed at its stop."""
    data_dir = tmp_path / "data"
    holder = Holder(data_dir, mode)
    try:
        with pytest.raises(CatalogInUse) as refused:
            close_catalog(open_catalog(data_dir))
        message = str(refused.value)
        assert refused.value.pid == holder.proc.pid
        assert f"in use by process {holder.proc.pid} (" in message
        assert str(data_dir) in message
        assert "Tiled server" in message and "another data directory" in message
    finally:
        holder.close()
    # Once the holder has gone, the catalog opens, and the holder's run is there.
    client = open_catalog(data_dir)
    try:
        assert len(client) == (1 if mode == "write" else 0)
    finally:
        close_catalog(client)


def test_a_catalog_that_fails_mid_run_loses_nothing(tmp_path, capfd):
    """A second process locks the catalog's SQLite file after the run has started. The
    run goes on into the spool, the user is told at once (during the run) where it is,
    and a replay stores the same events, train IDs and detector frames."""
    cfg = StorageConfig.resolve(tmp_path / "data", environ={})
    client = open_catalog(config=cfg)
    ts, stamp = fake_timeserver()
    det = FrameDetector(cfg.detector_dir)
    RE = RunEngine(context_managers=[])
    subscribe(RE, client, timeserver=ts)
    sent: list = []
    RE.subscribe(lambda name, doc: sent.append((name, copy.deepcopy(doc))))
    told: list[str] = []
    locker: list[SQLiteLocker] = []

    def plan():
        yield from bps.open_run(md={"purpose": "mid-run failure"})
        locker.append(SQLiteLocker(cfg.catalog_db))  # the second process
        yield from bps.stage(det)
        for _ in range(4):
            yield from bps.trigger_and_read([det])
        told.append(capfd.readouterr().err)  # what the user has seen before the stop
        yield from bps.unstage(det)
        yield from bps.close_run()

    try:
        (uid,) = RE(stamp_wrapper(plan(), stamp))
    finally:
        for lock in locker:
            lock.release()
    spool = cfg.spool_dir / f"{uid}.jsonl"
    assert spool.exists()
    assert f"documents go on into {spool}" in told[0], told[0]
    assert "database is locked" in told[0]
    assert f"trainstamp replay {spool} --data-dir {cfg.data_dir}" in told[0]
    assert pending_spools(cfg.spool_dir) == [spool]
    try:
        assert client[uid].metadata.get("stop") is None  # what the failed write left
        result = replay(spool, client)
        assert (result.outcome, result.events) == ("stored", {"primary": 4})
        assert not spool.exists() and (cfg.spool_dir / "replayed" / spool.name).exists()
        run = client[uid]
        data = run["primary"].read()
        events = [doc for name, doc in sent if name == "event"]
        assert len(events) == 4
        for key in ("train_id", "train_id_status", "det_train_id"):
            assert data[key].values.tolist() == [e["data"][key] for e in events], key
        assert np.all(np.diff(data["train_id"].values) > 0)  # the stamps, as taken
        frames = np.asarray(run["primary"]["det_image"].read())
        assert frames.shape == (4, 1, 4, 6)
        for frame, train in zip(frames, data["det_train_id"].values, strict=True):
            assert np.array_equal(frame[0], frame_of(int(train)))
        start, stop = run.metadata["start"], run.metadata["stop"]
        assert start["purpose"] == "mid-run failure"
        assert FIRST_ID <= start["train_id_start"] < data["train_id"].values[0]
        assert stop["exit_status"] == "success"
        assert stop["train_id_end"] >= data["train_id"].values[-1]
        assert stop["uid"] == next(doc for name, doc in sent if name == "stop")["uid"]
    finally:
        close_catalog(client)


WRITER = textwrap.dedent("""
    import sys
    import bluesky.plan_stubs as bps
    from bluesky import RunEngine
    from ophyd.sim import det1
    from trainstamp.storage import open_catalog, subscribe
    client = open_catalog(sys.argv[1])
    RE = RunEngine(context_managers=[])
    subscribe(RE, client)
    def plan():
        yield from bps.open_run()
        for _ in range(3):
            yield from bps.trigger_and_read([det1])
        print("TAKEN", flush=True)
        sys.stdin.readline()  # killed here
        yield from bps.close_run()
    RE(plan())
""")


def test_a_writer_killed_mid_run_leaves_a_spool_that_replays(tmp_path):
    data_dir = tmp_path / "data"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(data_dir)], text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    try:
        lines: list[str] = []
        wait_until(lambda: lines.append(proc.stdout.readline()) or "TAKEN" in lines[-1]
                   or proc.poll() is not None, timeout=120, interval=0)
        assert "TAKEN" in lines[-1], "".join(lines)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
        proc.stdin.close()
        proc.stdout.close()
    (spool,) = pending_spools(data_dir / "spool")
    client = open_catalog(data_dir)  # the dead writer's lock went with it
    try:
        result = replay(spool, client)
        assert result.events == {"primary": 3}
        assert any("no stop document" in note for note in result.notes)
        run = client[result.uid]
        assert run.metadata["stop"]["exit_status"] == "abort"
        assert run["primary"].read()["det1"].values.tolist() == [5.0, 5.0, 5.0]
    finally:
        close_catalog(client)


def test_session_check_fails_when_runs_would_not_be_stored(tmp_path):
    """``trainstamp session --check`` used to say all was fine while the catalog could not
    take a single run."""
    data_dir = tmp_path / "data"
    config = BeamlineConfig().with_free_ports()
    prefixes = {s: random_prefix("CHK") for s in ("timeserver", "detector", "tagger")}
    for section, prefix in prefixes.items():
        config = config.replace_section(section, prefix=prefix)
    toml = tmp_path / "beamline.toml"
    toml.write_text("".join(f'[{s}]\nprefix = "{p}"\nca_port = {getattr(config, s).ca_port}\n'
                            for s, p in prefixes.items()))
    env = {**os.environ, "TRAINSTAMP_CONNECT_TIMEOUT": "0.2", "PYTHONUNBUFFERED": "1"}
    env.pop("DISPLAY", None)

    def check() -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "trainstamp", "session", "--config",
                               str(toml), "--data-dir", str(data_dir), "--check"], env=env,
                              capture_output=True, text=True, timeout=180,
                              stdin=subprocess.DEVNULL)

    holder = Holder(data_dir, "open")
    try:
        held = check()
    finally:
        holder.close()
    assert held.returncode == 1, held.stdout + held.stderr
    assert f"runs will NOT be stored: the embedded catalog in {data_dir} is in use by " \
           f"process {holder.proc.pid}" in held.stdout
    assert "runs would NOT be stored" in held.stderr
    cfg = StorageConfig.resolve(data_dir, environ={})
    cfg.spool_dir.mkdir(parents=True)
    (cfg.spool_dir / "0123abcd.jsonl").write_text("")
    spooled = check()
    assert spooled.returncode == 1, spooled.stdout + spooled.stderr
    assert f"1 run(s) are in the spool {cfg.spool_dir}" in spooled.stdout
    assert "1 run(s) wait in the spool" in spooled.stderr
