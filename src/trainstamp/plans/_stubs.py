"""Plan stubs for train-synchronous acquisition: one action each, bluesky style."""

# No `from __future__ import annotations`: bluesky-queueserver validates queued plans
# against these annotations at run time (see trainstamp.plans).

import math
import time
from collections.abc import Sequence
from typing import Any

from bluesky import plan_stubs as bps
from bluesky import preprocessors as bpp
from bluesky.protocols import Movable, Readable, Triggerable
from bluesky.utils import MsgGenerator, plan, separate_devices, short_uid

from trainstamp.plans._exact import exact_stamp_for, exact_train_id_of, has_exact_ids
from trainstamp.plans._protocols import StartsOnTrain, TrainClock

__all__ = ["arm_train", "next_train_to_arm", "one_train", "wait_for_train"]

#: Least time (s) between the tick a step wakes on and the train it arms the devices for:
#: the puts must reach every device before that train starts (50 ms is 1 train at 10 Hz,
#: 3 at 50 Hz, 5 at 100 Hz).
ARM_LEAD_S = 0.05


@plan
def wait_for_train(
    timeserver: Triggerable, *, group: str | None = None, wait: bool = True
) -> MsgGenerator[Any]:
    """Wait for the next train: trigger the TimeServer, whose status completes at a tick.

    Parameters
    ----------
    timeserver : TimeServer
        The :class:`~trainstamp.timing.device.TimeServer` (any Triggerable whose status
        completes at the next tick).
    group : str, optional
        Status group; by default a fresh one.
    wait : bool, optional
        Wait for the tick before returning (default). With ``wait=False`` the caller
        waits on ``group`` itself.

    Returns
    -------
    status : Status
        The status of the trigger.
    """
    return (yield from bps.trigger(timeserver, group=group, wait=wait))


def next_train_to_arm(timeserver: TrainClock, lead_s: float = ARM_LEAD_S) -> int | None:
    """The train to start the devices on: at least ``lead_s`` after the last tick.

    None if the TimeServer has no tick (or is not a trainstamp TimeServer, whose
    ``last_tick`` is the latest :class:`~trainstamp.timing.Tick`); the devices then
    start on the train in force at their put.
    """
    tick = getattr(timeserver, "last_tick", None)
    if not hasattr(tick, "train_id") or tick.train_id <= 0:
        return None
    period_s = tick.period_us / 1e6 if tick.period_us and tick.period_us > 0 else lead_s
    return int(tick.train_id) + max(1, math.ceil(lead_s / period_s - 1e-9))


def start_train_signals(obj: object) -> list[Movable]:
    """The setpoints that make ``obj`` start on a named train (``train_start_signals()``)."""
    return list(obj.train_start_signals()) if isinstance(obj, StartsOnTrain) else []


@plan
def arm_train(devices: Sequence[Readable], train_id: int) -> MsgGenerator[list[Any]]:
    """Tell every device that can (``train_start_signals()``) to start on ``train_id``.

    The detector then captures the frame whose header carries that train and the tagger
    opens its window at that train's marker, so both cover the same train whatever the
    order and latency of their puts; each fails its trigger, saying so, if the train had
    passed when its put came. Returns the devices armed.
    """
    group = short_uid("arm")
    armed = []
    for obj in devices:
        signals = start_train_signals(obj)
        for sig in signals:
            yield from bps.abs_set(sig, train_id, group=group)
        if signals:
            armed.append(obj)
    if armed:
        yield from bps.wait(group=group)
    return armed


@plan
def one_train(
    detectors: Sequence[Readable], timeserver: Triggerable, *, stream_name: str = "primary"
) -> MsgGenerator[dict[str, Any]]:
    """Wait for the next train, then trigger and read ``detectors`` into one event.

    This is the default per-train step of :func:`~trainstamp.plans.train_count`. It is
    :func:`bluesky.plan_stubs.trigger_and_read` with two differences. The devices that
    can start on a named train are armed (:func:`arm_train`) for the train at least
    :data:`ARM_LEAD_S` after the tick, so the detector's frame and the tagger's window
    are of the same train. And if the TimeServer
    itself is among ``detectors`` it is read but not triggered again (triggering it
    means waiting for another train), so its tick lands in the same event. If a device
    has exact train IDs (a ``train_id_key``, as the detector's packet-header IDs), the
    event's ``train_id`` is that exact ID (status ``"EXACT"``) instead of an
    interpolated one.

    Parameters
    ----------
    detectors : sequence of Readable
        What to read in this train.
    timeserver : TimeServer
        The clock to wait on.
    stream_name : str, optional
        Event stream, ``"primary"`` by default.

    Returns
    -------
    readings : dict
        The readings of the event.
    """
    # A checkpoint per train: a suspended run (a train-ID outage, say) resumes from
    # this train instead of replaying the run from its start.
    yield from bps.checkpoint()
    yield from wait_for_train(timeserver)
    devices = separate_devices(list(detectors))
    train = next_train_to_arm(timeserver)
    if train is not None:
        yield from arm_train([obj for obj in devices if obj is not timeserver], train)
    group = short_uid("trigger")
    triggered = False
    for obj in devices:
        if obj is not timeserver and isinstance(obj, Triggerable):
            triggered = True
            yield from bps.trigger(obj, group=group)
    if triggered:
        yield from bps.wait(group=group)
    yield from bps.create(stream_name)

    exact_devices = [obj for obj in devices if has_exact_ids(obj)]

    def read_all() -> MsgGenerator[dict[str, Any]]:
        readings: dict[str, Any] = {}
        for obj in devices:
            reading = yield from bps.read(obj)
            if reading is not None:
                readings.update(reading)
        if exact_devices:
            # A device with exact IDs (packet headers) gives the event's train_id.
            exact = exact_stamp_for(timeserver)
            found = exact_train_id_of(exact_devices, readings)
            source, train_id = found if found else (exact_devices[0].name, None)
            exact.set_exact(source, train_id, time.time())
            reading = yield from bps.read(exact)
            if reading is not None:
                readings.update(reading)
        return readings

    def drop(exc: BaseException) -> MsgGenerator[None]:
        yield from bps.drop()
        raise exc

    return (yield from bpp.contingency_wrapper(read_all(), except_plan=drop,
                                                else_plan=bps.save))
