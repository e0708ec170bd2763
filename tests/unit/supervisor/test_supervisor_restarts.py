"""The supervisor's restart rule, pure, and with real short-lived child processes: a child
that dies is restarted alone, with backoff, reported; the others keep their PIDs."""

from __future__ import annotations

import os
import signal
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from trainstamp._supervisor import (
    Beamline,
    RestartPolicy,
    RestartTracker,
    Service,
    describe_exit,
    log_ready,
)
from trainstamp.testing import wait_until

# --- the rule ---------------------------------------------------------------------------


def test_backoff_doubles_up_to_the_cap():
    policy = RestartPolicy(first_delay=0.5, factor=2, max_delay=30)
    assert [policy.delay(n) for n in range(1, 9)] == [0.5, 1, 2, 4, 8, 16, 30, 30]
    assert policy.delay(10**6) == 30  # no overflow however long it keeps failing


def test_a_stable_child_starts_counting_again():
    tracker = RestartTracker(RestartPolicy(first_delay=1, max_delay=8, stable_after=60))
    assert [tracker.failed(t) for t in (0, 1, 2, 3, 4)] == [1, 2, 4, 8, 8]
    tracker.ready(10)
    assert tracker.failed(69) == 8 and tracker.failures == 6  # 59 s up: still in a row
    tracker.ready(100)
    assert tracker.failed(160) == 1 and tracker.failures == 1  # 60 s up: a fresh count
    assert tracker.restarts == 7


def test_bounded_restarts_give_up():
    tracker = RestartTracker(RestartPolicy(max_restarts=2))
    assert tracker.failed(0) is not None and tracker.attempt_text() == "restart 1 of 2"
    assert tracker.failed(1) is not None
    assert tracker.failed(2) is None
    assert RestartTracker(RestartPolicy(max_restarts=0)).failed(0) is None


@pytest.mark.parametrize("kwargs", [dict(first_delay=-1), dict(factor=0.5),
                                    dict(first_delay=5, max_delay=1), dict(max_restarts=-1)])
def test_bad_policies_are_refused(kwargs):
    with pytest.raises(ValueError, match="restart"):
        RestartPolicy(**kwargs)


def test_exits_are_described():
    assert describe_exit(3) == "exited with code 3"
    assert describe_exit(-9) == "killed by SIGKILL (signal 9)"
    assert describe_exit(-200) == "killed by an unknown signal (signal 200)"


# --- real children ----------------------------------------------------------------------

#: A child that says READY (its readiness check reads the log), then behaves as its
#: arguments say: "run" forever; "exit N FLAG": exit with code N once the file FLAG
#: exists (the test creates it when the first start is through); "once FLAG": ready on
#: its first start only, never again.
CHILD = textwrap.dedent("""
    import pathlib, sys, time
    mode, flag = sys.argv[1], pathlib.Path(sys.argv[-1])
    if mode == "once":
        if flag.exists():
            time.sleep(3600)
        flag.write_text("")
    print("READY", flush=True)
    if mode == "exit":
        while not flag.exists():
            time.sleep(0.01)
        sys.exit(int(sys.argv[2]))
    time.sleep(3600)
""")

FAST = RestartPolicy(first_delay=0.05, factor=2, max_delay=0.2, stable_after=60)


def child(name: str, tmp_path, *args: str, ready_timeout: float = 30.0) -> Service:
    return Service(name, [], command=[sys.executable, "-c", CHILD, *args],
                   ready=log_ready(tmp_path / f"{name}.log", "READY"),
                   ready_timeout=ready_timeout)


class Supervised:
    """A Beamline whose supervise() runs in a thread; every line it reports is kept."""

    def __init__(self, services, tmp_path, policy=FAST) -> None:
        self.lines: list[str] = []
        self.beamline = Beamline(services, log_dir=tmp_path, out=self.lines.append,
                                 restart=policy)
        self.done = threading.Event()
        self.result: list[str | None] = []

    def __enter__(self) -> Supervised:
        self.beamline.start()
        self.thread = threading.Thread(
            target=lambda: self.result.append(self.beamline.supervise(poll=0.02,
                                                                      until=self.done)))
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.done.set()
        self.thread.join(30)
        self.beamline.stop()

    def said(self, text: str) -> bool:
        return any(text in line for line in self.lines)


