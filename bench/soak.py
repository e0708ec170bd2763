"""Soak: the whole simulated beamline running ``train_fly`` at 10 Hz for ten minutes.

The beamline is started and supervised as ``trainstamp up`` does it (free loopback
ports), every run goes into an embedded Tiled catalog, and ``train_fly`` with the
detector (external trigger), the tagger (counts per train) and the TimeServer's ticks
runs back to back for ``--minutes``, its ticks from the TimeServer's broadcaster (the
lossless record; the CA monitor may skip an update on a busy client). Each run is read back and checked train by train
against the TimeServer's ticks (:func:`trainstamp.storage.check_train_consistency`).

Figures:

- runs, trains recorded, and trains missed or recorded twice in any stream (target 0);
- the resident memory (VmRSS) of every process, the supervised services and their own
  children (the detector's receiver) and this RunEngine process, after the first run
  (the warm-up: numba compilation, first measurements built, the catalog's caches) and
  at the end; the ratio end/warm-up is the figure, the target below 1.05;
- runs that failed, with the reason, and the tagger IOC's own counters after each run
  (overflows, lost blocks, bad frames, faults, dropped ticks);
- services the supervisor had to restart (target none).

Usage: ``python bench/soak.py [--minutes 10] [--trains-per-run 300] [--period-ms 100]
[--json FILE]``. ``--minutes 1`` gives a quick look.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path


def rss_kib(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def group_members(pgid: int) -> list[int]:
    """Live PIDs in process group ``pgid`` (a service and what it started)."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            out.append(int(entry.name))
    return sorted(out)


