"""Detector frames of a EuXFEL export: found in the capture files, copied in chunks.

A frame is found by its header train ID and frame number in the detector's HDF5
capture files (``/entry/data/{data,train_id,frame_number}``,
:mod:`trainstamp.detector._capture`) under the given directories, and copied a few
frames at a time, consecutive rows of one file in one read, so memory stays at
``chunk`` frames whatever the length of the run. Frames of a step run that are in no
capture file are read through the catalog, one event at a time.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from trainstamp.storage._euxfel import Source, index_of

__all__ = ["FRAME_SHAPE", "FrameFiles", "Progress", "runs", "write_frames"]

#: a TEAM1k frame, the shape of an export without any frame
FRAME_SHAPE = (1024, 1024)


class FrameFiles:
    """Where each detector frame is: (capture file, row), by header train ID and frame
    number, over the ``.h5`` capture files under ``dirs``."""

    def __init__(self, dirs: Sequence[Path]) -> None:
        self.dirs = [Path(d) for d in dirs]
        self._open: dict[Path, h5py.File] = {}

    def locate(self, train_ids: np.ndarray, frame_numbers: np.ndarray) -> list[tuple[Path, int] | None]:
        from trainstamp.detector._capture import DATA, FRAME_NUMBER, TRAIN_ID

        wanted = {(int(t), int(f)) for t, f in zip(train_ids, frame_numbers, strict=True)}
        where: dict[tuple[int, int], tuple[Path, int]] = {}
        for d in self.dirs:
            for path in sorted(d.rglob("*.h5")) if d.is_dir() else []:
                if len(where) == len(wanted):
                    break
                try:
                    with h5py.File(path, "r", swmr=True, libver="latest") as f:
                        if not all(k in f for k in (DATA, TRAIN_ID, FRAME_NUMBER)):
                            continue
                        n = min(f[k].shape[0] for k in (DATA, TRAIN_ID, FRAME_NUMBER))
                        tids = f[TRAIN_ID][:n].astype(np.int64)
                        fns = f[FRAME_NUMBER][:n].astype(np.int64)
                except OSError:
                    continue
                for row in np.flatnonzero(np.isin(tids, train_ids)):
                    key = (int(tids[row]), int(fns[row]))
                    if key in wanted:
                        where.setdefault(key, (path, int(row)))
        return [where.get((int(t), int(f))) for t, f in zip(train_ids, frame_numbers, strict=True)]

    def read(self, path: Path, a: int, b: int) -> np.ndarray:
        from trainstamp.detector._capture import DATA

        f = self._open.get(path)
        if f is None:
            f = self._open[path] = h5py.File(path, "r", swmr=True, libver="latest")
        return f[DATA][a:b]

    def close(self) -> None:
        for f in self._open.values():
            f.close()
        self._open.clear()


def runs(places: Sequence[tuple[Path, int]], limit: int) -> Iterator[tuple[Path, int, int]]:
    """Consecutive rows of one file as ``(path, first, stop)`` runs of at most ``limit``."""
    i = 0
    while i < len(places):
        path, row = places[i]
        j = i + 1
        while (j < len(places) and j - i < limit and places[j][0] == path
               and places[j][1] == row + (j - i)):
            j += 1
        yield path, row, row + (j - i)
        i = j


class Progress:
    """tqdm if installed, else a line at every tenth of the frames."""

    def __init__(self, total: int, enabled: bool, out: Callable[[str], object]) -> None:
        self.total, self.done, self.out, self._bar, self._next = total, 0, out, None, 0.1
        self.enabled = enabled and total > 0
        if self.enabled:
            try:
                from tqdm import tqdm
            except ImportError:
                tqdm = None
            if tqdm is not None:
                self._bar = tqdm(total=total, unit="frame", desc="export", file=sys.stderr)

    def update(self, n: int) -> None:
        self.done += n
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.update(n)
        elif self.done >= self._next * self.total or self.done == self.total:
            self.out(f"export: {self.done}/{self.total} frames")
            self._next = (int(self.done * 10 / self.total) + 1) / 10

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def write_frames(f: h5py.File, src: Source, row_ids: np.ndarray, numbers: np.ndarray | None,
                 per_event: int, train_ids: np.ndarray, frames: FrameFiles, chunk: int,
                 progress: Progress, image_column: Callable[[], Any]) -> tuple[int, int]:
    """Write ``src``'s ``data.image``: its frames (``row_ids``: header train IDs, and
    frame ``numbers``) in train order, ``chunk`` frames at a time, from the capture files
    (``frames``), else event by event from the catalog (``image_column()``, an array
    client, ``per_event`` frames per event). Returns (frames, bytes)."""
    keep, _, _ = index_of(row_ids, train_ids, one_per_train=False)
    if numbers is None:
        numbers = np.zeros(row_ids.size, np.int64)
    places = frames.locate(row_ids[keep], numbers[keep])
    made: list[h5py.Dataset] = []

    def dataset(block: np.ndarray) -> h5py.Dataset:
        """Made at the first frame, in its shape and type (TEAM1k: 1024 x 1024 uint16)."""
        if not made:
            made.append(f.create_dataset(src.data_path("data.image"),
                                         shape=(keep.size, *block.shape[1:]),
                                         dtype=block.dtype, chunks=(1, *block.shape[1:])))
        return made[0]

    missing = [i for i, p in enumerate(places) if p is None]
    if missing and src.image_key is None:
        tids = row_ids[keep][missing[:5]].tolist()
        raise FileNotFoundError(
            f"{len(missing)} frames of {src.device} (trains {tids} ...) are in no capture "
            f"file under {', '.join(map(str, frames.dirs)) or '(no directory)'}; pass "
            "--detector-dir with the detector's data directory")
    out = 0
    written = 0
    i = 0
    while i < keep.size:
        if places[i] is not None:
            j = i
            while j < keep.size and places[j] is not None:
                j += 1
            for path, a, b in runs(places[i:j], chunk):
                block = frames.read(path, a, b)
                dataset(block)[out:out + (b - a)] = block
                out += b - a
                written += block.nbytes
                progress.update(b - a)
            i = j
        else:  # a step run's frame through the catalog: its event's image
            column = image_column()
            event, j_frame = divmod(int(keep[i]), per_event)
            frame = np.asarray(column[event])
            block = frame.reshape(-1, *frame.shape[-2:])[j_frame:j_frame + 1]
            dataset(block)[out:out + 1] = block
            out += 1
            written += block.nbytes
            progress.update(1)
            i += 1
    if not made:
        f.create_dataset(src.data_path("data.image"), shape=(0, *FRAME_SHAPE), dtype="<u2",
                         chunks=(1, *FRAME_SHAPE), maxshape=(None, *FRAME_SHAPE))
    return int(keep.size), written
