"""The step plans with all three devices under the other ophyd control layer.

ophyd picks its control layer at import, and the CA client reads its environment once,
so one process runs one layer. This session runs :mod:`test_acquisition_stack` under
its own layer (caproto by default); here a pytest subprocess runs its step scan (``train_scan`` with the TimeServer, the
detector and the tagger, every stamp OK, both devices armed for the same train) under
the other one, pyepics' libca by default. It found that under pyepics the TimeServer's
``STATE`` monitor gives the enum's index, which had made every stamp STALE.
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


@pytest.mark.timeout(400)
def test_step_scan_with_all_three_devices_under_the_other_control_layer(tmp_path):
    layer = OTHER[ophyd.cl.name]
    here = Path(__file__).parent
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--timeout", "240",
         "--basetemp", str(tmp_path / "basetemp"), "-k", "step_scan",
         str(here / "test_acquisition_stack.py")],
        env={**os.environ, "OPHYD_CONTROL_LAYER": layer}, cwd=here.parents[2],
        capture_output=True, text=True, timeout=360)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert "1 passed" in out and " failed" not in out and " skipped" not in out, out[-2000:]
