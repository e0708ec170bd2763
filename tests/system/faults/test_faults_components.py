"""kill -9 each part of a running beamline in the middle of a plan.

One simulated beamline, started and supervised as ``trainstamp up`` does it
(:class:`~trainstamp.beamline.Beamline` with :meth:`~trainstamp.beamline.Beamline.supervise`
in a thread), on free loopback ports. For each of the five components (the detector FPGA
emulator, the tagger emulator, the TimeServer IOC, the detector IOC and the tagger IOC),
and for ``train_fly`` and ``train_count`` in turn, a watcher kills the component with
SIGKILL a few trains into the run. Then:

- the plan either finished (it suspended and resumed when the component came back) or
  failed with a message that names the component;
- the supervisor restarted that component alone (every other PID is unchanged);
- every device is unstaged, and the next plan runs to success;
- the stored run's train IDs pass the consistency check, and every HDF5 capture file the
  detector wrote is readable.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
from bluesky import RunEngine
from ophyd.device import Staged

from trainstamp.beamline import Beamline, RestartPolicy, services
from trainstamp.config import load_config
from trainstamp.detector._recovery import MARKER_SUFFIX
from trainstamp.plans import check_train_consistency, train_count, train_fly
from trainstamp.session import make_devices
from trainstamp.storage import catalog, subscribe, train_id_problems
from trainstamp.testing import random_prefix, wait_until
from trainstamp.timing.suspenders import install_timeserver_suspenders

pytestmark = pytest.mark.system

#: How far into a run (in trains) the component dies.
KILL_AFTER_TRAINS = 8
FLY_TRAINS = 60
COUNT_EVENTS = 12
#: Longest a plan may take to fail or finish after a kill, on a busy machine.
PLAN_BOUND_S = 120.0
BACK_WITHIN_S = 90.0


@dataclass
class Line:
    config: Any
    beamline: Beamline
    devices: dict[str, Any]
    RE: RunEngine
    client: Any
    data_dir: Path
    log: list[str] = field(default_factory=list)

    @property
    def ts(self):
        return self.devices[self.config.timeserver.name]

    @property
    def det(self):
        return self.devices[self.config.detector.name]

    @property
    def tagger(self):
        return self.devices[self.config.tagger.name]

    def plan(self, kind: str):
        if kind == "train_fly":
            return train_fly([self.det], FLY_TRAINS, timeserver=self.ts,
                             tagger=self.tagger, click_channel=1)
        return train_count([self.det, self.tagger], COUNT_EVENTS, timeserver=self.ts)


def _ready(line: Line) -> None:
    """Every device connected and live: the next plan can start."""
    for device in line.devices.values():
        device.wait_for_connection(timeout=60)
    wait_until(lambda: line.ts.state.get(as_string=True) == "ON", timeout=60,
               message="TimeServer ON")
    wait_until(lambda: line.det.status.get() == "OK", timeout=60, message="detector OK")
    wait_until(lambda: bool(line.tagger.link_connected.get()), timeout=60,
               message="tagger connected")


@pytest.fixture(scope="module")
def line(tmp_path_factory, ca_ports):
    root = tmp_path_factory.mktemp("faults")
    config = load_config(environ={}).with_free_ports()
    for section, stem in (("timeserver", "FTS"), ("detector", "FDET"), ("tagger", "FTT")):
        config = config.replace_section(section, prefix=random_prefix(stem),
                                        ca_port=ca_ports.next_port())
    config = config.replace_section("detector", test_mode=True)
    data_dir, run_dir = root / "data", root / "run"
    log: list[str] = []
    beamline = Beamline(services(config, run_dir, data_dir=data_dir), log_dir=run_dir,
                        out=log.append, restart=RestartPolicy(first_delay=0.5, max_delay=2.0))
    stop = threading.Event()
    with beamline, catalog(data_dir) as client:
        supervisor = threading.Thread(target=beamline.supervise, kwargs={"until": stop},
                                      name="supervisor", daemon=True)
        supervisor.start()
        devices = make_devices(config)
        RE = RunEngine(context_managers=[])
        try:
            it = Line(config, beamline, devices, RE, client, data_dir, log)
            _ready(it)
            it.det.frames_per_point.put(1)
            it.det.trigger_mode.set(1).wait(10)
            install_timeserver_suspenders(RE, it.ts)
            subscribe(RE, client, timeserver=it.ts)
            yield it
        finally:
            stop.set()
            supervisor.join(timeout=30)
            for device in devices.values():
                device.destroy()


class Killer:
    """SIGKILL one service's process once the run has gone ``after`` trains."""

    def __init__(self, line: Line, service: str, after: int) -> None:
        self.line, self.service, self.after = line, service, after
        self.pid = line.beamline.pids()[service]
        self.killed = threading.Event()
        self.start_train: int | None = None
        self._token = line.RE.subscribe(self._on_doc, "start")
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._started = threading.Event()

    def _on_doc(self, name, doc) -> None:
        self._started.set()

    def _train(self) -> int:
        tick = self.line.ts.last_tick
        return tick.train_id if tick is not None else 0

    def _run(self) -> None:
        if not self._started.wait(PLAN_BOUND_S):
            return
        first = self._train()
        # Count trains from the TimeServer the plan uses; bounded, never a sleep.
        with contextlib.suppress(TimeoutError):
            wait_until(lambda: self._train() >= first + self.after, timeout=30,
                       message="trains before the kill")
        os.kill(self.pid, signal.SIGKILL)
        self.killed.set()

    def __enter__(self) -> Killer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.line.RE.unsubscribe(self._token)
        self._thread.join(timeout=60)


