"""Spool files: the line codec, and reading a spool back with every check.

One spool file holds one run: a ``{"name": ..., "doc": ..., "crc32": ...}`` object per
line, in the order the documents came. ``crc32`` is the CRC-32 of the document's JSON
text as written, so a byte changed anywhere in a document is caught; lines without it
(bluesky-tiled-plugins' own JSON-lines backups) are read too, and noted. Numpy arrays
are written as ``{"__ndarray__": list, "dtype": str, "shape": list}`` so a replay gives
back the same dtype and shape; byte strings as ``{"__bytes__": base64}``.

:func:`read_spool` reads a file one line at a time and checks it as a whole before
anything is replayed (:func:`check_document`): one start document first, every
document of that run, no uid twice, every reference (event to descriptor, datum to
resource, an event's external value to its datum) to a document before it, sequence
numbers without gaps, and a stop document, if any, last. Only the last line may be cut
short (a process killed while writing it). Anything else is a :class:`SpoolError`
naming the file and line.
"""

from __future__ import annotations

import base64
import itertools
import json
import math
import os
import stat
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "DOCUMENT_NAMES",
    "MAX_LINE_BYTES",
    "SPOOL_SUFFIX",
    "Spool",
    "SpoolError",
    "decode_line",
    "encode_line",
    "iter_documents",
    "pending_spools",
    "read_spool",
]

#: The event-model document names a spool may hold.
DOCUMENT_NAMES = frozenset({
    "start", "descriptor", "event", "event_page", "resource", "datum", "datum_page",
    "stream_resource", "stream_datum", "stop",
})
SPOOL_SUFFIX = ".jsonl"


