"""The lifecycle every measurement slot of the tagger IOC shares: :class:`Slot`.

Each slot (``CORR1:``, ``HIST1:``, ``RATE1:``, ``CNT1:``, in :mod:`~trainstamp.tagger._slots`)
is a caproto PVGroup wrapping one engine measurement on the IOC's own engine tagger.
:class:`Slot` holds what they share: duration or number of trains (from the train in
force, or the one named in ``START_TRAIN``), start/stop/clear, ``ACQUIRE`` with
put-completion, running flag, capture duration and train range.

Every writable PV has a putter that refuses nonsense with a clear message (the client
gets it as the put's error at once; the IOC's ``LAST_ERROR`` repeats it and
``BAD_PUTS`` counts it): ``DURATION`` is a finite 0..:data:`MAX_DURATION_S` s,
``N_TRAINS`` a whole 0..:data:`MAX_N_TRAINS`, ``START_TRAIN`` a train ID or 0,
``START``/``STOP``/``CLEAR``/``ACQUIRE`` 0 or 1. LONG PVs are :class:`WholeNumber`, so
NaN, ±inf and 1.5 are refused instead of being turned into -2147483648 or 1 by caproto.
An ``ACQUIRE`` always ends in a bounded time (:meth:`Slot.time_limit`); one running
when the tag-stream processor has a fault fails with the fault's text.
"""

from __future__ import annotations

import asyncio
import functools

from caproto import AlarmSeverity, AlarmStatus, ChannelType
from caproto.server import PVGroup, pvproperty

from trainstamp.tagger._checks import (
    MAX_DURATION_S,
    check_duration,
    check_n_trains,
    check_switch,
    check_train_id,
)
from trainstamp.timing._ioc import WholeNumber
from trainstamp.trainid import SOURCE_JUMP_TRAINS

__all__ = ["MAX_TRAIN_PERIOD_S", "Slot", "blocking", "mark_unknown", "write_train_id"]

#: Longest train period (s) the IOC's own acquisition deadline allows for.
MAX_TRAIN_PERIOD_S = 1.0


async def blocking(fn, *args):
    """Run a blocking call (tag-link round trip, engine call) off the event loop."""
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(None, functools.partial(fn, *args))


async def write_train_id(instance, train_id: int | None) -> None:
    """Write a train ID (DOUBLE, exact to 2**53); unknown is 0 with INVALID severity.

    The alarm is written after the value: caproto's own limit check on a DOUBLE write
    would otherwise replace the severity given with the value. Each train-ID PV has
    an alarm group of its own, so this alarm is only this PV's.
    """
    known = train_id is not None and train_id > 0
    await instance.write(float(train_id) if known else 0.0)
    if known:
        await instance.alarm.write(severity=AlarmSeverity.NO_ALARM, status=AlarmStatus.NO_ALARM)
    else:
        await instance.alarm.write(severity=AlarmSeverity.INVALID_ALARM, status=AlarmStatus.UDF)


async def mark_unknown(instance) -> None:
    """A train-ID PV with no train yet: 0 with INVALID severity, never a plain 0."""
    await write_train_id(instance, None)


