"""The EuXFEL run-directory layout of a stored run: which source, key and row goes where.

European XFEL stores a run as a directory of HDF5 files in its own format (EXDF, read
by ``extra_data.RunDirectory``; ``docs/data_format.rst`` of EXtra-data describes it):

- ``METADATA``: ``dataSources/{dataSourceId,root,deviceId}``, ``dataFormatVersion``,
  ``creationDate``, ``runNumber``, ``proposalNumber`` ... (1-D, one entry each);
- ``INDEX/trainId`` (and ``INDEX/flag``, 1 = a train from the timing system): the
  trains of the file, strictly increasing;
- ``INDEX/<source>/first`` and ``count`` (control sources), or
  ``INDEX/<source>/<group>/first`` and ``count`` (instrument sources): for each train
  of ``INDEX/trainId``, where its rows start and how many there are, contiguous and
  starting at 0. A train a source has nothing for has ``count`` 0;
- ``CONTROL/<source>/<key>/{value,timestamp}``: slow data, at most one entry per
  train (``RUN/<source>/...`` holds the value at the start of the run);
- ``INSTRUMENT/<source>/<group>/<key>``: fast data, any number of entries per train.

This module is the pure part of ``trainstamp export euxfel``: from the data keys of a
run's streams (their descriptors) and the train ID of each row, it decides the sources,
their keys and their train index. Nothing here reads a catalog or writes a file
(:mod:`trainstamp.storage._euxfel_write` does).

Sources (Karabo names, ``DOMAIN/TYPE/MEMBER[:CHANNEL]``), from the ``object_name`` of
each data key:

- a device with ``<det>_frame_number`` (a detector): INSTRUMENT
  ``TRAINSTAMP/DET/<det>:daqOutput``, group ``data``, one row per frame (``data.image``
  and its header ``data.trainId``, ``data.frameNumber`` ...);
- a device with ``<prefix>_first_train_id`` and ``_last_train_id`` (tagger slots):
  INSTRUMENT ``TRAINSTAMP/TAGGER/<device>:output``, one group per slot (``counts``,
  ``corr1`` ...), one row per reading;
- whatever reads a stream's ``train_id`` (the plans' stamp ``<timeserver>_stamp``, a
  fly run's ``<timeserver>_ticks``): CONTROL ``TRAINSTAMP/TIMESERVER/<timeserver>``;
- every other device read in the run (motors ...): CONTROL
  ``TRAINSTAMP/DEVICE/<device>``, one entry per train it was read in.

Keys lose the device prefix and become camelCase (``tagger_counts_first_train_id`` is
``counts.firstTrainId``; a key equal to the device name, a motor's position, is
``value``). Rows are placed at their train ID as stored: the detector's own header IDs
for frames, the event's ``train_id`` for the rest. Rows without a train ID (-1, 0) are
left out and counted; no train ID is made up, and a train a source lacks gets count 0.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np

from trainstamp.trainid import TRAIN_ID_KEY, TRAIN_ID_STATUS_KEY

__all__ = [
    "DOMAIN",
    "FORMAT_VERSION",
    "Key",
    "Source",
    "camel",
    "file_name",
    "index_of",
    "metadata_values",
    "plan_sources",
    "run_train_ids",
    "sources_table",
]

#: the DOMAIN part of every source name
DOMAIN = "TRAINSTAMP"
#: the EXDF version written: 1.0 (INDEX/trainId and INDEX/flag; what EXtra-data's own
#: writer produces); 1.2 adds only INDEX/origin
FORMAT_VERSION = "1.0"

DETECTOR, TAGGER, TIMESERVER, DEVICE = "detector", "tagger", "timeserver", "device"
_FIRST, _LAST = "_first_train_id", "_last_train_id"


@dataclass(frozen=True)
class Key:
    """One exported key: the stored data key it comes from, and its EuXFEL name."""

    name: str  # EuXFEL key, e.g. "counts.firstTrainId" (instrument) or "tickTime" (control)
    data_key: str  # the stored data key, e.g. "tagger_counts_first_train_id"


@dataclass
class Source:
    """One EuXFEL source (or one index group of an instrument source) of the export.

    ``train_key`` is the data key of ``stream`` that gives each row's train ID (for a
    detector: its header IDs, one per frame); ``image_key`` is the stored image key of a
    detector (step runs; a fly run keeps its frames only in the capture file).
    """

    kind: str
    section: str  # "CONTROL" or "INSTRUMENT"
    name: str  # e.g. "TRAINSTAMP/DET/team1k:daqOutput"
    group: str  # instrument index group ("data", "counts" ...); "" for control
    stream: str
    device: str
    train_key: str
    keys: list[Key] = field(default_factory=list)
    image_key: str | None = None
    frame_number_key: str | None = None

    @property
    def index_path(self) -> str:
        return f"{self.name}/{self.group}" if self.group else self.name

    @property
    def data_source_id(self) -> str:
        """The entry of METADATA/dataSources/dataSourceId."""
        return f"{self.section}/{self.index_path}"

    def data_path(self, key: str) -> str:
        """The dataset of an instrument key (``group.rest`` -> ``group/rest``), or the
        group of a control key (its ``value`` and ``timestamp`` go under it)."""
        return f"{self.section}/{self.name}/{key.replace('.', '/')}"


def camel(name: str) -> str:
    """``first_train_id`` -> ``firstTrainId``; camelCase, as Karabo keys are."""
    head, *rest = [p for p in name.split("_") if p]
    return head + "".join(p[:1].upper() + p[1:] for p in rest)


def _strip(key: str, prefix: str) -> str:
    if key == prefix:
        return "value"
    if key.startswith(prefix + "_"):
        return camel(key[len(prefix) + 1:])
    return camel(key)


def _exportable(info: Mapping[str, Any]) -> bool:
    """Numbers, booleans, strings and fixed-shape arrays of those; not external data."""
    if info.get("external"):
        return False
    return info.get("dtype") in ("number", "integer", "boolean", "string", "array")


def _groups(data_keys: Mapping[str, Mapping[str, Any]], stream: str) -> dict[str, list[str]]:
    groups: dict[str, list[str]] = {}
    for key, info in data_keys.items():
        groups.setdefault(str(info.get("object_name") or stream), []).append(key)
    return groups


def _detector_name(keys: Sequence[str]) -> str | None:
    for key in keys:
        if key.endswith("_frame_number"):
            return key[: -len("_frame_number")]
    return None


def _timeserver_name(obj: str, keys: Sequence[str]) -> str | None:
    """The clock of a stream is whatever reads its ``train_id`` (the plans' stamp,
    ``<timeserver>_stamp``, or a fly run's ``<timeserver>_ticks``)."""
    if TRAIN_ID_KEY not in keys:
        return None
    for suffix in ("_stamp", "_ticks"):
        if obj.endswith(suffix):
            return obj[: -len(suffix)]
    return obj


def plan_sources(streams: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> tuple[
        list[Source], list[str]]:
    """The sources of a run, from each stream's ``data_keys`` (its descriptor's).

    Returns the sources and notes on what is not exported (a stream without
    ``train_id``, keys of a type EXDF has no place for). A source name that two streams
    would share (a device in ``primary`` and ``baseline``) gets ``_<stream>`` on the
    later one.
    """
    sources: list[Source] = []
    notes: list[str] = []
    taken: set[str] = set()

    def unique(name: str, stream: str) -> str:
        base, _, channel = name.partition(":")
        out = name
        if out in taken:
            out = f"{base}_{stream}" + (f":{channel}" if channel else "")
        taken.add(out)
        return out

    for stream, data_keys in streams.items():
        for obj, keys in _groups(data_keys, stream).items():
            det = _detector_name(keys)
            slots = sorted({k[: -len(_FIRST)] for k in keys if k.endswith(_FIRST)
                            and k[: -len(_FIRST)] + _LAST in keys})
            if det is not None:
                sources.append(_detector(stream, det, keys, data_keys, unique))
                continue
            if TRAIN_ID_KEY not in data_keys:
                notes.append(f"stream {stream!r} has no {TRAIN_ID_KEY!r} key: {obj} left out")
                continue
            if slots:
                sources.extend(_tagger(stream, obj, slots, keys, data_keys, unique, notes))
                continue
            ts = _timeserver_name(obj, keys)
            kind, typ, member = ((TIMESERVER, "TIMESERVER", ts) if ts is not None
                                 else (DEVICE, "DEVICE", obj))
            src = Source(kind, "CONTROL", unique(f"{DOMAIN}/{typ}/{member}", stream), "",
                         stream, member, TRAIN_ID_KEY)
            for key in keys:
                if key == TRAIN_ID_KEY and kind == DEVICE:
                    continue  # the stamp's column: the TimeServer source has it
                if not _exportable(data_keys[key]):
                    notes.append(f"{stream}/{key}: {data_keys[key].get('dtype')} data "
                                 "not exported")
                    continue
                name = _strip(key, member) if key not in (TRAIN_ID_KEY, TRAIN_ID_STATUS_KEY) \
                    else camel(key)
                src.keys.append(Key(name, key))
            if src.keys:
                sources.append(src)
    return sources, notes


def _detector(stream, det, keys, data_keys, unique) -> Source:
    own = f"{det}_{TRAIN_ID_KEY}"
    train_key = own if own in data_keys else TRAIN_ID_KEY
    src = Source(DETECTOR, "INSTRUMENT", unique(f"{DOMAIN}/DET/{det}:daqOutput", stream),
                 "data", stream, det, train_key, frame_number_key=f"{det}_frame_number")
    src.keys.append(Key("data.image", f"{det}_image"))
    src.keys.append(Key("data.trainId", train_key))
    for key in keys:
        if key in (train_key, f"{det}_image", TRAIN_ID_KEY, TRAIN_ID_STATUS_KEY):
            continue
        if _exportable(data_keys[key]):
            src.keys.append(Key("data." + _strip(key, det), key))
    if f"{det}_image" in data_keys:
        src.image_key = f"{det}_image"
    return src


def _tagger(stream, obj, slots, keys, data_keys, unique, notes) -> list[Source]:
    out = []
    for prefix in slots:
        if prefix.startswith(obj + "_"):
            device, slot = obj, prefix[len(obj) + 1:]
        else:
            device, _, slot = prefix.rpartition("_")
            device = device or prefix
        src = Source(TAGGER, "INSTRUMENT", "", slot or "data", stream, device, TRAIN_ID_KEY)
        src.name = f"{DOMAIN}/TAGGER/{device}:output"
        for key in keys:
            if not key.startswith(prefix + "_"):
                continue
            if not _exportable(data_keys[key]):
                notes.append(f"{stream}/{key}: {data_keys[key].get('dtype')} data not exported")
                continue
            src.keys.append(Key(f"{src.group}.{camel(key[len(prefix) + 1:])}", key))
        if (src.index_path in {s.index_path for s in out}):
            continue
        out.append(src)
    # one channel per tagger; a second stream with the same device gets its own channel
    names = {s.name for s in out}
    for name in names:
        new = unique(name, stream)
        for s in out:
            if s.name == name:
                s.name = new
    return out


def run_train_ids(row_train_ids: Sequence[np.ndarray]) -> np.ndarray:
    """The trains of the export: every train ID some row has (> 0), sorted, as uint64.

    Raises ``ValueError`` if there is none (a run without train IDs).
    """
    parts = [np.asarray(a, dtype=np.int64).ravel() for a in row_train_ids]
    ids = np.unique(np.concatenate(parts)) if parts else np.empty(0, np.int64)
    ids = ids[ids > 0]
    if ids.size == 0:
        raise ValueError("the run has no train IDs: no stream has a train_id above 0 "
                         "(was it recorded with trainstamp's plans and a TimeServer?)")
    return ids.astype(np.uint64)


def index_of(row_ids: np.ndarray, train_ids: np.ndarray, *, one_per_train: bool) -> tuple[
        np.ndarray, np.ndarray, np.ndarray]:
    """The rows to write, in order, and ``first``/``count`` over ``train_ids``.

    ``row_ids`` are the stored rows' train IDs. Rows with an ID not above 0 are left
    out; the rest are sorted by train (stably, so several frames of one train keep their
    order). With ``one_per_train`` (control data) only the first row of a train is kept.
    Returns ``(rows, first, count)``: ``rows`` are indices into ``row_ids``.
    """
    ids = np.asarray(row_ids, dtype=np.int64).ravel()
    rows = np.flatnonzero(ids > 0)
    rows = rows[np.argsort(ids[rows], kind="stable")]
    if one_per_train and rows.size:
        keep = np.ones(rows.size, dtype=bool)
        keep[1:] = ids[rows][1:] != ids[rows][:-1]
        rows = rows[keep]
    tids = np.asarray(train_ids, dtype=np.int64)
    missing = np.setdiff1d(ids[rows], tids)
    if missing.size:
        raise ValueError(f"rows with train IDs {missing[:5].tolist()} that are not among "
                         "the export's trains")
    count = np.searchsorted(ids[rows], tids, side="right") - np.searchsorted(
        ids[rows], tids, side="left")
    first = np.zeros(tids.size, dtype=np.uint64)
    first[1:] = np.cumsum(count)[:-1]
    return rows, first, count.astype(np.uint64)


def metadata_values(start: Mapping[str, Any], *, now: datetime | None = None) -> dict[str, Any]:
    """The scalar METADATA datasets, from a run's start document.

    ``runNumber`` is the start document's ``run_number``, else its ``scan_id``;
    ``proposalNumber`` its ``proposal_number`` or ``proposal`` (the digits of
    ``"p900123"`` too), else 0.
    """
    def number(*names: str) -> int:
        for n in names:
            value = start.get(n)
            if isinstance(value, bool) or value is None:
                continue
            if isinstance(value, int | np.integer):
                return max(int(value), 0)
            digits = re.sub(r"\D", "", str(value))
            if digits:
                return int(digits)
        return 0

    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    return {
        "dataFormatVersion": FORMAT_VERSION,
        "creationDate": stamp,
        "updateDate": stamp,
        "runNumber": number("run_number", "scan_id"),
        "proposalNumber": number("proposal_number", "proposal"),
        "sequenceNumber": 0,
        "daqLibrary": "trainstamp",
    }


def file_name(run_number: int, aggregator: str, sequence: int = 0) -> str:
    """EuXFEL file name: ``RAW-R0012-DA01-S00000.h5``."""
    if not re.fullmatch(r"[A-Z0-9]+", aggregator):
        raise ValueError(f"aggregator {aggregator!r} must be upper-case letters and digits")
    return f"RAW-R{run_number % 10000:04d}-{aggregator}-S{sequence:05d}.h5"


def sources_table(sources: Sequence[Source]) -> dict[str, list[str]]:
    """METADATA/dataSources: ``dataSourceId``, ``root`` and ``deviceId`` (sorted)."""
    ids = sorted({s.data_source_id for s in sources})
    return {"dataSourceId": ids, "root": [i.split("/", 1)[0] for i in ids],
            "deviceId": [i.split("/", 1)[1] for i in ids]}
