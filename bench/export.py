"""Benchmark ``trainstamp export euxfel`` against a plain h5py copy of the same frames.

Starts the whole simulated beamline (as ``bench/acquisition.py`` does), records one
``train_fly`` with the detector and the tagger at 10 Hz over ``--trains`` trains into a
fresh embedded catalog, then, ``--repeats`` times, alternately:

- **export**: :func:`trainstamp.storage._euxfel_write.export_euxfel` of the run into a new
  directory (reading the run's streams from the catalog, locating the frames in the
  capture file by header train ID, copying them ``--chunk-frames`` at a time, writing
  INDEX/CONTROL/INSTRUMENT), timed as a whole, and its frame part alone (locating and
  copying the frames: ``ExportResult.frame_seconds``);
- **h5py copy**: the same frames (the capture file's rows of the run, in the same
  order) read from the capture file and written into a new HDF5 file, one dataset with
  the same chunks (one frame), ``--chunk-frames`` at a time: the floor any exporter of
  those bytes has on this disk.

MB/s is frame bytes (10^6) over wall seconds. The files are fresh in the page cache for
both (the capture was just written), so this measures the copy, not the disk's reads.

Usage: ``python bench/export.py [--trains 100] [--repeats 3] [--chunk-frames 4]
[--json FILE]``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests" / "system" / "acquisition"))
sys.path.insert(0, str(HERE.parent / "tests"))


def h5py_copy(capture: Path, rows: np.ndarray, out: Path, chunk: int) -> tuple[float, int]:
    """Copy ``rows`` of the capture file's frames into ``out``; (seconds, bytes)."""
    from trainstamp.detector._capture import DATA

    t0 = time.perf_counter()
    n = 0
    with h5py.File(capture, "r", swmr=True, libver="latest") as src, h5py.File(out, "w") as dst:
        data = src[DATA]
        ds = dst.create_dataset("frames", shape=(rows.size, *data.shape[1:]), dtype=data.dtype,
                                chunks=(1, *data.shape[1:]))
        for a in range(0, rows.size, chunk):
            block = data[int(rows[a]):int(rows[min(a + chunk, rows.size) - 1]) + 1]
            ds[a:a + block.shape[0]] = block
            n += block.nbytes
    return time.perf_counter() - t0, n


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trains", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--chunk-frames", type=int, default=4)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    from acquisition_stack import CLICK_CHANNEL, acquisition_stack, connect_devices
    from bluesky import RunEngine
    from conftest import CA_PORTS

    from trainstamp.detector import read_capture
    from trainstamp.plans import train_fly
    from trainstamp.storage import catalog, subscribe
    from trainstamp.storage._euxfel_write import export_euxfel

    work = Path(tempfile.mkdtemp(prefix="bench-export-"))
    data = work / "data"
    result: dict = {"trains": args.trains, "chunk_frames": args.chunk_frames}
    try:
        with CA_PORTS.repeater(), acquisition_stack(CA_PORTS, data, period_ms=100) as stack:
            ts, det, tt = connect_devices(stack)
            with catalog(data) as client:
                RE = RunEngine(context_managers=[])
                subscribe(RE, client, timeserver=ts)
                t0 = time.perf_counter()
                (uid,) = RE(train_fly([det], args.trains, timeserver=ts, tagger=tt,
                                      click_channel=CLICK_CHANNEL))
                result["fly_s"] = round(time.perf_counter() - t0, 1)
                for dev in (ts, det, tt):
                    dev.destroy()
                run = client[uid]
                ids = np.asarray(run["detector"]["train_id"].read()).astype(np.int64)
                (capture,) = [p for p in (data / "detector").glob("*.h5")
                              if np.isin(ids, read_capture(p)["train_id"]).all()]
                with h5py.File(capture, "r") as f:
                    file_ids = f["/entry/data/train_id"][:].astype(np.int64)
                rows = np.array([int(np.flatnonzero(file_ids == t)[0]) for t in np.sort(ids)])
                exports, copies, frame_part = [], [], []
                for i in range(args.repeats):
                    s, b = h5py_copy(capture, rows, work / f"copy{i}.h5", args.chunk_frames)
                    copies.append(b / 1e6 / s)
                    (work / f"copy{i}.h5").unlink()
                    r = export_euxfel(run, work / f"out{i}", detector_dirs=[data / "detector"],
                                      chunk_frames=args.chunk_frames, progress=False)
                    exports.append(r.frame_bytes / 1e6 / r.seconds)
                    frame_part.append(r.frame_bytes / 1e6 / r.frame_seconds)
                    result["frames"], result["frame_mb"] = r.frames, round(r.frame_bytes / 1e6, 1)
                    result.setdefault("export_s", []).append(round(r.seconds, 2))
                    shutil.rmtree(work / f"out{i}")
                result["export_mb_s"] = [round(x) for x in exports]
                result["h5py_copy_mb_s"] = [round(x) for x in copies]
                result["export_frames_part_mb_s"] = [round(x) for x in frame_part]
                result["median_export_frames_part_mb_s"] = round(statistics.median(frame_part))
                med_e, med_c = statistics.median(exports), statistics.median(copies)
                result["median_export_mb_s"] = round(med_e)
                result["median_h5py_copy_mb_s"] = round(med_c)
                result["ratio"] = round(med_e / med_c, 2)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"train_fly of {args.trains} trains in {result['fly_s']} s; "
          f"{result['frames']} frames, {result['frame_mb']} MB")
    print(f"export euxfel: {result['export_mb_s']} MB/s (median {result['median_export_mb_s']}); "
          f"h5py copy: {result['h5py_copy_mb_s']} MB/s (median "
          f"{result['median_h5py_copy_mb_s']}); export/copy {result['ratio']}")
    print(f"  the export's frame copy alone: {result['export_frames_part_mb_s']} MB/s (median "
          f"{result['median_export_frames_part_mb_s']}); whole export "
          f"{result['export_s']} s")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