def _names(line: Line, service: str) -> tuple[str, ...]:
    """Words a failure message must contain one of, to name ``service``."""
    c = line.config
    return {
        "det-emulator": (c.detector.prefix, c.detector.name, "detector", "FPGA"),
        c.detector.name: (c.detector.prefix, c.detector.name, "detector"),
        "tagger-emulator": (c.tagger.prefix, c.tagger.name, "tagger"),
        c.tagger.name: (c.tagger.prefix, c.tagger.name, "tagger", "Pyro"),
        "timeserver": (c.timeserver.prefix, c.timeserver.name, "TimeServer"),
    }[service]


def _capture_files(line: Line) -> list[Path]:
    return sorted((line.data_dir / "detector").rglob("*.h5"))


def _statuses(run) -> dict[str, list]:
    out = {}
    for name in run:
        node = run[name]
        if "train_id_status" in set(node):
            values, counts = np.unique(np.asarray(node["train_id_status"].read()).astype(str),
                                       return_counts=True)
            out[name] = list(zip(values.tolist(), counts.tolist(), strict=True))
    return out


FLAGGED = ("events with an invalid or flagged train ID", "no valid train ID in")


def _stored_problems(run, plan: str) -> list[str]:
    """What is wrong with a stored run's train IDs, beyond events honestly flagged."""
    problems = []
    if plan == "train_fly":
        if len(run):
            result = check_train_consistency(run, min_overlap=0)
            problems = [p for p in result.problems if not any(f in p for f in FLAGGED)]
    elif "primary" in run:
        data = run["primary"].read(["train_id", "train_id_status"])
        ok = np.isin(data["train_id_status"].values.astype(str), ["OK", "EXACT"])
        problems = train_id_problems(data["train_id"].values[ok])
        problems = [p for p in problems if p != "no events"]
    if problems:
        problems.append(f"statuses {_statuses(run)}")
    return problems


SERVICES = ["det-emulator", "tagger-emulator", "timeserver", "det", "tagger"]
PLANS = ["train_fly", "train_count"]
#: ``make test`` kills every component in ``train_fly`` (where a loss is hardest: three
#: collectors in flight), and the TimeServer and the detector IOC in ``train_count`` too
#: (suspend and resume; a detector left staged). ``make fuzz`` runs the whole matrix.
IN_MAKE_TEST = {(s, "train_fly") for s in SERVICES} | {("timeserver", "train_count"),
                                                        ("det", "train_count")}
CASES = [pytest.param(s, p, id=f"{s}-{p}",
                      marks=() if (s, p) in IN_MAKE_TEST else (pytest.mark.long,))
         for p in PLANS for s in SERVICES]


@pytest.mark.parametrize(("service", "plan"), CASES)
def test_kill_component_mid_plan(line, service, plan):
    _ready(line)
    before = line.beamline.pids()
    assert before[service] is not None
    uids: list[str] = []
    token = line.RE.subscribe(lambda name, doc: uids.append(doc["uid"]), "start")
    error: BaseException | None = None
    try:
        with Killer(line, service, KILL_AFTER_TRAINS) as killer:
            try:
                line.RE(line.plan(plan))
            except Exception as exc:  # the plan may fail: the message must name the part
                error = exc
        assert killer.killed.is_set(), "the plan ended before the kill"
    finally:
        line.RE.unsubscribe(token)
    if line.RE.state != "idle":
        line.RE.abort("test cleanup")
    text = "".join(traceback.format_exception_only(error)) if error is not None else ""
    print(f"\n{service} killed during {plan}: "
          + (f"plan failed: {text.strip()}" if error is not None else "plan finished"))
    if error is not None:
        assert any(word in text for word in _names(line, service)), text

    # The supervisor brought back exactly that service, and nothing else moved.
    wait_until(lambda: line.beamline.pids()[service] not in (None, before[service]),
               timeout=BACK_WITHIN_S, message=f"{service} restarted")
    after = line.beamline.pids()
    assert {k: v for k, v in after.items() if k != service} == \
        {k: v for k, v in before.items() if k != service}, line.log
    _ready(line)

    # Nothing is left staged, so the next plan runs.
    for device in line.devices.values():
        assert device._staged == Staged.no, device.name
    (uid,) = line.RE(train_count([line.det, line.tagger], 3, timeserver=line.ts))
    assert line.client[uid].metadata["stop"]["exit_status"] == "success"

    # What was stored is consistent: every valid train ID is true (a fly's streams agree
    # train by train, a step run's IDs increase), and anything else is flagged.
    for run_uid in uids:
        assert not _stored_problems(line.client[run_uid], plan), (service, plan)
    # Every capture file opens with a plain reader (no SWMR), and its frames read: a file
    # a killed detector IOC left open was recovered when the IOC came back.
    for path in _capture_files(line):
        if path.with_name(path.name + MARKER_SUFFIX).exists():
            continue  # the live IOC is writing it
        with h5py.File(path, "r") as f:
            data = f["entry/data"]
            assert data["train_id"].shape[0] == data["data"].shape[0], path
