"""Capture files left open by a writer that died, made readable again.

A capture file is written in SWMR mode (``libver="latest"``), and HDF5 marks such a file
as open for writing in its superblock until the writer closes it. A writer killed with
SIGKILL never does, so afterwards HDF5 refuses to open the file except as an SWMR reader
("file is already open for write (may use <h5clear file> to clear file consistency
flags)"). Most readers (Tiled's HDF5 adapter, EXtra-data, ``h5ls``) do not ask for SWMR,
so the data, though intact up to the writer's last flush, would look lost.

Two pieces fix that:

- :func:`mark_writing` / :func:`clear_writing`: the writer leaves a small marker file,
  ``<capture>.writing``, holding its host and PID while the file is open.
- :func:`recover_abandoned` (run by the detector IOC at start): for every marker whose
  writer is no longer alive on this host, copy the file through HDF5 (read as an SWMR
  reader, write a fresh file, replace the old one atomically), and remove the marker.

The frames the writer had written but whose train IDs it had not yet flushed keep their
place, with train ID 0 and ``complete`` 0, so every reader sees them flagged, never as
valid frames. The file's ``/entry`` carries ``recovered`` (1) and
``frames_without_train_id`` (how many such frames there were).
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
from pathlib import Path

import h5py
import numpy as np

__all__ = ["MARKER_SUFFIX", "clear_writing", "mark_writing", "recover_abandoned", "recover_file"]

MARKER_SUFFIX = ".writing"
#: Datasets of a capture's /entry/data that hold one value per frame.
_PER_FRAME = ("train_id", "frame_number", "complete")


def _marker(path: Path) -> Path:
    return path.with_name(path.name + MARKER_SUFFIX)


def mark_writing(path: str | os.PathLike) -> None:
    """Note that this process has ``path`` open for writing."""
    _marker(Path(path)).write_text(f"{socket.gethostname()} {os.getpid()}\n")


def clear_writing(path: str | os.PathLike) -> None:
    """The writer closed ``path`` cleanly."""
    with contextlib.suppress(FileNotFoundError):
        _marker(Path(path)).unlink()


def _writer_alive(marker: Path) -> bool:
    try:
        host, pid = marker.read_text().split()
        pid_number = int(pid)
    except (OSError, ValueError):
        return False  # unreadable or damaged: nobody can be relying on it
    if host != socket.gethostname():
        return True  # another host's writer: not ours to judge
    try:
        os.kill(pid_number, 0)
    except OSError as exc:
        return exc.errno == errno.EPERM
    return True


def recover_file(path: str | os.PathLike) -> int:
    """Rewrite ``path`` as a closed file; return the frames that had no train ID yet."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.recovering")
    with h5py.File(path, "r", swmr=True, libver="latest") as src, \
            h5py.File(tmp, "w", libver="latest") as dst:
        for key, value in src.attrs.items():
            dst.attrs[key] = value
        for name in src:
            src.copy(name, dst)
        missing = 0
        data = dst.get("entry/data")
        if isinstance(data, h5py.Group) and "data" in data:
            frames = data["data"].shape[0]
            for key in _PER_FRAME:
                if key in data and data[key].shape[0] < frames:
                    ds = data[key]
                    have = ds.shape[0]
                    missing = max(missing, frames - have)
                    ds.resize((frames,))
                    ds[have:] = np.zeros(frames - have, dtype=ds.dtype)
            dst["entry"].attrs["recovered"] = 1
            dst["entry"].attrs["frames_without_train_id"] = missing
    os.replace(tmp, path)
    return missing


def recover_abandoned(data_dir: str | os.PathLike) -> list[tuple[Path, int | str]]:
    """Recover every capture under ``data_dir`` whose writer died.

    Returns ``(path, frames without a train ID)`` for each file recovered, or
    ``(path, reason)`` for one that could not be (it is left as it was, marker included).
    """
    out: list[tuple[Path, int | str]] = []
    for marker in sorted(Path(data_dir).rglob("*" + MARKER_SUFFIX)):
        capture = marker.with_name(marker.name[: -len(MARKER_SUFFIX)])
        if _writer_alive(marker):
            continue
        if not capture.is_file():
            marker.unlink(missing_ok=True)
            continue
        try:
            out.append((capture, recover_file(capture)))
        except (OSError, KeyError, ValueError) as exc:
            out.append((capture, f"{type(exc).__name__}: {exc}"))
            continue
        marker.unlink(missing_ok=True)
    return out
