"""The plan side of the train-ID stamping contract (:mod:`trainstamp.trainid`).

The contract (keys, statuses, :data:`~trainstamp.trainid.NO_TRAIN_ID`) and the run-end
stamp (:class:`~trainstamp.trainid.StopStamper`, around the storage writer) live in
:mod:`trainstamp.trainid`, below both the plans and the storage. Here are the pieces a
plan needs to keep it:

- :class:`TrainStamp` is a Readable that interpolates the train ID at read time from a
  :class:`~trainstamp.timing.device.TimeServer`, whose ``train_id_at`` also judges the
  TimeServer's health (OK, STALE or INVALID). Its configuration is the TimeServer's, so
  each descriptor that holds a stamp carries the TimeServer configuration.
- :func:`stamp_wrapper` / :func:`stamp_decorator` make any plan keep the contract: they
  read the stamp into every event bundle that does not already hold a ``train_id``
  reading (a device that knows its exact train, such as a detector reading its packet
  headers, provides ``train_id`` itself and is left alone), and they put
  ``train_id_start`` / ``train_id_start_status`` into the start document.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator, Iterable
from typing import Any

from bluesky import preprocessors as bpp
from bluesky.utils import Msg, make_decorator

from trainstamp.plans._protocols import TrainClock
from trainstamp.timing._core import Stamp, StampStatus
from trainstamp.trainid import (
    STATUSES,
    TRAIN_ID_KEY,
    TRAIN_ID_START_KEY,
    TRAIN_ID_STATUS_KEY,
    document_stamp,
    event_train_id,
)

__all__ = ["TrainStamp", "stamp_decorator", "stamp_wrapper"]


class TrainStamp:
    """A Readable whose reading is the train ID at the time it is read.

    Parameters
    ----------
    timeserver : TimeServer
        Anything with ``train_id_at(t_ns=...) -> Stamp``, ``name`` and the
        ``read_configuration``/``describe_configuration`` pair, normally
        :class:`trainstamp.timing.device.TimeServer`.
    name : str, optional
        ophyd-style name of this object; ``"<timeserver>_stamp"`` by default. It names
        the entry that carries the TimeServer configuration in each descriptor.
    clock_ns : callable
        Wall clock in integer ns; the time a reading is stamped at.
    """

    parent = None

    def __init__(
        self,
        timeserver: TrainClock,
        *,
        name: str | None = None,
        clock_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        self.timeserver = timeserver
        self.name = name or f"{timeserver.name}_stamp"
        self.clock_ns = clock_ns
        self.hints = {"fields": [TRAIN_ID_KEY]}

    def stamp(self, t_ns: int | None = None) -> Stamp:
        """The :class:`~trainstamp.timing.Stamp` at ``t_ns`` (now by default)."""
        return self.timeserver.train_id_at(t_ns=self.clock_ns() if t_ns is None else t_ns)

    def read(self) -> dict[str, dict[str, Any]]:
        t_ns = self.clock_ns()
        stamp = self.stamp(t_ns)
        timestamp = t_ns / 1e9
        return {
            TRAIN_ID_KEY: {"value": event_train_id(stamp), "timestamp": timestamp},
            TRAIN_ID_STATUS_KEY: {"value": stamp.status.name, "timestamp": timestamp},
        }

    def describe(self) -> dict[str, dict[str, Any]]:
        source = f"{self.timeserver.name}:interpolated"
        return {
            TRAIN_ID_KEY: {
                "source": source, "dtype": "integer", "dtype_numpy": "<i8", "shape": [],
            },
            TRAIN_ID_STATUS_KEY: {
                "source": source, "dtype": "string", "shape": [],
                "choices": list(STATUSES),
            },
        }

    def read_configuration(self) -> dict[str, dict[str, Any]]:
        return dict(self.timeserver.read_configuration())

    def describe_configuration(self) -> dict[str, dict[str, Any]]:
        return dict(self.timeserver.describe_configuration())

    def __repr__(self) -> str:
        return f"TrainStamp({self.timeserver.name!r}, name={self.name!r})"


def stamp_wrapper(plan: Iterable[Msg], stamp: TrainStamp) -> Generator[Msg, Any, Any]:
    """Make ``plan`` keep the train-ID contract with ``stamp``.

    - Before ``open_run``: read the stamp and add ``train_id_start`` and
      ``train_id_start_status`` to the start document (unless the plan set them).
    - Before each ``save``: if no reading in the bundle had a ``train_id`` key, read
      the stamp into it, so the event gets ``train_id`` and ``train_id_status``.
    - ``declare_stream`` (not ``collect``): add the stamp to the declared devices, unless
      one of them describes its own ``train_id``; events of that stream then always (or
      never) read the stamp, as their descriptor says.

    Parameters
    ----------
    plan : iterable
        Any bluesky plan.
    stamp : TrainStamp
        Where train IDs come from.

    Yields
    ------
    msg : Msg
        The plan's messages, with the stamp reads inserted.
    """
    bundles: dict[Any, tuple[str, set[str]]] = {}  # run key -> (stream, data keys read)
    declared: dict[tuple[Any, str], bool] = {}  # (run key, stream) -> stamp declared in it

    def record(msg: Msg):
        reading = yield msg
        if msg.run in bundles and isinstance(reading, dict):
            bundles[msg.run][1].update(reading)
        return reading

    def open_run(msg: Msg):
        reading = yield Msg("read", stamp)
        start = document_stamp(_stamp_from_reading(reading, stamp), TRAIN_ID_START_KEY)
        md = {**msg.kwargs, **start}
        return (yield msg._replace(kwargs=md))

    def declare_stream(msg: Msg):
        # A declared stream's descriptor is fixed here: put the stamp in it, unless one
        # of its devices already describes a train_id of its own.
        stream = msg.kwargs.get("name", "primary")
        with_stamp = not _describes_train_id(msg.args)
        declared[(msg.run, stream)] = with_stamp
        if with_stamp:
            msg = msg._replace(args=(*msg.args, stamp))
        return (yield msg)

    def save(msg: Msg):
        stream, seen = bundles.pop(msg.run, ("primary", set()))
        # Undeclared streams: stamp unless a reading brought its own train_id. Declared
        # streams: as their declaration said.
        if declared.get((msg.run, stream), True) and TRAIN_ID_KEY not in seen:
            yield Msg("read", stamp, run=msg.run)
        return (yield msg)

    def msg_proc(msg: Msg):
        if msg.command == "open_run" and TRAIN_ID_START_KEY not in msg.kwargs:
            return open_run(msg), None
        if (msg.command == "declare_stream" and not msg.kwargs.get("collect", False)
                and stamp not in msg.args):
            return declare_stream(msg), None
        if msg.command == "create":
            bundles[msg.run] = (msg.kwargs.get("name", "primary"), set())
        elif msg.command == "read" and msg.run in bundles:
            return record(msg), None
        elif msg.command == "save":
            return save(msg), None
        elif msg.command == "drop":
            bundles.pop(msg.run, None)
        elif msg.command == "close_run":
            for key in [k for k in declared if k[0] == msg.run]:
                del declared[key]
        return None, None

    return (yield from bpp.plan_mutator(plan, msg_proc))


stamp_decorator = make_decorator(stamp_wrapper)


def _describes_train_id(objs: Iterable[Any]) -> bool:
    """Whether any of ``objs`` (synchronous ophyd devices) describes a ``train_id`` key."""
    for obj in objs:
        try:
            keys = obj.describe()
        except Exception:  # not describable here; the first event decides instead
            continue
        if hasattr(keys, "close"):  # an ophyd-async coroutine: cannot run it here
            keys.close()
            continue
        if isinstance(keys, dict) and TRAIN_ID_KEY in keys:
            return True
    return False


def _stamp_from_reading(reading: Any, stamp: TrainStamp) -> Stamp:
    """Turn a stamp reading back into a Stamp (the RunEngine returns the reading)."""
    try:
        value = reading[TRAIN_ID_KEY]["value"]
        status = StampStatus[reading[TRAIN_ID_STATUS_KEY]["value"]]
    except (TypeError, KeyError):
        # No reading came back (e.g. a simulated RunEngine): ask the stamp directly.
        return stamp.stamp()
    return Stamp(None if status is StampStatus.INVALID else int(value), status)
