"""``trainstamp export euxfel``: write a stored run as a EuXFEL run directory.

The run is read through the Tiled client (its streams' data keys and columns); the
layout comes from :mod:`trainstamp.storage._euxfel`, the frames from
:mod:`trainstamp.storage._euxfel_frames`. Detector frames are copied from
the detector's HDF5 capture files (``/entry/data/data``, found by their header train ID
and frame number under the detector directory), a few frames at a time, so memory stays
bounded by ``chunk_frames`` frames whatever the length of the run. A step run's frames
that are in no capture file there are read through the catalog instead (its image
key), event by event.

The output is one file per detector (``RAW-R0012-TEAM1K01-S00000.h5``) and one for
everything else (``RAW-R0012-DA01-S00000.h5``), each with the whole run's
``INDEX/trainId``, as the EuXFEL DAQ splits detectors from the data aggregator.
``extra_data.RunDirectory(outdir)`` opens it and ``extra-data-validate outdir`` checks it.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from trainstamp.storage._euxfel import (
    DETECTOR,
    Source,
    file_name,
    index_of,
    metadata_values,
    plan_sources,
    run_train_ids,
    sources_table,
)
from trainstamp.storage._euxfel_frames import FrameFiles, Progress, write_frames
from trainstamp.storage._read import last_run

__all__ = ["ExportResult", "export_euxfel", "find_run", "main"]

#: frames read and written at a time
CHUNK_FRAMES = 4


@dataclass
class ExportResult:
    """What :func:`export_euxfel` wrote."""

    uid: str
    outdir: Path
    files: list[Path]
    sources: list[str]
    train_ids: np.ndarray
    frames: int
    frame_bytes: int
    seconds: float
    #: of ``seconds``, the time spent locating and copying frames
    frame_seconds: float = 0.0
    notes: list[str] = field(default_factory=list)


def find_run(client: Any, spec: str | int) -> Any:
    """The run named by ``spec``: a uid, a scan_id, or -N for the N-th last run.

    Raises ``LookupError`` naming ``spec`` if the catalog has no such run. A scan_id
    that several runs share names the most recent of them.
    """
    text = str(spec).strip()
    if re.fullmatch(r"-?\d+", text):
        n = int(text)
        if n == -1:
            return last_run(client)
        if n < 0:
            if len(client) < -n:
                raise LookupError(f"run {n}: the catalog holds only {len(client)} runs")
            return client[client.keys()[n]]
        from tiled.queries import Key

        found = client.search(Key("start.scan_id") == n)
        if len(found) == 0:
            raise LookupError(f"no run with scan_id {n} in the catalog")
        return found.values().last()
    try:
        return client[text]
    except KeyError:
        raise LookupError(f"no run {text!r} in the catalog (a uid, a scan_id or -1 for "
                          "the last run)") from None


def _check_outdir(outdir: Path) -> bool:
    """Refuse a non-empty OUTDIR; return True if it has to be created."""
    if outdir.exists():
        if not outdir.is_dir():
            raise FileExistsError(f"OUTDIR {outdir} exists and is not a directory")
        if any(outdir.iterdir()):
            raise FileExistsError(f"OUTDIR {outdir} is not empty; export into a new or "
                                  "empty directory")
        return False
    return True


# ---------------------------------------------------------------- reading the run
def _stream_keys(run: Any) -> dict[str, dict[str, Any]]:
    return {name: dict(run[name].metadata.get("data_keys") or {}) for name in run}


class _Streams:
    """Each stream's columns, read once per stream (one request, ``stream.read``), then
    key by key for any that came back as text: an array stored in the event table
    rather than as an array node (``read_stream``'s caveat)."""

    def __init__(self, run: Any) -> None:
        self.run = run
        self._nodes: dict[str, Any] = {}
        self._tables: dict[str, dict[str, np.ndarray]] = {}

    def node(self, name: str) -> Any:
        if name not in self._nodes:
            self._nodes[name] = self.run[name]
        return self._nodes[name]

    def column(self, name: str, key: str) -> np.ndarray:
        if name not in self._tables:
            stream = self.node(name)
            keys = [k for k, info in (stream.metadata.get("data_keys") or {}).items()
                    if not info.get("external")]
            table: dict[str, np.ndarray] = {}
            try:
                ds = stream.read(variables=[*keys, "time"])
                for k in [*keys, "time"]:
                    if k in ds.variables:
                        table[k] = np.asarray(ds[k].values)
            except Exception:  # an older server without variables=: key by key below
                table = {}
            self._tables[name] = table
        table = self._tables[name]
        info = (self.node(name).metadata.get("data_keys") or {}).get(key, {})
        values = table.get(key)
        if values is None or (values.dtype.kind in "UO" and info.get("dtype") != "string"):
            values = table[key] = np.asarray(self.node(name)[key].read())
        return values


def _per_frame(values: np.ndarray, per_event: int) -> np.ndarray:
    """An event column as one row per frame (``per_event`` frames per event)."""
    if per_event == 1:
        return values
    if values.ndim >= 2 and values.shape[1] == per_event:
        return values.reshape(values.shape[0] * per_event, *values.shape[2:])
    return np.repeat(values, per_event, axis=0)


@dataclass
class _Rows:
    """One source's rows as read: each row's train ID, its columns, its event time."""

    train_ids: np.ndarray
    columns: dict[str, np.ndarray]
    times: np.ndarray
    per_event: int = 1  # frames per event (detectors)


def _read_rows(streams: _Streams, src: Source) -> _Rows:
    ids = streams.column(src.stream, src.train_key)
    per_event = int(np.prod(ids.shape[1:])) if ids.ndim > 1 else 1
    ids = ids.reshape(-1).astype(np.int64)
    times = streams.column(src.stream, "time").astype(np.float64)
    columns = {}
    for key in src.keys:
        if key.data_key == src.image_key or key.name == "data.image":
            continue
        values = streams.column(src.stream, key.data_key)
        columns[key.name] = _per_frame(values, per_event) if src.kind == DETECTOR else values
    if per_event > 1:
        times = np.repeat(times, per_event)
    return _Rows(ids, columns, times, per_event)


# ---------------------------------------------------------------- writing
def _h5_values(values: np.ndarray) -> np.ndarray:
    if values.dtype == bool:
        return values.astype(np.uint8)
    if values.dtype.kind in "UOS":
        return np.array([str(v) if not isinstance(v, bytes) else v.decode() for v in
                         values.ravel()], dtype=h5py.string_dtype("utf-8")).reshape(values.shape)
    return values


def _write_header(f: h5py.File, sources: Sequence[Source], train_ids: np.ndarray,
                  meta: dict[str, Any]) -> None:
    from trainstamp import __version__

    f.attrs["writer"] = f"trainstamp {__version__}"
    f.create_dataset("INDEX/trainId", data=train_ids.astype(np.uint64), dtype="u8")
    f.create_dataset("INDEX/flag", data=np.ones(train_ids.size, np.int32))
    grp = f.create_group("METADATA/dataSources")
    for name, values in sources_table(sources).items():
        grp.create_dataset(name, data=[v.encode() for v in values],
                           dtype=h5py.special_dtype(vlen=bytes), maxshape=(None,))
    for key, value in meta.items():
        if isinstance(value, str):
            f[f"METADATA/{key}"] = [value.encode("ascii")]
        else:
            f.create_dataset(f"METADATA/{key}", data=[value], dtype="u4")


def _write_index(f: h5py.File, src: Source, first: np.ndarray, count: np.ndarray) -> None:
    grp = f.require_group(f"INDEX/{src.index_path}")
    grp.create_dataset("first", data=first, dtype="u8")
    grp.create_dataset("count", data=count, dtype="u8")


def _write_control(f: h5py.File, src: Source, rows: _Rows, train_ids: np.ndarray) -> None:
    keep, first, count = index_of(rows.train_ids, train_ids, one_per_train=True)
    _write_index(f, src, first, count)
    stamps = np.round(rows.times[keep] * 1e9).astype(np.uint64)
    f.require_group(f"CONTROL/{src.name}")
    for key in src.keys:
        values = _h5_values(rows.columns[key.name][keep])
        base = src.data_path(key.name)
        f.create_dataset(f"{base}/value", data=values)
        f.create_dataset(f"{base}/timestamp", data=stamps, dtype="u8")
        run_base = "RUN" + base[len("CONTROL"):]
        f.create_dataset(f"{run_base}/value", data=values[:1])
        f.create_dataset(f"{run_base}/timestamp", data=stamps[:1], dtype="u8")


def _write_instrument(f: h5py.File, src: Source, rows: _Rows, train_ids: np.ndarray) -> None:
    keep, first, count = index_of(rows.train_ids, train_ids, one_per_train=False)
    _write_index(f, src, first, count)
    for key in src.keys:
        if key.name == "data.image":
            continue
        values = rows.columns[key.name] if key.name != "data.trainId" else rows.train_ids
        data = _h5_values(values[keep])
        if key.name == "data.trainId":
            data = data.astype(np.uint64)
        f.create_dataset(src.data_path(key.name), data=data)


def _aggregator(device: str, n: int) -> str:
    return (re.sub(r"[^A-Z0-9]", "", device.upper())[:10] or "DET") + f"{n:02d}"


def export_euxfel(run: Any, outdir: str | os.PathLike, *,
                  detector_dirs: Sequence[str | os.PathLike] = (),
                  chunk_frames: int = CHUNK_FRAMES, progress: bool = True,
                  out: Callable[[str], object] = print) -> ExportResult:
    """Write ``run`` (a run of the catalog) as a EuXFEL run directory in ``outdir``.

    Parameters
    ----------
    run : BlueskyRun
        ``client[uid]``, or :func:`find_run`.
    outdir : path
        A new or empty directory (``FileExistsError`` otherwise).
    detector_dirs : paths
        Where the detector's capture files are (searched recursively).
    chunk_frames : int
        Frames read and written at a time.
    progress : bool
        Show a progress bar over the frames (tqdm, else a line per tenth).

    Raises
    ------
    FileExistsError
        ``outdir`` is not empty.
    ValueError
        The run has no train IDs.
    FileNotFoundError
        A fly run's frame is in none of the capture files under ``detector_dirs``.
    """
    if chunk_frames < 1:
        raise ValueError(f"chunk_frames must be at least 1, got {chunk_frames}")
    t0 = time.perf_counter()
    outdir = Path(outdir)
    create = _check_outdir(outdir)
    start = run.metadata["start"]
    sources, notes = plan_sources(_stream_keys(run))
    streams = _Streams(run)
    rows = {id(s): _read_rows(streams, s) for s in sources}
    train_ids = run_train_ids([r.train_ids for r in rows.values()])
    meta = metadata_values(start)
    for s in sources:
        bad = int(np.count_nonzero(rows[id(s)].train_ids <= 0))
        if bad:
            notes.append(f"{s.index_path}: {bad} rows without a train ID left out")
    detectors = [s for s in sources if s.kind == DETECTOR]
    others = [s for s in sources if s.kind != DETECTOR]
    frames = FrameFiles([Path(d) for d in detector_dirs])
    total = sum(int(np.count_nonzero(rows[id(s)].train_ids > 0)) for s in detectors)
    bar = Progress(total, progress, out)
    if create:
        outdir.mkdir(parents=True)
    files: list[Path] = []
    n_frames = n_bytes = 0
    frame_s = 0.0
    try:
        layout = [("DA01", others)] + [(_aggregator(s.device, i + 1), [s])
                                       for i, s in enumerate(detectors)]
        for aggregator, group in layout:
            if not group:
                continue
            path = outdir / file_name(meta["runNumber"], aggregator)
            files.append(path)
            with h5py.File(path, "w") as f:
                _write_header(f, group, train_ids, meta)
                for s in group:
                    r = rows[id(s)]
                    if s.section == "CONTROL":
                        _write_control(f, s, r, train_ids)
                    else:
                        _write_instrument(f, s, r, train_ids)
                    if s.kind == DETECTOR:
                        t_frames = time.perf_counter()
                        n, b = write_frames(
                            f, s, r.train_ids, r.columns.get("data.frameNumber"), r.per_event,
                            train_ids, frames, chunk_frames, bar,
                            lambda s=s: streams.node(s.stream)[s.image_key])
                        n_frames += n
                        n_bytes += b
                        frame_s += time.perf_counter() - t_frames
    except BaseException:
        for p in files:
            with contextlib.suppress(OSError):
                p.unlink()
        if create:
            shutil.rmtree(outdir, ignore_errors=True)
        raise
    finally:
        frames.close()
        bar.close()
    return ExportResult(start["uid"], outdir, files, [s.index_path for s in sources],
                        train_ids, n_frames, n_bytes, time.perf_counter() - t0, frame_s, notes)


def main(argv: Sequence[str]) -> int:
    """``trainstamp export euxfel [--data-dir D | --tiled-uri U] RUN OUTDIR``."""
    from trainstamp.storage._catalog import CatalogInUse, catalog
    from trainstamp.storage._config import StorageConfig

    parser = argparse.ArgumentParser(
        prog="trainstamp export euxfel",
        description="Write a stored run as a EuXFEL run directory (EXDF HDF5 files), for "
                    "extra_data.RunDirectory and extra-data-validate.")
    parser.add_argument("run", metavar="RUN", help="a uid, a scan_id, or -1 for the last run")
    parser.add_argument("outdir", metavar="OUTDIR", help="a new or empty directory")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--data-dir", default=None,
                       help="embedded catalog (default $TRAINSTAMP_DATA_DIR, else ./data)")
    where.add_argument("--tiled-uri", default=None,
                       help="Tiled server (default $TRAINSTAMP_TILED_URI)")
    parser.add_argument("--api-key", default=None, help="API key of the Tiled server")
    parser.add_argument("--detector-dir", action="append", default=[],
                        help="where the detector's capture files are (default: "
                             "<data dir>/detector); may be given several times")
    parser.add_argument("--chunk-frames", type=int, default=CHUNK_FRAMES,
                        help=f"frames copied at a time (default {CHUNK_FRAMES})")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(list(argv))
    try:
        cfg = StorageConfig.resolve(args.data_dir, tiled_uri=args.tiled_uri,
                                    api_key=args.api_key)
    except ValueError as exc:
        parser.error(str(exc))
    dirs = args.detector_dir or ([cfg.detector_dir] if cfg.embedded else [])
    prog = "trainstamp export euxfel"
    try:
        _check_outdir(Path(args.outdir))
        with catalog(config=cfg) as client:
            run = find_run(client, args.run)
            result = export_euxfel(run, args.outdir, detector_dirs=dirs,
                                   chunk_frames=args.chunk_frames,
                                   progress=not args.no_progress)
    except (LookupError, FileExistsError, FileNotFoundError, ValueError, CatalogInUse) as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 1
    mb = result.frame_bytes / 1e6
    print(f"run {result.uid} -> {result.outdir}: {result.train_ids.size} trains "
          f"({int(result.train_ids[0])}..{int(result.train_ids[-1])}), "
          f"{len(result.sources)} sources, {result.frames} frames ({mb:.1f} MB) "
          f"in {result.seconds:.1f} s")
    for path in result.files:
        print(f"  {path.name}")
    for note in result.notes:
        print(f"  note: {note}")
    return 0
