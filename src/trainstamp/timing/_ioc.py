"""The TimeServer IOC: a caproto PVGroup, thin over the timing core.

Types. Channel Access has no 64-bit integer, so the four 64-bit tick fields are
DOUBLEs, which hold every integer up to 2**53 exactly: train IDs (about 1.8e12 from the
internal source), UNIX seconds and periods in µs. ``FRAC`` (attoseconds, up to 1e18)
is exact too for every source we have, because their clocks tick in whole nanoseconds:
``frac_as = ns * 10**9 = (ns * 5**9) * 2**9`` with ``ns * 5**9 < 2**51``, a number a
DOUBLE represents exactly. The tick is therefore rebuilt exactly as
``Tick(int(ID), int(SEC), int(FRAC), int(PERIOD))``. The EPICS timestamp of every tick
PV, ``ID`` included, is the tick time itself (EPICS timestamps carry whole ns).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import socket
from collections.abc import Sequence
from textwrap import dedent

from caproto import AlarmSeverity, AlarmStatus, ChannelType
from caproto.server import PVGroup, pvproperty, run, template_arg_parser

from trainstamp.timing._broadcast import Broadcaster
from trainstamp.timing._core import (
    AS_PER_NS,
    Tick,
    TimerModel,
    check_period_ms,
    parse_source,
)
from trainstamp.timing._pvnames import DEFAULT_BROADCAST_PORT, DEFAULT_PREFIX, PV, STATE_STRINGS
from trainstamp.timing._sources import EPICS_EPOCH_UNIX_S
from trainstamp.timing._timer import Timer

log = logging.getLogger(__name__)

#: Largest train ID a CA DOUBLE holds exactly; above it ``ID`` is in MAJOR alarm.
MAX_EXACT_ID = 2**53

#: Longest text in the ``SOURCE`` and ``STATUS`` character-array PVs.
TEXT_LEN = 256


def _text(value: str) -> str:
    return value if len(value) < TEXT_LEN else value[: TEXT_LEN - 4] + "..."


def _as_str(value: object) -> str:
    if isinstance(value, bytes | bytearray):
        return value.decode("utf-8", "replace").rstrip("\0")
    return str(value).rstrip("\0")


class TimeServerIOC(PVGroup):
    """TimeServer IOC: hands out train IDs and re-broadcasts them over TCP.

    Tick (read-only, EPICS timestamp = tick time): ID, SEC, FRAC (attoseconds),
    PERIOD (averaged, us), PERIOD_ACTUAL (mean of last 100 ID changes, ms).
    Control: PERIOD_SET (ms), SOURCE (local:internal, local:x2timer, tcp://host:port,
    ca://PVNAME; only while not ON), RESET (write 1: back to INIT).
    Health: STATE (INIT/ON/UNKNOWN), STATUS (text), BAD_MESSAGES, DISCONTINUITIES.
    """

    train_id = pvproperty(name=PV.ID, value=0.0, read_only=True, precision=0,
                          doc="train ID of the last tick (exact to 2**53); timestamp = tick time")
    sec = pvproperty(name=PV.SEC, value=0.0, read_only=True, precision=0, units="s",
                     doc="UNIX seconds of the last tick")
    frac = pvproperty(name=PV.FRAC, value=0.0, read_only=True, precision=0, units="as",
                      doc="fraction of the second of the last tick, attoseconds")
    period = pvproperty(name=PV.PERIOD, value=0.0, read_only=True, precision=0, units="us",
                        doc="averaged period")
    period_actual = pvproperty(name=PV.PERIOD_ACTUAL, value=0.0, read_only=True, precision=3,
                               units="ms", doc="mean period over the last 100 ID changes")
    period_set = pvproperty(name=PV.PERIOD_SET, value=100.0, precision=3, units="ms",
                            doc="period setpoint of the internal source (P-type loop)")
    source = pvproperty(name=PV.SOURCE, value="local:internal", dtype=ChannelType.CHAR,
                        max_length=TEXT_LEN, string_encoding="utf-8",
                        doc="source URI; can only be changed while not ON")
    state = pvproperty(name=PV.STATE, value=STATE_STRINGS[0], dtype=ChannelType.ENUM,
                       enum_strings=STATE_STRINGS, read_only=True, doc="INIT, ON or UNKNOWN")
    reset = pvproperty(name=PV.RESET, value=0, doc="write non-zero to reset (-> INIT)")
    status = pvproperty(name=PV.STATUS, value="starting", dtype=ChannelType.CHAR,
                        max_length=TEXT_LEN, string_encoding="utf-8", read_only=True,
                        doc="what the TimeServer is doing, or why it is not ON")
    bad_messages = pvproperty(name=PV.BAD_MESSAGES, value=0, read_only=True,
                              doc="count of rejected source messages")
    discontinuities = pvproperty(name=PV.DISCONTINUITIES, value=0, read_only=True,
                                 doc="count of jumps (backwards or skipping ahead) in the ID")

    def __init__(self, *args, source: str = "local:internal", period_ms: float = 100.0,
                 broadcast_port: int = DEFAULT_BROADCAST_PORT, broadcast_bind: str = "127.0.0.1",
                 auto_reset: bool = True, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.model = TimerModel(source, period_ms)
        self.timer = Timer(self.model, auto_reset=auto_reset, on_change=self._changed)
        self.broadcaster = (Broadcaster(broadcast_bind, broadcast_port) if broadcast_port
                            else None)
        self.timer.listeners += [self._on_tick, self._broadcast]
        self._pending: Tick | None = None
        self._dirty = asyncio.Event()
        self._published: dict[str, object] = {}
        self._tasks: list[asyncio.Task[None]] = []

    # --- startup / shutdown ------------------------------------------------------------
    @state.startup
    async def state(self, instance, async_lib) -> None:
        self._dirty = asyncio.Event()
        await self.train_id.alarm.write(status=AlarmStatus.UDF,
                                        severity=AlarmSeverity.INVALID_ALARM)
        await self.source.write(self.model.source.uri, verify_value=False)
        await self.period_set.write(self.model.period.setpoint_ms, verify_value=False)
        if self.broadcaster is not None:
            try:
                await self.broadcaster.start()
                log.info("broadcasting ticks on tcp://%s:%d", self.broadcaster.host,
                         self.broadcaster.port)
            except OSError as exc:
                log.error("cannot broadcast on port %d: %s", self.broadcaster.port, exc)
                self.broadcaster = None
        loop = asyncio.get_running_loop()
        self._tasks.append(loop.create_task(self._publisher(), name="timeserver-publisher"))
        self.timer.start()

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
        stamp = (tick.sec - EPICS_EPOCH_UNIX_S, tick.frac_as // AS_PER_NS)
        await self.sec.write(float(tick.sec), timestamp=stamp)
        await self.frac.write(float(tick.frac_as), timestamp=stamp)
        await self.period.write(float(tick.period_us), timestamp=stamp)
        await self.period_actual.write(self.model.ticks.averager.period_ms, timestamp=stamp)
        # ID last, so a client woken by its monitor finds the other fields already new.
        if tick.train_id <= MAX_EXACT_ID:
            alarm = {"status": AlarmStatus.NO_ALARM, "severity": AlarmSeverity.NO_ALARM}
        else:  # a DOUBLE cannot hold it exactly: publish, but never as if it were exact
            alarm = {"status": AlarmStatus.HIHI, "severity": AlarmSeverity.MAJOR_ALARM}
            self.model.status = (f"train ID {tick.train_id} is above 2**53: ID over CA is "
                                 "inexact (the TCP broadcast carries it exactly)")
        await self.train_id.write(float(tick.train_id), timestamp=stamp, **alarm)

    async def _publish_health(self) -> None:
        model = self.model
        updates = (
            (self.state, "state", model.state.name),
            (self.status, "status", _text(model.status)),
            (self.bad_messages, "bad", model.bad_messages),
            (self.discontinuities, "disc", model.discontinuities),
        )
        for prop, key, value in updates:
            if self._published.get(key) != value:
                self._published[key] = value
                await prop.write(value, verify_value=False)

    async def _refuse(self, message: str) -> None:
        self.model.status = message
        self._published["status"] = _text(message)
        await self.status.write(_text(message), verify_value=False)
        raise ValueError(message)

    # --- putters -----------------------------------------------------------------------
    @period_set.putter
    async def period_set(self, instance, value):
        try:
            period_ms = check_period_ms(value)
        except ValueError as exc:
            await self._refuse(f"PERIOD_SET refused: {exc}")
        self.model.set_period(period_ms)
        return period_ms

    @source.putter
    async def source(self, instance, value):
        uri = _as_str(value)
        try:
            source = self.model.set_source(uri)  # refused while ON, or if malformed
        except ValueError as exc:
            await self._refuse(f"SOURCE refused: {exc}")
        self.model.status = f"source set to {source.uri}; RESET to initialize"
        self._changed()
        return source.uri

    @reset.putter
    async def reset(self, instance, value):
        if value:
            await self.timer.reset()
        return 0


def check_port_free(host: str, port: int) -> None:
    """Raise ``OSError`` if ``host:port`` cannot be listened on (clear error at start-up)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))


