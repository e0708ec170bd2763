"""The train-ID contract of a stored run: its keys, statuses, sentinel and run-end stamp.

Every Event that trainstamp writes has a data key named ``train_id``. The Event schema
allows no extra top-level fields, so the ID is a reading in the event, next to a
``train_id_status`` reading that says how far to trust it:

========================  ==========================================================
``train_id_status``       ``train_id``
========================  ==========================================================
``"OK"``                  the train ID in force when the event was read
``"STALE"``               interpolated across ``stale_after`` or more missed ticks, or
                          taken while the TimeServer was not ON, its ``ID`` in
                          alarm or disconnected: a best guess, never OK
``"INVALID"``             :data:`NO_TRAIN_ID` (-1): no tick seen yet; never 0
``"EXACT"``               from a device that knows its train (packet headers)
========================  ==========================================================

The start document carries ``train_id_start`` / ``train_id_start_status`` (put there by
the plans, :func:`trainstamp.plans.stamp_wrapper`) and the stop document
``train_id_end`` / ``train_id_end_status`` (put there before the RunEngine dispatches it,
by :func:`stamp_stop_documents`, so every subscriber, local or behind a 0MQ or Kafka
publisher, gets it; :class:`StopStamper` does it for one wrapped writer). In these
documents an INVALID ID is ``None`` (JSON null), never 0.

This module is what both sides of a run agree on: the plans that write the keys and
the storage that stores, reads and checks them. It imports nothing else of trainstamp,
so :mod:`trainstamp.storage` depends on it and not on :mod:`trainstamp.plans`. A stamp
here is anything with ``train_id`` (int or None) and ``status`` (an enum member whose
``name`` is one of :data:`STAMP_STATUSES`), i.e. a :class:`trainstamp.timing.Stamp`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = [
    "EXACT",
    "INVALID",
    "NO_TRAIN_ID",
    "SOURCE_JUMP_TRAINS",
    "OK",
    "STALE",
    "STAMP_STATUSES",
    "STATUSES",
    "TRAIN_ID_END_KEY",
    "TRAIN_ID_KEY",
    "TRAIN_ID_START_KEY",
    "TRAIN_ID_STATUS_KEY",
    "TRUSTED_STATUSES",
    "StopStamper",
    "document_stamp",
    "event_train_id",
    "stamp_stop_documents",
    "stamped_stop",
]

#: The data key every trainstamp Event carries.
TRAIN_ID_KEY = "train_id"
#: Its companion data key, one of :data:`STATUSES`.
TRAIN_ID_STATUS_KEY = "train_id_status"
#: Start-document key: the train ID when the run opened (``<key>_status`` beside it).
TRAIN_ID_START_KEY = "train_id_start"
#: Stop-document key: the train ID at the stop document's time (``<key>_status`` beside it).
TRAIN_ID_END_KEY = "train_id_end"

#: The statuses an interpolated stamp can have (the names of ``timing.StampStatus``).
OK = "OK"
STALE = "STALE"
INVALID = "INVALID"
#: The status of an ID from a device that knows its train.
EXACT = "EXACT"
STAMP_STATUSES = (OK, STALE, INVALID)
#: Every value ``train_id_status`` can take.
STATUSES = (*STAMP_STATUSES, EXACT)
#: The statuses whose ``train_id`` a check of a stored run accepts.
TRUSTED_STATUSES = (OK, EXACT)

#: The value of ``train_id`` in an event when there is no train ID (status INVALID).
#: Train IDs are unsigned, so -1 can never be mistaken for one; 0 is never used.
NO_TRAIN_ID = -1

#: A train ID further than this from the one expected means the train source restarted
#: (or was switched): a device waiting for a named train then takes the first train of
#: the new sequence instead of waiting for, or failing over, one that will never come.
SOURCE_JUMP_TRAINS = 1000


def event_train_id(stamp: Any) -> int:
    """The ``train_id`` event value for ``stamp``: the ID, or :data:`NO_TRAIN_ID`."""
    return NO_TRAIN_ID if stamp.train_id is None else int(stamp.train_id)


def document_stamp(stamp: Any, key: str) -> dict[str, Any]:
    """``{key: id or None, key_status: name}`` for a start or stop document."""
    return {key: stamp.train_id, f"{key}_status": stamp.status.name}


def stamped_stop(doc: dict, timeserver: Any) -> dict:
    """A copy of stop document ``doc`` with ``train_id_end``/``train_id_end_status``,
    interpolated by ``timeserver.train_id_at`` at the document's ``time``; ``doc``
    itself if it has its stamp already."""
    if TRAIN_ID_END_KEY in doc:
        return doc
    stamp = timeserver.train_id_at(t_ns=round(doc["time"] * 1e9))
    return {**doc, **document_stamp(stamp, TRAIN_ID_END_KEY)}


class _StampingProcess:
    """A RunEngine dispatcher's ``process``, stamping each stop document first."""

    def __init__(self, process: Callable[[Any, dict], Any], timeserver: Any) -> None:
        self.process = process
        self.timeserver = timeserver

    def __call__(self, name: Any, doc: dict) -> Any:
        if getattr(name, "name", name) == "stop":
            doc = stamped_stop(doc, self.timeserver)
        return self.process(name, doc)


def stamp_stop_documents(RE: Any, timeserver: Any) -> None:
    """Make every stop document of ``RE`` carry ``train_id_end``, for every subscriber.

    The RunEngine composes the stop document and hands it to its dispatcher, which
    calls each subscriber with that one dict: the storage writer, live callbacks, and a
    ``bluesky.callbacks.zmq.Publisher`` or a Kafka publisher that sends it to writers in
    other processes (which have no TimeServer). Stamping it there, once, before the
    dispatcher, gives all of them the same stamped document, whatever order they
    subscribed in. Calling it again replaces the TimeServer (nothing is stamped twice).
    """
    dispatcher = RE.dispatcher
    current = vars(dispatcher).get("process")
    if isinstance(current, _StampingProcess):
        current.timeserver = timeserver
        return
    dispatcher.process = _StampingProcess(dispatcher.process, timeserver)


class StopStamper:
    """A document callback that adds the run-end train ID to stop documents.

    Wrap a writer with it: ``RE.subscribe(StopStamper(writer, timeserver))``. Each stop
    document is copied and gets ``train_id_end`` and ``train_id_end_status`` (see
    :func:`stamped_stop`); every other document passes through untouched. Only the
    wrapped writer sees the stamp: to stamp the RunEngine's stop documents for every
    subscriber (a 0MQ or Kafka publisher included), use :func:`stamp_stop_documents`.
    A document stamped already is passed on as it is.
    """

    def __init__(self, callback: Callable[[str, dict], Any], timeserver: Any) -> None:
        self.callback = callback
        self.timeserver = timeserver

    def __call__(self, name: str, doc: dict) -> Any:
        if name == "stop":
            doc = stamped_stop(doc, self.timeserver)
        return self.callback(name, doc)

    def __getattr__(self, attr: str) -> Any:
        # Let callers still reach the writer's own API through the wrapper.
        return getattr(self.callback, attr)
