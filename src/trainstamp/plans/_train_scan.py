"""``train_scan``: a step scan that records ``trains_per_point`` trains at each point."""

# No `from __future__ import annotations`: bluesky-queueserver validates queued plans
# against these annotations at run time (see trainstamp.plans).

from collections.abc import Sequence
from functools import partial
from typing import Any

import numpy as np
from bluesky import plan_stubs as bps
from bluesky import preprocessors as bpp
from bluesky.protocols import Movable, Readable, Triggerable
from bluesky.utils import CustomPlanMetadata, MsgGenerator

from trainstamp.plans._stamp import TrainStamp, stamp_wrapper
from trainstamp.plans._stubs import one_train, wait_for_train
from trainstamp.plans._train_count import PerTrain
from trainstamp.trainid import TRAIN_ID_KEY

__all__ = ["train_scan"]


def _check_count(name: str, value: Any, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def train_scan(
    detectors: Sequence[Readable],
    motor: Movable,
    start: float,
    stop: float,
    num: int,
    trains_per_point: int = 1,
    *,
    timeserver: Triggerable,
    stamp: TrainStamp | None = None,
    per_train: PerTrain | None = None,
    md: CustomPlanMetadata | None = None,
) -> MsgGenerator[str]:
    """Move ``motor`` through ``num`` evenly spaced points; record ``trains_per_point``
    trains at each.

    At each point the plan moves the motor (and waits for it), then records one event
    per train as :func:`~trainstamp.plans.train_count` does: wait for the next tick,
    trigger and read ``detectors`` and the motor. Every event carries ``train_id``
    (exact from a detector's packet headers if one is read, otherwise interpolated from
    the TimeServer), the start document carries ``train_id_start`` and each descriptor
    the TimeServer configuration.

    Parameters
    ----------
    detectors : sequence of Readable
        Devices to trigger and read in every train.
    motor : Movable (and Readable)
        The scanned axis; read into every event.
    start, stop : float
        First and last position.
    num : int
        Number of points; at least 1.
    trains_per_point : int, optional
        Trains (events) recorded at each point; 1 by default.
    timeserver : TimeServer
        The :class:`~trainstamp.timing.device.TimeServer` that paces and stamps.
    stamp : TrainStamp, optional
        ``TrainStamp(timeserver)`` by default.
    per_train : callable, optional
        Messages of one train, ``f(devices, timeserver)``; :func:`one_train` by default.
    md : dict, optional
        Metadata; overrides the plan's defaults.

    Returns
    -------
    uid : str
        The run's uid.
    """
    num = _check_count("num", num)
    trains_per_point = _check_count("trains_per_point", trains_per_point)
    detectors = list(detectors)
    stamp = stamp if stamp is not None else TrainStamp(timeserver)
    step = per_train if per_train is not None else one_train
    positions = np.linspace(start, stop, num)
    motor_names = list(getattr(motor, "hints", {}).get("fields", [])) or [motor.name]
    _md: dict[str, Any] = {
        "detectors": [det.name for det in detectors],
        "motors": [motor.name],
        "timeserver": timeserver.name,
        "num_points": num * trains_per_point,
        "num_intervals": num * trains_per_point - 1,
        "trains_per_point": trains_per_point,
        "plan_args": {
            "detectors": list(map(repr, detectors)),
            "motor": repr(motor),
            "start": start, "stop": stop, "num": num,
            "trains_per_point": trains_per_point,
            "timeserver": repr(timeserver),
        },
        "plan_name": "train_scan",
        "plan_pattern": "inner_product",
        "plan_pattern_module": "bluesky.plan_patterns",
        "plan_pattern_args": {"num": num, "args": [repr(motor), start, stop]},
        "hints": {},
    }
    _md.update(md or {})
    _md["hints"].setdefault("dimensions", [(motor_names, "primary"), ([TRAIN_ID_KEY], "primary")])
    devices = [*detectors, motor]

    @bpp.run_decorator(md=_md)
    def inner_train_scan() -> MsgGenerator[Any]:
        for position in positions:
            yield from bps.mv(motor, position)
            for _ in range(trains_per_point):
                yield from step(devices, timeserver)

    @bpp.stage_decorator(devices)
    @bpp.finalize_decorator(partial(bps.stop, timeserver))
    def staged() -> MsgGenerator[str]:
        yield from wait_for_train(timeserver)
        return (yield from stamp_wrapper(inner_train_scan(), stamp))

    return (yield from staged())
