"""``train_count``: one reading per train, every event stamped with its train ID."""

# No `from __future__ import annotations`: bluesky-queueserver validates queued plans
# against these annotations at run time (see trainstamp.plans).

from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

from bluesky import plan_stubs as bps
from bluesky import preprocessors as bpp
from bluesky.protocols import Readable, Triggerable
from bluesky.utils import CustomPlanMetadata, MsgGenerator

from trainstamp.plans._stamp import TrainStamp, stamp_wrapper
from trainstamp.plans._stubs import one_train, wait_for_train
from trainstamp.trainid import TRAIN_ID_KEY

__all__ = ["train_count"]

PerTrain = Callable[[Sequence[Readable], Any], MsgGenerator[Any]]


def train_count(
    detectors: Sequence[Readable],
    num_trains: int,
    *,
    timeserver: Triggerable,
    stamp: TrainStamp | None = None,
    per_train: PerTrain | None = None,
    md: CustomPlanMetadata | None = None,
) -> MsgGenerator[str]:
    """Take one reading of ``detectors`` per train, for ``num_trains`` trains.

    The plan waits for a train before it opens the run, so a silent TimeServer fails
    the plan (trigger timeout) before anything is recorded. Each step waits for the
    next tick, then triggers and reads the detectors. Every event carries ``train_id`` and ``train_id_status`` (see
    :class:`~trainstamp.plans.TrainStamp`), the start document carries
    ``train_id_start``, and each descriptor carries the TimeServer configuration.

    A step plan takes the next train after each reading completes, so if reading takes
    longer than one period some trains are skipped; the train IDs still increase
    strictly. For every train at high rates use a fly plan.

    Parameters
    ----------
    detectors : sequence of Readable
        Devices to trigger and read in every train.
    num_trains : int
        Number of trains (events) to record; at least 1.
    timeserver : TimeServer
        The :class:`~trainstamp.timing.device.TimeServer` that paces the plan and
        stamps its events.
    stamp : TrainStamp, optional
        The stamp to use; ``TrainStamp(timeserver)`` by default.
    per_train : callable, optional
        Hook for the messages of one train, ``f(detectors, timeserver)``; by default
        :func:`~trainstamp.plans.one_train`.
    md : dict, optional
        Metadata; overrides the plan's defaults.

    Returns
    -------
    uid : str
        The run's uid.
    """
    if isinstance(num_trains, bool) or not isinstance(num_trains, int) or num_trains < 1:
        raise ValueError(f"num_trains must be an integer >= 1, got {num_trains!r}")
    detectors = list(detectors)
    stamp = stamp if stamp is not None else TrainStamp(timeserver)
    step = per_train if per_train is not None else one_train
    _md: dict[str, Any] = {
        "detectors": [det.name for det in detectors],
        "timeserver": timeserver.name,
        "num_trains": num_trains,
        "num_points": num_trains,
        "num_intervals": num_trains - 1,
        "plan_args": {
            "detectors": list(map(repr, detectors)),
            "num_trains": num_trains,
            "timeserver": repr(timeserver),
        },
        "plan_name": "train_count",
        "hints": {},
    }
    _md.update(md or {})
    _md["hints"].setdefault("dimensions", [([TRAIN_ID_KEY], "primary")])

    @bpp.run_decorator(md=_md)
    def inner_train_count() -> MsgGenerator[Any]:
        for _ in range(num_trains):
            yield from step(detectors, timeserver)

    @bpp.stage_decorator(detectors)
    @bpp.finalize_decorator(partial(bps.stop, timeserver))  # fail any pending train wait
    def staged() -> MsgGenerator[str]:
        # A train before the run opens: the clock is alive and train_id_start is valid.
        yield from wait_for_train(timeserver)
        return (yield from stamp_wrapper(inner_train_count(), stamp))

    return (yield from staged())
