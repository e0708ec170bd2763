"""Runs with known train IDs, written by a RunEngine through the trainstamp writer.

Small in-test devices stand in for the IOCs with the same data keys:

- :class:`FrameDetector` writes one frame per trigger into an HDF5 file (``AD_HDF5``
  Resource/Datum, like ``Team1k``): ``<name>_image``, ``<name>_train_id``,
  ``<name>_frame_number``. Each frame is filled with ``train_id % 65536``.
- :class:`SlotTagger` reads like one ``TimeTagger`` slot: ``<name>_corr1_data`` (counts
  = train + bin), ``_index``, ``_g2``, ``_first_train_id``/``_last_train_id``.
- :class:`Beam` is the train clock: ``train_id``/``train_id_status`` readings (the stamp)
  and ``train_id_at`` for the writer's stop stamper.
"""

from __future__ import annotations

import itertools
import time
from collections import OrderedDict
from pathlib import Path

import h5py
import numpy as np
from bluesky import RunEngine
from bluesky import plan_stubs as bps
from bluesky import preprocessors as bpp
from event_model import compose_resource
from ophyd.status import StatusBase

from trainstamp.storage import make_writer
from trainstamp.timing._core import Stamp, StampStatus

SHAPE = (4, 6)
N_BINS = 16
BIN_PS = 100


def _done() -> StatusBase:
    status = StatusBase()
    status.set_finished()
    return status


class Beam:
    """The current train, set by the plan; reads like a TrainStamp."""

    name = "beam"
    parent = None

    def __init__(self) -> None:
        self.train = 0

    def train_id_at(self, t_ns: int | None = None) -> Stamp:
        return Stamp(self.train, StampStatus.OK)

    def read(self):
        now = time.time()
        return OrderedDict(train_id={"value": self.train, "timestamp": now},
                           train_id_status={"value": "OK", "timestamp": now})

    def describe(self):
        return OrderedDict(
            train_id={"source": "beam", "dtype": "integer", "shape": [], "dtype_numpy": "<i8"},
            train_id_status={"source": "beam", "dtype": "string", "shape": []})

    def read_configuration(self):
        return OrderedDict()

    def describe_configuration(self):
        return OrderedDict()


class FrameDetector:
    """One HDF5 frame per trigger, exact train ID from the beam."""

    parent = None

    def __init__(self, name: str, beam: Beam, root: Path) -> None:
        self.name, self.beam, self.root = name, beam, Path(root)
        self._docs: list = []
        self._count = itertools.count(1)

    def stage(self):
        self.root.mkdir(parents=True, exist_ok=True)
        rel = f"{self.name}_{next(self._count)}_{time.time_ns()}.h5"
        self._file = h5py.File(self.root / rel, "w")
        self._data = self._file.create_dataset("entry/data/data", shape=(0, *SHAPE),
                                               maxshape=(None, *SHAPE), dtype="<u2")
        resource, self._datum, _ = compose_resource(
            start={"uid": "set by the RunEngine"}, spec="AD_HDF5", root=str(self.root),
            resource_path=rel, resource_kwargs={"frame_per_point": 1})
        resource.pop("run_start", None)
        self._docs.append(("resource", resource))
        self._n = 0
        return [self]

    def unstage(self):
        self._file.close()
        return [self]

    def trigger(self):
        n = self._n
        self._data.resize(n + 1, axis=0)
        self._data[n] = self.beam.train % 65536
        self._file.flush()
        datum = self._datum({"point_number": n})
        self._docs.append(("datum", datum))
        self._last = (datum["datum_id"], self.beam.train, 5000 + self.beam.train)
        self._n += 1
        return _done()

    def read(self):
        now = time.time()
        datum_id, train, frame = self._last
        return OrderedDict([(f"{self.name}_image", {"value": datum_id, "timestamp": now}),
                            (f"{self.name}_train_id", {"value": train, "timestamp": now}),
                            (f"{self.name}_frame_number", {"value": frame, "timestamp": now})])

    def describe(self):
        return OrderedDict([
            (f"{self.name}_image", {"source": "test", "dtype": "array", "shape": [1, *SHAPE],
                                    "dtype_numpy": "<u2", "external": "FILESTORE:"}),
            (f"{self.name}_train_id", {"source": "test", "dtype": "integer", "shape": [],
                                       "dtype_numpy": "<u8"}),
            (f"{self.name}_frame_number", {"source": "test", "dtype": "integer", "shape": [],
                                           "dtype_numpy": "<u8"})])

    def collect_asset_docs(self):
        docs, self._docs = self._docs, []
        yield from docs

    def read_configuration(self):
        return OrderedDict()

    def describe_configuration(self):
        return OrderedDict()


