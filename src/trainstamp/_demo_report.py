"""What ``trainstamp demo`` prints and plots about the runs it took and checked.

The demo (:mod:`trainstamp.demo`) takes a step scan of the tagger delay and a fly run,
reads both back from the catalog and checks them with the storage checker
(:func:`trainstamp.storage.check_alignment`,
:func:`trainstamp.storage.check_train_consistency`). This module only shows the result:

- :func:`print_scan`: the scan run, event by event, and what its check found;
- :func:`print_fly`: each stream of the fly run and whether they hold the same trains;
- :func:`print_outcome`: the plots, the timing, and OK or FAILED with every problem;
- :func:`save_plots`: three PNGs (a detector frame, the g2 histograms of the scan, the
  per-train counts of the fly run against train ID).

:class:`DemoSetup` is what the demo set the devices to, as the labels need it.
"""

from __future__ import annotations

import contextlib
import io
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from trainstamp.storage import Alignment, TrainConsistency
from trainstamp.trainid import TRAIN_ID_KEY

__all__ = ["DemoSetup", "print_fly", "print_outcome", "print_scan", "save_plots"]


@dataclass(frozen=True)
class DemoSetup:
    """The demo's fixed settings that the report labels its rows and plots with."""

    scan_channel: int  # the tagger input whose delay the scan moves
    chan1: int  # the correlation's channels (chan1 also clicks the fly run's counter)
    chan2: int
    tagger_trains: int  # trains each tagger measurement of the scan integrates
    fly_counter: str  # name of the fly run's tagger counter

    def delay_key(self, tagger: str) -> str:
        """The scan's data key of the scanned delay (ps)."""
        return f"{tagger}_ch{self.scan_channel}_delay"


def print_scan(start: Mapping[str, Any], stop: Mapping[str, Any], data: Mapping[str, Any],
               names: Sequence[str], result: Alignment, images: np.ndarray, *,
               setup: DemoSetup) -> None:
    """The scan run as read back: its documents' train IDs, a row per event (delay, the
    event's ID and status, the tick, the detector frame's and the tagger's trains), the
    frames, the coincidences, where the g2 dip sits at each delay, and the facts of
    ``result`` (:func:`trainstamp.storage.check_alignment`)."""
    ts, det, tagger = names
    ids = np.asarray(data["train_id"]).astype(np.int64)
    frames = np.asarray(data[f"{det}_train_id"]).astype(np.int64)
    first = np.asarray(data[f"{tagger}_corr1_first_train_id"]).astype(np.int64)
    last = np.asarray(data[f"{tagger}_corr1_last_train_id"]).astype(np.int64)
    ticks = np.asarray(data[f"{ts}_train_id"]).astype(np.int64)
    delays = np.asarray(data[setup.delay_key(tagger)]).astype(float)
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
    print(f"  {'g2 dip':<15} CH{setup.scan_channel} delay -> τ of the antibunching dip: "
          + ", ".join(dips))
    for fact in result.facts:
        print(f"  check           {fact}")


def print_fly(uid: str, result: TrainConsistency, say: Callable[[str], None] = print) -> None:
    """Each stream of the fly run ``uid`` (events, trains, missing, duplicated) and whether
    ``result`` (:func:`trainstamp.storage.check_train_consistency`) found them the same."""
    say(f"\nfly run {uid} read back from the catalog:")
    for stream, trains in result.streams.items():
        say(f"  {stream:<15} {trains.count} events, trains {trains.first}..{trains.last}, "
            f"{trains.n_missing} missing, {trains.n_duplicated} duplicated")
    if result.overlap:
        lo, hi = result.overlap
        say(f"  check           all streams hold exactly the same trains {lo}..{hi} "
            f"({hi - lo + 1})" if result.ok else "  check           streams disagree")


