"""Frames of a EuXFEL export: found in capture files by train ID, copied in chunks."""

from __future__ import annotations

import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from trainstamp.detector._capture import DATA, FRAME_NUMBER, TRAIN_ID
from trainstamp.storage._euxfel import Source
from trainstamp.storage._euxfel_frames import FrameFiles, Progress, runs, write_frames

SHAPE = (3, 5)


def capture(path: Path, train_ids, frame_numbers) -> Path:
    """A capture-layout file; each frame is filled with its train ID."""
    with h5py.File(path, "w") as f:
        f[DATA] = np.stack([np.full(SHAPE, t % 65536, np.uint16) for t in train_ids])
        f[TRAIN_ID] = np.asarray(train_ids, np.uint64)
        f[FRAME_NUMBER] = np.asarray(frame_numbers, np.uint64)
    return path


def detector() -> Source:
    return Source("detector", "INSTRUMENT", "TRAINSTAMP/DET/d:daqOutput", "data", "detector",
                  "d", "train_id")


def test_runs_join_consecutive_rows_of_one_file_up_to_the_limit():
    a, b = Path("a"), Path("b")
    places = [(a, 0), (a, 1), (a, 2), (a, 3), (a, 4), (b, 5), (b, 6), (a, 9)]
    assert list(runs(places, 3)) == [(a, 0, 3), (a, 3, 5), (b, 5, 7), (a, 9, 10)]


def test_frames_from_two_files_in_train_order_a_few_at_a_time(tmp_path):
    capture(tmp_path / "one.h5", [10, 11, 12, 13, 14], [1, 2, 3, 4, 5])
    capture(tmp_path / "two.h5", [20, 21, 99], [6, 7, 8])  # 99: another run's frame
    capture(tmp_path / "old.h5", [11], [40])  # same train, another frame number
    frames = FrameFiles([tmp_path])
    reads = []
    read = frames.read
    frames.read = lambda path, a, b: reads.append(b - a) or read(path, a, b)
    row_ids = np.array([21, 10, 11, 12, 13, 14, 20, -1])
    numbers = np.array([7, 1, 2, 3, 4, 5, 6, 0])
    train_ids = np.arange(10, 22, dtype=np.uint64)
    with h5py.File(tmp_path / "out.h5", "w") as f:
        n, nbytes = write_frames(f, detector(), row_ids, numbers, 1, train_ids, frames, 2,
                                 Progress(7, False, print), lambda: None)
        image = f["INSTRUMENT/TRAINSTAMP/DET/d:daqOutput/data/image"]
        assert image.shape == (7, *SHAPE) and image.chunks == (1, *SHAPE)
        assert image[:, 0, 0].tolist() == [10, 11, 12, 13, 14, 20, 21]
    frames.close()
    assert (n, nbytes) == (7, 7 * 15 * 2)
    assert max(reads) <= 2 and sum(reads) == 7  # never more than chunk frames at once


def test_a_frame_in_no_capture_file_is_an_error_naming_the_trains(tmp_path):
    capture(tmp_path / "one.h5", [10], [1])
    with h5py.File(tmp_path / "out.h5", "w") as f, pytest.raises(
            FileNotFoundError, match=r"1 frames of d \(trains \[11\] \.\.\.\) are in no capture"):
        write_frames(f, detector(), np.array([10, 11]), np.array([1, 2]), 1,
                     np.array([10, 11], np.uint64), FrameFiles([tmp_path]), 4,
                     Progress(2, False, print), lambda: None)


def test_progress_lines_without_tqdm(monkeypatch):
    monkeypatch.setitem(sys.modules, "tqdm", None)  # import tqdm fails
    lines = []
    p = Progress(20, True, lines.append)
    for _ in range(20):
        p.update(1)
    assert lines[0] == "export: 2/20 frames" and lines[-1] == "export: 20/20 frames"
    assert len(lines) == 10
