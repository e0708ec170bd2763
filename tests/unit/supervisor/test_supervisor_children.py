"""Starting and stopping children (``trainstamp._children``): asked first, then killed."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import tempfile

from trainstamp._children import spawn, stop_group
from trainstamp._wait import wait_until

#: A child that stops on SIGINT at once, and one that ignores it.
OBEDIENT = "import time\nprint('up', flush=True)\ntime.sleep(60)"
STUBBORN = ("import signal, time\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\n"
            "print('up', flush=True)\ntime.sleep(60)")


@contextlib.contextmanager
def _child(code: str):
    with tempfile.TemporaryFile() as out:
        proc = spawn([sys.executable, "-c", code], os.environ, out)
        try:
            yield proc, out
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(30)


def _wait_up(out, proc) -> None:
    def up() -> bool:
        out.seek(0)
        return b"up" in out.read()

    wait_until(up, timeout=30, message="the child to start")
    assert proc.poll() is None


def test_a_child_runs_in_its_own_group_and_stops_on_sigint():
    with _child(OBEDIENT) as (proc, out):
        _wait_up(out, proc)
        assert os.getpgid(proc.pid) == proc.pid != os.getpgid(0)
        assert stop_group(proc, timeout=30) == -signal.SIGINT


def test_a_child_that_ignores_sigint_is_killed_after_the_timeout():
    with _child(STUBBORN) as (proc, out):
        _wait_up(out, proc)
        assert stop_group(proc, timeout=0.2) == -signal.SIGKILL


def test_stopping_a_child_that_is_gone_returns_its_code():
    with _child("raise SystemExit(3)") as (proc, _):
        proc.wait(30)
        assert stop_group(proc, timeout=1) == 3
