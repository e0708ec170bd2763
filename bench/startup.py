"""Benchmark the start of the simulated beamline: ``trainstamp up --free-ports`` to all-ready.

Each repeat starts ``trainstamp up --free-ports`` (its own log directory), reads the
``<service> pid N ready in X s`` lines it prints, and stops it with Ctrl-C (SIGINT)
once the last service is ready. The figure is the wall time from the launch to the
last ready line. ``--cold`` first removes numba's cached kernels of the package, so the
repeat compiles them as a fresh install does on its first start.

The reference, measured in the same run, is one interpreter importing what every
service imports (``trainstamp.detector``, ``trainstamp.tagger``, ``caproto.asyncio``):
the floor a Python process pays before it can listen. The ratio up / reference says how
many such process starts the beamline costs. The load average is printed with each
figure.

Usage: ``python bench/startup.py [--repeats 3] [--cold] [--json FILE]``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

READY = re.compile(r"^\s+(\S+)\s+pid\s+\d+\s+ready in\s+([\d.]+) s")
SERVICES = 5
IMPORTS = "import trainstamp.detector, trainstamp.tagger, caproto.asyncio"


def reference_s() -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", IMPORTS], check=True)
    return time.perf_counter() - t0


def clear_numba_cache() -> int:
    import trainstamp

    removed = 0
    for path in Path(trainstamp.__file__).parent.rglob("__pycache__/*.nb[ci]"):
        path.unlink()
        removed += 1
    return removed


def one_start(timeout: float = 120.0) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-up-") as tmp:
        cmd = [sys.executable, "-m", "trainstamp", "up", "--free-ports", "--log-dir", tmp,
               "--data-dir", str(Path(tmp) / "data")]
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        ready: dict[str, float] = {}
        lines = []
        try:
            deadline = t0 + timeout
            for line in proc.stdout:
                lines.append(line)
                m = READY.match(line)
                if m:
                    ready[m.group(1)] = float(m.group(2))
                    if len(ready) == SERVICES:
                        break
                if time.perf_counter() > deadline:
                    break
            total = time.perf_counter() - t0
        finally:
            proc.send_signal(signal.SIGINT)
            try:
                proc.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate()
        if len(ready) != SERVICES:
            raise SystemExit("trainstamp up did not get ready:\n" + "".join(lines))
        return {"total_s": round(total, 2), "services_s": ready}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--cold", action="store_true", help="clear numba's cache before each start")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    ref = statistics.median(reference_s() for _ in range(3))
    results = []
    for i in range(args.repeats):
        if args.cold:
            clear_numba_cache()
        r = one_start()
        r["load"] = round(os.getloadavg()[0], 2)
        results.append(r)
        per = "  ".join(f"{k} {v:.1f}" for k, v in r["services_s"].items())
        print(f"start {i + 1}: all ready in {r['total_s']:.2f} s (load {r['load']}): {per}")
    total = statistics.median(r["total_s"] for r in results)
    print(f"reference (one interpreter importing the services' modules): {ref:.2f} s")
    print(f"trainstamp up {'cold' if args.cold else 'warm'}: median {total:.2f} s to all-ready, "
          f"ratio {total / ref:.1f} x the reference")
    if args.json:
        args.json.write_text(json.dumps({"reference_s": ref, "median_s": total,
                                         "cold": args.cold, "starts": results}, indent=2))


if __name__ == "__main__":
    main()
