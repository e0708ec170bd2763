"""Train-ID sources: thin async shells that feed (ID, time) events to a sink.

Each source has ``open()`` (initialization: raises :class:`SourceUnavailable` if it
cannot start, which sends the TimeServer to UNKNOWN), ``run()`` (runs until cancelled;
raising means a source failure) and ``close()``. All arithmetic lives in
:mod:`trainstamp.timing._core`; the sources only read clocks and sockets.

- ``local:internal``: :class:`InternalSource`, counts at absolute monotonic deadlines.
- ``tcp://host:port``: :class:`TcpSource`, decimal ASCII IDs stamped at receive time.
- ``ca://PVNAME``: :class:`CASource`, follows an EPICS PV carrying the train/pulse ID.
- ``local:x2timer``: :class:`X2TimerSource`, refuses: there is no timing board here.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from typing import Protocol

from trainstamp.timing._core import MAX_TRAIN_ID, PeriodLoop, Source, first_internal_id
from trainstamp.timing._protocol import BadMessage, MessageSplitter

log = logging.getLogger(__name__)
#: UNIX seconds of the EPICS epoch (1990-01-01 UTC).
EPICS_EPOCH_UNIX_S = 631_152_000


class SourceUnavailable(RuntimeError):
    """A source that cannot be initialized (no board, nobody listening, no PV)."""


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
            step = self.period.step()
            deadline += step
            train_id += 1
            behind = self._mono() - deadline
            if behind > step:  # held up for whole periods: skip them, keep ID ~ time
                missed = behind // step
                deadline += missed * step
                train_id += missed
        raise SourceUnavailable("internal source ran past train ID 2**64-1")


# --- tcp://host:port -------------------------------------------------------------------


class TcpSource(TrainSource):
    """``tcp://host:port``: consume decimal ASCII train IDs from a TCP server.

    Each ID is stamped with the wall clock when its bytes arrive (the seed's warning:
    this includes the network latency). Bad messages are counted through the sink and
    skipped; a connection that drops in the middle of a message counts as one bad
    message. After a disconnect it reconnects with capped exponential backoff and stays
    ON; only a failure of the very first connection is an initialization error.
    """

    def __init__(self, sink: Sink, host: str, port: int, *, connect_timeout: float = 2.0,
                 backoff_initial: float = 0.1, backoff_max: float = 5.0) -> None:
        super().__init__(sink)
        self.host, self.port = host, port
        self.connect_timeout = connect_timeout
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.connects = 0
        self._conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    @property
    def uri(self) -> str:
        return f"tcp://{self.host}:{self.port}"

    async def _connect(self) -> None:
        # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a
        # cancellation that races with a completed connect, and the IOC never exits.
        async with asyncio.timeout(self.connect_timeout):
            self._conn = await asyncio.open_connection(self.host, self.port)
        self.connects += 1
        self.sink.on_status(f"connected to {self.uri}")

    async def open(self) -> None:
        try:
            await self._connect()
        except (OSError, TimeoutError) as exc:
            raise SourceUnavailable(f"cannot connect to {self.uri}: {exc or 'timeout'}") from None

    async def run(self) -> None:
        delay = self.backoff_initial
        while True:
            if self._conn is None:
                try:
                    await self._connect()
                    delay = self.backoff_initial
                except (OSError, TimeoutError) as exc:
                    self.sink.on_status(f"{self.uri}: {exc or 'timeout'}; retry in {delay:.1f} s")
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, self.backoff_max)
                    continue
            reader, writer = self._conn
            try:
                reason = await self._read(reader)
            finally:
                self._conn = None
                writer.close()
            self.sink.on_status(f"{self.uri}: {reason}; reconnecting")

    async def _read(self, reader: asyncio.StreamReader) -> str:
        """Read until the connection ends; return why it ended."""
        splitter = MessageSplitter()
        while True:
            try:
                data = await reader.read(65536)
            except OSError as exc:
                reason = f"connection lost ({exc.__class__.__name__})"
                data = b""
            else:
                reason = "server closed the connection"
            t_ns = time.time_ns()
            if not data:
                pending = splitter.reset()
                if pending:
                    self.sink.on_bad_message(f"connection ended inside a message {pending[:40]!r}")
                return reason
            for item in splitter.feed_ids(data):
                if isinstance(item, BadMessage):
                    self.sink.on_bad_message(str(item))
                else:
                    self.sink.on_id(item, t_ns)

    async def close(self) -> None:
        if self._conn is not None:
            self._conn[1].close()
            self._conn = None


# --- ca://PVNAME -----------------------------------------------------------------------


class CASource(TrainSource):
    """``ca://PVNAME``: follow an EPICS PV that carries the train or pulse ID.

    At an EPICS facility this stands in for the timing board: point it at the event
    receiver's pulse-ID PV. Each update is stamped with the PV's own EPICS timestamp
    (the record's time of the ID change), or the receive time if the record has none.
    A value that is not a whole number in 0..2**64-1 is a bad message. Channel Access
    reconnects by itself; a disconnect is reported in the status and the state stays ON.
    """

    def __init__(self, sink: Sink, pvname: str, *, connect_timeout: float = 5.0) -> None:
        super().__init__(sink)
        self.pvname = pvname
        self.connect_timeout = connect_timeout
        self._ctx = None
        self._sub = None
        self._queue: asyncio.Queue[tuple[object, int]] = asyncio.Queue(maxsize=10_000)
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
        self._sub = pv.subscribe(data_type="time")
        self._sub.add_callback(self._on_update)

    def _connection_changed(self, pv, state: str) -> None:
        self.sink.on_status(f"ca://{self.pvname}: {state}")

    def _on_update(self, sub, response) -> None:
        # Runs on caproto's callback executor: hand over to the event loop.
        t_ns = time.time_ns()
        stamp = getattr(response.metadata, "stamp", None)
        if stamp is not None and stamp.secondsSinceEpoch > 0:
            t_ns = ((int(stamp.secondsSinceEpoch) + EPICS_EPOCH_UNIX_S) * 1_000_000_000
                    + int(stamp.nanoSeconds))
        value = response.data[0] if len(response.data) else None
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._put, value, t_ns)

    def _put(self, value: object, t_ns: int) -> None:
        if self._queue.full():
            self._queue.get_nowait()  # keep the newest
        self._queue.put_nowait((value, t_ns))

    async def run(self) -> None:
        while True:
            value, t_ns = await self._queue.get()
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


def make_source(source: Source, sink: Sink, period: PeriodLoop) -> TrainSource:
    """The source object for a parsed URI."""
    if source.scheme == "local":
        if source.target == "internal":
            return InternalSource(sink, period)
        return X2TimerSource(sink)
    if source.scheme == "tcp":
        assert source.host is not None and source.port is not None
        return TcpSource(sink, source.host, source.port)
    if source.scheme == "ca":
        return CASource(sink, source.target)
    raise ValueError(f"no source for {source.uri!r}")
