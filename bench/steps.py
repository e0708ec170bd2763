"""Benchmark a step plan: how many trains one ``train_count`` step with the detector
and the tagger takes, and where its time goes.

``train_count([det, tagger], N)`` runs on the simulated beamline (TimeServer at
``--period-ms``, detector in external trigger, tagger slot CORR1 over one train per
step), stored in an embedded catalog. Figures:

- **trains per event**: the mean spacing of the events' train IDs (1.0 would be every
  train), and the share of events whose tagger window is the frame's own train;
- **where a step's time goes**: the RunEngine's messages timed by its ``msg_hook``
  (each message's time is until the next one is taken), summed per kind: waiting for
  the tick, arming the devices for a train (``arm_train``), waiting for the triggered
  devices, reading, and the rest;
- the reference, in the same run: the same plan with arming switched off (each device
  starts on the train in force at its put), as ``train_count`` ran before arming.

Usage: ``python bench/steps.py [--events 30] [--period-ms 100] [--json FILE]``. The
machine is shared: the load average is printed with the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests" / "system" / "acquisition"))


def _kind(msg, ts) -> str:
    """The part of a step a message belongs to."""
    if msg.command == "trigger" and msg.obj is ts:
        return "tick"
    if msg.command == "set":
        return "arm"
    if msg.command == "wait":
        group = str(msg.kwargs.get("group") or "")
        if group.startswith("arm"):
            return "arm"
        if group.startswith("trigger"):
            return "devices"
        return "tick"
    if msg.command == "trigger":
        return "devices"
    if msg.command in ("read", "create", "save"):
        return "read"
    return "other"


def run_steps(RE, client, ts, det, tt, n_events: int, arm: bool) -> dict:
    import trainstamp.plans._stubs as stubs
    from trainstamp.plans import train_count

    times: list[tuple[float, str]] = []
    RE.msg_hook = lambda msg: times.append((time.perf_counter(), _kind(msg, ts)))
    saved = stubs.next_train_to_arm
    if not arm:
        stubs.next_train_to_arm = lambda timeserver, lead_s=0.0: None
    try:
        t0 = time.perf_counter()
        (uid,) = RE(train_count([det, tt], n_events, timeserver=ts))
        wall = time.perf_counter() - t0
    finally:
        stubs.next_train_to_arm = saved
        RE.msg_hook = None
    spent: dict[str, float] = defaultdict(float)
    for (t, kind), (t_next, _) in zip(times, times[1:], strict=False):
        spent[kind] += t_next - t
    data = client[uid]["primary"].read()
    ids = data["train_id"].values.astype(np.int64)
    first = data["tt_corr1_first_train_id"].values.astype(np.int64)
    return {
        "arm": arm,
        "events": int(len(ids)),
        "wall_s": round(wall, 2),
        "trains_per_event": round(float(np.diff(ids).mean()), 2) if len(ids) > 1 else None,
        "same_train": f"{int((first == ids).sum())} of {len(ids)}",
        "per_step_ms": {k: round(1000 * v / n_events, 1) for k, v in sorted(spent.items())},
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=30)
    parser.add_argument("--period-ms", type=float, default=100.0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)

    from acquisition_stack import acquisition_stack, connect_devices
    from bluesky import RunEngine

    from trainstamp.storage import catalog, subscribe
    from trainstamp.testing import CAPortPool

    pool = CAPortPool()
    pool.install()
    tmp = Path(tempfile.mkdtemp(prefix="bench-steps-"))
    out: dict = {"period_ms": args.period_ms, "load_before": os.getloadavg()}
    try:
        with pool.repeater(), acquisition_stack(pool, tmp / "data",
                                                period_ms=args.period_ms) as stack:
            ts, det, tt = connect_devices(stack)
            tt.corr1.n_trains.set(1).wait(5)
            with catalog(tmp / "data") as client:
                RE = RunEngine(context_managers=[])
                subscribe(RE, client, timeserver=ts)
                RE(__import__("trainstamp.plans", fromlist=["train_count"]).train_count(
                    [det, tt], 3, timeserver=ts))  # warm-up
                out["armed"] = run_steps(RE, client, ts, det, tt, args.events, arm=True)
                out["reference (not armed)"] = run_steps(RE, client, ts, det, tt,
                                                         args.events, arm=False)
            for dev in (ts, det, tt):
                dev.destroy()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    out["load_after"] = os.getloadavg()
    a, r = out["armed"], out["reference (not armed)"]
    out["ratio events/s armed / reference"] = round(r["wall_s"] / a["wall_s"], 2)
    print(json.dumps(out, indent=2))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
