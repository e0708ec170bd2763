"""The TimeServer IOC: a caproto PVGroup, thin over the timing model.

Types. Channel Access has no 64-bit integer, so the four 64-bit tick fields are
DOUBLEs, which hold every integer up to 2**53 exactly: train IDs (about 1.8e12 from the
internal source), UNIX seconds and periods in µs. ``FRAC`` (attoseconds, up to 1e18)
is exact too for every source we have, because their clocks tick in whole nanoseconds:
``frac_as = ns * 10**9 = (ns * 5**9) * 2**9`` with ``ns * 5**9 < 2**51``, a number a
DOUBLE represents exactly. The tick is therefore rebuilt exactly as
``Tick(int(ID), int(SEC), int(FRAC), int(PERIOD))``. The EPICS timestamp of every tick
PV, ``ID`` included, is the tick time itself (EPICS timestamps carry whole ns).

Alarms. ``ID`` and the other tick PVs share one alarm, and nothing else shares it. It is
INVALID from the moment the IOC exists, before any client can connect. Its status is
UDF before the first tick, COMM after a source failure and TIMEOUT after the missed
periods. It stays so until a tick arrives while ON, and that tick is written in the
same update as its value. So no client ever sees ``ID`` = 0, or an old ID, without
INVALID severity. Each writable PV has an alarm of its own, which a refused put sets
to MAJOR/WRITE (caproto's rule) and the next accepted put clears. ``STATE``,
``STATUS`` and the counters never alarm.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import socket

from caproto import AlarmSeverity, AlarmStatus, ChannelType
from caproto._data import ChannelAlarm
from caproto._dbr import native_type
from caproto.server import PVGroup, pvproperty
from caproto.server.server import PvpropertyInteger

from trainstamp.timing._broadcast import Broadcaster
from trainstamp.timing._core import AS_PER_NS, Tick, check_period_ms
from trainstamp.timing._model import (
    DEFAULT_MISSED_PERIODS,
    MAX_EXACT_ID,
    Fault,
    TimerModel,
)
from trainstamp.timing._pvnames import DEFAULT_BROADCAST_PORT, PV, STATE_STRINGS
from trainstamp.timing._sources import EPICS_EPOCH_UNIX_S, make_source
from trainstamp.timing._timer import Timer

__all__ = ["MAX_EXACT_ID", "TimeServerIOC"]

log = logging.getLogger(__name__)

#: Longest text in the ``SOURCE`` and ``STATUS`` character-array PVs.
TEXT_LEN = 256
#: The alarm group of ID and the other tick PVs.
TICK_ALARM = "tick"
_INT32 = (-(2**31), 2**31 - 1)


def _text(value: str) -> str:
    return value if len(value) < TEXT_LEN else value[: TEXT_LEN - 4] + "..."


def _as_str(value: object) -> str:
    if isinstance(value, bytes | bytearray):
        return value.decode("utf-8", "replace").rstrip("\0")
    return str(value).rstrip("\0")


def tick_alarm(fault: Fault, train_id: int | None) -> tuple[AlarmStatus, AlarmSeverity]:
    """The alarm of ``ID`` and the tick PVs for the model's fault and last ID."""
    if fault is not Fault.NONE:
        return AlarmStatus[fault.value], AlarmSeverity.INVALID_ALARM
    if train_id is not None and train_id > MAX_EXACT_ID:
        return AlarmStatus.HIHI, AlarmSeverity.MAJOR_ALARM  # inexact as a DOUBLE
    return AlarmStatus.NO_ALARM, AlarmSeverity.NO_ALARM


def broadcast_uri(bind: str, port: int) -> str:
    """The URI clients reach a broadcaster listening on ``bind``:``port`` at: the bind
    address itself, or this host's name when it listens on every interface."""
    host = bind if bind not in ("", "0.0.0.0", "::") else socket.getfqdn()
    return f"tcp://{host}:{port}"


class WholeNumber(PvpropertyInteger):
    """A LONG PV that refuses, rather than truncates, a value that is not a whole
    number: caproto would turn NaN into -2147483648 and 1.5 into 1 before any putter
    sees the value. The refusal goes through the group's ``refuse``."""

    async def write_from_dbr(self, data, data_type, metadata, *, flags=0):
        native = native_type(data_type)
        if native in (ChannelType.DOUBLE, ChannelType.FLOAT):
            for value in data:
                number = float(value)
                if not (math.isfinite(number) and number.is_integer()
                        and _INT32[0] <= number <= _INT32[1]):
                    await self.group.refuse(
                        f"{self.pvspec.name} refused: {number!r} is not a whole number")
        elif native == ChannelType.STRING:
            for value in data:
                text = _as_str(value).strip()
                if not text.lstrip("+-").isdigit() or not _INT32[0] <= int(text) <= _INT32[1]:
                    await self.group.refuse(
                        f"{self.pvspec.name} refused: {text[:40]!r} is not a whole number")
        return await super().write_from_dbr(data, data_type, metadata, flags=flags)