def _encode_default(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        return {"__ndarray__": obj.tolist(), "dtype": obj.dtype.str, "shape": list(obj.shape)}
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    if isinstance(obj, (bytes, bytearray)):
        # Byte strings (CA string waveforms, numpy "S" arrays) as base64.
        return {"__bytes__": base64.b64encode(bytes(obj)).decode("ascii")}
    raise TypeError(f"a {type(obj).__name__} cannot be spooled")


_ARRAY_KEYS = {"__ndarray__", "dtype", "shape"}


def _restore(obj: Any) -> Any:
    """Numpy arrays back from their JSON form, anywhere in a decoded document."""
    if isinstance(obj, dict):
        if obj.keys() == _ARRAY_KEYS:
            try:
                return np.asarray(_restore(obj["__ndarray__"]), dtype=np.dtype(obj["dtype"])).reshape(
                    obj["shape"])
            except (TypeError, ValueError) as exc:
                raise ValueError(f"a bad array ({exc})") from None
        if obj.keys() == {"__bytes__"}:
            try:
                return base64.b64decode(obj["__bytes__"], validate=True)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"bad base64 bytes ({exc})") from None
        return {k: _restore(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_restore(v) for v in obj]
    return obj


def _crc(text: str) -> int:
    return zlib.crc32(text.encode("utf-8"))


def encode_line(name: str, doc: dict) -> str:
    """One spool line (with its newline) for document ``name``, with its checksum."""
    body = json.dumps(doc, default=_encode_default)
    return f'{{"name": {json.dumps(name)}, "doc": {body}, "crc32": {_crc(body)}}}\n'


def _decode(line: str) -> tuple[str, dict, bool]:
    try:
        item = json.loads(line)
    except (json.JSONDecodeError, TypeError, ValueError, RecursionError) as exc:
        raise ValueError(f"not a JSON document line ({str(exc)[:80]})") from None
    if not isinstance(item, dict) or set(item) - {"crc32"} != {"name", "doc"}:
        raise ValueError('expected an object with the keys "name", "doc" (and "crc32")')
    name, doc = item["name"], item["doc"]
    if not isinstance(name, str) or name not in DOCUMENT_NAMES:
        raise ValueError(f"unknown document name {str(name)[:40]!r}")
    if not isinstance(doc, dict):
        raise ValueError(f"the {name} document is not an object")
    checked = "crc32" in item
    if checked and item["crc32"] != _crc(json.dumps(doc)):
        raise ValueError(f"the {name} document does not match its checksum (damaged)")
    return name, _restore(doc), checked


def decode_line(line: str) -> tuple[str, dict]:
    """``(name, doc)`` from one spool line; ``ValueError`` says what is wrong with it."""
    name, doc, _ = _decode(line)
    return name, doc


class SpoolError(ValueError):
    """A spool file that cannot be replayed as it is (the message names file and line)."""


#: The longest spool line read (one document; a large event page is a few MB).
MAX_LINE_BYTES = 256 * 2**20


@dataclass
class Spool:
    """A checked spool file (see :func:`read_spool`): what it holds, without holding it.

    :meth:`documents` reads the documents again, one at a time, so a replay needs the
    memory of one document, not of the run.
    """

    path: Path
    uid: str = ""
    #: Lines that hold a document (a last line cut short is not counted).
    count: int = 0
    stopped: bool = False
    #: A last line cut short (the writing process died in the middle of it).
    truncated_tail: bool = False
    notes: list[str] = field(default_factory=list)
    events: dict[str, int] = field(default_factory=dict)
    last_time: float | None = None

    def event_counts(self) -> dict[str, int]:
        """Events per stream name, counted from the spooled documents."""
        return dict(self.events)

    def documents(self) -> Iterator[tuple[str, dict]]:
        """The spooled documents, in order."""
        for _, line in zip(range(self.count), _lines(self.path), strict=False):
            yield decode_line(line[1])


def _lines(path: Path) -> Iterator[tuple[bool, str]]:
    """``(ends with a newline, text)`` per line of a spool file; SpoolError for a file
    that is not a regular UTF-8 file or has a line over :data:`MAX_LINE_BYTES`."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            raise SpoolError(f"{path}: not a regular file")
        handle = open(path, "rb")  # noqa: SIM115 - closed below
    except OSError as exc:
        raise SpoolError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    with handle:
        for number in itertools.count(1):
            raw = handle.readline(MAX_LINE_BYTES + 1)
            if not raw:
                return
            complete = raw.endswith(b"\n")
            if len(raw) > MAX_LINE_BYTES:
                raise SpoolError(f"{path}:{number}: a line longer than "
                                 f"{MAX_LINE_BYTES // 2**20} MiB")
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                if not complete:  # a last line cut inside a character
                    yield False, raw.decode("utf-8", errors="replace")
                    return
                raise SpoolError(f"{path}:{number}: not UTF-8 text (byte {exc.start})") from None
            yield complete, text[:-1] if complete else text


def read_spool(path: str | os.PathLike) -> Spool:
    """Read and check a spool file, one line at a time.

    Every line must decode (:func:`decode_line`); the first document is the run's start
    document, every other document belongs to it, and a stop document, if any, comes
    last. Only the very last line may be cut short (a process killed while writing it):
    it is left out and noted. Anything else raises :class:`SpoolError` naming the line,
    and nothing is replayed from a damaged file.
    """
    spool = Spool(Path(path))
    state = _RunState()
    unchecked = 0
    for number, (complete, line) in enumerate(_lines(spool.path), start=1):
        try:
            name, doc, checked = _decode(line)
            state.check(spool, name, doc)
        except ValueError as exc:
            if not complete:
                spool.truncated_tail = True
                spool.notes.append(f"line {number} was cut short (the writing process died "
                                   "while writing it) and is left out")
                break
            raise SpoolError(f"{spool.path}:{number}: {exc}") from None
        unchecked += not checked
        spool.count = number
    if spool.count == 0:
        raise SpoolError(f"{spool.path}: no documents")
    if unchecked:
        spool.notes.append(f"{unchecked} line(s) carry no checksum (written by another "
                           "program); their contents could not be verified")
    return spool


@dataclass
class _RunState:
    """What the documents read so far define, to check each next one against."""

    uids: set = field(default_factory=set)
    descriptors: dict = field(default_factory=dict)  # uid -> [stream, last seq_num, datum keys]
    resources: set = field(default_factory=set)
    datums: set = field(default_factory=set)

    def _new(self, what: str, uid: Any) -> None:
        if not isinstance(uid, str):
            raise ValueError(f"the {what} has no uid")
        if uid in self.uids:
            raise ValueError(f"a second {what} with uid {uid[:40]!r}")
        self.uids.add(uid)

    def _descriptor(self, name: str, doc: dict) -> list:
        found = self.descriptors.get(doc.get("descriptor"))
        if found is None:
            raise ValueError(f"{name} of descriptor {str(doc.get('descriptor'))[:40]!r}, "
                             "which is not before it in the spool")
        return found

    def _events(self, found: list, seqs: list, values: dict) -> None:
        stream, last, datum_keys = found
        if seqs != list(range(last + 1, last + 1 + len(seqs))):
            raise ValueError(f"{stream} events numbered {seqs[:3]}..., after {last}: a gap "
                             "or a repeat")
        found[1] = last + len(seqs)
        for key in datum_keys & values.keys():
            for value in values[key]:
                if isinstance(value, str) and value not in self.datums:
                    raise ValueError(f"{key} refers to datum {value[:40]!r}, which is not "
                                     "before it in the spool")

    def check(self, spool: Spool, name: str, doc: dict) -> None:
        """Check ``doc`` against the run so far (ValueError names the problem), then
        record it in ``spool``."""
        if spool.stopped:
            raise ValueError("documents after the stop document")
        if not spool.uid:
            if name != "start" or not isinstance(doc.get("uid"), str):
                raise ValueError(f"the first document must be a start document with a uid, "
                                 f"got {name!r}")
            spool.uid = doc["uid"]
        elif name == "start":
            raise ValueError("a second start document")
        names_run = name in ("descriptor", "stop") or (
            name in ("resource", "stream_resource") and "run_start" in doc)
        if names_run and doc.get("run_start") != spool.uid:
            raise ValueError(f"{name} of run {str(doc.get('run_start'))[:40]!r}, not of "
                             f"{spool.uid!r}")
        if name in ("start", "descriptor", "event", "resource", "stop", "stream_resource",
                    "stream_datum"):
            self._new(name, doc.get("uid"))
        if name == "descriptor":
            keys = doc.get("data_keys") if isinstance(doc.get("data_keys"), dict) else {}
            datum_keys = {k for k, v in keys.items()
                          if isinstance(v, dict) and str(v.get("external", "")).startswith("FILESTORE")}
            self.descriptors[doc["uid"]] = [str(doc.get("name", "primary")), 0, datum_keys]
        elif name == "resource":
            self.resources.add(doc["uid"])
        elif name in ("datum", "datum_page"):
            if doc.get("resource") not in self.resources:
                raise ValueError(f"{name} of resource {str(doc.get('resource'))[:40]!r}, "
                                 "which is not before it in the spool")
            ids = doc.get("datum_id")
            for datum_id in ids if name == "datum_page" and isinstance(ids, list) else [ids]:
                self._new("datum", datum_id)
                self.datums.add(datum_id)
        elif name == "event":
            found = self._descriptor(name, doc)
            data = doc.get("data") if isinstance(doc.get("data"), dict) else {}
            self._events(found, [doc.get("seq_num")], {k: [v] for k, v in data.items()})
        elif name == "event_page":
            found = self._descriptor(name, doc)
            uids, seqs = doc.get("uid"), doc.get("seq_num")
            data = doc.get("data") if isinstance(doc.get("data"), dict) else {}
            if not isinstance(uids, list) or not isinstance(seqs, list) or len(uids) != len(seqs):
                raise ValueError("an event page without matching uid and seq_num lists")
            for uid in uids:
                self._new("event", uid)
            self._events(found, seqs, {k: v for k, v in data.items() if isinstance(v, list)})
        elif name == "stream_datum":
            self._descriptor(name, doc)
        elif name == "stop":
            said = doc.get("num_events")
            if isinstance(said, dict):
                counted = spool.event_counts()
                for stream, n in said.items():
                    if n != counted.get(stream, 0):
                        raise ValueError(f"the stop document counts {n} {stream} events, the "
                                         f"spool holds {counted.get(stream, 0)}")
        if name in ("event", "event_page"):
            stream = self.descriptors[doc["descriptor"]][0]
            n = 1 if name == "event" else len(doc["seq_num"])
            spool.events[stream] = spool.events.get(stream, 0) + n
        spool.stopped = name == "stop"
        _note_time(spool, doc)


def _note_time(spool: Spool, doc: dict) -> None:
    times = doc.get("time")
    for t in times if isinstance(times, list) else [times]:
        if isinstance(t, (int, float)) and not isinstance(t, bool) and math.isfinite(t):
            spool.last_time = t if spool.last_time is None else max(spool.last_time, t)


def pending_spools(spool_dir: str | os.PathLike) -> list[Path]:
    """Spool files waiting in ``spool_dir`` (runs not in any catalog yet), oldest first."""
    directory = Path(spool_dir)
    try:
        files = [p for p in directory.iterdir() if p.suffix == SPOOL_SUFFIX and p.is_file()]
    except OSError:
        return []
    return sorted(files, key=lambda p: p.stat().st_mtime)


def iter_documents(spool: Spool) -> Iterator[tuple[str, dict]]:
    """The spool's documents, closed with a stop document if the run never stopped.

    A spool without a stop document is what a process killed mid-run leaves. The stop
    added here says so: ``exit_status`` ``"abort"``, a ``reason``, the event counts, and
    the time of the last spooled document.
    """
    yield from spool.documents()
    if spool.stopped:
        return
    import uuid

    yield "stop", {
        "uid": str(uuid.uuid4()), "run_start": spool.uid,
        "time": spool.last_time if spool.last_time is not None else 0.0,
        "exit_status": "abort",
        "reason": "the writing process ended before the run stopped; closed by "
                  f"trainstamp replay from {spool.path.name}",
        "num_events": spool.event_counts(),
    }
