"""Pure timing core: ticks, interpolation, period averaging and discontinuities.

This is the arithmetic under the seed's ``xfel::timer::Model`` plus Karabo's
``getActualTimestamp``: plain classes and functions with no sockets, no asyncio and no
clock. Every time is passed in as an integer number of nanoseconds, so the whole core is
tested directly and deterministically. The IOC, the sources and the ophyd device are thin
shells over it.
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass

from trainstamp.timing._protocol import MAX_TRAIN_ID

NS_PER_S = 1_000_000_000
#: Attoseconds per nanosecond: a fraction taken from an ns clock is a multiple of this.
AS_PER_NS = 1_000_000_000
AS_PER_S = 10**18
#: Number of ID changes ``PERIOD`` and ``PERIOD_ACTUAL`` average over (seed: 100).
AVERAGE_OVER = 100


@dataclass(frozen=True)
class Tick:
    """One time tick, as the seed's ``signalTimeTick``: four exact integers.

    ``train_id`` is the trigger ID, ``sec`` the UNIX seconds of the ID change,
    ``frac_as`` the fraction of that second in attoseconds (0 <= frac_as < 10**18), and
    ``period_us`` the averaged period in microseconds (0 while it is still unknown).
    """

    train_id: int
    sec: int
    frac_as: int
    period_us: int

    def __post_init__(self) -> None:
        if not 0 <= self.train_id <= MAX_TRAIN_ID:
            raise ValueError(f"train_id {self.train_id} outside 0..2**64-1")
        if self.sec < 0:
            raise ValueError(f"sec {self.sec} is negative")
        if not 0 <= self.frac_as < AS_PER_S:
            raise ValueError(f"frac_as {self.frac_as} outside 0..10**18-1")
        if self.period_us < 0:
            raise ValueError(f"period_us {self.period_us} is negative")

    @classmethod
    def from_ns(cls, train_id: int, t_ns: int, period_us: int) -> Tick:
        """A tick at UNIX time ``t_ns`` (integer nanoseconds)."""
        sec, rem_ns = divmod(t_ns, NS_PER_S)
        return cls(train_id, sec, rem_ns * AS_PER_NS, period_us)

    @property
    def t_ns(self) -> int:
        """The tick time in integer UNIX nanoseconds (sub-ns attoseconds truncated)."""
        return self.sec * NS_PER_S + self.frac_as // AS_PER_NS

    @property
    def period_ns(self) -> int:
        return self.period_us * 1000


class StampStatus(enum.IntEnum):
    """How far to trust an interpolated train ID."""

    OK = 0
    #: More than ``stale_after`` periods lie between the time asked for and the last tick.
    STALE = 1
    #: No tick yet (or the result would fall outside 0..2**64-1): there is no ID.
    INVALID = 2


@dataclass(frozen=True)
class Stamp:
    """An interpolated train ID; ``train_id`` is None if and only if INVALID."""

    train_id: int | None
    status: StampStatus


INVALID_STAMP = Stamp(None, StampStatus.INVALID)


def interpolate_train_id(tick: Tick | None, t_ns: int, *, stale_after: int = 3) -> Stamp:
    """The train ID in force at UNIX time ``t_ns``, from the last tick.

    This is Karabo's ``getActualTimestamp``: ``id = last_id + floor((t - t_last) /
    period)``. Python's floor division gives the matching branch before the tick too: a
    time up to one period before the tick belongs to ``last_id - 1``, and so on.

    The result is STALE when ``stale_after`` or more whole periods lie between ``t_ns``
    and the tick (missed ticks after it, or a long extrapolation before it). It is
    INVALID, with ``train_id`` None, before the first tick and never 0 by accident. While
    the period is still unknown (``period_us == 0``) the last ID is returned as is.
    """
    if tick is None:
        return INVALID_STAMP
    if stale_after < 1:
        raise ValueError(f"stale_after {stale_after} must be >= 1")
    period_ns = tick.period_ns
    if period_ns <= 0:
        return Stamp(tick.train_id, StampStatus.OK)
    steps = (t_ns - tick.t_ns) // period_ns
    train_id = tick.train_id + steps
    if not 0 <= train_id <= MAX_TRAIN_ID:
        return INVALID_STAMP
    whole_periods_between = steps if steps >= 0 else -steps - 1
    status = StampStatus.STALE if whole_periods_between >= stale_after else StampStatus.OK
    return Stamp(train_id, status)


class PeriodAverager:
    """Mean time between consecutive IDs over the last ``n`` ID changes.

    Only steps of exactly +1 are averaged: across a discontinuity (a restart of the
    source, a jump) the time difference says nothing about the period.
    """

    def __init__(self, n: int = AVERAGE_OVER) -> None:
        if n < 1:
            raise ValueError(f"averaging length {n} must be >= 1")
        self._intervals: deque[int] = deque(maxlen=n)
        self._sum = 0

    def add(self, interval_ns: int) -> None:
        if len(self._intervals) == self._intervals.maxlen:
            self._sum -= self._intervals[0]
        self._intervals.append(interval_ns)
        self._sum += interval_ns

    def clear(self) -> None:
        self._intervals.clear()
        self._sum = 0

    def __len__(self) -> int:
        return len(self._intervals)

    @property
    def mean_ns(self) -> float | None:
        return self._sum / len(self._intervals) if self._intervals else None

    @property
    def period_us(self) -> int:
        """The average in whole microseconds (``PERIOD``); 0 while nothing is known."""
        return (self._sum + 500 * len(self._intervals)) // (1000 * len(self._intervals)) if self._intervals else 0

    @property
    def period_ms(self) -> float:
        """The average in milliseconds (``PERIOD_ACTUAL``); 0.0 while nothing is known."""
        return self._sum / len(self._intervals) / 1e6 if self._intervals else 0.0


class TickBuilder:
    """Turns (train ID, receive time) events into ticks, as the seed's Model does.

    A repeated ID is not an ID change and yields no tick. An ID that is not the previous
    one plus 1 (backwards, as when FLASH's server restarts at 0, or skipping ahead)
    re-anchors the count and increments :attr:`discontinuities`.
    ``nominal_period_us``, if set, stands in for the average until one is measured.
    """

    def __init__(self, *, nominal_period_us: int = 0, average_over: int = AVERAGE_OVER) -> None:
        self.nominal_period_us = nominal_period_us
        self.averager = PeriodAverager(average_over)
        self.discontinuities = 0
        self.last: Tick | None = None
        #: The last ID before an outage: the first ID after it is checked against it.
        self.anchor: int | None = None

    def clear(self, *, keep_anchor: bool = False) -> None:
        """Forget the last tick and the average (on reset); counters are kept.

        With ``keep_anchor`` (an automatic reset after a source failure) the last ID
        is kept as the anchor: if the first ID after the outage is not the next one,
        that jump counts as a discontinuity, and a repeat of the last ID is no tick.
        An operator's RESET re-anchors without counting.
        """
        last = self.last
        self.anchor = (last.train_id if last is not None else self.anchor) if keep_anchor else None
        self.last = None
        self.averager.clear()

    def on_id(self, train_id: int, t_ns: int) -> Tick | None:
        """Feed one received ID; return the new tick, or None for a repeat."""
        last = self.last
        if last is not None:
            if train_id == last.train_id:
                return None
            if train_id == last.train_id + 1:
                self.averager.add(t_ns - last.t_ns)
            else:
                self.discontinuities += 1
        elif self.anchor is not None:
            if train_id == self.anchor:
                return None  # the ID in force before the outage: not a new train
            if train_id != self.anchor + 1:
                self.discontinuities += 1
        self.anchor = None
        period_us = self.averager.period_us or self.nominal_period_us
        tick = Tick.from_ns(train_id, t_ns, period_us)
        self.last = tick
        return tick


# --- sources ---------------------------------------------------------------------------

#: Source schemes, as in the seed plus ``ca://`` for an EPICS facility's pulse-ID PV.
LOCAL_SOURCES = ("internal", "x2timer")
MAX_SOURCE_LEN = 255
_PV_NAME_CHARS = frozenset(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-:.[]<>;{}$"
)


@dataclass(frozen=True)
class Source:
    """A parsed source URI.

    ``scheme`` is ``local``, ``tcp`` or ``ca``. ``target`` is ``internal`` or
    ``x2timer`` for ``local``, ``host:port`` for ``tcp`` and the PV name for ``ca``.
    """

    scheme: str
    target: str
    host: str | None = None
    port: int | None = None

    @property
    def uri(self) -> str:
        return f"local:{self.target}" if self.scheme == "local" else f"{self.scheme}://{self.target}"


def parse_source(uri: str) -> Source:
    """Parse a source URI; ``ValueError`` quoting it if it is malformed or unknown.

    With no scheme, ``local:`` is assumed, as in the seed (``internal`` means
    ``local:internal``).
    """
    if not isinstance(uri, str):
        raise ValueError(f"source must be a string, got {uri!r}")
    text = uri.strip()
    if not text:
        raise ValueError("empty source; expected local:internal, local:x2timer, "
                         "tcp://host:port or ca://PVNAME")
    if len(text) > MAX_SOURCE_LEN:
        raise ValueError(f"source is {len(text)} characters long, limit {MAX_SOURCE_LEN}")
    if any(c.isspace() or not c.isprintable() for c in text):
        raise ValueError(f"source {uri!r} contains whitespace or control characters")
    scheme, sep, rest = text.partition(":")
    if not sep or not scheme.isalpha():
        scheme, rest = "local", text
    scheme = scheme.lower()
    if scheme == "local":
        if rest not in LOCAL_SOURCES:
            raise ValueError(f"unknown local source {rest!r} in {uri!r}; "
                             f"expected one of {', '.join('local:' + s for s in LOCAL_SOURCES)}")
        return Source("local", rest)
    if scheme == "tcp":
        host, port = parse_tcp_uri(text)
        return Source("tcp", f"{host}:{port}", host, port)
    if scheme == "ca":
        if not rest.startswith("//") or not rest[2:]:
            raise ValueError(f"expected ca://PVNAME, got {uri!r}")
        pv = rest[2:]
        bad = sorted(set(pv) - _PV_NAME_CHARS)
        if bad:
            raise ValueError(f"PV name {pv!r} in {uri!r} contains {''.join(bad)!r}")
        return Source("ca", pv)
    raise ValueError(f"unknown source scheme {scheme!r} in {uri!r}; "
                     "expected local:, tcp:// or ca://")


def parse_tcp_uri(uri: str) -> tuple[str, int]:
    """``tcp://host:port`` -> ``(host, port)``; ``ValueError`` quoting the URI otherwise."""
    scheme, sep, rest = uri.partition("://")
    if scheme.lower() != "tcp" or not sep:
        raise ValueError(f"expected tcp://host:port, got {uri!r}")
    rest = rest.rstrip("/")
    if rest.startswith("["):  # [IPv6]:port
        host, sep, port_text = rest[1:].partition("]:")
    else:
        host, sep, port_text = rest.rpartition(":")
    if not sep or not host or "/" in host or "@" in host:
        raise ValueError(f"expected tcp://host:port, got {uri!r}")
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ValueError(f"bad port {port_text!r} in {uri!r}; expected 1..65535")
    return host, int(port_text)


# --- period setpoint -------------------------------------------------------------------

MIN_PERIOD_MS = 1.0
MAX_PERIOD_MS = 60_000.0


def check_period_ms(period_ms: float) -> float:
    """Validate a period setpoint in ms; ``ValueError`` quoting the value and limits."""
    try:
        value = float(period_ms)
    except (TypeError, ValueError):
        raise ValueError(f"period {period_ms!r} is not a number") from None
    if not MIN_PERIOD_MS <= value <= MAX_PERIOD_MS:  # also false for NaN
        raise ValueError(f"period {value!r} ms outside {MIN_PERIOD_MS:g}..{MAX_PERIOD_MS:g} ms")
    return value


#: Gain of the P-type loop that moves the generated period towards ``PERIOD_SET``.
P_GAIN = 0.2


class PeriodLoop:
    """The seed's "simple P type control loop" for the internal period.

    Each tick the commanded period moves by ``gain * (setpoint - current)``. With the
    default gain of 0.2 a step in ``PERIOD_SET`` is 90 % done after 11 ticks and 99 %
    after 21. Within 1 ns of the setpoint the loop snaps onto it, so in steady state
    deadlines advance by an exact integer number of nanoseconds and never drift.
    """

    def __init__(self, period_ms: float, gain: float = P_GAIN) -> None:
        if not 0 < gain <= 1:
            raise ValueError(f"gain {gain} outside (0, 1]")
        self.gain = gain
        self.setpoint_ns = round(check_period_ms(period_ms) * 1e6)
        self._current = float(self.setpoint_ns)

    @property
    def setpoint_ms(self) -> float:
        return self.setpoint_ns / 1e6

    def set(self, period_ms: float) -> None:
        """A new setpoint; it acts from the next :meth:`step` on."""
        self.setpoint_ns = round(check_period_ms(period_ms) * 1e6)

    def step(self) -> int:
        """Advance one tick; return the period to the next deadline in integer ns."""
        error = self.setpoint_ns - self._current
        if abs(error) < 1.0:
            self._current = float(self.setpoint_ns)
        else:
            self._current += self.gain * error
        return round(self._current)


def first_internal_id(wall_ns: int) -> int:
    """The first ID of the internal source, from the wall clock.

    One ID per :data:`MIN_PERIOD_MS` since the UNIX epoch. The internal source never runs
    faster than that, so every ID an earlier run handed out is below the first ID of any
    later run: a restart never reuses an ID. Around 1.8e12 in 2026, well below 2**53.
    """
    return wall_ns // round(MIN_PERIOD_MS * 1e6)
