"""``trainstamp demo``: train-synchronous runs of all three devices, end to end.

1. Start the simulated beamline (:mod:`trainstamp.beamline`) on free loopback ports:
   TimeServer IOC and broadcaster, detector emulator and IOC, tagger emulator and IOC.
2. Connect the devices (:func:`trainstamp.session.make_devices`) and take two runs, the
   RunEngine writing to the catalog: a :func:`~trainstamp.plans.train_scan` of a tagger
   input delay (``--points`` x ``--trains-per-point`` events, each a detector frame and
   tagger g2 and counts over a few trains) and a :func:`~trainstamp.plans.train_fly` of
   ``--num-trains`` consecutive trains from the TimeServer, detector and tagger.
3. Read both back from the catalog (``--data-dir``) and check that the train IDs line
   up, with the storage checker: :func:`trainstamp.storage.check_alignment` for the
   scan, :func:`trainstamp.storage.check_train_consistency` for the fly run.
4. Export the fly run as a European XFEL run directory (``--out``/``euxfel/``,
   :func:`trainstamp.storage.export_euxfel`) and print EXtra-data's summary of it
   (``RunDirectory(...).info()``, when ``extra-data`` is installed).
5. Print a summary and save PNG plots into ``--out`` (:mod:`trainstamp._demo_report`).

Exit code 0 when every check passes, 1 otherwise; the beamline is always stopped.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from trainstamp._demo_report import (
    DemoSetup,
    print_export,
    print_fly,
    print_outcome,
    print_scan,
    save_plots,
)
from trainstamp.beamline import (
    Beamline,
    add_beamline_arguments,
    config_from_args,
    services,
    sigterm_as_interrupt,
)
from trainstamp.config import BeamlineConfig, client_env

__all__ = ["main"]

#: How long the demo waits for the devices to connect and the first tick (s).
CONNECT_TIMEOUT = 30.0
#: Tagger correlation of the demo: channels 1 and 2 (the emulator's antibunched source).
CORR = {"chan1": 1, "chan2": 2, "binwidth": 1000, "n_bins": 60}
#: Channels of the tagger's count-rate slot.
COUNT_CHANNELS = [1, 2]
#: Trains each tagger measurement of the scan integrates.
TAGGER_TRAINS = 5
#: The tagger slots the scan reads.
SLOTS = ("corr1", "rate1")
#: The scan moves this tagger channel's input delay over this range (ps).
SCAN_CHANNEL = 2
SCAN_PS = (-12000.0, 12000.0)
#: Streams of the fly run, and the name of its tagger counter.
FLY_STREAMS = ("timeserver", "detector", "tagger")
FLY_COUNTER = "tagger_counts"
SETUP = DemoSetup(scan_channel=SCAN_CHANNEL, chan1=CORR["chan1"], chan2=CORR["chan2"],
                  tagger_trains=TAGGER_TRAINS, fly_counter=FLY_COUNTER)


def _count(option: str, limit: int):
    def parse(text: str) -> int:
        if not text.isdigit() or not 1 <= int(text) <= limit:
            raise argparse.ArgumentTypeError(f"{option} {text!r} outside 1..{limit}")
        return int(text)

    return parse


def main(argv: Sequence[str]) -> int:
    """``trainstamp demo [--out DIR] [--data-dir DIR] [--num-trains N] ...``."""
    parser = argparse.ArgumentParser(
        prog="trainstamp demo",
        description="Start the simulated beamline, run a train-synchronous scan of the "
                    "tagger delay with the TimeServer, detector and tagger and a fly run of "
                    "consecutive trains, store both in the catalog, read them back, check "
                    "that the train IDs line up and save plots.")
    parser.add_argument("--out", default="data/demo",
                        help="directory for the PNG plots (default ./data/demo)")
    parser.add_argument("--data-dir", default=None,
                        help="data directory of the embedded catalog (default "
                             "$TRAINSTAMP_DATA_DIR or ./data)")
    parser.add_argument("--points", type=_count("--points", 50), default=5,
                        help="delay points of the scan (default 5)")
    parser.add_argument("--trains-per-point", type=_count("--trains-per-point", 100), default=2,
                        help="events per delay point (default 2)")
    parser.add_argument("--num-trains", type=_count("--num-trains", 100_000), default=30,
                        help="consecutive trains of the fly run (default 30)")
    add_beamline_arguments(parser, free_ports=True)
    args = parser.parse_args(list(argv))
    config = config_from_args(args, parser)

    # The CA client environment must be in place before the first ophyd signal exists.
    os.environ.update(client_env(config))
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


def _connect(devices: Mapping[str, Any], timeserver: Any) -> None:
    from trainstamp.testing import wait_until

    for device in devices.values():
        device.wait_for_connection(timeout=CONNECT_TIMEOUT)
    wait_until(lambda: timeserver.last_tick is not None, timeout=CONNECT_TIMEOUT,
               message="the first TimeServer tick")


def _connect(devices: Mapping[str, Any], timeserver: Any) -> None:
    from trainstamp.testing import wait_until

    for device in devices.values():
        device.wait_for_connection(timeout=CONNECT_TIMEOUT)
    wait_until(lambda: timeserver.last_tick is not None, timeout=CONNECT_TIMEOUT,
               message="the first TimeServer tick")


def _configure(ts: Any, det: Any, tagger: Any) -> None:
    det.frames_per_point.put(1)
    tagger.active_slots = SLOTS
    corr = tagger.corr1
    for signal, value in ((corr.chan1, CORR["chan1"]), (corr.chan2, CORR["chan2"]),
                          (corr.binwidth, CORR["binwidth"]), (corr.n_bins, CORR["n_bins"]),
                          (tagger.rate1.channels, COUNT_CHANNELS),
                          (corr.n_trains, TAGGER_TRAINS), (tagger.rate1.n_trains, TAGGER_TRAINS)):
        signal.set(value).wait(10)
    # One acquisition builds the slots' measurements for these settings (the first build
    # can take longer than a train), so the first event starts at its own train.
    tagger.trigger().wait(60)


def _take_runs(args: argparse.Namespace, config: BeamlineConfig, client: Any,
               say: Callable[[str], None], timing: dict[str, float]) -> tuple[str, str, str]:
    """Connect the devices, take the scan and the fly run into ``client``'s catalog;
    return their uids and the detector's capture file of the scan."""
    from bluesky import RunEngine
    from ophyd import EpicsSignal

    from trainstamp.plans import train_fly, train_scan
    from trainstamp.session import make_devices
    from trainstamp.storage import subscribe

    names = config.timeserver.name, config.detector.name, config.tagger.name
    devices = make_devices(config)
    ts, det, tagger = (devices[n] for n in names)
    try:
        _connect(devices, ts)
        _configure(ts, det, tagger)
        say(f"devices connected: {', '.join(names)}; TimeServer {ts.state.get()}, "
            f"period {ts.period.get() / 1000:.1f} ms, train {ts.last_tick.train_id}")
        RE = RunEngine(context_managers=[])  # no SIGINT handler of its own
        subscribe(RE, client, timeserver=ts)
        # The scanned axis as a signal of its own: a component of a device that is
        # also a detector would be dropped from the readings (bluesky reads the parent).
        delay = EpicsSignal(f"{config.tagger.prefix}CH{SCAN_CHANNEL}:DELAY",
                            name=SETUP.delay_key(names[2]))
        delay.wait_for_connection(timeout=CONNECT_TIMEOUT)
        say(f"\n1) train_scan: CH{SCAN_CHANNEL} delay {SCAN_PS[0] / 1000:+g}..{SCAN_PS[1] / 1000:+g} ns "
            f"in {args.points} points x {args.trains_per_point} events; each event: "
            f"a detector frame and {TAGGER_TRAINS} trains of tagger g2 and counts")
        t0 = time.monotonic()
        try:
            (scan_uid,) = RE(train_scan([ts, det, tagger], delay, *SCAN_PS, args.points,
                                        args.trains_per_point, timeserver=ts,
                                        md={"purpose": "trainstamp demo: g2 delay scan"}))
            capture_file = det.capture_full_path.get()
        finally:
            delay.set(0).wait(10)
            delay.destroy()
        timing["scan"] = time.monotonic() - t0
        say(f"2) train_fly: {args.num_trains} consecutive trains from the TimeServer, "
            "detector and tagger")
        t0 = time.monotonic()
        (fly_uid,) = RE(train_fly([det], args.num_trains, timeserver=ts,
                                  tagger=tagger,
                                  click_channel=CORR["chan1"],
                                  md={"purpose": "trainstamp demo: every train"}))
        timing["fly"] = time.monotonic() - t0
    finally:
        for device in devices.values():
            device.destroy()
    return scan_uid, fly_uid, capture_file


