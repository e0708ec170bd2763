"""``trainstamp demo`` and ``trainstamp up`` as real subprocesses: they work and leave
nothing running."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
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


def unique_prefixes() -> tuple[list[str], list[str]]:
    """``--set`` options giving each IOC a random prefix, and the prefixes."""
    prefixes = [random_prefix(stem) for stem in ("DTS", "DDET", "DTT")]
    sets = []
    for section, prefix in zip(("timeserver", "detector", "tagger"), prefixes, strict=True):
        sets += ["--set", f"{section}.prefix={prefix}"]
    return sets, prefixes


def leftovers(out: str, prefixes: list[str]) -> list[int]:
    """Processes still alive that the beamline in ``out`` started: the IOCs (by prefix),
    the emulators (by the broadcaster they follow) and the detector's receiver."""
    (broadcast,) = set(re.findall(r"ticks on (tcp://\S+)", out))
    pids = [pid for p in prefixes for pid in processes_mentioning(p)]
    pids += processes_mentioning(f"--trains {broadcast}")
    for det_pid in re.findall(r"^\s+det\s+pid (\d+)", out, re.M):
        pids += processes_mentioning(f"team1k_{det_pid}_")
    return sorted(set(pids))


def test_demo_runs_end_to_end_and_leaves_nothing(tmp_path):
    sets, prefixes = unique_prefixes()
    out_dir, data_dir = tmp_path / "out", tmp_path / "data"
    proc = subprocess.run(
        trainstamp("demo", "--data-dir", str(data_dir), "--out", str(out_dir),
                   "--log-dir", str(tmp_path / "logs"), "--points", "2",
                   "--trains-per-point", "2", "--num-trains", "12", *sets),
        capture_output=True, text=True, timeout=240, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "OK: detector frames, tagger trains and TimeServer ticks line up" in out
    assert "4 of 4 EXACT from the detector headers" in out
    assert "det: 4 frame IDs equal to those in the HDF5 file" in out
    assert re.search(r"all streams hold exactly the same trains \d+\.\.\d+", out), out
    # the fly run, exported and summarised by EXtra-data
    assert "fly run exported for EXtra-data" in out, out
    assert re.search(r"# of trains:\s+\d+", out), out
    assert len(list((out_dir / "euxfel").glob("*/RAW-R*-DA01-S00000.h5"))) == 1
    assert (data_dir / "catalog.db").exists()
    assert list((data_dir / "detector").rglob("*.h5"))
    from matplotlib.image import imread

    for name in ("detector_frame.png", "g2_histogram.png", "counts_per_train.png"):
        path = out_dir / name
        assert path.stat().st_size > 10_000, name
        pixels = imread(path)
        assert pixels.shape[0] > 300 and pixels.shape[1] > 400, name
        assert np.std(pixels[..., :3]) > 0.05, f"{name} looks blank"
    assert leftovers(out, prefixes) == []


def test_demo_fails_with_exit_1_when_the_beamline_cannot_start(tmp_path):
    """A service that cannot start (its port is taken): a clear error, exit 1, and nothing
    left behind."""
    sets, prefixes = unique_prefixes()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = subprocess.run(
            trainstamp("demo", "--data-dir", str(tmp_path / "data"), "--out", str(tmp_path / "out"),
                       *sets, "--set", f"timeserver.broadcast_port={port}"),
            capture_output=True, text=True, timeout=120,
        )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    assert "timeserver exited with code 1" in out and f"cannot broadcast on 127.0.0.1:{port}" in out
    assert all(processes_mentioning(p) == [] for p in prefixes)
    assert not (tmp_path / "out").exists()


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


def test_children_die_with_a_killed_supervisor(tmp_path):
    """SIGKILL of the supervisor: the kernel's parent-death signal stops its children."""
    port = free_port()
    script = textwrap.dedent(f"""
        from trainstamp.beamline import Beamline, Service
        from trainstamp.testing import wait_for_tcp
        s = Service("trains", ["emulate", "trains", "--port", "{port}"],
                    ready=lambda: wait_for_tcp("127.0.0.1", {port}, timeout=0.5) or True)
        with Beamline([s], log_dir={str(tmp_path)!r}, out=lambda t: print(t, flush=True)) as b:
            print("READY", flush=True)
            b.wait()
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: "READY" in proc.stdout.readline(), timeout=60, interval=0,
                   message="the supervisor to start its child")
        assert len(processes_mentioning(f"--port {port}")) == 1
        proc.kill()
        proc.wait(10)
        wait_until(lambda: processes_mentioning(f"--port {port}") == [], timeout=20,
                   message="the child of a killed supervisor to exit")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        proc.stdout.close()


def test_duplicate_service_names_are_refused():
    with pytest.raises(ValueError, match="service names must be unique"):
        Beamline([Service("a", []), Service("a", [])])


def _read_until(proc: subprocess.Popen[str], marker: str, timeout: float = 150) -> str:
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


def test_up_starts_the_whole_beamline_and_stops_it_on_ctrl_c(tmp_path):
    sets, prefixes = unique_prefixes()
    proc = subprocess.Popen(
        trainstamp("up", "--free-ports", "--period", "50", "--data-dir", str(tmp_path / "data"),
                   "--log-dir", str(tmp_path / "logs"), *sets),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"}, start_new_session=True,
    )
    try:
        out = _read_until(proc, "Ctrl-C stops everything")
        for name in ("timeserver", "det-emulator", "det ", "tagger-emulator", "tagger "):
            assert re.search(rf"^\s+{name}\s*pid \d+\s+ready in", out, re.M), (name, out)
        assert "EPICS_CA_AUTO_ADDR_LIST='NO'" in out
        ca_list = re.search(r"EPICS_CA_ADDR_LIST='([^']*)'", out).group(1).split()
        assert len(ca_list) == 3 and all(a.startswith("127.0.0.1:") for a in ca_list)
        assert re.search(r"Pyro5 PYRO:TimeTagger@127\.0\.0\.1:\d+", out)
        for prefix in prefixes:  # its IOC, besides the supervisor (whose options name it)
            assert len(set(processes_mentioning(prefix)) - {proc.pid}) == 1, prefix
        assert (tmp_path / "logs" / "detector-startup.cfg").read_text().count("EXTERNAL") == 1
        # a session on the same data directory finds these free ports, not the configured ones
        running = tmp_path / "data" / "beamline.running.json"
        assert f"published in {running}" in out
        env = {**os.environ, "TRAINSTAMP_CONNECT_TIMEOUT": "20", "PYTHONUNBUFFERED": "1"}
        for key in ("DISPLAY", "MPLBACKEND", "TRAINSTAMP_CONFIG", "EPICS_CA_ADDR_LIST"):
            env.pop(key, None)
        check = subprocess.run(trainstamp("session", "--data-dir", str(tmp_path / "data"),
                                          "--check"), env=env, capture_output=True, text=True,
                               timeout=180, stdin=subprocess.DEVNULL)
        text = check.stdout + check.stderr
        assert check.returncode == 0, text[-3000:]
        assert f"the one trainstamp up runs on {tmp_path / 'data'} (pid {proc.pid}" in text
        for name, address in zip(("timeserver", "det", "tagger"), ca_list, strict=True):
            assert re.search(rf"^\s+{name}\s+connected \(\S+\* at {address}\)", text, re.M), \
                (name, address, text)
        os.killpg(proc.pid, signal.SIGINT)
        assert proc.wait(60) == 0
        assert not running.exists()  # withdrawn with the beamline
        wait_until(lambda: leftovers(out, prefixes) == [], timeout=20,
                   message=lambda: f"children of trainstamp up to exit: {leftovers(out, prefixes)}")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        proc.stdout.close()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["up", "--period", "0.1"], "period 0.1 ms outside 1..60000 ms"),
        (["up", "--ca-port", "70000"], "port '70000' outside 1..65535"),
        (["up", "--set", "detector.prefx=X:"], "unknown key(s) prefx in [detector]"),
        (["up", "--set", "tagger.pyro_port=0"], "[tagger].pyro_port = 0: a port must be"),
        (["up", "--set", "nonsense"], "expected SECTION.KEY=VALUE"),
        (["up", "--config", "/nonexistent/beamline.toml"], "'/nonexistent/beamline.toml'"),
        (["demo", "--num-trains", "0"], "--num-trains '0' outside 1..100000"),
        (["demo", "--set", "timeserver.name=ts"], "[timeserver].name = 'ts': reserved"),
    ],
)
def test_bad_options_are_refused_with_the_limit(args, message):
    proc = subprocess.run(trainstamp(*args), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr


def _start_pids(out: str) -> dict[str, int]:
    return {m.group(1): int(m.group(2))
            for m in re.finditer(r"^\s+(\S+)\s+pid (\d+)\s+ready in", out, re.M)}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return pid not in _zombies([pid])


def _zombies(pids: list[int]) -> set[int]:
    found = set()
    for pid in pids:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        if "zombie" in status:
            found.add(pid)
    return found


@pytest.mark.timeout(400)
def test_up_restarts_a_killed_child_alone(tmp_path):
    """kill -9 of one child: ``trainstamp up`` says so, restarts that child with backoff,
    and every other child keeps its PID. Before, the whole beamline stopped."""
    sets, prefixes = unique_prefixes()
    proc = subprocess.Popen(
        trainstamp("up", "--free-ports", "--period", "50", "--data-dir", str(tmp_path / "data"),
                   "--log-dir", str(tmp_path / "logs"), *sets),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"}, start_new_session=True,
    )
    try:
        out = _read_until(proc, "Ctrl-C stops everything")
        assert "restarted on its own (without bound)" in out
        pids = _start_pids(out)
        assert set(pids) == {"timeserver", "det-emulator", "det", "tagger-emulator", "tagger"}
        for victim in ("det-emulator", "tagger"):
            os.kill(pids[victim], signal.SIGKILL)
            back = _read_until(proc, f"{victim} is back", timeout=180)
            died = re.search(rf"{victim} \(pid {pids[victim]}\) killed by SIGKILL \(signal 9\); "
                             r"restart 1 in 0\.5 s, the other services keep running", back)
            assert died, back
            new = int(re.search(rf"{victim} is back: pid (\d+), ready in", back).group(1))
            assert new != pids[victim] and _alive(new)
            for name, pid in pids.items():
                if name != victim:
                    assert _alive(pid), (name, back)
            pids[victim] = new
        assert proc.poll() is None  # the beamline is still up
        os.killpg(proc.pid, signal.SIGINT)
        assert proc.wait(60) == 0
        wait_until(lambda: not any(_alive(p) for p in pids.values()), timeout=20,
                   message=lambda: f"children of trainstamp up to exit: {pids}")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        proc.stdout.close()