class TimeServerIOC(PVGroup):
    """TimeServer IOC: hands out train IDs and re-broadcasts them over TCP.

    Tick (read-only, EPICS timestamp = tick time): ID, SEC, FRAC (attoseconds),
    PERIOD (averaged, us), PERIOD_ACTUAL (mean of last 100 ID changes, ms).
    Control: PERIOD_SET (ms), SOURCE (local:internal, local:x2timer, tcp://host:port,
    ca://PVNAME; only while UNKNOWN), RESET (write 1: back to INIT), MISSED_PERIODS
    (periods without an ID before the source counts as dead).
    Health: STATE (INIT/ON/UNKNOWN), STATUS (text), BAD_MESSAGES, DISCONTINUITIES.
    Endpoint: BROADCAST_URI (tcp://host:port of the tick broadcaster; "" if none).

    PV Access (``--pva``, the default; :meth:`pva_mirror`): every PV under the same
    name; ID, SEC, FRAC and PERIOD are exact 64-bit unsigned integers there (``ulong``).
    """

    train_id = pvproperty(name=PV.ID, value=0.0, read_only=True, precision=0,
                          alarm_group=TICK_ALARM,
                          doc="train ID of the last tick (exact to 2**53); timestamp = tick time")
    sec = pvproperty(name=PV.SEC, value=0.0, read_only=True, precision=0, units="s",
                     alarm_group=TICK_ALARM, doc="UNIX seconds of the last tick")
    frac = pvproperty(name=PV.FRAC, value=0.0, read_only=True, precision=0, units="as",
                      alarm_group=TICK_ALARM,
                      doc="fraction of the second of the last tick, attoseconds")
    period = pvproperty(name=PV.PERIOD, value=0.0, read_only=True, precision=0, units="us",
                        alarm_group=TICK_ALARM, doc="averaged period")
    period_actual = pvproperty(name=PV.PERIOD_ACTUAL, value=0.0, read_only=True, precision=3,
                               units="ms", alarm_group=TICK_ALARM,
                               doc="mean period over the last 100 ID changes")
    period_set = pvproperty(name=PV.PERIOD_SET, value=100.0, precision=3, units="ms",
                            alarm_group=PV.PERIOD_SET,
                            doc="period setpoint of the internal source (P-type loop); "
                                "the expected period of any source")
    source = pvproperty(name=PV.SOURCE, value="local:internal", dtype=ChannelType.CHAR,
                        max_length=TEXT_LEN, string_encoding="utf-8", alarm_group=PV.SOURCE,
                        doc="source URI; can only be changed while UNKNOWN")
    state = pvproperty(name=PV.STATE, value=STATE_STRINGS[0], dtype=ChannelType.ENUM,
                       enum_strings=STATE_STRINGS, read_only=True, doc="INIT, ON or UNKNOWN")
    reset = pvproperty(name=PV.RESET, value=0, dtype=WholeNumber, alarm_group=PV.RESET,
                       doc="write 1 to reset (-> INIT); 0 does nothing")
    missed_periods = pvproperty(name=PV.MISSED_PERIODS, value=DEFAULT_MISSED_PERIODS,
                                dtype=WholeNumber, alarm_group=PV.MISSED_PERIODS,
                                doc="expected periods without a new ID before the source "
                                    "counts as dead (UNKNOWN, ID in TIMEOUT alarm)")
    status = pvproperty(name=PV.STATUS, value="starting", dtype=ChannelType.CHAR,
                        max_length=TEXT_LEN, string_encoding="utf-8", read_only=True,
                        doc="what the TimeServer is doing, or why it is not ON")
    bad_messages = pvproperty(name=PV.BAD_MESSAGES, value=0, read_only=True,
                              doc="count of rejected source messages (and of ID 0)")
    discontinuities = pvproperty(name=PV.DISCONTINUITIES, value=0, read_only=True,
                                 doc="count of jumps (backwards or skipping ahead) in the ID")
    broadcast_uri = pvproperty(name=PV.BROADCAST_URI, value="", dtype=ChannelType.CHAR,
                               max_length=TEXT_LEN, string_encoding="utf-8", read_only=True,
                               doc="tcp://host:port of the tick broadcaster, as it listens "
                                   "(clients take it from here); empty if there is none")

    def __init__(self, *args, source: str = "local:internal", period_ms: float = 100.0,
                 broadcast_port: int = DEFAULT_BROADCAST_PORT, broadcast_bind: str = "127.0.0.1",
                 auto_reset: bool = True, missed_periods: int = DEFAULT_MISSED_PERIODS,
                 realtime_priority: int | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.model = TimerModel(source, period_ms, missed_periods=missed_periods)
        self.timer = Timer(self.model, auto_reset=auto_reset, on_change=self._changed,
                           source_factory=functools.partial(
                               make_source, realtime_priority=realtime_priority))
        self.broadcaster = (Broadcaster(broadcast_bind, broadcast_port) if broadcast_port
                            else None)
        self.timer.listeners += [self._on_tick, self._broadcast]
        self._pending: Tick | None = None
        self._shown: Tick | None = None  # the tick the tick PVs hold (exact, for PVA)
        #: the PV Access server beside CA (:meth:`pva_mirror`), None with ``--no-pva``
        self.pva = None
        self._dirty = asyncio.Event()
        self._published: dict[str, object] = {}
        self._tasks: list[asyncio.Task[None]] = []
        # The initial values match the model at once: before the first publish, a
        # client reading SOURCE, PERIOD_SET or MISSED_PERIODS sees what will be used.
        self.source._data["value"] = self.model.source.uri
        self.period_set._data["value"] = self.model.period.setpoint_ms
        self.missed_periods._data["value"] = self.model.missed_periods

    def _create_pvdb(self) -> None:
        # The tick alarm is INVALID/UDF from the start: the very first value a client
        # gets, ID = 0, already carries it.
        self.alarms[TICK_ALARM] = ChannelAlarm(status=AlarmStatus.UDF,
                                               severity=AlarmSeverity.INVALID_ALARM)
        super()._create_pvdb()

    # --- startup / shutdown ------------------------------------------------------------
    @state.startup
    async def state(self, instance, async_lib) -> None:
        self._dirty = asyncio.Event()
        self._published["alarm"] = (self.train_id.alarm.status, self.train_id.alarm.severity)
        if self.broadcaster is not None:
            try:
                await self.broadcaster.start()
                log.info("broadcasting ticks on tcp://%s:%d", self.broadcaster.host,
                         self.broadcaster.port)
            except OSError as exc:
                log.error("cannot broadcast on port %d: %s", self.broadcaster.port, exc)
                self.broadcaster = None
            else:
                await self.broadcast_uri.write(
                    broadcast_uri(self.broadcaster.host, self.broadcaster.port))
        loop = asyncio.get_running_loop()
        self._tasks.append(loop.create_task(self._publisher(), name="timeserver-publisher"))
        self.timer.start()
        self._changed()

    @state.shutdown
    async def state(self, instance, async_lib) -> None:
        await self.timer.stop()
        for task in self._tasks:
            task.cancel()
        if self.broadcaster is not None:
            await self.broadcaster.stop()

    # --- publishing --------------------------------------------------------------------
    def _on_tick(self, tick: Tick) -> None:
        self._pending = tick  # the publisher writes the newest tick
        self._dirty.set()

    def _broadcast(self, tick: Tick) -> None:
        if self.broadcaster is not None:
            self.broadcaster.broadcast(tick.train_id)

    def _changed(self) -> None:
        self._dirty.set()

    async def _publisher(self) -> None:
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            try:
                tick, self._pending = self._pending, None
                if tick is not None:
                    await self._publish_tick(tick)
                await self._publish_health()
            except Exception:  # a publishing bug must not stop the ticks
                log.exception("publishing failed")

    async def _publish_tick(self, tick: Tick) -> None:
        self._shown = tick
        stamp = (tick.sec - EPICS_EPOCH_UNIX_S, tick.frac_as // AS_PER_NS)
        # verify_value=False: caproto's numeric check would reset the shared tick alarm
        # to NO_ALARM on the first of these writes, while ID still holds 0.
        fields = ((self.sec, float(tick.sec)), (self.frac, float(tick.frac_as)),
                  (self.period, float(tick.period_us)),
                  (self.period_actual, self.model.ticks.averager.period_ms))
        for prop, value in fields:
            await prop.write(value, timestamp=stamp, verify_value=False)
        # ID last, so a client woken by its monitor finds the other fields already new;
        # its alarm goes in the same update as its value.
        status, severity = tick_alarm(Fault.NONE, tick.train_id)
        self._published["alarm"] = (status, severity)
        await self.train_id.write(float(tick.train_id), timestamp=stamp, verify_value=False,
                                  status=status, severity=severity)

    def pva_mirror(self, conf=None):
        """The PV Access mirror of this IOC: the tick fields as exact ``ulong`` (the
        DOUBLEs of CA hold integers only up to 2**53), each post with the tick's
        timestamp and the tick alarm, less CA's "inexact above 2**53" (HIHI/MAJOR),
        which does not hold there; the rest as over CA. Start it with its ``start``
        in the IOC's loop (caproto's ``startup_hook``)."""
        from trainstamp._pva import PVAMirror

        def exact(field):
            def value(channel):
                return int(channel.value) if self._shown is None else getattr(self._shown, field)
            return value

        def exact_alarm(channel):
            if (channel.status, channel.severity) == tick_alarm(Fault.NONE, MAX_EXACT_ID + 1):
                return AlarmSeverity.NO_ALARM, AlarmStatus.NO_ALARM
            return channel.severity, channel.status

        fields = {PV.ID: "train_id", PV.SEC: "sec", PV.FRAC: "frac_as", PV.PERIOD: "period_us"}
        p = self.prefix
        self.pva = PVAMirror(self.pvdb, codes={p + s: "L" for s in fields}, conf=conf,
                             values={p + s: exact(f) for s, f in fields.items()},
                             alarms={p + s: exact_alarm for s in fields})
        return self.pva

    async def _publish_health(self) -> None:
        model = self.model
        last = model.last
        alarm = tick_alarm(model.fault, None if last is None else last.train_id)
        if self._published.get("alarm") != alarm:
            self._published["alarm"] = alarm
            await self.train_id.alarm.write(status=alarm[0], severity=alarm[1])
        updates = (
            (self.state, "state", model.state.name),
            (self.status, "status", _text(model.status)),
            (self.bad_messages, "bad", model.bad_messages),
            (self.discontinuities, "disc", model.discontinuities),
            (self.source, "source", model.source.uri),
        )
        for prop, key, value in updates:
            if self._published.get(key) != value:
                self._published[key] = value
                await prop.write(value, verify_value=False)

    async def refuse(self, message: str) -> None:
        """Refuse a put: STATUS leads with ``message``, and the client gets it as the
        put's error at once (``CA_PROTO_ERROR`` with ``ECA_PUTFAIL`` and the message)."""
        log.info("%s", message)
        self.model.refused(message)
        await self._publish_health()
        raise ValueError(message)

    async def _accepted(self, instance) -> None:
        self.model.accepted()
        if instance.alarm.status == AlarmStatus.WRITE:  # left by an earlier refusal
            await instance.alarm.write(status=AlarmStatus.NO_ALARM,
                                       severity=AlarmSeverity.NO_ALARM)
        self._changed()

    # --- putters -----------------------------------------------------------------------
    @period_set.putter
    async def period_set(self, instance, value):
        try:
            period_ms = check_period_ms(value)
        except ValueError as exc:
            await self.refuse(f"PERIOD_SET refused: {exc}")
        self.model.set_period(period_ms)
        self.timer.limits_changed()
        await self._accepted(instance)
        return period_ms

    @source.putter
    async def source(self, instance, value):
        uri = _as_str(value)
        try:
            source = self.model.set_source(uri)  # refused unless UNKNOWN, or if malformed
        except ValueError as exc:
            await self.refuse(f"SOURCE refused: {exc}")
        await self._accepted(instance)
        how = ("the next auto reset initializes it" if self.timer.auto_reset
               else "write RESET to initialize it")
        self.model.state_text = f"UNKNOWN; source set to {source.uri}: {how}"
        self._published["source"] = source.uri
        return source.uri

    @reset.putter
    async def reset(self, instance, value):
        if value not in (0, 1):
            await self.refuse(f"RESET refused: {value!r}; write 1 to reset (0 does nothing)")
        await self._accepted(instance)
        if value:
            await self.timer.reset()
        return 0

    @missed_periods.putter
    async def missed_periods(self, instance, value):
        try:
            count = self.model.set_missed_periods(value)
        except ValueError as exc:
            await self.refuse(f"MISSED_PERIODS refused: {exc}")
        self.timer.limits_changed()
        await self._accepted(instance)
        return count
