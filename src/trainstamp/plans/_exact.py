"""Exact train IDs from devices that know their train (detector packet headers).

A detector in external-trigger mode writes the train ID of each frame's trigger into
the frame's packet headers, so its reading holds the exact train (for
:class:`~trainstamp.detector.Team1k`, ``<name>_train_id``). :class:`ExactTrainId`
turns that into the event's ``train_id`` with status ``"EXACT"``; since the event then
already has a ``train_id`` reading, :func:`~trainstamp.plans.stamp_wrapper` does not
add an interpolated one.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Iterable, Mapping
from typing import Any

from trainstamp.plans._protocols import TrainClock
from trainstamp.trainid import (
    EXACT,
    INVALID,
    NO_TRAIN_ID,
    STATUSES,
    TRAIN_ID_KEY,
    TRAIN_ID_STATUS_KEY,
)

__all__ = ["ExactTrainId", "exact_train_id_of", "exact_stamp_for", "has_exact_ids"]

_EXACT_STAMPS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def has_exact_ids(obj: object) -> bool:
    """Whether ``obj`` names a data key with exact train IDs (``train_id_key``)."""
    return isinstance(getattr(obj, "train_id_key", None), str)


def exact_stamp_for(timeserver: TrainClock) -> ExactTrainId:
    """The one :class:`ExactTrainId` of ``timeserver`` (one object, so one descriptor)."""
    try:
        return _EXACT_STAMPS[timeserver]
    except (KeyError, TypeError):
        pass
    stamp = ExactTrainId(timeserver)
    with contextlib.suppress(TypeError):  # not weak-referenceable: a fresh one each time
        _EXACT_STAMPS[timeserver] = stamp
    return stamp


def exact_train_id_of(devices: Iterable[object], readings: Mapping[str, Any]) -> tuple[str, int] | None:
    """The first exact train ID found in ``readings`` and the device that gave it.

    A device offers exact IDs by naming the data key in a ``train_id_key`` attribute
    (as :class:`~trainstamp.detector.Team1k` does). A list of IDs (several frames per
    point) gives its first. Returns ``(device name, train id)``, or None if no device
    gave a usable ID (missing, or 0, which the packet header uses for "none").
    """
    for obj in devices:
        if not has_exact_ids(obj) or obj.train_id_key not in readings:
            continue
        key = obj.train_id_key
        value = readings[key]["value"]
        if isinstance(value, list | tuple):
            value = value[0] if value else 0
        try:
            train_id = int(value)
        except (TypeError, ValueError):
            continue
        if train_id > 0:
            return obj.name, train_id
    return None


class ExactTrainId:
    """A Readable that reports a train ID set just before it is read, as ``"EXACT"``.

    The per-train step (:func:`~trainstamp.plans.one_train`) reads the detectors, finds
    an exact ID among their readings (:func:`exact_train_id_of`), :meth:`set` s it here
    and reads this object into the same event. Its configuration is the TimeServer's,
    so a descriptor with exact IDs still carries the TimeServer configuration.

    Parameters
    ----------
    timeserver : TimeServer
        Gives the configuration (``read_configuration``/``describe_configuration``).
    name : str, optional
        ``"<timeserver>_exact"`` by default.
    """

    parent = None

    def __init__(self, timeserver: TrainClock, *, name: str | None = None) -> None:
        self.timeserver = timeserver
        self.name = name or f"{timeserver.name}_exact"
        self.hints = {"fields": [TRAIN_ID_KEY]}
        self._value = NO_TRAIN_ID
        self._source = "unknown"
        self._timestamp = 0.0

    def set_exact(self, source: str, train_id: int | None, timestamp: float) -> None:
        """The ID (from ``source``'s packet headers) that the next :meth:`read` reports.

        ``None`` means the device gave no usable ID: the event is flagged ``"INVALID"``
        with :data:`~trainstamp.plans.NO_TRAIN_ID`, never 0.
        """
        if train_id is not None and train_id <= 0:
            raise ValueError(f"an exact train ID must be > 0, got {train_id}")
        self._source, self._timestamp = source, float(timestamp)
        self._value = NO_TRAIN_ID if train_id is None else int(train_id)

    def read(self) -> dict[str, dict[str, Any]]:
        status = INVALID if self._value == NO_TRAIN_ID else EXACT
        return {
            TRAIN_ID_KEY: {"value": self._value, "timestamp": self._timestamp},
            TRAIN_ID_STATUS_KEY: {"value": status, "timestamp": self._timestamp},
        }

    def describe(self) -> dict[str, dict[str, Any]]:
        source = f"{self._source}:packet_header"
        return {
            TRAIN_ID_KEY: {"source": source, "dtype": "integer", "dtype_numpy": "<i8", "shape": []},
            TRAIN_ID_STATUS_KEY: {"source": source, "dtype": "string", "shape": [],
                                  "choices": list(STATUSES)},
        }

    def read_configuration(self) -> dict[str, dict[str, Any]]:
        return dict(self.timeserver.read_configuration())

    def describe_configuration(self) -> dict[str, dict[str, Any]]:
        return dict(self.timeserver.describe_configuration())

    def __repr__(self) -> str:
        return f"ExactTrainId({self.timeserver.name!r})"
