"""Train-ID sources: thin async shells that feed (ID, time) events to a sink.

Each source has ``open()`` (initialization: raises :class:`SourceUnavailable` if it
cannot start, which sends the TimeServer to UNKNOWN), ``run()`` (runs until cancelled;
raising means a source failure) and ``close()``. All arithmetic lives in
:mod:`trainstamp.timing._core`; the sources only read clocks and sockets.

- ``local:internal``: :class:`InternalSource`, counts at absolute monotonic deadlines.
- ``tcp://host:port``: :class:`TcpSource`, decimal ASCII IDs stamped at receive time;
  a lost connection is a failure.
- ``ca://PVNAME``: :class:`CASource`, follows an EPICS PV carrying the train/pulse ID;
  a disconnect is a failure, an update in INVALID alarm is no ID.
- ``local:x2timer``: :class:`X2TimerSource`, refuses: there is no timing board here.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import time
from collections.abc import Callable
from typing import Protocol

from trainstamp.timing._core import MAX_TRAIN_ID, PeriodLoop, Source, first_internal_id
from trainstamp.timing._model import PAUSE_FRACTION
from trainstamp.timing._protocol import BadMessage, MessageSplitter

log = logging.getLogger(__name__)
#: UNIX seconds of the EPICS epoch (1990-01-01 UTC).
EPICS_EPOCH_UNIX_S = 631_152_000


class SourceUnavailable(RuntimeError):
    """A source that cannot be initialized (no board, nobody listening, no PV), or that
    failed while ON (connection lost, PV disconnected)."""


class SourceSilent(SourceUnavailable):
    """A source that delivered no new train ID for the missed periods."""


class Sink(Protocol):
    """Where a source delivers what it sees."""

    def on_id(self, train_id: int, t_ns: int) -> None: ...
    def on_bad_message(self, reason: str) -> None: ...
    def on_status(self, text: str) -> None: ...


class TrainSource:
    """Base class: no-op ``open``/``close``; subclasses implement ``run``."""

    def __init__(self, sink: Sink) -> None:
        self.sink = sink

    async def open(self) -> None:
        """Initialize; raise :class:`SourceUnavailable` if the source cannot start."""

    async def run(self) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        """Release sockets and contexts."""


# --- local:internal --------------------------------------------------------------------


async def sleep_until(deadline_ns: int, *, spin_ns: int = 1_000_000,
                      clock: Callable[[], int] = time.monotonic_ns) -> int:
    """Sleep until monotonic ``deadline_ns``; return the clock reading at wake-up.

    The event loop's timer wakes up to about a millisecond late (epoll has ms
    resolution), so the last ``spin_ns`` are spent yielding with ``sleep(0)``: other
    tasks still run, and the tick leaves within tens of microseconds of its deadline.
    """
    while True:
        now = clock()
        remaining = deadline_ns - now
        if remaining <= 0:
            return now
        if remaining > spin_ns:
            await asyncio.sleep((remaining - spin_ns) / 1e9)
        else:
            await asyncio.sleep(0)


class InternalSource(TrainSource):
    """``local:internal``: count upwards at the set period.

    Tick ``k`` is due at the absolute monotonic deadline ``d[k] = d[k-1] + period[k]``
    (the period comes from the P-type :class:`~trainstamp.timing.PeriodLoop`), never
    after a ``sleep(period)``, so scheduling errors do not accumulate. Each tick is
    stamped with the wall clock in ns when it leaves. The first ID comes from the wall
    clock (:func:`~trainstamp.timing.first_internal_id`), so a restart never reuses an ID.
    If the loop was held up past a whole period, the missed deadlines are skipped along
    with their IDs: the ID stays tied to time, and consumers see a counted jump.

    ``observer(train_id, deadline_ns, woke_ns)``, if given, sees each tick's monotonic
    deadline and wake-up time (for benchmarks).
    """

    def __init__(self, sink: Sink, period: PeriodLoop, *, start_id: int | None = None,
                 spin_ns: int = 1_000_000,
                 observer: Callable[[int, int, int], None] | None = None,
                 mono_ns: Callable[[], int] = time.monotonic_ns,
                 wall_ns: Callable[[], int] = time.time_ns) -> None:
        super().__init__(sink)
        self.period = period
        self.start_id = start_id
        self.spin_ns = spin_ns
        self.observer = observer
        self._mono = mono_ns
        self._wall = wall_ns

    async def run(self) -> None:
        train_id = first_internal_id(self._wall()) if self.start_id is None else self.start_id
        deadline = self._mono()
        while train_id <= MAX_TRAIN_ID:
            woke = await sleep_until(deadline, spin_ns=self.spin_ns, clock=self._mono)
            self.sink.on_id(train_id, self._wall())
            if self.observer is not None:
                self.observer(train_id, deadline, woke)
            deadline, train_id = self._advance(deadline, train_id)
        raise SourceUnavailable("internal source ran past train ID 2**64-1")

    def _advance(self, deadline: int, train_id: int) -> tuple[int, int]:
        """The next tick's deadline and ID; whole periods the ticker was held up for
        are skipped with their IDs, so the ID stays tied to time."""
        step = self.period.step()
        deadline += step
        train_id += 1
        behind = self._mono() - deadline
        if behind > step:
            missed = behind // step
            deadline += missed * step
            train_id += missed
        return deadline, train_id


# --- tcp://host:port -------------------------------------------------------------------


def describe_error(exc: BaseException, timeout: float | None = None) -> str:
    """A connection error as words, never empty: "timed out after 2 s",
    "Connection refused", ..."""
    if isinstance(exc, TimeoutError):
        return f"timed out after {timeout:g} s" if timeout else "timed out"
    if isinstance(exc, OSError) and exc.errno:
        return os.strerror(exc.errno)
    return str(exc) or exc.__class__.__name__


class TcpSource(TrainSource):
    """``tcp://host:port``: consume decimal ASCII train IDs from a TCP server.

    Each ID is stamped with the wall clock when its last byte arrived (the seed's
    warning: this includes the network latency). Messages end at a terminator or,
    until the first terminator, at a pause of ``pause_ns()`` (see
    :mod:`~trainstamp.timing._protocol`). Bad messages are counted through the sink
    and skipped, and a connection that drops in the middle of a message counts as one
    bad message (before the first terminator the end of the connection ends the message,
as a pause does). A connection that cannot be opened, or that is lost, is a source
    failure: the TimeServer goes UNKNOWN, and its auto reset reconnects.
    """

    def __init__(self, sink: Sink, host: str, port: int, *, connect_timeout: float = 2.0,
                 pause_ns: Callable[[], int] | None = None) -> None:
        super().__init__(sink)
        self.host, self.port = host, port
        self.connect_timeout = connect_timeout
        self.pause_ns = pause_ns or (lambda: 25_000_000)
        self.connects = 0
        self._conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    @property
    def uri(self) -> str:
        return f"tcp://{self.host}:{self.port}"

    async def open(self) -> None:
        try:
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a
            # cancellation that races with a completed connect, and the IOC never exits.
            async with asyncio.timeout(self.connect_timeout):
                self._conn = await asyncio.open_connection(self.host, self.port)
        except (OSError, TimeoutError) as exc:
            raise SourceUnavailable(f"cannot connect to {self.uri}: "
                                    f"{describe_error(exc, self.connect_timeout)}") from None
        self.connects += 1
        self.sink.on_status(f"connected to {self.uri}")

    async def run(self) -> None:
        if self._conn is None:
            raise SourceUnavailable(f"{self.uri}: not connected")
        reader, writer = self._conn
        try:
            reason = await self._read(reader)
        finally:
            self._conn = None
            writer.close()
        raise SourceUnavailable(f"{self.uri}: {reason}")

    async def _read(self, reader: asyncio.StreamReader) -> str:
        """Read until the connection ends; return why it ended."""
        splitter = MessageSplitter(pause_ns=self.pause_ns())
        while True:
            splitter.pause_ns = self.pause_ns()  # PERIOD_SET may have changed
            deadline = splitter.deadline_ns
            try:
                if deadline is None:
                    data = await reader.read(65536)
                else:
                    async with asyncio.timeout(max(0, deadline - time.monotonic_ns()) / 1e9):
                        data = await reader.read(65536)
            except TimeoutError:  # the sender paused: the pending message is complete
                self._deliver(splitter, splitter.flush_ids(time.monotonic_ns()))
                continue
            except OSError as exc:
                reason = f"connection lost ({describe_error(exc)})"
                data = b""
            else:
                reason = "server closed the connection"
            if not data:
                self._deliver(splitter, splitter.finish_ids())
                return reason
            self._deliver(splitter, splitter.feed_ids(data, time.monotonic_ns()))

    def _deliver(self, splitter: MessageSplitter, items) -> None:
        # The splitter's times are monotonic (pauses must not see clock steps); each ID
        # is stamped on the wall clock at the time its last byte arrived.
        to_wall = time.time_ns() - time.monotonic_ns()
        for item in items:
            if isinstance(item, BadMessage):
                self.sink.on_bad_message(str(item))
            else:
                assert splitter.t_ns is not None
                self.sink.on_id(item, splitter.t_ns + to_wall)

    async def close(self) -> None:
        if self._conn is not None:
            self._conn[1].close()
            self._conn = None


# --- ca://PVNAME -----------------------------------------------------------------------

#: CA alarm severity INVALID: an upstream value in this alarm is not a train ID.
_INVALID_SEVERITY = 3
_DISCONNECTED = object()


class CASource(TrainSource):
    """``ca://PVNAME``: follow an EPICS PV that carries the train or pulse ID.

    At an EPICS facility this stands in for the timing board: point it at the event
    receiver's pulse-ID PV. Each update is stamped with the PV's own EPICS timestamp
    (the record's time of the ID change), or the receive time if the record has none.
    A value that is not a whole number in 0..2**64-1 is a bad message. An update in
    INVALID alarm (an upstream TimeServer that is not ON, say) is no train ID: it is
    reported in STATUS and does not count as a tick, so a silent or invalid upstream
    trips the missed-period rule. A disconnect of the PV is a source failure.
    """

    def __init__(self, sink: Sink, pvname: str, *, connect_timeout: float = 5.0) -> None:
        super().__init__(sink)
        self.pvname = pvname
        self.connect_timeout = connect_timeout
        self._ctx = None
        self._sub = None
        self._queue: asyncio.Queue[tuple[object, int, int]] = asyncio.Queue(maxsize=10_000)
        self._loop: asyncio.AbstractEventLoop | None = None

    async def open(self) -> None:
        from caproto.asyncio.client import Context

        self._loop = asyncio.get_running_loop()
        self._ctx = Context()
        (pv,) = await self._ctx.get_pvs(self.pvname,
                                        connection_state_callback=self._connection_changed)
        try:
            await pv.wait_for_connection(timeout=self.connect_timeout)
        except TimeoutError:
            raise SourceUnavailable(
                f"PV {self.pvname!r} did not connect within {self.connect_timeout:g} s") from None
        self.sink.on_status(f"ca://{self.pvname}: connected")
        self._sub = pv.subscribe(data_type="time")
        self._sub.add_callback(self._on_update)

    def _connection_changed(self, pv, state: str) -> None:
        # May run on a caproto thread: hand over to the event loop.
        if state != "connected" and self._loop is not None:
            self._loop.call_soon_threadsafe(self._put, _DISCONNECTED, 0, 0)

    def _on_update(self, sub, response) -> None:
        t_ns = time.time_ns()
        metadata = response.metadata
        stamp = getattr(metadata, "stamp", None)
        if stamp is not None and stamp.secondsSinceEpoch > 0:
            t_ns = ((int(stamp.secondsSinceEpoch) + EPICS_EPOCH_UNIX_S) * 1_000_000_000
                    + int(stamp.nanoSeconds))
        severity = int(getattr(metadata, "severity", 0))
        value = response.data[0] if len(response.data) else None
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._put, value, t_ns, severity)

    def _put(self, value: object, t_ns: int, severity: int) -> None:
        if self._queue.full():
            self._queue.get_nowait()  # keep the newest
        self._queue.put_nowait((value, t_ns, severity))

    async def run(self) -> None:
        while True:
            value, t_ns, severity = await self._queue.get()
            if value is _DISCONNECTED:
                raise SourceUnavailable(f"ca://{self.pvname}: PV disconnected")
            if severity >= _INVALID_SEVERITY:
                self.sink.on_status(f"ca://{self.pvname}: upstream value {value!r} is in "
                                    "INVALID alarm, not a train ID")
                continue
            try:
                train_id = _whole_number(value)
            except ValueError as exc:
                self.sink.on_bad_message(f"ca://{self.pvname}: {exc}")
                continue
            self.sink.on_id(train_id, t_ns)

    async def close(self) -> None:
        if self._ctx is not None:
            ctx, self._ctx = self._ctx, None
            await ctx.disconnect()


def _whole_number(value: object) -> int:
    """A PV value as a train ID: a whole number in 0..2**64-1, else ValueError."""
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ValueError(f"value {value!r} is not a number") from None
    if not math.isfinite(number) or number != math.floor(number) or not 0 <= number <= MAX_TRAIN_ID:
        raise ValueError(f"value {value!r} is not a whole number in 0..2**64-1")
    return int(value) if isinstance(value, int) else int(number)


# --- local:x2timer ---------------------------------------------------------------------


class X2TimerSource(TrainSource):
    """``local:x2timer``: the XFEL μTCA timing board, which this host does not have."""

    async def open(self) -> None:
        raise SourceUnavailable(
            "local:x2timer is not available on this host: it needs a uTCA x2timer board "
            "(/dev/x2timer*) and its ioctl driver; use local:internal, tcp://host:port "
            "or ca://PVNAME")

    async def run(self) -> None:  # pragma: no cover - open() always refuses
        raise SourceUnavailable("local:x2timer is not available on this host")


def make_source(source: Source, sink: Sink, period: PeriodLoop, *,
                realtime_priority: int | None = None) -> TrainSource:
    """The source object for a parsed URI. A ``tcp://`` source ends an unterminated
    message after a pause of :data:`~trainstamp.timing._model.PAUSE_FRACTION` of the
    period setpoint. With ``realtime_priority`` the internal source ticks from a
    thread of its own (:mod:`~trainstamp.timing._realtime`)."""
    if source.scheme == "local":
        if source.target == "internal":
            if realtime_priority is not None:
                from trainstamp.timing._realtime import RealtimeInternalSource

                return RealtimeInternalSource(sink, period, priority=realtime_priority)
            return InternalSource(sink, period)
        return X2TimerSource(sink)
    if source.scheme == "tcp":
        assert source.host is not None and source.port is not None
        return TcpSource(sink, source.host, source.port,
                         pause_ns=lambda: max(1, round(period.setpoint_ns * PAUSE_FRACTION)))
    if source.scheme == "ca":
        return CASource(sink, source.target)
    raise ValueError(f"no source for {source.uri!r}")