class Slot(PVGroup):
    """Lifecycle PVs shared by every measurement slot."""

    duration = pvproperty(name="DURATION", value=1.0, units="s", precision=3,
                          doc="capture duration in tagger time (used when N_TRAINS is 0)")
    n_trains = pvproperty(name="N_TRAINS", value=0, dtype=WholeNumber,
                          doc="capture this many trains (0: use DURATION)")
    start = pvproperty(name="START", value=0, dtype=WholeNumber,
                       doc="start (or resume) without clearing")
    stop = pvproperty(name="STOP", value=0, dtype=WholeNumber, doc="stop accumulating")
    clear = pvproperty(name="CLEAR", value=0, dtype=WholeNumber, doc="discard data")
    acquire = pvproperty(name="ACQUIRE", value=0, dtype=WholeNumber,
                         doc="clear, run for DURATION or N_TRAINS; completes when done")
    start_train = pvproperty(name="START_TRAIN", value=0.0, precision=0,
                             doc="the next N_TRAINS acquisition opens at the marker of this "
                                 "train (0: the train in force at the put); used once")
    running = pvproperty(name="RUNNING", value=False, read_only=True, doc="accumulating")
    capture_duration = pvproperty(name="CAPTURE_DURATION", value=0.0, units="s", precision=6,
                                  read_only=True, doc="tagger time accumulated since clear")
    first_train_id = pvproperty(name="FIRST_TRAIN_ID", value=0.0, read_only=True, precision=0,
                                alarm_group="first_train_id",
                                doc="first train covered (0 + INVALID when unknown)")
    last_train_id = pvproperty(name="LAST_TRAIN_ID", value=0.0, read_only=True, precision=0,
                               alarm_group="last_train_id",
                               doc="last train covered (0 + INVALID when unknown)")
    status = pvproperty(name="STATUS", value="idle", dtype=ChannelType.STRING, read_only=True,
                        doc="last action or error")

    @first_train_id.startup
    async def first_train_id(self, instance, async_lib):
        await mark_unknown(instance)

    @last_train_id.startup
    async def last_train_id(self, instance, async_lib):
        await mark_unknown(instance)

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.measurement = None
        self._config = None
        self._start_train = 0  # START_TRAIN taken by the acquisition running now
        self._seen_at_put = -1  # the last marker's train when that acquisition began

    # -- subclass hooks ----------------------------------------------------------------
    def config(self) -> tuple:
        raise NotImplementedError

    def build(self, tagger, config: tuple):
        raise NotImplementedError

    async def publish_data(self, m) -> None:
        raise NotImplementedError

    # -- helpers -----------------------------------------------------------------------
    def check_channel(self, value) -> int:
        chans = self.parent.instrument.channels()
        v = int(value)
        if chans and v not in chans and v < 1000:
            raise ValueError(f"unknown channel {v}; channels are {chans}")
        return v

    async def _fail(self, exc: Exception) -> None:
        await self.status.write(str(exc)[:39])
        await self.parent.note(f"{self.prefix}: {exc}")

    async def refuse(self, message: str) -> None:
        """Refuse a put: counted in BAD_PUTS, told in STATUS and LAST_ERROR, raised to
        the client (caproto answers ``ECA_PUTFAIL`` with the message)."""
        await self.parent.refused(f"{self.prefix}{message}")
        await self.status.write(message[:39])
        exc = ValueError(message)
        exc.noted = True  # LAST_ERROR already says it
        raise exc

    async def _checked(self, name: str, check, value):
        try:
            return check(value)
        except (ValueError, TypeError) as exc:
            await self.refuse(f"{name} refused: {exc}")

    @start_train.putter
    async def start_train(self, instance, value):
        return float(await self._checked("START_TRAIN", check_train_id, value))

    @duration.putter
    async def duration(self, instance, value):
        return await self._checked("DURATION", check_duration, value)

    @n_trains.putter
    async def n_trains(self, instance, value):
        return await self._checked("N_TRAINS", check_n_trains, value)

    async def ensure(self):
        """The measurement for the current settings (rebuilt if they changed)."""
        config = self.config()
        if self.measurement is None or config != self._config:
            tagger = await blocking(self.parent.engine_tagger)
            if self.measurement is not None:
                self.measurement.free()
            self.measurement = None
            self.measurement = self.build(tagger, config)
            self.measurement.stop()
            self.measurement.clear()
            self._config = config
        return self.measurement

    async def run(self, clear: bool):
        current = self.parent.service.current_train_id  # in force at the put
        # START_TRAIN is used (and then set back to 0) only by a run over trains
        wanted = int(self.start_train.value) if self.n_trains.value > 0 else 0
        self._start_train = 0
        # the train of the last marker processed: at or past ``wanted``, the put came late
        self._seen_at_put = self.parent.service.stats.last_train_id
        try:
            m = await self.ensure()
            if self.n_trains.value > 0:
                # from the train asked for, or the one in force at the put, not the next
                # marker of the tag stream (which runs up to a train behind the TimeServer)
                first = wanted or (current if current > 0 else None)
                m.startForTrains(int(self.n_trains.value), clear=clear, first_train_id=first)
                self._start_train = wanted
            elif self.duration.value > 0:
                m.startFor(int(round(self.duration.value * 1e12)), clear=clear)
            else:
                if clear:
                    m.clear()
                m.start()
        except (ValueError, RuntimeError) as exc:
            await self._fail(exc)
            raise
        if wanted:  # used: a refused run leaves it for the next one
            await self.start_train.write(0.0)
        await self.status.write("running")
        await self.running.write(True)
        return m

    async def _switch(self, name: str, value) -> bool:
        return bool(await self._checked(name, check_switch, value))

    @start.putter
    async def start(self, instance, value):
        if await self._switch("START", value):
            await self.run(clear=False)
        return 0

    @stop.putter
    async def stop(self, instance, value):
        if await self._switch("STOP", value) and self.measurement is not None:
            self.measurement.stop()
            await self.publish()
        return 0

    @clear.putter
    async def clear(self, instance, value):
        if await self._switch("CLEAR", value) and self.measurement is not None:
            self.measurement.clear()
            await self.publish()
        return 0

    @acquire.putter
    async def acquire(self, instance, value):
        if not await self._switch("ACQUIRE", value):
            return 0
        if self.n_trains.value <= 0 and self.duration.value <= 0:
            await self.refuse("ACQUIRE refused: N_TRAINS and DURATION are 0; set one "
                              "(ACQUIRE would never end; use START/STOP)")
        stats = self.parent.service.stats
        faults = stats.faults
        m = await self.run(clear=True)
        limit = self.time_limit()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit
        while m.isRunning():
            exc = None
            if stats.faults != faults:  # part of the stream was lost: the data is not whole
                exc = RuntimeError(f"acquisition failed: tag-stream processor fault "
                                   f"({stats.fault})")
            elif loop.time() > deadline:  # no tags or no markers: do not hang the caller
                exc = TimeoutError(f"acquisition not done after {limit:.0f} s; "
                                   f"{self.parent.health_text()}")
            if exc is not None:
                m.stop()
                await self.publish()
                await self._fail(exc)
                raise exc
            await asyncio.sleep(0.02)
        await self.publish()
        wanted, self._start_train = self._start_train, 0
        first = (m.getTrainRange() or (0, 0))[0]
        # A later train is a miss only if the stream had reached ``wanted`` at the put;
        # otherwise the source skipped it, or restarted (a train far from it), and the
        # window took the next train that came, as a capture does.
        restarted = first and abs(first - wanted) > SOURCE_JUMP_TRAINS
        if wanted and first != wanted and not restarted and (
                not first or first < wanted or self._seen_at_put >= wanted):
            exc = RuntimeError(f"the window opened at train {first or 'unknown'}, not at START_TRAIN "
                               f"{wanted}: the tag stream had passed that train's marker "
                               "when ACQUIRE came")
            await self._fail(exc)
            raise exc
        await self.status.write("done")
        return 0

    def time_limit(self) -> float:
        """Wall-clock seconds an acquisition may take before it is abandoned."""
        if self.n_trains.value > 0:
            period_s = min(self.parent.service.mapper.period_ns * 1e-9, MAX_TRAIN_PERIOD_S)
            return self.n_trains.value * period_s * 2 + 10.0
        return min(max(self.duration.value, 0.0), MAX_DURATION_S) * 2 + 10.0

    @running.scan(period=0.25)
    async def running(self, instance, async_lib):
        if self.measurement is not None and (self.measurement.isRunning() or self.running.value):
            await self.publish()

    async def publish(self) -> None:
        m = self.measurement
        if m is None:
            return
        running = m.isRunning()
        await self.publish_data(m)
        await self.capture_duration.write(m.getCaptureDuration() * 1e-12)
        train_range = m.getTrainRange() or (None, None)
        await write_train_id(self.first_train_id, train_range[0])
        await write_train_id(self.last_train_id, train_range[1])
        if self.running.value != running:
            await self.running.write(running)