def alive(pid: int) -> bool:
    """Running (a zombie, killed but not yet reaped, is not)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "zombie" not in status


def test_a_killed_child_is_restarted_alone_and_reported(tmp_path):
    services = [child("steady", tmp_path, "run", "-"), child("victim", tmp_path, "run", "-")]
    with Supervised(services, tmp_path) as sup:
        before = sup.beamline.pids()
        os.kill(before["victim"], signal.SIGKILL)
        wait_until(lambda: sup.said("victim is back"), timeout=30,
                   message=lambda: "\n".join(sup.lines))
        after = sup.beamline.pids()
        assert after["steady"] == before["steady"] and alive(before["steady"])
        assert after["victim"] != before["victim"] and alive(after["victim"])
        died = next(line for line in sup.lines if "victim (pid" in line)
        assert f"victim (pid {before['victim']}) killed by SIGKILL (signal 9); restart 1 in " \
               "0.05 s, the other services keep running" in died
        assert f"victim is back: pid {after['victim']}, ready in" in sup.lines[-1]
        assert not sup.said("trainstamp up: steady")
        log = (tmp_path / "victim.log").read_text()
        assert log.count("=== trainstamp supervisor: start") == 2 and log.count("READY") == 2


def test_a_child_that_keeps_dying_backs_off_and_gives_up_when_bounded(tmp_path):
    policy = RestartPolicy(first_delay=0.05, factor=2, max_delay=0.2, max_restarts=3)
    flag = tmp_path / "crash"
    services = [child("steady", tmp_path, "run", "-"),
                child("crasher", tmp_path, "exit", "3", str(flag))]
    lines: list[str] = []
    with Beamline(services, log_dir=tmp_path, out=lines.append, restart=policy) as beamline:
        steady = beamline.pids()["steady"]
        flag.write_text("")  # from now on the crasher exits with code 3 whenever it starts
        assert beamline.supervise(poll=0.02) == "crasher"
        assert beamline.pids()["steady"] == steady and alive(steady)
    deaths = [line for line in lines if "crasher (pid" in line]
    assert [d.split("; ")[1].split(",")[0] for d in deaths[:3]] == [
        "restart 1 of 3 in 0.05 s", "restart 2 of 3 in 0.1 s", "restart 3 of 3 in 0.2 s"]
    assert all("exited with code 3" in d for d in deaths)
    assert "failed 4 times in a row, more than the 3 restarts allowed" in lines[-1]


def test_a_restart_that_never_gets_ready_is_stopped_and_retried(tmp_path):
    services = [child("stuck", tmp_path, "once", str(tmp_path / "flag"), ready_timeout=1.0)]
    with Supervised(services, tmp_path) as sup:
        first = sup.beamline.pids()["stuck"]
        os.kill(first, signal.SIGKILL)
        wait_until(lambda: sup.said("was not ready within 1 s"), timeout=30,
                   message=lambda: "\n".join(sup.lines))
        assert sup.said("restart 2 in 0.1 s")
        assert not sup.said("is back")


def test_max_restarts_zero_stops_at_the_first_death(tmp_path):
    policy = RestartPolicy(max_restarts=0)
    lines: list[str] = []
    flag = tmp_path / "go"
    with Beamline([child("one", tmp_path, "exit", "0", str(flag))], log_dir=tmp_path,
                  out=lines.append, restart=policy) as beamline:
        flag.write_text("")
        assert beamline.supervise(poll=0.02) == "one"
    assert "one (pid" in lines[-1] and "exited with code 0" in lines[-1]


def test_what_a_dead_child_left_in_its_group_goes_before_the_restart(tmp_path):
    """A child's own child (as the detector IOC's receiver) dies with it, so it cannot
    hold the ports the restarted child needs."""
    grandchild_pid = tmp_path / "grandchild.pid"
    script = textwrap.dedent(f"""
        import subprocess, sys, time, pathlib
        p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"])
        pathlib.Path({str(grandchild_pid)!r}).write_text(str(p.pid))
        print("READY", flush=True)
        time.sleep(3600)
    """)
    service = Service("parent", [], command=[sys.executable, "-c", script],
                      ready=log_ready(tmp_path / "parent.log", "READY"))
    with Supervised([service], tmp_path) as sup:
        wait_until(grandchild_pid.exists, timeout=30)
        orphan = int(grandchild_pid.read_text())
        os.kill(sup.beamline.pids()["parent"], signal.SIGKILL)
        wait_until(lambda: sup.said("parent is back"), timeout=30,
                   message=lambda: "\n".join(sup.lines))
        wait_until(lambda: not alive(orphan), timeout=10, message="the orphan to be killed")
