"""``trainstamp demo`` and ``trainstamp up`` as real subprocesses: they work and leave
nothing running."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from trainstamp.testing import free_port, random_prefix, wait_until

pytestmark = pytest.mark.system


def processes_mentioning(text: str) -> list[int]:
    """PIDs of live processes whose command line contains ``text``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            state = next((line for line in (entry / "status").read_text().splitlines()
                          if line.startswith("State:")), "")
        except OSError:
            continue
        if text in cmdline and "zombie" not in state:
            found.append(int(entry.name))
    return found


def trainstamp(*args: str) -> list[str]:
    return [sys.executable, "-m", "trainstamp", *args]


def test_demo_runs_end_to_end_and_leaves_nothing(tmp_path):
    prefix = random_prefix("DEMO")
    data_dir = tmp_path / "data"
    proc = subprocess.run(
        trainstamp("demo", "--data-dir", str(data_dir), "--num-trains", "10",
                   "--timeserver-prefix", prefix),
        capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "OK: train IDs strictly increasing" in out
    assert "events          10" in out
    assert (data_dir / "catalog.db").exists()
    assert processes_mentioning(prefix) == []


def test_demo_fails_cleanly_without_a_catalog_directory(tmp_path):
    """A data directory that cannot be created: non-zero exit, beamline still stopped."""
    prefix = random_prefix("DEMO")
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    proc = subprocess.run(
        trainstamp("demo", "--data-dir", str(blocker / "data"), "--num-trains", "2",
                   "--timeserver-prefix", prefix),
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode != 0
    assert processes_mentioning(prefix) == []


def _start_up(prefix: str, tmp_path: Path) -> subprocess.Popen[str]:
    ca_port, bc_port = free_port("both"), free_port()
    return subprocess.Popen(
        trainstamp("up", "--ca-port", str(ca_port), "--broadcast-port", str(bc_port),
                   "--timeserver-prefix", prefix, "--period", "50",
                   "--log-dir", str(tmp_path / "logs")),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"}, start_new_session=True,
    )


def _read_until(proc: subprocess.Popen[str], marker: str, timeout: float = 60) -> str:
    """Collect the supervisor's output until ``marker`` appears (deadline-bound)."""
    lines: list[str] = []

    def seen() -> bool:
        line = proc.stdout.readline()
        if not line and proc.poll() is not None:
            raise AssertionError("trainstamp up exited:\n" + "".join(lines))
        lines.append(line)
        return marker in line

    wait_until(seen, timeout=timeout, interval=0, message=lambda: "".join(lines))
    return "".join(lines)


@pytest.mark.parametrize("how", ["sigint", "sigkill"])
def test_up_starts_the_beamline_and_stops_it(tmp_path, how):
    prefix = random_prefix("UP")
    proc = _start_up(prefix, tmp_path)
    try:
        out = _read_until(proc, "Ctrl-C stops everything")
        assert "timeserver" in out and "EPICS_CA_ADDR_LIST='127.0.0.1:" in out
        assert "EPICS_CA_AUTO_ADDR_LIST='NO'" in out
        assert len(processes_mentioning(prefix)) == 2  # supervisor + IOC
        if how == "sigint":
            os.killpg(proc.pid, signal.SIGINT)
            assert proc.wait(30) == 0
        else:  # the supervisor dies hard: its child must still go (parent-death signal)
            proc.kill()
            proc.wait(30)
        wait_until(lambda: processes_mentioning(prefix) == [], timeout=20,
                   message=lambda: f"children of trainstamp up to exit: "
                                   f"{processes_mentioning(prefix)}")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        proc.stdout.close()
