"""The put-refusal tests under the other ophyd control layer.

ophyd picks its control layer when it is imported, and the CA client reads its
environment once, so one process runs one layer. This session runs
:mod:`test_put_refusal` under its own layer (``OPHYD_CONTROL_LAYER``, caproto by default);
here a pytest subprocess runs the same file under the other one.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import ophyd
import pytest

pytestmark = pytest.mark.system

OTHER = {"caproto": "pyepics", "pyepics": "caproto"}


def test_put_refusal_under_the_other_control_layer(tmp_path):
    layer = OTHER[ophyd.cl.name]
    here = Path(__file__).parent
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--timeout", "120",
         "--basetemp", str(tmp_path / "basetemp"), str(here / "test_put_refusal.py")],
        env={**os.environ, "OPHYD_CONTROL_LAYER": layer}, cwd=here.parents[2],
        capture_output=True, text=True, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert " passed" in out and " failed" not in out and " skipped" not in out, out[-2000:]
