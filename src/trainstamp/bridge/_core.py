"""The pure core of the karabo-bridge stream: trains assembled from parts, the bounded
newest-wins queue, and the protocol 2.2 message of one train.

Nothing here opens a socket or a file. A train is put together from *parts*, one per
source (the TimeServer tick, the detector frame, the tagger counts), which arrive at
different times and from different threads (the tick at once, the frame when the
capture file is flushed, the counts when the tagger server is polled). The
:class:`Assembler` keeps the trains still missing a part and hands out each train once,
in increasing train-ID order; the :class:`NewestQueue` sits between it and the client,
and never makes the producer wait; :func:`encode` builds the multipart message that
``karabo_bridge.Client`` decodes.

The message format (karabo-bridge protocol 2.2, as ``karabo_bridge.serializer``
writes it): for each source, in sorted order, a msgpack header ``{"source", "content":
"msgpack", "metadata"}`` and a msgpack dict of its scalar data; then, for each array of
that source, a header ``{"source", "content": "array", "path", "dtype", "shape"}`` and
the raw C-ordered bytes of the array.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import msgpack
import numpy as np

from trainstamp.trainid import SOURCE_JUMP_TRAINS

__all__ = [
    "DOMAIN",
    "Assembler",
    "NewestQueue",
    "Part",
    "Train",
    "detector_source",
    "encode",
    "metadata",
    "resolve",
    "tagger_source",
    "timeserver_source",
]

#: The DOMAIN of every source name, as in ``trainstamp export euxfel``.
DOMAIN = "TRAINSTAMP"


def timeserver_source(name: str) -> str:
    """Source name of the TimeServer ``name`` (the export's CONTROL source)."""
    return f"{DOMAIN}/TIMESERVER/{name}"


def detector_source(name: str) -> str:
    """Source name of detector ``name`` (the export's INSTRUMENT source)."""
    return f"{DOMAIN}/DET/{name}:daqOutput"


def tagger_source(name: str) -> str:
    """Source name of tagger ``name`` (the export's INSTRUMENT source)."""
    return f"{DOMAIN}/TAGGER/{name}:output"


@dataclass
class Part:
    """What one source has for one train.

    ``data`` maps keys (``"data.trainId"``) to scalars, strings or numpy arrays;
    ``lazy`` maps keys to callables that give the value (or ``None`` when it cannot be
    had) only when the train is sent, so a train that is skipped never costs the read
    of its frame. ``time_ns`` is when the source recorded it (UNIX ns), the source's
    timestamp in the message metadata.
    """

    data: dict[str, Any]
    time_ns: int
    lazy: dict[str, Callable[[], Any]] = field(default_factory=dict)


@dataclass
class Train:
    """One train's parts, keyed by source name."""

    train_id: int
    parts: dict[str, Part]


class Assembler:
    """Collects parts by train and releases each train once, in increasing order.

    ``sources`` are the parts a train may have; a train is released as soon as it has
    all of them. A train still missing some is released (with the parts it has) only if
    it has every ``required`` source, when a later train is released, when more than
    ``max_pending`` trains are waiting (the oldest goes), when it has waited
    ``max_wait_ns`` since its first part (:meth:`expire`, with the clock the caller
    passes), or at :meth:`flush` (end of run); otherwise it is dropped and counted in
    ``incomplete``. A part of a train
    already released or dropped is counted in ``late`` and ignored, so the order of
    released train IDs only ever increases, except when the train source restarts: a
    train ID more than :data:`~trainstamp.trainid.SOURCE_JUMP_TRAINS` below the last
    one starts the order over (the trains pending are dropped; ``restarts`` counts
    it). Not thread-safe: one lock around it (the
    :class:`~trainstamp.bridge.Bridge` holds it).
    """

    def __init__(self, sources: Iterable[str], required: Iterable[str] | None = None,
                 *, max_pending: int = 200, max_wait_ns: int | None = None) -> None:
        self.sources = frozenset(sources)
        self.required = self.sources if required is None else frozenset(required)
        if not self.required <= self.sources:
            raise ValueError(f"required sources {sorted(self.required - self.sources)} "
                             "are not among the sources")
        if max_pending < 1:
            raise ValueError(f"max_pending must be >= 1, got {max_pending}")
        self.max_pending = max_pending
        self.max_wait_ns = max_wait_ns
        self._pending: dict[int, dict[str, Part]] = {}
        self._since: dict[int, int] = {}  # train -> when its first part came (now_ns)
        self.last_train_id = 0  # the last train released or dropped
        self.released = 0
        self.incomplete = 0
        self.late = 0
        self.restarts = 0

    @property
    def pending(self) -> int:
        return len(self._pending)

    def add(self, source: str, train_id: int, part: Part,
            now_ns: int | None = None) -> list[Train]:
        """Add ``source``'s part of ``train_id``; return the trains now released.

        ``now_ns`` (any monotonic clock) starts the wait of a new train and expires the
        trains that waited too long (:meth:`expire`)."""
        if source not in self.sources:
            raise ValueError(f"unknown source {source!r} (sources: {sorted(self.sources)})")
        if train_id < self.last_train_id - SOURCE_JUMP_TRAINS:
            self.incomplete += len(self._pending)
            self._pending.clear()
            self._since.clear()
            self.last_train_id = 0
            self.restarts += 1
        if train_id <= self.last_train_id:
            self.late += 1
            return []
        parts = self._pending.setdefault(train_id, {})
        parts[source] = part
        if now_ns is not None:
            self._since.setdefault(train_id, now_ns)
        out: list[Train] = []
        if parts.keys() >= self.sources:
            out = self._release_through(train_id)
        while len(self._pending) > self.max_pending:
            out += self._release_through(min(self._pending))
        if now_ns is not None:
            out += self.expire(now_ns)
        return out

    def expire(self, now_ns: int) -> list[Train]:
        """Release the newest train that has every required source and has waited
        ``max_wait_ns`` (and, before it, the older ones that can go): a source that is
        only wanted, not required, never holds a train back longer than that."""
        if self.max_wait_ns is None:
            return []
        due = [t for t, since in self._since.items()
               if now_ns - since >= self.max_wait_ns and self._pending[t].keys() >= self.required]
        return self._release_through(max(due)) if due else []

    def flush(self) -> list[Train]:
        """Release (or drop) every pending train: the run is over."""
        if not self._pending:
            return []
        return self._release_through(max(self._pending))

    def _release_through(self, train_id: int) -> list[Train]:
        out = []
        for tid in sorted(t for t in self._pending if t <= train_id):
            parts = self._pending.pop(tid)
            self._since.pop(tid, None)
            self.last_train_id = tid
            if parts.keys() >= self.required:
                out.append(Train(tid, parts))
                self.released += 1
            else:
                self.incomplete += 1
        return out


class NewestQueue:
    """A bounded queue between the producer and the client that never blocks ``put``.

    ``put`` appends; when ``maxlen`` items are already waiting the oldest is dropped and
    counted in ``skipped``. ``get`` takes the oldest waiting item, so with the default
    ``maxlen`` of 1 a slow client always gets the newest train, and a deeper queue lets
    a client that falls behind for a moment catch up on up to ``maxlen`` trains.
    """

    def __init__(self, maxlen: int = 1) -> None:
        if maxlen < 1:
            raise ValueError(f"queue depth must be >= 1, got {maxlen}")
        self.maxlen = maxlen
        self._items: deque[Any] = deque()
        self._cond = threading.Condition()
        self.put_count = 0
        self.skipped = 0

    def __len__(self) -> int:
        return len(self._items)

    def put(self, item: Any) -> None:
        with self._cond:
            if len(self._items) >= self.maxlen:
                self._items.popleft()
                self.skipped += 1
            self._items.append(item)
            self.put_count += 1
            self._cond.notify()

    def get(self, timeout: float | None = None) -> Any | None:
        """The oldest waiting item, or ``None`` after ``timeout`` seconds without one."""
        with self._cond:
            if not self._items and not self._cond.wait_for(lambda: bool(self._items), timeout):
                return None
            return self._items.popleft()


def metadata(source: str, train_id: int, time_ns: int) -> dict[str, Any]:
    """A source's karabo-bridge metadata: its name, timestamp and train ID.

    ``timestamp.frac`` is the fraction of the second in attoseconds (18 digits), as
    Karabo gives it; the ns time makes it exact.
    """
    sec, ns = divmod(int(time_ns), 1_000_000_000)
    return {
        "source": source,
        "timestamp": time_ns / 1e9,
        "timestamp.sec": str(sec),
        "timestamp.frac": f"{ns:09d}000000000",
        "timestamp.tid": int(train_id),
    }


def _plain(value: Any) -> Any:
    """A value msgpack packs: numpy scalars become Python ones."""
    if isinstance(value, np.generic):
        return value.item()
    return value


def encode(train_id: int, sources: Mapping[str, Mapping[str, Any]],
           times_ns: Mapping[str, int]) -> list[bytes | memoryview]:
    """The protocol 2.2 multipart message of one train.

    ``sources`` maps each source name to its data (scalars, strings, lists, numpy
    arrays); ``times_ns`` gives each source's timestamp. Arrays are sent as their own
    frames without a copy (a memoryview of a C-contiguous array).
    """
    pack = msgpack.Packer(use_bin_type=True).pack
    msg: list[bytes | memoryview] = []
    for src in sorted(sources):
        plain, arrays = {}, []
        for key, value in sources[src].items():
            if isinstance(value, np.ndarray):
                arrays.append((key, value))
            else:
                plain[key] = _plain(value)
        msg.append(pack({"source": src, "content": "msgpack",
                         "metadata": metadata(src, train_id, times_ns[src])}))
        msg.append(pack(plain))
        for key, array in arrays:
            array = np.ascontiguousarray(array)
            msg.append(pack({"source": src, "content": "array", "path": key,
                             "dtype": str(array.dtype), "shape": list(array.shape)}))
            msg.append(array.data if array.size else b"")
    return msg


def resolve(train: Train) -> tuple[dict[str, dict[str, Any]], dict[str, int], int]:
    """A train's data with its lazy values read, each source's time, and how many lazy
    values could not be had (they are left out of the message)."""
    sources: dict[str, dict[str, Any]] = {}
    times: dict[str, int] = {}
    missing = 0
    for src, part in train.parts.items():
        data = dict(part.data)
        for key, get in part.lazy.items():
            value = get()
            if value is None:
                missing += 1
            else:
                data[key] = value
        sources[src] = data
        times[src] = part.time_ns
    return sources, times, missing