def _run(args: argparse.Namespace, config: BeamlineConfig, t_start: float) -> int:
    from trainstamp.detector._capture import read_capture
    from trainstamp.storage import (
        StorageConfig,
        catalog,
        check_alignment,
        check_train_consistency,
        export_euxfel,
        read_stream,
    )

    storage = StorageConfig.resolve(args.data_dir)
    out = Path(args.out).expanduser().resolve()
    log_dir = Path(args.log_dir) if args.log_dir else Path(tempfile.mkdtemp(prefix="trainstamp-demo-"))
    names = config.timeserver.name, config.detector.name, config.tagger.name
    say = lambda s: print(s, flush=True)  # noqa: E731
    say(f"trainstamp demo: runs go to the {storage.describe()}")
    say(f"starting the simulated beamline (logs in {log_dir}):")
    timing: dict[str, float] = {}
    with catalog(config=storage) as client, Beamline(
            services(config, log_dir, data_dir=storage.data_dir), log_dir=log_dir, out=say):
        timing["beamline up"] = time.monotonic() - t_start
        scan_uid, fly_uid, capture_file = _take_runs(args, config, client, say, timing)
        t0 = time.monotonic()
        scan_run, fly_run = client[scan_uid], client[fly_uid]
        scan_start, scan_stop = scan_run.metadata["start"], scan_run.metadata["stop"] or {}
        scan = read_stream(scan_run["primary"])
        images = np.asarray(scan.pop(f"{names[1]}_image"))
        images = images.reshape(len(images), *images.shape[-2:])
        fly = {s: read_stream(fly_run[s]) for s in FLY_STREAMS}
        aligned = check_alignment(scan, scan_start, scan_stop, ts=names[0], det=names[1],
                                  tagger=names[2], slots=SLOTS, n_trains=TAGGER_TRAINS,
                                  file_train_ids=read_capture(capture_file)["train_id"])
        consistent = check_train_consistency(fly_run, FLY_STREAMS,
                                             min_overlap=max(1, args.num_trains - 2))
        fly_stop = fly_run.metadata["stop"] or {}
        timing["read back"] = time.monotonic() - t0
        t0 = time.monotonic()
        export_dir = out / "euxfel" / f"r{fly_run.metadata['start'].get('scan_id', 0):04d}-{fly_uid[:8]}"
        try:
            exported = export_euxfel(fly_run, export_dir, detector_dirs=[storage.detector_dir],
                                     progress=False)
        except (OSError, ValueError) as exc:
            exported = exc
        timing["export"] = time.monotonic() - t0
    t0 = time.monotonic()
    paths = save_plots(out, scan, fly, names=names, image=images[-1], uids=(scan_uid, fly_uid),
                       setup=SETUP)
    timing["plots"] = time.monotonic() - t0
    problems = list(aligned.problems)
    problems += [f"fly run: {p}" for p in consistent.problems]
    if fly_stop.get("exit_status") != "success":
        problems.append(f"fly run exit status {fly_stop.get('exit_status')!r}")
    print_scan(scan_start, scan_stop, scan, names, aligned, images, setup=SETUP)
    print_fly(fly_uid, consistent, say)
    if isinstance(exported, Exception):
        problems.append(f"fly run export: {type(exported).__name__}: {exported}")
    else:
        print_export(exported, say)
    timing["demo"] = time.monotonic() - t_start
    return print_outcome(paths, timing, problems, say)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
