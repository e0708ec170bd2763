"""Benchmark train-synchronous acquisition with the whole simulated beamline.

Three figures, measured in one run:

a. **Sustained 10 Hz**: ``train_fly`` with all three devices (TimeServer ticks from its
   broadcaster, detector frames in external trigger, tagger counts per train) over
   ``--trains`` trains (6000 = 10 minutes by default), stored in an embedded Tiled
   catalog and read back; missed and duplicated train IDs per stream (against the
   TimeServer's ticks; the target is 0), and IDs the TimeServer itself skipped.
b. **Fly at 100 Hz**: the same at ``--fly-period-ms`` (10) over ``--fly-trains``.
c. **Scalar events/s into the catalog**: a scalar stream written by ``TiledWriter`` into
   the embedded catalog (SQLite + DuckDB), against ``databroker.temp()`` (mongomock) as
   the reference, both as a step plan (``count``, one Event per reading) and as event
   pages (one page per 1000 events, as ``train_fly`` collects); the ratio tiled/temp.

Usage: ``python bench/acquisition.py [--sections abc] [--trains 6000] [--fly-trains 1000]
[--events 2000] [--json FILE]``. The machine is shared (2 cores, other jobs running):
figures are noisy, and the detector's 2 MiB frames at 100 Hz are 200 MB/s through
loopback UDP and HDF5 on the same cores.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests" / "system" / "acquisition"))


# --------------------------------------------------------------------------- (c)
def _page_plan(obj, n_pages: int):
    from bluesky import plan_stubs as bps
    from bluesky import preprocessors as bpp

    @bpp.run_decorator(md={"plan_name": "bench_pages"})
    def inner():
        yield from bps.declare_stream(obj, name="primary", collect=True)
        for _ in range(n_pages):
            yield from bps.collect(obj, name="primary")

    return (yield from inner())


class _PageSource:
    """A collectable that yields one page of ``size`` scalar events per collect."""

    name = "pages"
    parent = None

    def __init__(self, size: int) -> None:
        self.size = size
        self.k = 0

    def describe_collect(self):
        return {"train_id": {"source": "bench", "dtype": "integer", "shape": []},
                "value": {"source": "bench", "dtype": "number", "shape": []}}

    def collect_pages(self):
        ids = list(range(self.k, self.k + self.size))
        self.k += self.size
        now = time.time()
        yield {"data": {"train_id": ids, "value": [float(i) for i in ids]},
               "timestamps": {"train_id": [now] * self.size, "value": [now] * self.size},
               "time": [now] * self.size}

    def read_configuration(self):
        return {}

    def describe_configuration(self):
        return {}


def _events_per_s(subscribe, n_events: int) -> dict[str, float]:
    from bluesky import RunEngine
    from bluesky.plans import count
    from ophyd.sim import det

    out = {}
    RE = RunEngine(context_managers=[])
    subscribe(RE)
    t = time.perf_counter()
    RE(count([det], n_events))
    out["step_events_per_s"] = n_events / (time.perf_counter() - t)
    n_pages = max(1, n_events * 10 // 1000)
    t = time.perf_counter()
    RE(_page_plan(_PageSource(1000), n_pages))
    out["page_events_per_s"] = n_pages * 1000 / (time.perf_counter() - t)
    return out


def section_c(n_events: int) -> dict:
    from trainstamp.storage import catalog, make_writer

    result: dict = {"events": n_events}
    with tempfile.TemporaryDirectory() as tmp, catalog(Path(tmp) / "data") as client:
        result["tiled"] = _events_per_s(lambda RE: RE.subscribe(make_writer(client)), n_events)
    try:
        import databroker

        db = databroker.temp()
        result["databroker_temp"] = _events_per_s(lambda RE: RE.subscribe(db.v1.insert), n_events)
    except Exception as exc:  # its v1 layer needs mongomock, suitcase-mongo, doct, humanize
        result["databroker_temp"] = f"unavailable: {type(exc).__name__}: {exc}"
    if isinstance(result["databroker_temp"], dict):
        result["ratio_tiled_over_temp"] = {
            k: result["tiled"][k] / result["databroker_temp"][k] for k in result["tiled"]}
    return result


# --------------------------------------------------------------------------- (a), (b)
def fly_run(pool, period_ms: float, n_trains: int, keep: Path | None,
            devices: str = "detector+tagger") -> dict:
    from acquisition_stack import CLICK_CHANNEL, acquisition_stack, connect_devices
    from bluesky import RunEngine

    from trainstamp.plans import train_fly
    from trainstamp.storage import catalog, check_train_consistency, last_run, subscribe

    tmp = Path(tempfile.mkdtemp(prefix="bench-acq-")) if keep is None else keep
    data = tmp / "data"
    out: dict = {"period_ms": period_ms, "trains": n_trains, "devices": f"ticks+{devices}"}
    use_det, use_tagger = "detector" in devices, "tagger" in devices
    try:
        with acquisition_stack(pool, data, period_ms=period_ms) as stack:
            ts, det, tt = connect_devices(stack)
            try:
                with catalog(data) as client:
                    RE = RunEngine(context_managers=[])
                    subscribe(RE, client, timeserver=ts)
                    t0 = time.perf_counter()
                    try:
                        RE(train_fly([det] if use_det else [], n_trains, timeserver=ts,
                                     tagger=tt if use_tagger else None,
                                     ticks_from="broadcaster", click_channel=CLICK_CHANNEL))
                        out["plan"] = "success"
                    except Exception as exc:
                        out["plan"] = f"failed: {exc!r}"[:400]
                    out["wall_s"] = time.perf_counter() - t0
                    t1 = time.perf_counter()
                    run = last_run(client)
                    out["stop"] = {k: run.metadata["stop"].get(k) for k in
                                   ("exit_status", "reason", "train_id_end")}
                    result = check_train_consistency(run, min_overlap=1)
                    out["read_back_s"] = time.perf_counter() - t1
                    out["events"] = {name: s.count for name, s in result.streams.items()}
                    out["missed"] = {name: s.n_missing for name, s in result.streams.items()}
                    out["duplicated"] = {name: s.n_duplicated for name, s in result.streams.items()}
                    out["skipped_by_timeserver"] = len(result.skipped)
                    out["overlap"] = result.overlap
                    out["problems"] = result.problems[:10]
                    total = sum(out["events"].values())
                    out["events_per_s"] = total / out["wall_s"]
            finally:
                for dev in (ts, det, tt):
                    dev.destroy()
            out["dead_children"] = stack.dead()
    finally:
        if keep is None:
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sections", default="abc", help="which of a, b, c to run")
    parser.add_argument("--trains", type=int, default=6000, help="(a) trains at 10 Hz")
    parser.add_argument("--period-ms", type=float, default=100.0, help="(a) train period")
    parser.add_argument("--fly-trains", type=int, default=1000, help="(b) trains in fly mode")
    parser.add_argument("--fly-period-ms", type=float, default=10.0, help="(b) train period")
    parser.add_argument("--fly-devices", default="detector+tagger,detector,tagger",
                        help="(b) comma-separated device sets to fly with the ticks")
    parser.add_argument("--events", type=int, default=2000, help="(c) step events per writer")
    parser.add_argument("--keep-data", type=Path, help="keep the data directory here (a/b)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)

    results: dict = {"host_cpus": os.cpu_count(), "loadavg_start": os.getloadavg()}
    if "c" in args.sections:
        results["c_scalar_events"] = res = section_c(args.events)
        print("(c) scalar events/s:", json.dumps(res, default=str), flush=True)
    if "a" in args.sections or "b" in args.sections:
        os.environ.setdefault("OPHYD_CONTROL_LAYER", "caproto")
        from trainstamp.testing import CAPortPool

        pool = CAPortPool()
        pool.install()
        with pool.repeater():
            if "a" in args.sections:
                results["a_sustained"] = res = fly_run(pool, args.period_ms, args.trains,
                                                       args.keep_data)
                print("(a) sustained:", json.dumps(res, default=str), flush=True)
            if "b" in args.sections:
                results["b_fly"] = []
                for devices in args.fly_devices.split(","):
                    res = fly_run(pool, args.fly_period_ms, args.fly_trains, args.keep_data,
                                  devices)
                    results["b_fly"].append(res)
                    print("(b) fly:", json.dumps(res, default=str), flush=True)
    results["loadavg_end"] = os.getloadavg()
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