class SlotTagger:
    """A correlation slot covering ``trains`` trains per reading (ending at the beam's)."""

    parent = None

    def __init__(self, name: str, beam: Beam, trains: int = 1) -> None:
        self.name, self.beam, self.trains = name, beam, trains

    def trigger(self):
        return _done()

    def read(self):
        now, last = time.time(), self.beam.train
        p = f"{self.name}_corr1_"
        values = {
            "data": (last + np.arange(N_BINS)).astype(np.int32),
            "index": (np.arange(N_BINS) - N_BINS // 2) * BIN_PS,
            "g2": np.full(N_BINS, 1.0 + last / 1e6),
            "first_train_id": last - self.trains + 1,
            "last_train_id": last,
            "capture_duration": 0.1 * self.trains,
        }
        return OrderedDict((p + k, {"value": v, "timestamp": now}) for k, v in values.items())

    def describe(self):
        p = f"{self.name}_corr1_"
        arr = {"source": "test", "dtype": "array", "shape": [N_BINS]}
        return OrderedDict([
            (p + "data", {**arr, "dtype_numpy": "<i4"}),
            (p + "index", {**arr, "dtype_numpy": "<i8"}),
            (p + "g2", {**arr, "dtype_numpy": "<f8"}),
            (p + "first_train_id", {"source": "test", "dtype": "integer", "shape": []}),
            (p + "last_train_id", {"source": "test", "dtype": "integer", "shape": []}),
            (p + "capture_duration", {"source": "test", "dtype": "number", "shape": []})])

    def read_configuration(self):
        return OrderedDict()

    def describe_configuration(self):
        return OrderedDict()


def step_run(beam: Beam, devices: list, trains: list[int], md: dict | None = None):
    """One event per train in ``trains`` (primary), devices read in the same event."""

    @bpp.stage_decorator([d for d in devices if hasattr(d, "stage")])
    @bpp.run_decorator(md={"train_id_start": trains[0], **(md or {})})
    def inner():
        for train in trains:
            beam.train = train
            yield from bps.trigger_and_read([*devices, beam])
        beam.train = trains[-1]

    return (yield from inner())


def fly_like_run(beam: Beam, detector: FrameDetector, tagger: SlotTagger, trains: list[int]):
    """Detector events in stream ``detector.name`` every train; tagger events in stream
    ``tagger.name`` every ``tagger.trains`` trains (each covering those trains, stamped
    with the last of them)."""

    @bpp.stage_decorator([detector])
    @bpp.run_decorator(md={"train_id_start": trains[0]})
    def inner():
        for i, train in enumerate(trains, start=1):
            beam.train = train
            yield from bps.trigger_and_read([detector], name=detector.name)
            if i % tagger.trains == 0:
                yield from bps.trigger_and_read([tagger, beam], name=tagger.name)

    return (yield from inner())


def run_engine(client) -> tuple[RunEngine, Beam]:
    beam = Beam()
    RE = RunEngine(call_returns_result=False)
    RE.subscribe(make_writer(client, timeserver=beam))
    return RE, beam
