"""HDF5 capture files and data-directory confinement."""

import os

import h5py
import numpy as np
import pytest

from trainstamp.detector._capture import CaptureFile, confine, read_capture
from trainstamp.detector._frames import check_test_pattern, test_pattern


def test_confine(tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    assert confine(root, "", "a.h5") == root.resolve() / "a.h5"
    assert confine(root, "run1/sub", "a.h5") == root.resolve() / "run1/sub/a.h5"
    assert confine(root, str(root / "x"), "a.h5") == root.resolve() / "x/a.h5"
    for directory, name in [("..", "a.h5"), ("../data2", "a.h5"), ("/etc", "a.h5"), ("a/../../b", "a.h5"),
                            ("", "../a.h5"), ("", "x/a.h5"), ("", ".."), ("", "")]:
        with pytest.raises(ValueError, match="outside the data directory|plain file name"):
            confine(root, directory, name)
    os.symlink(tmp_path, root / "escape")
    with pytest.raises(ValueError, match="outside the data directory"):
        confine(root, "escape", "a.h5")


def test_layout_and_swmr_reader(tmp_path):
    path = tmp_path / "c.h5"
    f = CaptureFile(path, flush_interval=0)
    for fn in (5, 6):
        f.append(test_pattern(fn).view(np.uint8).reshape(-1), fn, 1000 + fn, fn == 5)
    # a reader opens the file while the writer still has it open
    got = read_capture(path)
    assert got["data"].shape == (2, 1024, 1024) and got["data"].dtype == np.uint16
    assert check_test_pattern(got["data"][1], 6) == 0
    assert got["train_id"].tolist() == [1005, 1006] and got["train_id"].dtype == np.uint64
    assert got["frame_number"].tolist() == [5, 6]
    assert got["complete"].tolist() == [True, False]
    f.close()
    with h5py.File(path, "r") as h:
        assert h["/entry/data/data"].chunks == (1, 1024, 1024)
    with pytest.raises(FileExistsError):
        CaptureFile(path)


def test_rings_of_dead_owners_are_swept():
    from trainstamp.detector._receiver import SHM_DIR, SHM_PREFIX, sweep_stale_rings

    if not SHM_DIR.is_dir():
        pytest.skip("no /dev/shm")
    dead = SHM_DIR / f"{SHM_PREFIX}{2**22 + 12345}_deadbeef"  # above pid_max's default
    alive = SHM_DIR / f"{SHM_PREFIX}{os.getpid()}_cafef00d"
    dead.write_bytes(b"x")
    alive.write_bytes(b"x")
    try:
        assert dead.name in sweep_stale_rings()
        assert not dead.exists() and alive.exists()
    finally:
        alive.unlink()
        if dead.exists():
            dead.unlink()
