"""``trainstamp demo``: a train-synchronous run of all three devices, end to end.

1. Start the simulated beamline (:mod:`trainstamp.beamline`) on free loopback ports:
   TimeServer IOC and broadcaster, detector emulator and IOC, tagger emulator and IOC.
2. Connect the devices (:func:`trainstamp.session.make_devices`) and run
   :func:`~trainstamp.plans.train_count` over ``--num-trains`` trains with the TimeServer,
   the detector (one frame per train) and the tagger (correlation and count rate over one
   whole train per event), the RunEngine writing to the catalog.
3. Read the run back from the embedded catalog (``--data-dir``).
4. Check that the train IDs line up (:func:`check_alignment`).
5. Print a summary.
6. Save PNG plots into ``--out``: a detector frame, the g2 histogram, and the per-train
   counts against train ID.

Exit code 0 when every check passes, 1 otherwise; the beamline is always stopped.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from trainstamp.beamline import (
    Beamline,
    add_beamline_arguments,
    config_from_args,
    services,
    sigterm_as_interrupt,
)
from trainstamp.config import BeamlineConfig, client_env

__all__ = ["Alignment", "check_alignment", "main"]

#: How long the demo waits for the devices to connect and the first tick (s).
CONNECT_TIMEOUT = 30.0
#: Tagger correlation of the demo: channels 1 and 2 (the emulator's antibunched source).
CORR = {"chan1": 1, "chan2": 2, "binwidth": 1000, "n_bins": 60}
#: Channels of the tagger's count-rate slot.
COUNT_CHANNELS = [1, 2]
#: Trains each tagger measurement of the scan integrates.
TAGGER_TRAINS = 5
#: The scan moves this tagger channel's input delay over this range (ps).
SCAN_CHANNEL = 2
SCAN_PS = (-12000.0, 12000.0)
#: Streams of the fly run, and the name of its tagger counter.
FLY_STREAMS = ("timeserver", "detector", "tagger")
FLY_COUNTER = "tagger_counts"


def _count(option: str, limit: int):
    def parse(text: str) -> int:
        if not text.isdigit() or not 1 <= int(text) <= limit:
            raise argparse.ArgumentTypeError(f"{option} {text!r} outside 1..{limit}")
        return int(text)

    return parse


# --- the check ------------------------------------------------------------------------


@dataclass(frozen=True)
class Alignment:
    """What :func:`check_alignment` found: the problems (empty if none) and the facts."""

    problems: list[str]
    facts: list[str]


def check_alignment(data: Mapping[str, Any], start: Mapping[str, Any], stop: Mapping[str, Any],
                    *, ts: str, det: str, tagger: str, slots: Sequence[str],
                    file_train_ids: Any = None, n_trains: int = 1) -> Alignment:
    """Check that the train IDs of a stored run of all three devices line up.

    ``data`` maps data keys to per-event arrays (a primary stream read back). The event
    at index ``i`` read the TimeServer tick ``R[i]`` (``<ts>_train_id``); its devices
    were triggered after a train later than ``R[i-1]`` began and read after ``R[i]``, so
    every train a device reports for event ``i`` must lie in ``(R[i-1], R[i]]`` (for the
    first event ``[train_id_start, R[0]]``). Exactly:

    - the event ``train_id`` keeps the contract (increasing, no invalid ID), and equals the
      detector's packet-header ID where its status is ``EXACT``, else the tick ``R[i]``;
    - the detector frame ID (``<det>_train_id``) lies in the window, and equals the ID the
      detector wrote into its HDF5 file for that frame (``file_train_ids``);
    - each tagger slot covers exactly ``n_trains`` trains (``last - first + 1``), all
      slots cover the same trains, those lie in the window, and the first is the
      detector frame's train (both start at the train in force when triggered);
    - ``train_id_start`` / ``train_id_end`` in the start / stop documents bracket them all.
    """
    from trainstamp.storage import train_id_problems

    problems: list[str] = []
    facts: list[str] = []
    stamp = np.asarray(data["train_id"]).astype(np.int64)
    status = np.asarray(data["train_id_status"]).astype(str)
    ticks = np.asarray(data[f"{ts}_train_id"]).astype(np.int64)
    frames = np.asarray(data[f"{det}_train_id"]).astype(np.int64)
    n = len(stamp)
    problems += [f"event train_id: {p}" for p in train_id_problems(stamp, status)]
    if problems:
        return Alignment(problems, facts)
    exact = status == "EXACT"
    expected = np.where(exact, frames, ticks)
    if (wrong := np.flatnonzero(stamp != expected)).size:
        problems.append(f"event train_id differs from the detector's exact ID (EXACT) or the "
                        f"TimeServer tick at events {wrong[:10].tolist()}")
    facts.append(f"event train_id: {int(exact.sum())} of {n} EXACT from the detector headers")

    t0 = start.get("train_id_start")
    lower = np.concatenate([[t0 if isinstance(t0, int) and t0 > 0 else 1], ticks[:-1] + 1])
    upper = ticks

    def within(name: str, first: np.ndarray, last: np.ndarray) -> None:
        bad = np.flatnonzero((first < lower) | (last > upper) | (first <= 0))
        if bad.size:
            i = int(bad[0])
            problems.append(f"{name}: {bad.size} events outside their TimeServer window, first "
                            f"event {i}: trains {int(first[i])}..{int(last[i])} not within "
                            f"{int(lower[i])}..{int(upper[i])}")

    within(f"{det} frame", frames, frames)
    if file_train_ids is not None:
        in_file = np.asarray(file_train_ids).astype(np.int64)
        if in_file.shape != frames.shape or (in_file != frames).any():
            problems.append(f"{det}: train IDs in the HDF5 file {in_file[:10].tolist()} differ "
                            f"from the events' {frames[:10].tolist()}")
        else:
            facts.append(f"{det}: {n} frame IDs equal to those in the HDF5 file")
    spans = {}
    for slot in slots:
        first = np.asarray(data[f"{tagger}_{slot}_first_train_id"]).astype(np.int64)
        last = np.asarray(data[f"{tagger}_{slot}_last_train_id"]).astype(np.int64)
        spans[slot] = (first, last)
        if (bad := np.flatnonzero(last - first + 1 != n_trains)).size:
            problems.append(f"{tagger}.{slot}: {bad.size} events do not cover exactly "
                            f"{n_trains} train(s), e.g. {int(first[bad[0]])}..{int(last[bad[0]])}")
        # The tagger starts at the train in force when it was triggered, as the detector
        # does: both report the same first train.
        within(f"{tagger}.{slot}", first, last)
        if (off := np.flatnonzero(first != frames)).size:
            i = int(off[0])
            problems.append(f"{tagger}.{slot}: {off.size} events start at another train than "
                            f"the detector frame, first event {i}: tagger {int(first[i])}, "
                            f"detector {int(frames[i])}")
        if (overlap := np.flatnonzero(first[1:] <= last[:-1])).size:
            problems.append(f"{tagger}.{slot}: events {overlap[:10].tolist()} and the next "
                            "cover a train twice")
    ref_first, ref_last = spans[slots[0]]
    for slot in slots[1:]:
        if (spans[slot][0] != ref_first).any() or (spans[slot][1] != ref_last).any():
            problems.append(f"{tagger}: slots {slots[0]} and {slot} cover different trains")
    offsets = sorted(set((ref_first - frames).tolist()))
    facts.append(f"every device's trains within its event's TimeServer window; tagger first "
                 f"train - detector frame train: {offsets}")

    t1 = stop.get("train_id_end")
    everything = np.concatenate([stamp, frames, ref_first, ref_last, ticks])
    if not isinstance(t0, int) or t0 > everything.min():
        problems.append(f"train_id_start {t0!r} does not precede the run's first train "
                        f"{int(everything.min())}")
    if not isinstance(t1, int) or t1 < everything.max():
        problems.append(f"train_id_end {t1!r} is before the run's last train "
                        f"{int(everything.max())}")
    if stop.get("exit_status") != "success":
        problems.append(f"run exit status {stop.get('exit_status')!r}")
    return Alignment(problems, facts)


# --- plots ------------------------------------------------------------------------------


def _offset_axis(ax: Any, base: int) -> None:
    ax.set_xlabel(f"train ID - {base}")


def save_plots(out: Path, scan: Mapping[str, Any], fly: Mapping[str, Mapping[str, Any]], *,
               names: Sequence[str], image: np.ndarray, uids: Sequence[str]) -> list[Path]:
    """Three PNGs in ``out``: a detector frame, the g2 histograms of the scan, and the
    per-train counts of the fly run against train ID."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ts, det, tagger = names
    out.mkdir(parents=True, exist_ok=True)
    paths = []

    frames = np.asarray(scan[f"{det}_train_id"]).astype(np.int64)
    fig, ax = plt.subplots(figsize=(6.4, 5.6))
    lo, hi = np.percentile(image, [1, 99.5])
    shown = ax.imshow(image, cmap="viridis", vmin=lo, vmax=hi, origin="upper")
    fig.colorbar(shown, ax=ax, label="ADU")
    ax.set(title=f"{det}: frame of train {frames[-1]}\n(run {uids[0][:8]}, exact ID from the "
                 "packet headers)", xlabel="column (pixel)", ylabel="row (pixel)")
    paths.append(out / "detector_frame.png")
    fig.savefig(paths[-1], dpi=100, bbox_inches="tight")
    plt.close(fig)

    delays = np.asarray(scan[f"{tagger}_ch{SCAN_CHANNEL}_delay"]).astype(float)
    tau_ns = np.asarray(scan[f"{tagger}_corr1_index"])[0] / 1000.0
    g2 = np.asarray(scan[f"{tagger}_corr1_g2"]).astype(float)
    counts = np.asarray(scan[f"{tagger}_corr1_data"]).sum()
    fig, ax = plt.subplots(figsize=(7.2, 4.4))
    for delay, color in zip(np.unique(delays), plt.cm.viridis(np.linspace(0, 0.9, len(np.unique(delays)))),
                            strict=True):
        rows = delays == delay
        ax.step(tau_ns, g2[rows].mean(axis=0), where="mid", color=color,
                label=f"CH{SCAN_CHANNEL} delay {delay / 1000:+.1f} ns")
    ax.axhline(1.0, color="grey", lw=0.8, ls="--")
    ax.set(title=f"g2 of channels {CORR['chan1']} & {CORR['chan2']} (antibunched source) per "
                 f"delay point,\n{int(counts)} coincidences, {TAGGER_TRAINS} trains per event "
                 f"(run {uids[0][:8]})", xlabel="τ (ns)", ylabel="g²(τ)")
    ax.legend(fontsize="small", loc="upper right")
    paths.append(out / "g2_histogram.png")
    fig.savefig(paths[-1], dpi=100, bbox_inches="tight")
    plt.close(fig)

    streams = {s: np.asarray(fly[s]["train_id"]).astype(np.int64) for s in FLY_STREAMS}
    base = int(min(ids.min() for ids in streams.values()))
    counts = np.asarray(fly["tagger"][f"{FLY_COUNTER}_counts"]).astype(float)
    fig, (top, bottom) = plt.subplots(2, 1, sharex=True, figsize=(7.2, 5.2),
                                      gridspec_kw={"height_ratios": [3, 1.4]})
    top.plot(streams["tagger"] - base, counts, "o-", color="tab:red", ms=4)
    top.set(ylabel=f"tagger counts per train\n(channel {CORR['chan1']})",
            title=f"per-train counts against train ID, fly run {uids[1][:8]}: "
                  f"{len(counts)} consecutive trains")
    for row, ids in enumerate(streams.values()):
        bottom.plot(ids - base, np.full(ids.shape, row), "|", ms=12, mew=2,
                    color=("tab:blue", "tab:green", "tab:red")[row])
    bottom.set_yticks(range(len(streams)),
                      [f"{s} ({len(ids)})" for s, ids in streams.items()])
    bottom.set_ylim(-0.7, len(streams) - 0.3)
    bottom.set_title("trains recorded by each stream", fontsize="small")
    _offset_axis(bottom, base)
    paths.append(out / "counts_per_train.png")
    fig.savefig(paths[-1], dpi=100, bbox_inches="tight")
    plt.close(fig)
    return paths


