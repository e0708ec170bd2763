"""HDF5 capture files: layout, SWMR writing, and paths confined under the data directory.

Layout (one file per capture, or per run when opened for appending)::

    /entry/data/data          (N, 1024, 1024) uint16, one frame per chunk
    /entry/data/train_id      (N,) uint64  exact train ID from the packet header (0 = none)
    /entry/data/frame_number  (N,) uint64
    /entry/data/complete      (N,) uint8   0 if packets were missing (padded 0xFFFF) or
                                           disagreed on the train ID (a spoofed packet)
    /entry/data/train_id_valid (N,) uint8  0 if the frame has no train ID (the header said
                                           0): its train_id is never to be used

The file is in SWMR mode from its first frame: readers may open it (``swmr=True``) while
it is written. Each frame grows the image dataset by one chunk; the per-frame metadata is
buffered and written with each flush, at least every ``flush_interval`` seconds. A
reader takes the shortest dataset as the frame count, so after a crash of the writer
the file is readable up to the last flushed frame.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import h5py
import numpy as np

from trainstamp.detector._protocol import FRAME_COLS, FRAME_ROWS
from trainstamp.detector._recovery import clear_writing, mark_writing

DATA = "/entry/data/data"
TRAIN_ID = "/entry/data/train_id"
FRAME_NUMBER = "/entry/data/frame_number"
COMPLETE = "/entry/data/complete"
TRAIN_ID_VALID = "/entry/data/train_id_valid"
#: longest file name most file systems take (bytes)
NAME_MAX = 255


def confine(data_dir: str | os.PathLike, directory: str, name: str) -> Path:
    """Absolute path of capture file ``name`` in ``directory``, under ``data_dir``.

    ``directory`` is relative to ``data_dir`` (absolute is accepted only if inside it);
    ``name`` is a bare file name. ``ValueError`` quoting the value if the result would
    leave ``data_dir`` (``..``, absolute paths elsewhere, symlinks out) or the name is bad.
    """
    root = Path(data_dir).resolve()
    if not name or name in (".", "..") or "/" in name or "\\" in name or "\0" in name:
        raise ValueError(f"capture file name {name[:60]!r} must be a plain file name")
    if len(name.encode("utf-8", "surrogatepass")) > NAME_MAX:
        raise ValueError(f"capture file name of {len(name.encode('utf-8', 'surrogatepass'))} bytes "
                         f"is longer than {NAME_MAX} bytes")
    if "\0" in directory:
        raise ValueError(f"capture directory {directory!r} contains a NUL byte")
    d = Path(directory) if directory else Path(".")
    target = (d if d.is_absolute() else root / d).resolve() / name
    if root != target.parent and root not in target.parent.parents:
        raise ValueError(f"capture path {str(target)!r} is outside the data directory {str(root)!r}")
    return target


class CaptureFile:
    """One HDF5 capture file being written (single writer, SWMR)."""

    def __init__(self, path: str | os.PathLike, flush_interval: float = 0.2) -> None:
        self.path = Path(path)
        if self.path.exists():
            raise FileExistsError(f"capture file {str(self.path)!r} already exists")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.flush_interval = flush_interval
        self.file = h5py.File(self.path, "w", libver="latest")
        mark_writing(self.path)  # a kill -9 leaves it; the next IOC start recovers the file
        g = self.file.require_group("entry/data")
        g.attrs["NX_class"] = "NXdata"
        self.file["entry"].attrs["NX_class"] = "NXentry"
        self.data = g.create_dataset(
            "data", shape=(0, FRAME_ROWS, FRAME_COLS), maxshape=(None, FRAME_ROWS, FRAME_COLS),
            dtype="<u2", chunks=(1, FRAME_ROWS, FRAME_COLS), fillvalue=0xFFFF,
        )
        self.train_id = g.create_dataset("train_id", shape=(0,), maxshape=(None,), dtype="<u8", chunks=(1024,))
        self.frame_number = g.create_dataset("frame_number", shape=(0,), maxshape=(None,), dtype="<u8", chunks=(1024,))
        self.complete = g.create_dataset("complete", shape=(0,), maxshape=(None,), dtype="u1", chunks=(1024,))
        self.train_id_valid = g.create_dataset("train_id_valid", shape=(0,), maxshape=(None,), dtype="u1",
                                               chunks=(1024,))
        self.file.swmr_mode = True
        self.count = 0
        # (train_id, frame_number, complete, train_id_valid) not yet written
        self._meta: list[tuple[int, int, int, int]] = []
        self._last_flush = time.monotonic()

    def append(self, raw: np.ndarray, frame_number: int, train_id: int, complete: bool,
               train_id_valid: bool = True) -> int:
        """Write one frame (``raw``: its 2 MiB as uint8, e.g. a shared-memory view).

        Returns the frame's index in the file.
        """
        i = self.count
        self.data.resize(i + 1, axis=0)
        self.data.id.write_direct_chunk((i, 0, 0), raw)
        self._meta.append((train_id, frame_number, int(complete), int(train_id_valid)))
        self.count = i + 1
        now = time.monotonic()
        if now - self._last_flush >= self.flush_interval:
            self.flush()
        return i

    def truncate(self, n: int) -> None:
        """Shrink to ``n`` frames (drops a frame whose source was overwritten)."""
        self._write_meta()
        for ds in (self.data, self.train_id, self.frame_number, self.complete, self.train_id_valid):
            ds.resize(n, axis=0)
        self.count = n

    def _write_meta(self) -> None:
        if not self._meta:
            return
        start = self.train_id.shape[0]
        block = np.array(self._meta, dtype=np.uint64)
        self._meta.clear()
        stop = start + len(block)
        for k, ds in enumerate((self.train_id, self.frame_number, self.complete, self.train_id_valid)):
            ds.resize((stop,))
            ds[start:stop] = block[:, k]

    def flush(self) -> None:
        self._write_meta()
        self.file.flush()
        self._last_flush = time.monotonic()

    def close(self) -> None:
        if self.file.id.valid:
            self.flush()
            self.file.close()
            clear_writing(self.path)


def read_capture(path: str | os.PathLike, swmr: bool = True) -> dict[str, np.ndarray]:
    """Read a capture file, up to the shortest of its datasets (safe on a crashed writer)."""
    with h5py.File(path, "r", swmr=swmr, libver="latest") as f:
        keys = [k for k in (DATA, TRAIN_ID, FRAME_NUMBER, COMPLETE, TRAIN_ID_VALID) if k in f]
        n = min(f[k].shape[0] for k in keys)
        out = {
            "data": f[DATA][:n],
            "train_id": f[TRAIN_ID][:n],
            "frame_number": f[FRAME_NUMBER][:n],
            "complete": f[COMPLETE][:n].astype(bool),
        }
        # files written before train_id_valid existed: a train ID of 0 is never valid
        out["train_id_valid"] = (f[TRAIN_ID_VALID][:n].astype(bool) if TRAIN_ID_VALID in f
                                 else out["train_id"] != 0)
        return out
