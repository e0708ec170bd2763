"""Benchmark storage: events/s into the embedded catalog against ``trainstamp serve`` on
PostgreSQL.

A step plan (``count`` of two ``ophyd.sim`` detectors) runs with the writer of
``trainstamp.storage.subscribe`` (TiledWriter behind the run spool) into

- the embedded catalog (SQLite + DuckDB in a temporary data directory, in process), and
- a ``trainstamp serve`` subprocess on a private PostgreSQL cluster (``initdb`` +
  ``pg_ctl`` on a free loopback port, fsync on, as a real server has it), over HTTP,

each with TiledWriter's default batching (events written at the run's stop) and with
``batch_size=1`` (every event written as it comes, to see a run live). Figures: events/s
of the whole run (open to the stop document stored), and the time to read the primary
stream back.

Usage: ``python bench/server.py [--events 1000] [--live-events 200] [--json FILE]``.
The machine is shared: the load average is printed with the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
import urllib.request
from pathlib import Path


def _run(client, n: int, batch_size: int | None) -> dict:
    from bluesky import RunEngine
    from bluesky.plans import count
    from ophyd.sim import det1, det2

    from trainstamp.storage import subscribe

    RE = RunEngine(context_managers=[])
    subscribe(RE, client, batch_size=batch_size)
    RE(count([det1, det2], 3))  # warm-up
    t0 = time.perf_counter()
    (uid,) = RE(count([det1, det2], n))
    wall = time.perf_counter() - t0
    t0 = time.perf_counter()
    data = client[uid]["primary"].read()
    read = time.perf_counter() - t0
    assert len(data["det1"]) == n
    return {"events": n, "batch_size": batch_size or "default", "wall_s": round(wall, 3),
            "events_per_s": round(n / wall, 1), "read_s": round(read, 3)}


def _wait_http(url: str, proc, timeout: float = 120) -> None:
    from trainstamp.testing import wait_until

    def up() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"trainstamp serve exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return True
        except OSError:
            return False

    wait_until(up, timeout=timeout, interval=0.2, message=f"{url} to answer")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=1000)
    ap.add_argument("--live-events", type=int, default=200)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)

    from trainstamp.storage import close_catalog, open_catalog
    from trainstamp.testing import find_postgres_bin, free_port, postgres_cluster

    if find_postgres_bin() is None:
        print("bench/server.py: PostgreSQL binaries not found (make debs)", file=sys.stderr)
        return 1
    load_before = os.getloadavg()[0]
    results = []
    tmp = Path(tempfile.mkdtemp(prefix="bench-server-"))
    try:
        client = open_catalog(tmp / "embedded")
        try:
            for n, batch in ((args.events, None), (args.live_events, 1)):
                results.append({"target": "embedded", **_run(client, n, batch)})
        finally:
            close_catalog(client)
        import subprocess

        with postgres_cluster(fsync=True) as pg:
            port, key = free_port(), "benchkey"
            base = f"http://127.0.0.1:{port}/api/v1"
            proc = subprocess.Popen(
                [sys.executable, "-m", "trainstamp", "serve", "--database", pg.uri,
                 "--data-dir", str(tmp / "server"), "--port", str(port), "--api-key", key],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                _wait_http(base + "/", proc)
                client = open_catalog(tmp / "host", tiled_uri=base, api_key=key)
                try:
                    for n, batch in ((args.events, None), (args.live_events, 1)):
                        results.append({"target": "server+postgresql", **_run(client, n, batch)})
                finally:
                    close_catalog(client)
            finally:
                proc.terminate()
                proc.wait(30)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    load_after = os.getloadavg()[0]
    print(f"load average {load_before:.1f} before, {load_after:.1f} after")
    print(f"{'target':<20} {'batch':>8} {'events':>7} {'events/s':>9} {'read s':>7}")
    for r in results:
        print(f"{r['target']:<20} {r['batch_size']!s:>8} {r['events']:>7} "
              f"{r['events_per_s']:>9} {r['read_s']:>7}")
    if args.json:
        args.json.write_text(json.dumps({"load": [load_before, load_after],
                                         "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