# --- the run ----------------------------------------------------------------------------


def read_stream(stream: Any, skip: Sequence[str] = ()) -> dict[str, np.ndarray]:
    """Every data key of a stored event stream as a numpy array (one row per event).

    Read key by key: the stream's ``read()`` turns small fixed-size arrays (a count per
    channel) into strings, and a key called ``ts_<k>`` would be taken for the timestamps
    of ``k``.
    """
    keys = stream.metadata["data_keys"]
    return {key: np.asarray(stream[key].read()) for key in keys if key not in skip}


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


def _configure(ts: Any, det: Any, tagger: Any) -> None:
    det.frames_per_point.put(1)
    tagger.active_slots = ("corr1", "rate1")
    corr = tagger.corr1
    for signal, value in ((corr.chan1, CORR["chan1"]), (corr.chan2, CORR["chan2"]),
                          (corr.binwidth, CORR["binwidth"]), (corr.n_bins, CORR["n_bins"]),
                          (tagger.rate1.channels, COUNT_CHANNELS),
                          (corr.n_trains, TAGGER_TRAINS), (tagger.rate1.n_trains, TAGGER_TRAINS)):
        signal.set(value).wait(10)
    # One acquisition builds the slots' measurements for these settings (the first build
    # can take longer than a train), so the first event starts at its own train.
    tagger.trigger().wait(60)


