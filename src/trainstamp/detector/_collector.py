"""The ``detector`` stream of :func:`~trainstamp.plans.train_fly`: every frame of one
detector capture, read from the capture file (HDF5, SWMR) while the IOC writes it.

The per-frame datasets are the ones :mod:`trainstamp.detector._capture` writes
(:data:`~trainstamp.detector._capture.TRAIN_ID` and the others), so the reader and the
writer share one set of paths.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import h5py
import numpy as np

from trainstamp.detector._capture import COMPLETE, FRAME_NUMBER, TRAIN_ID
from trainstamp.plans._collectors import Collector, id_keys, page
from trainstamp.trainid import NO_TRAIN_ID, TRAIN_ID_KEY, TRAIN_ID_STATUS_KEY

__all__ = ["FrameCollector"]


class FrameCollector(Collector):
    """Every frame of one detector capture, read from the capture file as it grows.

    ``kickoff`` asks the IOC for ``num_trains`` frames into the file the (staged)
    :class:`~trainstamp.detector.Team1k` opened for the run; ``collect_pages`` reads the
    per-frame train IDs, frame numbers and completeness that the IOC has flushed
    (:data:`~trainstamp.detector._capture.TRAIN_ID` ...; SWMR), and ``complete`` finishes when all frames are
    there. In external-trigger mode there is one frame per train and its ``train_id`` is
    exact; a frame without one (header ID 0) is flagged ``"INVALID"`` with -1.
    """

    def __init__(self, detector: Any, timeserver: Any, num_trains: int, *,
                 name: str | None = None, timeout_s: float = 10.0) -> None:
        super().__init__(name or f"{detector.name}_frames", timeserver)
        self.detector = detector
        self.num_trains = num_trains
        self.timeout_s = timeout_s
        self._path: str | None = None
        self._first = 0
        self._taken = 0
        self._file = None
        self._last_growth = 0.0
        self.last_train_id = 0

    def _open(self):
        if self._file is None:
            self._file = h5py.File(self._path, "r", libver="latest", swmr=True)
        return self._file

    def _length(self) -> int:
        f = self._open()
        n = None
        for path in (TRAIN_ID, FRAME_NUMBER, COMPLETE):
            ds = f[path]
            ds.refresh()
            n = ds.shape[0] if n is None else min(n, ds.shape[0])
        return int(n)

    def _begin(self) -> None:
        det = self.detector
        self._path = det.capture_full_path.get()
        if not self._path:
            raise RuntimeError(f"{det.name} has no open capture file: stage it first")
        self._file = None
        self._first = self._length()
        det.capture_cmd.put(self.num_trains, wait=True)

    def describe_collect(self) -> dict[str, Any]:
        source = f"{self.detector.name}:packet_header"
        keys = id_keys(source)
        keys[self.detector.frame_number_key] = {"source": source, "dtype": "integer",
                                                "dtype_numpy": "<u8", "shape": []}
        keys[f"{self.detector.name}_complete"] = {"source": source, "dtype": "boolean",
                                                  "shape": []}
        return keys

    def collect_pages(self) -> Iterator[dict[str, Any]]:
        if self._path is None:
            return
        n = min(self._length() - self._first, self.num_trains)
        if n > self._taken:
            self._last_growth = time.monotonic()
            f = self._file
            lo, hi = self._first + self._taken, self._first + n
            ids = f[TRAIN_ID][lo:hi].astype(np.int64)
            numbers = f[FRAME_NUMBER][lo:hi].astype(np.int64)
            complete = f[COMPLETE][lo:hi].astype(bool)
            self._taken = n
            if ids.size and ids[-1] > 0:
                self.last_train_id = int(ids[-1])
            now = time.time()
            good = ids > 0
            yield page({
                TRAIN_ID_KEY: np.where(good, ids, NO_TRAIN_ID).tolist(),
                TRAIN_ID_STATUS_KEY: np.where(good, "EXACT", "INVALID").tolist(),
                self.detector.frame_number_key: numbers.tolist(),
                f"{self.detector.name}_complete": complete.tolist(),
            }, [now] * (hi - lo))
        if self._taken >= self.num_trains:
            self._finish()
        elif time.monotonic() - self._last_growth > self.timeout_s:
            self._finish(TimeoutError(f"{self.name}: no frame for {self.timeout_s} s after "
                                      f"{self._taken} of {self.num_trains}"))

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
