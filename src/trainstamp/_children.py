"""Starting and stopping child processes: what the supervisor and the tests share.

Every child runs in a process group of its own, with SIGINT at its default (however the
parent was started), and is stopped by asking first: SIGINT to the group, then SIGKILL
once ``timeout`` has passed, and SIGKILL to whatever the child left in its group.
:mod:`trainstamp._supervisor` (``trainstamp up``) and :mod:`trainstamp.testing` (the
tests' IOCs and emulators) both start and stop their children here.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import IO

__all__ = ["child_preexec", "default_sigint", "spawn", "stop_group"]


def _load_prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


_PRCTL = _load_prctl()  # loaded here: a child between fork and exec must not dlopen
_PR_SET_PDEATHSIG = 1


def default_sigint() -> None:
    """Run in a child between fork and exec: SIGINT back to its default.

    A process started in the background by a non-interactive shell (``cmd &``, nohup,
    some CI runners) inherits SIGINT ignored, and Python then keeps it ignored: its
    children would never stop on the SIGINT that asks them to shut down cleanly, and
    every stop would wait out its timeout and end in SIGKILL.
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def child_preexec() -> None:
    """Run in a service between fork and exec: :func:`default_sigint`, and SIGTERM when
    the supervisor dies (Linux parent-death signal)."""
    default_sigint()
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, signal.SIGTERM)


def spawn(args: Sequence[str], env: Mapping[str, str], out: IO[bytes], *,
          preexec: Callable[[], None] = default_sigint) -> subprocess.Popen[bytes]:
    """Start ``args`` in a new session (its own process group), stdin closed, stdout
    and stderr into ``out``; ``preexec`` runs in the child before exec."""
    return subprocess.Popen(list(args), env=dict(env), stdout=out, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True,
                            preexec_fn=preexec)


def stop_group(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> int | None:
    """SIGINT ``proc``'s process group, SIGKILL after ``timeout`` s; then SIGKILL what is
    left of the group. Returns the exit code (None if it could not be reaped)."""
    for sig in (signal.SIGINT, signal.SIGKILL):
        if proc.poll() is not None:
            break
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout)
    # Anything the child left in its group goes too.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    return proc.returncode