def _run(args: argparse.Namespace, config: BeamlineConfig, t_start: float) -> int:
    from bluesky import RunEngine
    from ophyd import EpicsSignal

    from trainstamp.detector._capture import read_capture
    from trainstamp.plans import check_train_consistency, train_fly, train_scan
    from trainstamp.session import make_devices
    from trainstamp.storage import StorageConfig, catalog, subscribe

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
                                name=f"{names[2]}_ch{SCAN_CHANNEL}_delay")
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
        t0 = time.monotonic()
        scan_run, fly_run = client[scan_uid], client[fly_uid]
        scan = read_stream(scan_run["primary"])
        images = np.asarray(scan.pop(f"{names[1]}_image"))
        images = images.reshape(len(images), *images.shape[-2:])
        fly = {s: read_stream(fly_run[s]) for s in FLY_STREAMS}
        file_ids = read_capture(capture_file)["train_id"]
        aligned = check_alignment(scan, scan_run.metadata["start"],
                                  scan_run.metadata["stop"] or {}, ts=names[0], det=names[1],
                                  tagger=names[2], slots=("corr1", "rate1"),
                                  file_train_ids=file_ids, n_trains=TAGGER_TRAINS)
        consistent = check_train_consistency(fly_run, FLY_STREAMS,
                                             min_overlap=max(1, args.num_trains - 2))
        fly_stop = fly_run.metadata["stop"] or {}
        timing["read back"] = time.monotonic() - t0
    t0 = time.monotonic()
    paths = save_plots(out, scan, fly, names=names, image=images[-1], uids=(scan_uid, fly_uid))
    timing["plots"] = time.monotonic() - t0
    problems = list(aligned.problems)
    problems += [f"fly run: {p}" for p in consistent.problems]
    if fly_stop.get("exit_status") != "success":
        problems.append(f"fly run exit status {fly_stop.get('exit_status')!r}")
    _print_summary(scan_run.metadata["start"], scan_run.metadata["stop"] or {}, scan, names,
                   aligned, images)
    say(f"\nfly run {fly_uid} read back from the catalog:")
    for stream, trains in consistent.streams.items():
        say(f"  {stream:<15} {trains.count} events, trains {trains.first}..{trains.last}, "
            f"{trains.n_missing} missing, {trains.n_duplicated} duplicated")
    if consistent.overlap:
        lo, hi = consistent.overlap
        say(f"  check           all streams hold exactly the same trains {lo}..{hi} "
            f"({hi - lo + 1})" if consistent.ok else "  check           streams disagree")
    timing["demo"] = time.monotonic() - t_start
    say("\n  plots           " + "\n                  ".join(str(p) for p in paths))
    say("  timing          " + ", ".join(f"{k} {v:.1f} s" for k, v in timing.items())
        + "; beamline stopped")
    if problems:
        print("FAILED: the train IDs do not line up:\n  " + "\n  ".join(problems),
              file=sys.stderr)
        return 1
    say("OK: detector frames, tagger trains and TimeServer ticks line up")
    return 0


