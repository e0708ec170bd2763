"""``trainstamp session`` end to end: IPython with the profile, against a live TimeServer
IOC (the detector and tagger IOCs are configured but not running), and without IOCs."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from ast import literal_eval
from pathlib import Path

import pytest

from trainstamp.testing import SubprocessIOC, free_port, random_prefix

pytestmark = pytest.mark.system

PERIOD_MS = 50


def write_config(path: Path, ts_prefix: str, ts_port: int) -> Path:
    path.write_text(textwrap.dedent(f"""
        [timeserver]
        prefix = "{ts_prefix}"
        ca_port = {ts_port}
        broadcast_port = {free_port()}
        [detector]
        prefix = "{random_prefix('DET')}"
        ca_port = {free_port()}
        register_port = {free_port()}
        data_port = {free_port()}
        [tagger]
        prefix = "{random_prefix('TT')}"
        ca_port = {free_port()}
        pyro_port = {free_port()}
        tag_port = {free_port()}
    """))
    return path


def session(args: list[str], tmp_path: Path, timeout: float = 120,
            connect_timeout: float = 5) -> subprocess.CompletedProcess:
    env = {**os.environ, "TRAINSTAMP_CONNECT_TIMEOUT": str(connect_timeout),
           "PYTHONUNBUFFERED": "1"}
    env.pop("DISPLAY", None)
    env.pop("MPLBACKEND", None)
    return subprocess.run([sys.executable, "-m", "trainstamp", "session",
                           "--data-dir", str(tmp_path / "data"), *args],
                          env=env, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


@pytest.fixture
def timeserver_ioc(ca_ports):
    prefix = random_prefix("TSS")
    args = ["ioc", "timeserver", "--prefix", prefix, "--period", str(PERIOD_MS),
            "--broadcast-port", str(free_port()), "--interfaces", "127.0.0.1"]
    with SubprocessIOC(args, ca_ports, ready_pv=prefix + "ID") as proc:
        proc.prefix = prefix
        yield proc


@pytest.mark.timeout(150)
def test_session_runs_stamped_plans_and_reads_them_back(timeserver_ioc, tmp_path):
    config = write_config(tmp_path / "beamline.toml", timeserver_ioc.prefix, timeserver_ioc.port)
    code = textwrap.dedent("""
        import matplotlib
        print("BACKEND", matplotlib.get_backend())
        timeserver.wait_for_connection(timeout=10)
        (uid,) = RE(train_count([timeserver], 5, timeserver=timeserver))
        ds = load_trains(db[uid])
        print("TRAINS", ds["train_id"].values.tolist())
        print("TICKS", ds["timeserver_train_id"].values.astype(int).tolist())
        (uid2,) = RE(count([timeserver], 3))
        print("COUNT", db[uid2]["primary"]["train_id_status"].read().tolist())
        print("END", db[uid2].metadata["stop"]["train_id_end_status"])
    """)
    out = session(["--config", str(config), "--", "--HistoryManager.enabled=False",
                   "--no-banner", "-c", code], tmp_path)
    text = out.stdout + out.stderr
    assert out.returncode == 0, text[-3000:]
    assert "Traceback" not in text, text[-3000:]  # and a quiet exit
    assert f"timeserver   connected ({timeserver_ioc.prefix}*" in text, text[-3000:]
    assert "det          NOT connected" in text
    lines = dict(line.split(" ", 1) for line in out.stdout.splitlines()
                 if line.split(" ", 1)[0] in {"BACKEND", "TRAINS", "TICKS", "COUNT", "END"})
    assert lines["BACKEND"].lower() == "agg"
    trains = literal_eval(lines["TRAINS"])
    assert len(trains) == 5 and all(b > a for a, b in zip(trains, trains[1:], strict=False))
    assert literal_eval(lines["TICKS"]) == trains
    # bluesky's own count is stamped by the session's preprocessor
    assert literal_eval(lines["COUNT"]) == ["OK"] * 3
    assert lines["END"] == "OK"


@pytest.mark.timeout(120)
def test_check_without_iocs_reports_and_fails(tmp_path):
    """The profile loads without the IOCs, but ``--check`` says so in its exit code."""
    config = write_config(tmp_path / "beamline.toml", random_prefix("TSN"), free_port())
    out = session(["--config", str(config), "--check"], tmp_path, connect_timeout=0.5)
    text = out.stdout + out.stderr
    assert out.returncode == 1, text[-3000:]
    assert "timeserver   NOT connected" in text
    for name in ("timeserver", "det", "tagger"):
        assert f"trainstamp session --check: {name} is NOT connected" in out.stderr
    assert "plans:" in text and "train_count" in text
    assert "runs go to the embedded Tiled catalog" in text


def test_bad_config_is_refused_before_ipython(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[timeserver]\nca_port = 70000\n")
    out = session(["--config", str(bad), "--check"], tmp_path, timeout=60)
    assert out.returncode == 2
    assert "ca_port = 70000" in out.stderr
    out = session(["--profile-dir", str(tmp_path / "nowhere"), "--check"], tmp_path, timeout=60)
    assert out.returncode == 2
    assert "has no startup/ folder" in out.stderr
