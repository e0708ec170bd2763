"""``trainstamp demo`` and ``trainstamp up`` as real subprocesses: they work and leave
nothing running."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from trainstamp.beamline import Beamline, Service
from trainstamp.testing import free_port, random_prefix, wait_for_tcp, wait_until

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


def test_beamline_stops_what_it_started_when_a_service_fails(tmp_path):
    """A service that dies before it is ready: a clear error, and the others are stopped."""
    port = free_port()
    good = Service("trains", ["emulate", "trains", "--port", str(port), "--period", "50"],
                   ready=lambda: wait_for_tcp("127.0.0.1", port, timeout=0.5) or True,
                   where=f"tcp://127.0.0.1:{port}")
    bad = Service("broken", ["ioc", "timeserver", "--source", "bogus://nowhere"],
                  ready=lambda: False, ready_timeout=30)
    lines: list[str] = []
    beamline = Beamline([good, bad], log_dir=tmp_path / "logs", out=lines.append)
    with pytest.raises(RuntimeError, match="broken exited with code"):
        beamline.start()
    assert lines and lines[0].split()[0] == "trains"
    assert processes_mentioning(f"--port {port}") == []
    assert (tmp_path / "logs" / "broken.log").read_text()


def test_beamline_stops_everything_when_the_caller_fails(tmp_path):
    port = free_port()
    service = Service("trains", ["emulate", "trains", "--port", str(port)],
                      ready=lambda: wait_for_tcp("127.0.0.1", port, timeout=0.5) or True)
    with pytest.raises(ZeroDivisionError), Beamline([service], log_dir=tmp_path, out=str):
        assert len(processes_mentioning(f"--port {port}")) == 1
        1 / 0  # noqa: B018 - the caller's code fails inside the with block
    assert processes_mentioning(f"--port {port}") == []


def test_duplicate_service_names_are_refused():
    with pytest.raises(ValueError, match="service names must be unique"):
        Beamline([Service("a", []), Service("a", [])])


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

    def seen_or_exited() -> bool:
        line = proc.stdout.readline()
        lines.append(line)
        return marker in line or (not line and proc.poll() is not None)

    wait_until(seen_or_exited, timeout=timeout, interval=0, message=lambda: "".join(lines))
    out = "".join(lines)
    assert marker in out, f"trainstamp up exited with {proc.returncode}:\n{out}"
    return out


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


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["up", "--period", "0.1"], "period 0.1 ms outside 1..60000 ms"),
        (["up", "--ca-port", "70000"], "port '70000' outside 1..65535"),
        (["demo", "--num-trains", "0"], "--num-trains '0' outside 1..100000"),
    ],
)
def test_bad_options_are_refused_with_the_limit(args, message):
    proc = subprocess.run(trainstamp(*args), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert message in proc.stderr