def main(argv: Sequence[str]) -> int:
    """``trainstamp ioc timeserver [caproto options] --source URI --period MS ...``."""
    from trainstamp.timing.cli import _period_ms, _port

    parser, split_args = template_arg_parser(
        default_prefix=DEFAULT_PREFIX, desc=dedent(TimeServerIOC.__doc__ or ""),
        supported_async_libs=["asyncio"])
    parser.prog = "trainstamp ioc timeserver"

    def source_uri(text: str) -> str:
        try:
            return parse_source(text).uri
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    parser.add_argument("--source", type=source_uri, default="local:internal",
                        help="local:internal (default), local:x2timer, tcp://host:port "
                             "or ca://PVNAME")
    parser.add_argument("--period", type=_period_ms, default=100.0,
                        help="period setpoint in ms (default 100)")
    parser.add_argument("--broadcast-port", type=_port, default=DEFAULT_BROADCAST_PORT,
                        help=f"TCP port re-broadcasting every tick (default "
                             f"{DEFAULT_BROADCAST_PORT}; 0 disables it)")
    parser.add_argument("--broadcast-bind", default="127.0.0.1",
                        help="address the broadcaster listens on (default 127.0.0.1; "
                             "0.0.0.0 for all interfaces)")
    parser.add_argument("--no-auto-reset", action="store_true",
                        help="stay UNKNOWN after a source failure until RESET is written")
    args = parser.parse_args(list(argv))
    ioc_options, run_options = split_args(args)
    if args.broadcast_port:
        try:
            check_port_free(args.broadcast_bind, args.broadcast_port)
        except OSError as exc:
            parser.exit(1, f"{parser.prog}: cannot broadcast on "
                           f"{args.broadcast_bind}:{args.broadcast_port}: {exc}\n")
    ioc = TimeServerIOC(source=args.source, period_ms=args.period,
                        broadcast_port=args.broadcast_port, broadcast_bind=args.broadcast_bind,
                        auto_reset=not args.no_auto_reset, **ioc_options)
    run(ioc.pvdb, **run_options)
    return 0

