"""The generic part of the collectors that :func:`~trainstamp.plans.train_fly` drives.

A collector is one event stream of a fly scan: a bluesky Flyable and
EventPageCollectable that gives one event per train, in event pages, while the
acquisition runs. Each subsystem has its own, next to its device, and the device makes
it (it knows its own endpoints):

- :class:`~trainstamp.timing.TickCollector` (stream ``timeserver``): every TimeServer
  tick, from the CA monitor on ``ID`` or the TimeServer's broadcaster;
- :class:`~trainstamp.detector.FrameCollector` (stream ``detector``): every frame,
  read from the capture file (HDF5, SWMR) while the IOC writes it;
- :class:`~trainstamp.tagger.MarkerCountCollector` (stream ``tagger``): photon counts
  per train from a ``CountBetweenMarkers`` on the tagger server (Pyro5).

This module holds what they share: the :class:`Collector` base (name, the
TimeServer's configuration in every descriptor, the done status) and the helpers that
build the ``train_id``/``train_id_status`` data keys and event pages.
"""

from __future__ import annotations

import time
from typing import Any

from ophyd.status import Status

from trainstamp.plans._protocols import TrainClock
from trainstamp.trainid import TRAIN_ID_KEY, TRAIN_ID_STATUS_KEY

__all__ = ["STATUS_CHOICES", "Collector", "id_keys", "page"]

#: The values ``train_id_status`` takes in a fly stream.
STATUS_CHOICES = ["OK", "STALE", "INVALID", "EXACT"]


def id_keys(source: str) -> dict[str, dict[str, Any]]:
    """Data keys of ``train_id`` and ``train_id_status`` for a stream from ``source``."""
    return {
        TRAIN_ID_KEY: {"source": source, "dtype": "integer", "dtype_numpy": "<i8", "shape": []},
        TRAIN_ID_STATUS_KEY: {"source": source, "dtype": "string", "shape": [],
                              "choices": STATUS_CHOICES},
    }


def page(columns: dict[str, list], times: list[float]) -> dict[str, Any]:
    """An event page (without uids and seq_nums) of ``columns``, one event per time."""
    return {"data": columns, "timestamps": {k: list(times) for k in columns}, "time": list(times)}


class Collector:
    """What every collector shares: name, TimeServer configuration, done status, and
    its part of the plan's lifecycle.

    ``kickoff`` (in the subclass) makes the done status that ``complete`` returns; the
    subclass finishes it when its stream has all its trains, or fails it with the
    reason. ``stage`` prepares (nothing by default) and ``unstage`` cleans up after any
    ending, so a plan only stages and unstages a collector: a status still pending
    then fails ("plan ended") and :meth:`close` releases what the collector holds
    (monitors, files, connections).
    """

    parent = None
    #: The train of the last event collected (0 before any): train_fly keeps the ticks
    #: going until they reach the last train of every other stream.
    last_train_id = 0

    def __init__(self, name: str, timeserver: TrainClock) -> None:
        self.name = name
        self.timeserver = timeserver
        self._done: Status | None = None

    def read_configuration(self) -> dict[str, Any]:
        return dict(self.timeserver.read_configuration())

    def describe_configuration(self) -> dict[str, Any]:
        return dict(self.timeserver.describe_configuration())

    def kickoff(self) -> Status:
        """Start the stream (:meth:`_begin`) with a new done status for
        :meth:`complete`; the status returned is finished at once, since the stream is
        then running and is collected as it goes."""
        self._begin()
        self._taken = 0  # events collected so far
        self._last_growth = time.monotonic()  # when the stream last grew
        self._done = Status(obj=self)
        status = Status(obj=self)
        status.set_finished()
        return status

    def _begin(self) -> None:
        """Start the subclass's stream (the capture, the tagger window)."""
        raise NotImplementedError

    def complete(self) -> Status:
        if self._done is None:
            raise RuntimeError(f"{self.name}: complete() before kickoff()")
        return self._done

    def _finish(self, exc: BaseException | None = None) -> None:
        if self._done is not None and not self._done.done:
            if exc is None:
                self._done.set_finished()
            else:
                self._done.set_exception(exc)

    def stage(self) -> list[Any]:
        return [self]

    def unstage(self) -> list[Any]:
        """Fail a pending ``complete`` ("plan ended") and :meth:`close`."""
        self._finish(RuntimeError(f"{self.name}: plan ended"))
        self.close()
        return [self]

    def close(self) -> None:
        """Release what the collector holds; it can be staged again afterwards."""