def _print_summary(start: Mapping[str, Any], stop: Mapping[str, Any],
                   data: Mapping[str, Any], names: Sequence[str], result: Alignment,
                   images: np.ndarray) -> None:
    ts, det, tagger = names
    ids = np.asarray(data["train_id"]).astype(np.int64)
    frames = np.asarray(data[f"{det}_train_id"]).astype(np.int64)
    first = np.asarray(data[f"{tagger}_corr1_first_train_id"]).astype(np.int64)
    last = np.asarray(data[f"{tagger}_corr1_last_train_id"]).astype(np.int64)
    ticks = np.asarray(data[f"{ts}_train_id"]).astype(np.int64)
    delays = np.asarray(data[f"{tagger}_ch{SCAN_CHANNEL}_delay"]).astype(float)
    coincidences = int(np.asarray(data[f"{tagger}_corr1_data"]).sum())
    print(f"\nscan run {start['uid']} (scan_id {start.get('scan_id')}, plan "
          f"{start.get('plan_name')}) read back from the catalog:")
    print(f"  start / stop    train_id_start={start.get('train_id_start')}, "
          f"train_id_end={stop.get('train_id_end')}, exit_status={stop.get('exit_status')}")
    print(f"  {'event':<5} {'delay ns':>8} {'train_id':>14} {'status':>7} {ts + ' tick':>15} "
          f"{det + ' frame':>14} {tagger + ' trains':>22}")
    status = np.asarray(data["train_id_status"]).astype(str)
    for i in range(len(ids)):
        print(f"  {i:<5} {delays[i] / 1000:>+8.1f} {ids[i]:>14} {status[i]:>7} {ticks[i]:>15} "
              f"{frames[i]:>14} {first[i]:>14}..{last[i] % 1000:03d}")
    print(f"  {det:<15} {len(images)} frames {images.shape[1]}x{images.shape[2]} uint16 "
          "read back from HDF5 through the catalog")
    print(f"  {tagger:<15} {coincidences} coincidences in the g2 histograms")
    tau_ns = np.asarray(data[f"{tagger}_corr1_index"])[0] / 1000.0
    g2 = np.asarray(data[f"{tagger}_corr1_g2"]).astype(float)
    dips = []
    for delay in np.unique(delays):
        mean = np.convolve(g2[delays == delay].mean(axis=0), np.ones(3) / 3, mode="same")
        i = int(np.argmin(mean[1:-1])) + 1
        dips.append(f"{delay / 1000:+.0f} ns -> {tau_ns[i]:+.1f} ns (g2 {mean[i]:.2f})")
    print(f"  {'g2 dip':<15} CH{SCAN_CHANNEL} delay -> τ of the antibunching dip: "
          + ", ".join(dips))
    for fact in result.facts:
        print(f"  check           {fact}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
