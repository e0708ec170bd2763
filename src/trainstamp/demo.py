"""``trainstamp demo``: a stamped run, end to end, on a simulated beamline.

1. Start the simulated beamline (:mod:`trainstamp.beamline`) on free loopback ports.
2. Connect the ophyd :class:`~trainstamp.timing.device.TimeServer` and wait for a tick.
3. Run :func:`~trainstamp.plans.train_count` for ``--num-trains`` trains with the
   RunEngine subscribed to the catalog (embedded in ``--data-dir`` by default).
4. Read the run back from the catalog, print its train IDs and a summary, and check the
   stamping contract: ``train_id`` strictly increasing and all OK, equal to the tick the
   TimeServer delivered in the same event, and ``train_id_start``/``train_id_end`` in
   the start and stop documents.

Exit code 0 when every check passes, 1 otherwise. The beamline is always stopped.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import traceback
from collections.abc import Sequence
from typing import Any

from trainstamp.beamline import (
    Beamline,
    add_beamline_arguments,
    config_from_args,
    sigterm_as_interrupt,
)

__all__ = ["check_run", "main"]

#: How long the demo waits for the TimeServer device to connect and tick (s).
CONNECT_TIMEOUT = 15.0


def _num_trains(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 100_000:
        raise argparse.ArgumentTypeError(f"--num-trains {text!r} outside 1..100000")
    return int(text)


def check_run(run: Any) -> list[str]:
    """Check a stored run against the stamping contract; return the problems found."""
    from trainstamp.storage import train_id_problems

    data = run["primary"].read()
    start, stop = run.metadata["start"], run.metadata["stop"] or {}
    problems = train_id_problems(data["train_id"].values, data["train_id_status"].values)
    if "timeserver_train_id" in data:
        ticks = data["timeserver_train_id"].values.astype("int64")
        ids = data["train_id"].values.astype("int64")
        if (ticks != ids).any():
            problems.append(f"stamped train_id differs from the TimeServer tick in "
                            f"{int((ticks != ids).sum())} events")
    first, last = int(data["train_id"].values[0]), int(data["train_id"].values[-1])
    if start.get("train_id_start_status") != "OK" or start.get("train_id_start") is None:
        problems.append(f"start document train_id_start {start.get('train_id_start')!r} "
                        f"({start.get('train_id_start_status')})")
    elif not start["train_id_start"] <= first:
        problems.append(f"train_id_start {start['train_id_start']} after first event {first}")
    if stop.get("train_id_end_status") != "OK" or stop.get("train_id_end") is None:
        problems.append(f"stop document train_id_end {stop.get('train_id_end')!r} "
                        f"({stop.get('train_id_end_status')})")
    elif not stop["train_id_end"] >= last:
        problems.append(f"train_id_end {stop['train_id_end']} before last event {last}")
    if stop.get("exit_status") != "success":
        problems.append(f"run exit status {stop.get('exit_status')!r}")
    return problems


def _summary(run: Any) -> str:
    data = run["primary"].read()
    start, stop = run.metadata["start"], run.metadata["stop"] or {}
    ids = data["train_id"].values.astype("int64")
    steps = ids[1:] - ids[:-1]
    lines = [
        f"run {start['uid']} (scan_id {start.get('scan_id')}, plan {start.get('plan_name')})",
        f"  events          {len(ids)}",
        f"  train IDs       {ids[0]} .. {ids[-1]}  (span {ids[-1] - ids[0] + 1} trains)",
        f"  train steps     min {steps.min() if len(steps) else 0}, "
        f"max {steps.max() if len(steps) else 0}",
        f"  start document  train_id_start={start.get('train_id_start')} "
        f"({start.get('train_id_start_status')})",
        f"  stop document   train_id_end={stop.get('train_id_end')} "
        f"({stop.get('train_id_end_status')}), exit_status={stop.get('exit_status')}",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str]) -> int:
    """``trainstamp demo [--data-dir DIR] [--num-trains N] ...``."""
    parser = argparse.ArgumentParser(
        prog="trainstamp demo",
        description="Start the simulated beamline, run a train-stamped count, store it in "
                    "the catalog, read it back and check the train IDs.")
    parser.add_argument("--data-dir", default=None,
                        help="data directory of the embedded catalog (default "
                             "$TRAINSTAMP_DATA_DIR or ./data)")
    parser.add_argument("--num-trains", type=_num_trains, default=20,
                        help="trains to record (default 20)")
    add_beamline_arguments(parser, free_ports=True)
    args = parser.parse_args(list(argv))
    config = config_from_args(args)

    # The CA client environment must be in place before the first ophyd signal exists.
    os.environ.update(config.client_env())
    t_start = time.monotonic()
    try:
        with sigterm_as_interrupt():
            return _run(args, config, t_start)
    except KeyboardInterrupt:
        print("trainstamp demo: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # the main job reports any failure as an exit code
        traceback.print_exc()
        print(f"trainstamp demo: FAILED: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


def _run(args: argparse.Namespace, config: Any, t_start: float) -> int:
    from bluesky import RunEngine

    from trainstamp.plans import train_count
    from trainstamp.storage import StorageConfig, catalog, read_train_ids, subscribe
    from trainstamp.testing import wait_until
    from trainstamp.timing.device import TimeServer

    storage = StorageConfig.resolve(args.data_dir)
    print(f"trainstamp demo: {args.num_trains} trains into the {storage.describe()}")
    print("starting the simulated beamline:", flush=True)
    with catalog(config=storage) as client, Beamline(
            config.services(), log_dir=args.log_dir, out=lambda s: print(s, flush=True)):
        timeserver = TimeServer(config.timeserver_prefix, name="timeserver")
        try:
            timeserver.wait_for_connection(timeout=CONNECT_TIMEOUT)
            wait_until(lambda: timeserver.last_tick is not None, timeout=CONNECT_TIMEOUT,
                       message="the first TimeServer tick")
        except TimeoutError as exc:
            print(f"trainstamp demo: {exc}", file=sys.stderr)
            return 1
        print(f"TimeServer connected: state {timeserver.state.get()}, "
              f"period {timeserver.period.get():.0f} us, last tick {timeserver.last_tick.train_id}")

        RE = RunEngine(context_managers=[])  # no SIGINT handler of its own: Ctrl-C aborts
        subscribe(RE, client, timeserver=timeserver)
        t_run = time.monotonic()
        (uid,) = RE(train_count([timeserver], args.num_trains, timeserver=timeserver,
                                md={"purpose": "trainstamp demo"}))
        run_s = time.monotonic() - t_run
        run = client[uid]
        ids = read_train_ids(run)
        print(f"\nstored run read back from the catalog; train IDs of its "
              f"{len(ids)} events:")
        print("  " + " ".join(str(i) for i in ids))
        print(_summary(run))
        problems = check_run(run)
        timeserver.destroy()
    total_s = time.monotonic() - t_start
    print(f"  timing          run {run_s:.1f} s, demo {total_s:.1f} s; beamline stopped")
    if problems:
        print("FAILED:\n  " + "\n  ".join(problems), file=sys.stderr)
        return 1
    print("OK: train IDs strictly increasing, all OK, equal to the TimeServer ticks, and "
          "recorded in the start and stop documents")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