def memory(beamline) -> dict[str, int]:
    """KiB of resident memory per process, by ``service[/pid]`` and ``runengine``."""
    out: dict[str, int] = {}
    for name, pid in beamline.pids().items():
        if pid is None:
            continue
        for member in group_members(pid):
            kib = rss_kib(member)
            if kib is not None:
                out[name if member == pid else f"{name}/child"] = (
                    out.get(name if member == pid else f"{name}/child", 0) + kib)
    out["runengine"] = rss_kib(os.getpid()) or 0
    return out


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--trains-per-run", type=int, default=300)
    parser.add_argument("--period-ms", type=float, default=100.0)
    parser.add_argument("--json", default=None, help="write the figures to this file")
    args = parser.parse_args(argv)

    from trainstamp.beamline import Beamline, RestartPolicy, services
    from trainstamp.config import load_config

    config = load_config(environ={}).with_free_ports()
    config = config.replace_section("timeserver", period_ms=args.period_ms)
    config = config.replace_section("detector", test_mode=True)
    os.environ.update(config.client_env())  # before the first ophyd signal exists

    from bluesky import RunEngine

    from trainstamp.plans import train_fly
    from trainstamp.session import make_devices
    from trainstamp.storage import catalog, check_train_consistency, subscribe
    from trainstamp.testing import wait_until

    root = Path(tempfile.mkdtemp(prefix="trainstamp-soak-"))
    log: list[str] = []

    def say(text: str) -> None:
        log.append(text)
        print(text, flush=True)

    beamline = Beamline(services(config, root / "run", data_dir=root / "data"),
                        log_dir=root / "run", out=say, restart=RestartPolicy())
    stop = threading.Event()
    figures: dict = {"minutes": args.minutes, "trains_per_run": args.trains_per_run,
                     "period_ms": args.period_ms, "runs": []}
    with beamline, catalog(root / "data") as client:
        supervisor = threading.Thread(target=beamline.supervise, kwargs={"until": stop},
                                      daemon=True)
        supervisor.start()
        devices = make_devices(config)
        ts = devices[config.timeserver.name]
        det = devices[config.detector.name]
        tagger = devices[config.tagger.name]
        try:
            for device in devices.values():
                device.wait_for_connection(timeout=60)
            wait_until(lambda: ts.last_tick is not None, timeout=30, message="first tick")
            det.trigger_mode.set(1).wait(10)
            RE = RunEngine(context_managers=[])
            subscribe(RE, client, timeserver=ts)
            RE.subscribe(lambda name, doc: doc.get("exit_status") != "success" and say(
                f"run {doc['run_start'][:8]} {doc['exit_status']}: {doc.get('reason')}"), "stop")
            t_end = None
            warm: dict[str, int] = {}
            from caproto.sync.client import read as ca_read

            def tagger_health() -> str:
                prefix = config.tagger.prefix
                values = []
                for pv in ("OVERFLOWS", "LOST_BLOCKS", "BAD_FRAMES", "FAULTS", "DROPPED_TICKS"):
                    try:
                        values.append(f"{pv} {ca_read(prefix + pv, timeout=5).data[0]}")
                    except Exception as exc:  # the figure, not the soak, is lost
                        values.append(f"{pv} ? ({type(exc).__name__})")
                return ", ".join(values)

            while t_end is None or time.monotonic() < t_end:
                t0 = time.monotonic()
                try:
                    (uid,) = RE(train_fly([det], args.trains_per_run, timeserver=ts,
                                          tagger=tagger, ticks_from="broadcaster",
                                          click_channel=1))
                except Exception as exc:  # a failed run is a figure; the soak goes on
                    run = {"seconds": round(time.monotonic() - t0, 1), "ok": False,
                           "problems": [f"{type(exc).__name__}: {exc}"], "streams": {},
                           "tagger": tagger_health()}
                else:
                    result = check_train_consistency(client[uid],
                                                     min_overlap=args.trains_per_run // 2)
                    streams = {name: {"count": s.count, "missing": s.n_missing,
                                      "duplicated": s.n_duplicated}
                               for name, s in result.streams.items()}
                    run = {"uid": uid, "seconds": round(time.monotonic() - t0, 1),
                           "ok": result.ok, "problems": result.problems, "streams": streams,
                           "tagger": tagger_health()}
                figures["runs"].append(run)
                say(f"run {len(figures['runs'])}: {run['seconds']} s, "
                    + ("consistent" if run["ok"] else "; ".join(run["problems"]))
                    + f" [tagger {run['tagger']}]")
                if t_end is None:  # the first run is the warm-up
                    warm = memory(beamline)
                    t_end = time.monotonic() + args.minutes * 60
            end = memory(beamline)
        finally:
            for device in devices.values():
                device.destroy()
            stop.set()
            supervisor.join(timeout=30)
    # The first run is the warm-up (numba compiles the measurements the first time they
    # are built, and the tagger may overflow meanwhile): reported, not counted.
    figures["warmup_run"] = figures["runs"].pop(0)
    restarts = [line for line in log if line.startswith("trainstamp up:")]  # the supervisor
    growth = {name: round(end[name] / warm[name], 3) for name in end if warm.get(name)}
    missed = sum(s["missing"] for r in figures["runs"] for s in r["streams"].values())
    doubled = sum(s["duplicated"] for r in figures["runs"] for s in r["streams"].values())
    failed = sum("uid" not in r for r in figures["runs"])
    figures.update(failed=failed, rss_kib_warm=warm, rss_kib_end=end, rss_ratio_end_to_warm=growth,
                   missed=missed, duplicated=doubled, restarts=restarts,
                   inconsistent=sum(not r["ok"] for r in figures["runs"]))
    print(f"\nsoak: {len(figures['runs'])} runs of train_fly({args.trains_per_run}) at "
          f"{1000 / args.period_ms:g} Hz; {failed} failed, "
          f"{figures['inconsistent'] - failed} inconsistent, "
          f"{missed} trains missed, {doubled} recorded twice, {len(restarts)} restarts")
    print("RSS after warm-up -> end (KiB, ratio; target < 1.05):")
    for name in sorted(end):
        if name in warm:
            print(f"  {name:<22} {warm[name]:>9} -> {end[name]:>9}  {growth.get(name, 0):.3f}")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1))
    ok = (not figures["inconsistent"] and not missed and not doubled and not restarts
          and all(r < 1.05 for r in growth.values()))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
