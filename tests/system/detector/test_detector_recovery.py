"""A capture file whose writer was killed with SIGKILL opens again after recovery."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import h5py
import numpy as np
import pytest

from trainstamp.detector._recovery import MARKER_SUFFIX, recover_abandoned
from trainstamp.testing import wait_until

pytestmark = pytest.mark.system

WRITER = textwrap.dedent("""
    import sys, numpy as np
    from trainstamp.detector._capture import CaptureFile
    f = CaptureFile(sys.argv[1], flush_interval=1e9)
    raw = np.zeros(1024 * 1024 * 2, dtype=np.uint8)
    for i in range(3):
        f.append(raw, frame_number=i + 1, train_id=1000 + i, complete=True)
    f.flush()
    for i in range(3, 5):  # written, but their train IDs never flushed
        f.append(raw, frame_number=i + 1, train_id=1000 + i, complete=True)
    f.file.flush()
    print("written", flush=True)
    sys.stdin.read()
""")


def test_a_killed_writers_file_is_recovered_with_unflushed_frames_flagged(tmp_path):
    path = tmp_path / "sub" / "run_00000.h5"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "written"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
    marker = path.with_name(path.name + MARKER_SUFFIX)
    assert marker.exists()
    with pytest.raises(OSError, match="already open for write"):
        h5py.File(path, "r").close()

    assert recover_abandoned(tmp_path) == [(path, 2)]
    assert not marker.exists()
    with h5py.File(path, "r") as f:  # a plain reader, no SWMR
        data = f["entry/data"]
        assert data["data"].shape[0] == 5
        assert data["train_id"][:].tolist() == [1000, 1001, 1002, 0, 0]
        assert data["complete"][:].tolist() == [1, 1, 1, 0, 0]
        assert f["entry"].attrs["recovered"] == 1
        assert f["entry"].attrs["frames_without_train_id"] == 2
    assert recover_abandoned(tmp_path) == []  # nothing left to do


def test_a_live_writers_file_is_left_alone(tmp_path):
    path = tmp_path / "run_00000.h5"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "written"
        assert recover_abandoned(tmp_path) == []
        assert path.with_name(path.name + MARKER_SUFFIX).exists()
    finally:
        proc.kill()
        proc.wait(timeout=30)
    wait_until(lambda: proc.poll() is not None, timeout=10, message="writer gone")
    with h5py.File(path, "r", swmr=True, libver="latest") as f:
        assert np.asarray(f["entry/data/train_id"]).tolist() == [1000, 1001, 1002]
