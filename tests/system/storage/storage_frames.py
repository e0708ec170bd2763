"""Helpers for the storage system tests: a detector that writes real HDF5 frames and
emits AD_HDF5 Resource/Datum documents (as the TEAM1k device does), a fake TimeServer
on a stepping clock, and a second process that locks the catalog's SQLite file."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
import uuid
from collections import OrderedDict
from pathlib import Path

import h5py
import numpy as np
from event_model import compose_resource
from ophyd import Component as Cpt
from ophyd import Device, Signal
from ophyd.sim import make_fake_device
from ophyd.status import Status

from trainstamp.plans import TrainStamp
from trainstamp.testing import wait_until
from trainstamp.timing.device import TimeServer

FIRST_ID = 7_000_000
P_NS = 100_000_000
SHAPE = (4, 6)


def frame_of(train_id: int) -> np.ndarray:
    """The frame the detector takes at ``train_id`` (so a test can recompute it)."""
    return (np.arange(SHAPE[0] * SHAPE[1], dtype=np.uint16).reshape(SHAPE)
            + np.uint16(train_id % 1000))


class FrameDetector(Device):
    """One frame per trigger into ``<root>/<name>_<id>.h5`` (``entry/data/data``), with
    the frame's exact train ID as ``<name>_train_id``."""

    gain = Cpt(Signal, value=2.0, kind="config")

    def __init__(self, root: Path, *, name: str = "det", first_train: int = FIRST_ID + 100,
                 **kwargs) -> None:
        super().__init__(name=name, **kwargs)
        self.frames_dir = Path(root)
        self.next_train = first_train
        self._file = None
        self._asset_docs: list = []
        self._datum = None
        self._last: dict = {}
        self._n = 0

    def stage(self):
        self.frames_dir.mkdir(parents=True, exist_ok=True)
        name = f"{self.name}_{uuid.uuid4().hex[:8]}.h5"
        self._file = h5py.File(self.frames_dir / name, "w")
        self._file.create_dataset("entry/data/data", shape=(0, *SHAPE), maxshape=(None, *SHAPE),
                                  dtype="<u2")
        resource, self._datum, _ = compose_resource(
            start={"uid": "replaced by the RunEngine"}, spec="AD_HDF5", root=str(self.frames_dir),
            resource_path=name, resource_kwargs={"frame_per_point": 1})
        resource.pop("run_start", None)
        self._asset_docs.append(("resource", resource))
        self._n = 0
        return super().stage()

    def unstage(self):
        if self._file is not None:
            self._file.close()
            self._file = None
        return super().unstage()

    def trigger(self):
        train = self.next_train
        self.next_train += 1
        data = self._file["entry/data/data"]
        data.resize(self._n + 1, axis=0)
        data[self._n] = frame_of(train)
        self._file.flush()
        datum = self._datum({"point_number": self._n})
        self._asset_docs.append(("datum", datum))
        self._n += 1
        self._last = {"image": datum["datum_id"], "train_id": train, "time": time.time()}
        status = Status(obj=self)
        status.set_finished()
        return status

    def read(self):
        out = super().read()
        for key in ("image", "train_id"):
            if key in self._last:
                out[f"{self.name}_{key}"] = {"value": self._last[key],
                                             "timestamp": self._last["time"]}
        return out

    def describe(self):
        out = super().describe()
        out[f"{self.name}_image"] = {"source": "test", "dtype": "array",
                                     "shape": [1, *SHAPE], "dtype_numpy": "<u2",
                                     "external": "FILESTORE:"}
        out[f"{self.name}_train_id"] = {"source": "test", "dtype": "integer", "shape": [],
                                        "dtype_numpy": "<i8"}
        return out

    def collect_asset_docs(self):
        docs, self._asset_docs = self._asset_docs, []
        yield from docs

    def read_configuration(self):
        return OrderedDict(super().read_configuration())


class SteppingClock:
    """Each call is one train later than the last."""

    def __init__(self, t0_ns: int) -> None:
        self.t_ns = t0_ns + P_NS // 2 - P_NS

    def __call__(self) -> int:
        self.t_ns += P_NS
        return self.t_ns


def fake_timeserver() -> tuple[TimeServer, TrainStamp]:
    """A TimeServer with one tick at FIRST_ID now, and a stamp one train per read."""
    t0 = time.time_ns()
    ts = make_fake_device(TimeServer)("TS:", name="timeserver")
    ts.period.sim_put(P_NS // 1000)
    ts.source.sim_put("local:internal")
    ts._on_id(value=FIRST_ID, timestamp=t0 / 1e9)
    return ts, TrainStamp(ts, clock_ns=SteppingClock(t0))


class SQLiteLocker:
    """A second process that holds an exclusive lock on an SQLite file until released:
    every write (and read) of the catalog from elsewhere fails meanwhile."""

    SCRIPT = textwrap.dedent("""
        import sqlite3, sys
        db = sqlite3.connect(sys.argv[1], isolation_level=None)
        db.execute("BEGIN EXCLUSIVE")
        print("LOCKED", flush=True)
        sys.stdin.readline()
        db.execute("COMMIT")
        print("RELEASED", flush=True)
    """)

    def __init__(self, path: Path) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", self.SCRIPT, str(path)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()  # the child exits (EOF) if it cannot lock
        if line.strip() != "LOCKED":
            self.proc.kill()
            raise RuntimeError(f"could not lock {path}: {line!r}")

    def release(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.write("\n")
            self.proc.stdin.flush()
            self.proc.stdout.readline()
            self.proc.wait(10)
        self.proc.stdin.close()
        self.proc.stdout.close()


HOLDER = textwrap.dedent("""
    import sys
    from bluesky import RunEngine
    from bluesky.plans import count
    from ophyd.sim import det1
    from trainstamp.storage import open_catalog, subscribe
    client = open_catalog(sys.argv[1])
    if sys.argv[2] == "write":
        RE = RunEngine(context_managers=[])
        subscribe(RE, client)
        RE(count([det1], 2))
    print("HOLDING", flush=True)
    sys.stdin.readline()
""")


class Holder:
    """A second process that opens the catalog (and, with ``write``, stores a run), then
    keeps it open until the test ends it."""

    def __init__(self, data_dir, mode: str) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(data_dir), mode],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
        lines: list[str] = []

        def holding() -> bool:
            line = self.proc.stdout.readline()
            lines.append(line)
            if not line and self.proc.poll() is not None:
                raise RuntimeError("".join(lines))
            return line.strip() == "HOLDING"

        wait_until(holding, timeout=120, interval=0, message=lambda: "".join(lines))

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.write("\n")
            self.proc.stdin.flush()
            self.proc.wait(30)
        self.proc.stdin.close()
        self.proc.stdout.close()