def print_export(result: Any, say: Callable[[str], None] = print) -> None:
    """Where the fly run was exported (an :class:`~trainstamp.storage.ExportResult`),
    and EXtra-data's own summary of that run directory when ``extra-data`` is installed."""
    say(f"\nfly run exported for EXtra-data: {result.outdir}\n  {result.train_ids.size} trains, "
        f"{len(result.sources)} sources, {result.frames} frames; "
        f"extra_data.RunDirectory({str(result.outdir)!r}).info():")
    try:
        import extra_data
    except ImportError:
        say("  (extra-data is not installed: pip install extra-data)")
        return
    text = io.StringIO()
    with contextlib.redirect_stdout(text):
        extra_data.RunDirectory(str(result.outdir)).info()
    for line in text.getvalue().rstrip().splitlines():
        say(("  " + line).rstrip())


def print_outcome(paths: Sequence[Path], timing: Mapping[str, float], problems: Sequence[str],
                  say: Callable[[str], None] = print) -> int:
    """The plots, the timing and the verdict; the exit code (0 if no problem, else 1)."""
    say("\n  plots           " + "\n                  ".join(str(p) for p in paths))
    say("  timing          " + ", ".join(f"{k} {v:.1f} s" for k, v in timing.items())
        + "; beamline stopped")
    if problems:
        print("FAILED: the train IDs do not line up:\n  " + "\n  ".join(problems),
              file=sys.stderr)
        return 1
    say("OK: detector frames, tagger trains and TimeServer ticks line up")
    return 0


# --- plots ------------------------------------------------------------------------------


def _offset_axis(ax: Any, base: int) -> None:
    ax.set_xlabel(f"train ID - {base}")


def save_plots(out: Path, scan: Mapping[str, Any], fly: Mapping[str, Mapping[str, Any]], *,
               names: Sequence[str], image: np.ndarray, uids: Sequence[str],
               setup: DemoSetup) -> list[Path]:
    """Three PNGs in ``out``: a detector frame, the g2 histograms of the scan, and the
    per-train counts of the fly run against train ID.

    ``scan`` is the scan's primary stream and ``fly`` the fly run's streams (name ->
    data key -> array, as :func:`trainstamp.storage.read_stream` reads them); ``image``
    the detector frame to show, ``uids`` those of the scan and the fly run.
    """
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

    delays = np.asarray(scan[setup.delay_key(tagger)]).astype(float)
    tau_ns = np.asarray(scan[f"{tagger}_corr1_index"])[0] / 1000.0
    g2 = np.asarray(scan[f"{tagger}_corr1_g2"]).astype(float)
    counts = np.asarray(scan[f"{tagger}_corr1_data"]).sum()
    fig, ax = plt.subplots(figsize=(7.2, 4.4))
    for delay, color in zip(np.unique(delays), plt.cm.viridis(np.linspace(0, 0.9, len(np.unique(delays)))),
                            strict=True):
        rows = delays == delay
        ax.step(tau_ns, g2[rows].mean(axis=0), where="mid", color=color,
                label=f"CH{setup.scan_channel} delay {delay / 1000:+.1f} ns")
    ax.axhline(1.0, color="grey", lw=0.8, ls="--")
    ax.set(title=f"g2 of channels {setup.chan1} & {setup.chan2} (antibunched source) per "
                 f"delay point,\n{int(counts)} coincidences, {setup.tagger_trains} trains per event "
                 f"(run {uids[0][:8]})", xlabel="τ (ns)", ylabel="g²(τ)")
    ax.legend(fontsize="small", loc="upper right")
    paths.append(out / "g2_histogram.png")
    fig.savefig(paths[-1], dpi=100, bbox_inches="tight")
    plt.close(fig)

    streams = {s: np.asarray(fly[s][TRAIN_ID_KEY]).astype(np.int64) for s in fly}
    base = int(min(ids.min() for ids in streams.values()))
    counts = np.asarray(fly["tagger"][f"{setup.fly_counter}_counts"]).astype(float)
    fig, (top, bottom) = plt.subplots(2, 1, sharex=True, figsize=(7.2, 5.2),
                                      gridspec_kw={"height_ratios": [3, 1.4]})
    top.plot(streams["tagger"] - base, counts, "o-", color="tab:red", ms=4)
    top.set(ylabel=f"tagger counts per train\n(channel {setup.chan1})",
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
