"""Benchmark the TimeServer's internal source: deadline accuracy, drift, CA latency.

Three figures, all measured in this one run:

1. The internal source (``InternalSource``, absolute monotonic deadlines with a short
   ``sleep(0)`` spin before each one) at 10 Hz for ``--duration`` seconds: p50, p99 and
   maximum of |tick - ideal deadline| and the drift at the end.
2. The reference: a plain ``asyncio.sleep(period)`` loop, run at the same time in the
   same event loop, measured against its own ideal grid ``t0 + k * period``; and the
   ratio between the two.
3. The latency from a tick (its EPICS timestamp, which is the tick time) to the ophyd
   monitor callback over Channel Access, against a TimeServer IOC subprocess on loopback.

Usage: ``python bench/timing.py [--duration 60] [--latency-duration 30] [--json FILE]``.
The machine is shared (2 cores, other jobs running), so tails are noisy.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time

import numpy as np

from trainstamp.timing import PeriodLoop
from trainstamp.timing._sources import InternalSource


class _NullSink:
    def on_id(self, train_id: int, t_ns: int) -> None:
        pass

    def on_bad_message(self, reason: str) -> None:
        pass

    def on_status(self, text: str) -> None:
        pass


def _summary(dev_ns: np.ndarray, drift_ns: int) -> dict[str, float]:
    absdev = np.abs(dev_ns) / 1e6
    return {
        "ticks": int(dev_ns.size),
        "p50_ms": float(np.percentile(absdev, 50)),
        "p99_ms": float(np.percentile(absdev, 99)),
        "max_ms": float(absdev.max()),
        "drift_ms": drift_ns / 1e6,
    }


async def _deadline_vs_sleep(duration: float, period_ms: float, spin_ms: float | None) -> dict[str, dict[str, float]]:
    period_ns = round(period_ms * 1e6)
    n = int(duration * 1000 / period_ms)

    deadlines: list[tuple[int, int]] = []
    done = asyncio.Event()

    def observe(train_id: int, deadline: int, woke: int) -> None:
        deadlines.append((deadline, woke))
        if len(deadlines) >= n:
            done.set()

    kwargs = {} if spin_ms is None else {"spin_ns": round(spin_ms * 1e6)}
    source = InternalSource(_NullSink(), PeriodLoop(period_ms), start_id=0, observer=observe,
                            **kwargs)

    async def sleep_loop() -> list[int]:
        t0 = time.monotonic_ns()
        out = []
        for k in range(n):
            out.append(time.monotonic_ns() - (t0 + k * period_ns))
            await asyncio.sleep(period_ms / 1000)
        return out

    task = asyncio.create_task(source.run())
    sleep_dev = await sleep_loop()
    await asyncio.wait_for(done.wait(), timeout=duration + 30)
    task.cancel()
    dl = np.array(deadlines[:n], dtype=np.int64)
    dev = dl[:, 1] - dl[:, 0]
    # Deadlines are absolute (d_k = d_0 + k * period), so the end drift is the last
    # tick's offset from the ideal grid of the first deadline.
    ideal_last = dl[0, 0] + (n - 1) * period_ns
    internal = _summary(dev, int(dl[-1, 1] - ideal_last))
    sleeps = np.array(sleep_dev, dtype=np.int64)
    reference = _summary(sleeps, int(sleeps[-1]))
    return {"internal": internal, "sleep_loop": reference}


async def _realtime_vs_loop(duration: float, period_ms: float,
                           busy_ms: float) -> dict[str, object]:
    """Both internal sources in one event loop that is kept busy (``busy_ms`` of CPU
    every 10 ms, as an IOC serving clients is): |wake - deadline| of each."""
    from trainstamp.timing._realtime import RealtimeInternalSource

    n = int(duration * 1000 / period_ms)
    got: dict[str, list[tuple[int, int]]] = {"loop": [], "realtime": []}
    done = {k: asyncio.Event() for k in got}

    def observer(kind: str):
        def observe(train_id: int, deadline: int, woke: int) -> None:
            got[kind].append((deadline, woke))
            if len(got[kind]) >= n:
                done[kind].set()
        return observe

    loop_src = InternalSource(_NullSink(), PeriodLoop(period_ms), start_id=0,
                              observer=observer("loop"))
    rt_src = RealtimeInternalSource(_NullSink(), PeriodLoop(period_ms), start_id=0,
                                    observer=observer("realtime"))
    stop = asyncio.Event()

    async def busy() -> None:
        while not stop.is_set():
            t_end = time.perf_counter() + busy_ms / 1000
            while time.perf_counter() < t_end:
                pass
            await asyncio.sleep(0.01)

    before = sys.getswitchinterval()
    tasks = [asyncio.create_task(c) for c in (loop_src.run(), rt_src.run(), busy())]
    try:
        for event in done.values():
            await asyncio.wait_for(event.wait(), timeout=duration + 60)
    finally:
        stop.set()
        await rt_src.close()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        sys.setswitchinterval(before)
    out: dict[str, object] = {"granted": rt_src.granted, "busy_ms_per_10ms": busy_ms}
    for kind, pairs in got.items():
        dl = np.array(pairs[:n], dtype=np.int64)
        out[kind] = _summary(dl[:, 1] - dl[:, 0], 0)
    return out


def _ca_ticks(duration: float, period_ms: float, realtime: bool) -> dict[str, float]:
    """A TimeServer IOC subprocess (``--realtime`` or not), its ``ID`` monitored over CA
    by ophyd: the callback latency (receipt - the EPICS stamp) and each tick's distance
    from the grid, as the client sees it (stamp - (ID * period + offset), the offset
    being the earliest tick's, since a tick is never early)."""
    from trainstamp.testing import CAPortPool, SubprocessIOC, free_port, random_prefix

    pool = CAPortPool(size=2)
    pool.install()  # before the first CA client exists
    os.environ["OPHYD_CONTROL_LAYER"] = "caproto"
    from ophyd import EpicsSignalRO

    prefix = random_prefix("BENCHTS")
    args = ["ioc", "timeserver", "--prefix", prefix, "--interfaces", "127.0.0.1",
            "--period", str(period_ms), "--broadcast-port", str(free_port()), "-q"]
    if realtime:
        args.append("--realtime")
    samples: list[tuple[float, float, float]] = []
    with SubprocessIOC(args, pool, ready_pv=prefix + "ID"):
        sig = EpicsSignalRO(prefix + "ID", name="train_id")
        sig.wait_for_connection(timeout=10)

        def callback(value, timestamp, **kwargs):
            samples.append((time.time(), float(value), float(timestamp)))

        sig.subscribe(callback, run=False)
        time.sleep(duration)  # collecting callbacks for a fixed time is the measurement
        sig.unsubscribe_all()
        sig.destroy()
    got = np.array(samples[1:])  # the first may be the initial value
    lat = (got[:, 0] - got[:, 2]) * 1e3
    offset = got[:, 2] - (got[:, 1] - got[0, 1]) * period_ms / 1e3
    grid = (offset - offset.min()) * 1e3
    return {"samples": int(lat.size), "p50_ms": float(np.percentile(lat, 50)),
            "p99_ms": float(np.percentile(lat, 99)), "max_ms": float(lat.max()),
            "grid_p50_ms": float(np.percentile(grid, 50)),
            "grid_p99_ms": float(np.percentile(grid, 99)), "grid_max_ms": float(grid.max())}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=60.0,
                        help="seconds of internal-source ticks (default 60)")
    parser.add_argument("--period", type=float, default=100.0, help="period in ms (default 100)")
    parser.add_argument("--latency-duration", type=float, default=30.0,
                        help="seconds of CA monitor latency samples (default 30; 0 skips)")
    parser.add_argument("--realtime-duration", type=float, default=30.0,
                        help="seconds of the real-time source against the loop's, in a "
                             "busy loop (default 30; 0 skips)")
    parser.add_argument("--busy-ms", type=float, default=3.0,
                        help="CPU ms per 10 ms that keep the loop busy in that comparison")
    parser.add_argument("--spin-ms", type=float, default=None,
                        help="override the source's spin window before each deadline")
    parser.add_argument("--json", help="also write the results to this JSON file")
    args = parser.parse_args(argv)

    print(f"internal source vs asyncio.sleep loop: {args.duration:g} s at "
          f"{1000 / args.period:g} Hz (both in one event loop) ...", flush=True)
    results = asyncio.run(_deadline_vs_sleep(args.duration, args.period, args.spin_ms))
    for name, r in results.items():
        print(f"  {name:<10} ticks {r['ticks']:5d}  |dev| p50 {r['p50_ms']:8.3f} ms  "
              f"p99 {r['p99_ms']:8.3f} ms  max {r['max_ms']:8.3f} ms  "
              f"drift at end {r['drift_ms']:+10.3f} ms")
    ratio = {k: results["sleep_loop"][k] / max(results["internal"][k], 1e-9)
             for k in ("p99_ms", "max_ms")}
    ratio["drift"] = abs(results["sleep_loop"]["drift_ms"]) / max(
        abs(results["internal"]["drift_ms"]), 1e-6)
    results["ratio_sleep_over_internal"] = ratio
    print(f"  ratio sleep-loop / internal: p99 {ratio['p99_ms']:.1f}x, max "
          f"{ratio['max_ms']:.1f}x, |drift| {ratio['drift']:.0f}x", flush=True)

    if args.realtime_duration > 0:
        print(f"real-time source vs the loop's, loop busy {args.busy_ms:g} ms per 10 ms: "
              f"{args.realtime_duration:g} s ...", flush=True)
        rt = asyncio.run(_realtime_vs_loop(args.realtime_duration, args.period, args.busy_ms))
        results["realtime"] = rt
        print(f"  granted: {rt['granted']}")
        for kind in ("loop", "realtime"):
            r = rt[kind]
            print(f"  {kind:<10} ticks {r['ticks']:5d}  |dev| p50 {r['p50_ms']:8.3f} ms  "
                  f"p99 {r['p99_ms']:8.3f} ms  max {r['max_ms']:8.3f} ms")
        rt["ratio_loop_over_realtime_p99"] = rt["loop"]["p99_ms"] / max(rt["realtime"]["p99_ms"], 1e-9)
        print(f"  ratio loop / realtime p99: {rt['ratio_loop_over_realtime_p99']:.1f}x", flush=True)

    if args.latency_duration > 0:
        for realtime in (False, True):
            label = "IOC --realtime" if realtime else "IOC default"
            print(f"{label}: ticks seen by an ophyd monitor over CA, "
                  f"{args.latency_duration:g} s ...", flush=True)
            lat = _ca_ticks(args.latency_duration, args.period, realtime)
            results["ca_latency_realtime" if realtime else "ca_latency"] = lat
            print(f"  samples {lat['samples']}  callback latency p50 {lat['p50_ms']:.3f} ms  "
                  f"p99 {lat['p99_ms']:.3f} ms  max {lat['max_ms']:.3f} ms")
            print(f"  |tick - grid| p50 {lat['grid_p50_ms']:.3f} ms  p99 "
                  f"{lat['grid_p99_ms']:.3f} ms  max {lat['grid_max_ms']:.3f} ms", flush=True)
        results["ratio_grid_p99_default_over_realtime"] = (
            results["ca_latency"]["grid_p99_ms"]
            / max(results["ca_latency_realtime"]["grid_p99_ms"], 1e-9))
        print(f"  ratio default / realtime, |tick - grid| p99: "
              f"{results['ratio_grid_p99_default_over_realtime']:.1f}x")
    results["load_avg_1min"] = os.getloadavg()[0]
    results["python"] = sys.version.split()[0]
    print(f"load average (1 min) at the end: {results['load_avg_1min']:.2f} "
          f"(shared 2-core machine; tails are noisy)")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
