"""Benchmark the detector's ZMQ data-transfer port against reading the capture file.

Writes a capture file of ``--frames`` frames (2 MiB each, random pixels) with the IOC's
own writer (:class:`CaptureFile`), starts a :class:`FrameTransferServer` on a free
loopback port, then, ``--repeats`` times, alternately:

- **transfer**: a ZMQ REQ client fetches every frame in chunks of 8
  (the protocol's maximum), as :meth:`trainstamp.detector.Client.get_frames` does,
  decoding each reply into a ``(k, 1024, 1024)`` uint16 array;
- **file read**: the same frames read from the file with h5py in the same chunks: what
  a client with the data directory mounted would pay, the reference.

MB/s is frame bytes (10^6) over wall seconds; the file is in the page cache for both.
The ratio transfer / file is the figure.

Usage: ``python bench/transfer.py [--frames 200] [--repeats 3] [--json FILE]``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def _write_capture(path: Path, n: int) -> None:
    from trainstamp.detector._capture import CaptureFile

    f = CaptureFile(path)
    rng = np.random.default_rng(1)
    frame = rng.integers(0, 2**16, size=(1024, 1024), dtype=np.uint16)
    for i in range(n):
        frame[0, 0] = i
        f.append(frame.view(np.uint8).reshape(-1), i + 1, 10**12 + i, True)
    f.close()


def _transfer(uri: str, path: Path, n: int) -> float:
    import zmq

    from trainstamp.detector._transfer import CHUNK_FRAMES, decode_reply

    sock = zmq.Context.instance().socket(zmq.REQ)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(uri)
    out = np.empty((n, 1024, 1024), np.uint16)
    t0 = time.perf_counter()
    done = 0
    while done < n:
        k = min(CHUNK_FRAMES, n - done)
        sock.send(json.dumps({"op": "frames", "path": str(path), "first": done,
                              "count": k}).encode())
        if not sock.poll(30_000):
            raise TimeoutError("no reply from the transfer port in 30 s")
        _, frames = decode_reply(sock.recv_multipart())
        out[done:done + len(frames)] = frames
        done += len(frames)
    seconds = time.perf_counter() - t0
    sock.close()
    assert out[n - 1, 0, 0] == n - 1
    return seconds


def _read_file(path: Path, n: int) -> float:
    import h5py

    from trainstamp.detector._capture import DATA
    from trainstamp.detector._transfer import CHUNK_FRAMES

    out = np.empty((n, 1024, 1024), np.uint16)
    t0 = time.perf_counter()
    with h5py.File(path, "r", swmr=True, libver="latest") as f:
        for start in range(0, n, CHUNK_FRAMES):
            stop = min(n, start + CHUNK_FRAMES)
            out[start:stop] = f[DATA][start:stop]
    seconds = time.perf_counter() - t0
    assert out[n - 1, 0, 0] == n - 1
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)

    from trainstamp.detector._transfer import FrameTransferServer

    mb = args.frames * 1024 * 1024 * 2 / 1e6
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench_00001.h5"
        print(f"writing a capture of {args.frames} frames ({mb:.0f} MB) ...", flush=True)
        _write_capture(path, args.frames)
        server = FrameTransferServer(tmp, "127.0.0.1", 0).start()
        try:
            runs: dict[str, list[float]] = {"transfer": [], "file": []}
            for i in range(args.repeats):
                runs["transfer"].append(mb / _transfer(server.uri, path, args.frames))
                runs["file"].append(mb / _read_file(path, args.frames))
                print(f"  run {i + 1}: transfer {runs['transfer'][-1]:7.0f} MB/s   file read "
                      f"{runs['file'][-1]:7.0f} MB/s", flush=True)
        finally:
            server.close()
    med = {k: statistics.median(v) for k, v in runs.items()}
    result = {"frames": args.frames, "median_mb_s": med,
              "ratio_transfer_over_file": med["transfer"] / med["file"],
              "frames_per_s_transfer": med["transfer"] / 2.097152,
              "load_avg_1min": os.getloadavg()[0]}
    print(f"median: transfer {med['transfer']:.0f} MB/s ({result['frames_per_s_transfer']:.0f} "
          f"frames/s), file read {med['file']:.0f} MB/s; ratio "
          f"{result['ratio_transfer_over_file']:.2f}")
    print(f"load average (1 min): {result['load_avg_1min']:.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
