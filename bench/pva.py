"""IMAGE over PV Access: full 1024 x 1024 uint16 frames per second and their latency.

Two measurements in the same run, each monitored by p4p's client for ``--seconds``:

- **IOC**: emulator (internal trigger at ``--rate`` frames/s) -> detector IOC ->
  IMAGE over PVA at IMAGE:PVA_PERIOD = ``--period``. Latency: the client's receive time
  minus the frame header's timestamp (the emulator stamps each frame as it sends it;
  one host, one clock), so it holds the UDP data path, the IOC's poll (every 20 ms)
  and the PVA transfer.
- **reference**: a bare p4p server in this process posts the same NTNDArray
  (:func:`trainstamp._pva.ntndarray_value`, 2 MiB) at the same rate, stamped as it
  posts: what PVA itself costs for such a frame on this machine.

Both are also run flat out (reference posting back to back; IOC at the shortest
IMAGE:PVA_PERIOD, 0.02 s, with the emulator at ``--fast-rate``).

Usage: .venv/bin/python bench/pva.py [--seconds 10] [--rate 20] [--period 0.05]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import tempfile
import threading
import time

import numpy as np
from p4p.client.thread import Context
from p4p.server import Server
from p4p.server.thread import SharedPV

from trainstamp._pva import ntndarray_value
from trainstamp.detector import _pvnames as PV
from trainstamp.testing import (
    CAPortPool,
    PVAPorts,
    Subprocess,
    SubprocessIOC,
    free_port,
    random_prefix,
    wait_until,
)


class Monitor:
    """Counts IMAGE updates and their latency (receive time - Timestamp attribute)."""

    def __init__(self) -> None:
        self.lat_ms: list[float] = []
        self.ids: list[int] = []
        self.lock = threading.Lock()
        self.on = False

    def __call__(self, img) -> None:
        now = time.time_ns()
        if isinstance(img, Exception) or img.size == 0 or not self.on:
            return
        with self.lock:
            self.lat_ms.append((now - int(img.attrib["Timestamp"])) / 1e6)
            self.ids.append(int(img.raw["uniqueId"]))

    def measure(self, seconds: float) -> dict:
        with self.lock:
            self.lat_ms.clear()
            self.ids.clear()
        self.on = True
        t0 = time.monotonic()
        time.sleep(seconds)  # a measuring window, not a wait for a condition
        self.on = False
        dt = time.monotonic() - t0
        with self.lock:
            lat = sorted(self.lat_ms)
            n = len(lat)
        if not n:
            return {"fps": 0.0, "n": 0}
        return {"fps": n / dt, "n": n, "p50": lat[n // 2], "p99": lat[min(n - 1, int(n * 0.99))],
                "mean": statistics.fmean(lat), "max": lat[-1], "mb_s": n * 2 * 2**20 / dt / 1e6}


def reference(seconds: float, rate: float | None) -> dict:
    """A bare p4p server posting 2 MiB NTNDArrays at ``rate`` (None: back to back)."""
    frame = (np.arange(1024 * 1024, dtype=np.uint32) % 65521).astype(np.uint16).reshape(1024, 1024)
    ports = PVAPorts()
    pv = SharedPV(initial=ntndarray_value(frame, 0, 0, time.time_ns()))
    stop = threading.Event()
    with Server(providers=[{"REF:IMAGE": pv}], conf=ports.server_env(), useenv=False), \
            Context("pva", conf=ports.client_conf(), useenv=False) as ctx:
        def post() -> None:
            n, t0 = 0, time.monotonic()
            while not stop.is_set():
                n += 1
                pv.post(ntndarray_value(frame, n, n, time.time_ns()))
                if rate:
                    delay = t0 + n / rate - time.monotonic()
                    if delay > 0:
                        stop.wait(delay)
        mon = Monitor()
        sub = ctx.monitor("REF:IMAGE", mon)
        poster = threading.Thread(target=post, daemon=True)
        poster.start()
        try:
            return mon.measure(seconds)
        finally:
            stop.set()
            poster.join(5)
            sub.close()


def ioc_run(seconds: float, rate: float, period: float) -> dict:
    """Emulator -> detector IOC -> IMAGE over PVA, at ``rate`` frames/s and ``period``."""
    pool = CAPortPool(size=2)
    pool.install()
    ports = PVAPorts()
    rp, dp = free_port("udp"), free_port("udp")
    emu = Subprocess(["emulate", "detector", "--register-port", str(rp), "--data-port", str(dp),
                      "--test-mode", "--rate", str(rate)])
    emu.ready = lambda: "emulator ready" in emu.output()
    prefix = random_prefix("BPV")
    with contextlib.ExitStack() as stack, Context("pva", conf=ports.client_conf(), useenv=False) as ctx:
        stack.enter_context(emu)
        tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-pva-"))
        ioc = SubprocessIOC(["ioc", "detector", "--prefix", prefix, "--detector-ip", "127.0.0.1",
                             "--register-port", str(rp), "--data-port", str(dp), "--data-dir", tmp,
                             "--interfaces", "127.0.0.1", "--ring-slots", "32", "--log-level", "WARNING",
                             "--zmq-port", "0"],
                            pool, ready_pv=prefix + PV.STATUS, timeout=60, env=ports.server_env())
        stack.enter_context(ioc)
        wait_until(lambda: list(ctx.get(prefix + PV.STATUS)) == ["OK"], timeout=30, message="IOC OK")
        ctx.put(prefix + PV.IMAGE_PVA_PERIOD, period)
        mon = Monitor()
        sub = ctx.monitor(prefix + PV.IMAGE, mon)
        ctx.put(prefix + PV.CMD_START_DAQ, 1)
        try:
            wait_until(lambda: ctx.get(prefix + PV.FRAME_RATE) > rate * 0.5, timeout=20,
                       message="frames flowing")
            result = mon.measure(seconds)
            result["ioc_fps"] = float(ctx.get(prefix + PV.FRAME_RATE))
            ids = mon.ids
            result["repeats"] = len(ids) - len(set(ids))
        finally:
            ctx.put(prefix + PV.CMD_START_DAQ, 0)
            sub.close()
        return result


def show(name: str, r: dict) -> str:
    if not r.get("n"):
        return f"{name:<44} no frames"
    extra = f"  (detector {r['ioc_fps']:.1f} fps, repeats {r['repeats']})" if "ioc_fps" in r else ""
    return (f"{name:<44} {r['fps']:6.1f} frames/s {r['mb_s']:7.1f} MB/s   latency ms p50 "
            f"{r['p50']:6.2f} p99 {r['p99']:6.2f} max {r['max']:6.2f}{extra}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=10.0, help="length of each measurement")
    ap.add_argument("--rate", type=float, default=20.0, help="emulator frame rate, frames/s")
    ap.add_argument("--period", type=float, default=0.05, help="IMAGE:PVA_PERIOD, s")
    ap.add_argument("--fast-rate", type=float, default=100.0, help="emulator rate of the flat-out run")
    args = ap.parse_args(argv)
    want = min(args.rate, 1 / args.period)
    print(f"IMAGE over PVA, 1024x1024 uint16 (2 MiB) NTNDArray, {args.seconds:g} s each; "
          f"{os.cpu_count()} CPUs")
    print(show(f"reference: bare p4p server at {want:g}/s", reference(args.seconds, want)))
    print(show(f"IOC: emulator {args.rate:g} fps, period {args.period:g} s",
               ioc_run(args.seconds, args.rate, args.period)))
    print(show("reference: bare p4p server back to back", reference(args.seconds, None)))
    print(show(f"IOC: emulator {args.fast_rate:g} fps, period 0.02 s",
               ioc_run(args.seconds, args.fast_rate, 0.02)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
