"""Children get SIGINT back at its default, whatever the parent inherited.

A process started in the background by a non-interactive shell inherits SIGINT ignored,
and Python keeps it ignored; its IOCs then could not be stopped cleanly with SIGINT.
"""

from __future__ import annotations

import signal
import subprocess
import sys

from trainstamp._children import child_preexec, default_sigint

PROBE = "import signal; print(signal.getsignal(signal.SIGINT) is signal.default_int_handler)"


def run_probe(preexec) -> str:
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # as under `cmd &`
    try:
        return subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                              timeout=60, preexec_fn=preexec).stdout.strip()
    finally:
        signal.signal(signal.SIGINT, previous)


def test_without_the_reset_a_child_inherits_sigint_ignored():
    assert run_probe(None) == "False"


def test_services_and_test_children_get_the_default_sigint():
    assert run_probe(child_preexec) == "True"
    assert run_probe(default_sigint) == "True"
