"""The TimeServer's application logic without I/O: state machine, health, counters.

This is the seed's ``xfel::timer::Model``. It holds the state (INIT, ON, UNKNOWN), the
source, the period setpoint, the ticks, the counters, the missed-period rule and the
text of ``STATUS``. The async :class:`~trainstamp.timing._timer.Timer` drives it, and
the IOC publishes it. Times are passed in as integer nanoseconds, so everything here
is tested directly.

**Missed periods.** A source that delivers no new train ID for ``missed_periods``
expected periods is dead, and the TimeServer goes UNKNOWN (fault TIMEOUT). The expected
period is the larger of ``PERIOD_SET`` and the measured mean (``PERIOD_ACTUAL``). Before
anything has been measured, which is the case after every (re)start, it is
``PERIOD_SET`` alone. Taking the larger one means that a change of ``PERIOD_SET`` in
either direction never trips the rule while the P-loop or the average catches up.
For a ``tcp://`` or ``ca://`` source, ``PERIOD_SET`` must therefore be at least the
source's real period.
"""

from __future__ import annotations

import enum

from trainstamp.timing._core import (
    NS_PER_S,
    PeriodLoop,
    Source,
    Stamp,
    Tick,
    TickBuilder,
    interpolate_train_id,
    parse_source,
)

#: Largest train ID a CA DOUBLE holds exactly; above it ``ID`` is in MAJOR alarm.
MAX_EXACT_ID = 2**53
#: Default of ``--missed-periods`` / ``MISSED_PERIODS``.
DEFAULT_MISSED_PERIODS = 3
MIN_MISSED_PERIODS = 1
MAX_MISSED_PERIODS = 1000
#: An unterminated TCP message ends after a pause of this fraction of PERIOD_SET.
PAUSE_FRACTION = 0.25


class State(enum.IntEnum):
    """The seed's FSM: INIT -> ON; any error -> UNKNOWN; reset -> INIT."""

    INIT = 0
    ON = 1
    UNKNOWN = 2


class Fault(enum.Enum):
    """Why ``ID`` carries no valid train right now. Each fault maps to an EPICS alarm
    status: the IOC puts ``ID`` and the tick PVs in INVALID alarm with that status
    whenever the fault is not NONE."""

    NONE = "NO_ALARM"  #: ON, with a tick since it went ON
    UDF = "UDF"  #: no tick yet since start-up or an operator RESET
    COMM = "COMM"  #: the source failed: connection refused or lost, PV disconnected
    TIMEOUT = "TIMEOUT"  #: the source went silent for the missed periods


def check_missed_periods(value: object) -> int:
    """Validate a missed-period count; ``ValueError`` quoting the value and limits."""
    if isinstance(value, bool):
        raise ValueError(f"missed periods {value!r} is not a number")
    if not isinstance(value, int):
        try:
            number = float(value)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise ValueError(f"missed periods {value!r} is not a number") from None
        if not number.is_integer():
            raise ValueError(f"missed periods {value!r} is not a whole number")
        value = int(number)
    if not MIN_MISSED_PERIODS <= value <= MAX_MISSED_PERIODS:
        raise ValueError(f"missed periods {value} outside "
                         f"{MIN_MISSED_PERIODS}..{MAX_MISSED_PERIODS}")
    return value


class RateLimit:
    """Which events of a flood to log: ``burst`` per ``interval_ns``, then a summary.

    :meth:`hit` says whether to log this event itself. :meth:`summary` returns how many
    events were held back once their interval is over, and 0 otherwise; the caller logs
    that number as one line. Counting is the caller's business: this only decides what
    reaches the log, so a flood of 85,000 bad messages costs a few lines per interval.
    """

    def __init__(self, burst: int = 5, interval_ns: int = 10 * NS_PER_S) -> None:
        if burst < 1 or interval_ns <= 0:
            raise ValueError(f"burst {burst} and interval {interval_ns} ns must be positive")
        self.burst = burst
        self.interval_ns = interval_ns
        self.held_back = 0
        self._window: int | None = None
        self._logged = 0

    def summary(self, now_ns: int, *, force: bool = False) -> int:
        if not self.held_back or self._window is None:
            return 0
        if not force and now_ns - self._window < self.interval_ns:
            return 0
        held, self.held_back = self.held_back, 0
        return held

    def hit(self, now_ns: int) -> bool:
        if self._window is None or now_ns - self._window >= self.interval_ns:
            self._window, self._logged = now_ns, 0
        if self._logged < self.burst:
            self._logged += 1
            return True
        self.held_back += 1
        return False


class TimerModel:
    """The TimeServer's state, source, period setpoint, ticks, counters and status.

    ``STATUS`` is :attr:`status`, composed from what is true now. It starts with the
    last refused put, if no put has been accepted since; then comes the state's own
    text (``ON from ...``, or why it is UNKNOWN); then a warning while the last ID is
    inexact over CA; then the last bad message while the source is ON.
    """

    def __init__(self, source: str = "local:internal", period_ms: float = 100.0, *,
                 missed_periods: int = DEFAULT_MISSED_PERIODS) -> None:
        self.source = parse_source(source)
        self.period = PeriodLoop(period_ms)
        self.missed_periods = check_missed_periods(missed_periods)
        self.state = State.INIT
        self.fault = Fault.UDF
        self.bad_messages = 0
        self.ticks = TickBuilder(nominal_period_us=round(self.period.setpoint_ns / 1000))
        self._state_text = f"initializing {self.source.uri}"
        self._note = ""
        self._bad_text = ""
        self._opening = False

    # --- STATUS ------------------------------------------------------------------------
    @property
    def status(self) -> str:
        last = self.last
        inexact = (f"train ID {last.train_id} is above 2**53: ID over CA is inexact "
                   "(the TCP broadcast carries it exactly)"
                   if last is not None and last.train_id > MAX_EXACT_ID else "")
        return "; ".join(p for p in (self._note, self._state_text, inexact, self._bad_text) if p)

    @property
    def state_text(self) -> str:
        return self._state_text

    @state_text.setter
    def state_text(self, text: str) -> None:
        """What the state is doing; a new one makes an older refusal old news."""
        self._state_text = text
        self._note = ""

    def refused(self, message: str) -> None:
        """A put was refused: STATUS leads with it until the next accepted put."""
        self._note = message

    def accepted(self) -> None:
        self._note = ""

    # --- configuration -----------------------------------------------------------------
    def set_source(self, uri: str) -> Source:
        """Change the source, only before initialization: while UNKNOWN, or in INIT
        before :meth:`opening`. So SOURCE always names the source in use (ON), being
        opened (INIT) or to be opened at the next reset (UNKNOWN)."""
        if self.state == State.ON or (self.state == State.INIT and self._opening):
            what = "in use" if self.state == State.ON else "being initialized"
            raise ValueError(f"source can only be changed before initialization; state is "
                             f"{self.state.name} ({self.source.uri!r} is {what}); "
                             f"refused {uri!r}")
        self.source = parse_source(uri)
        return self.source

    def set_period(self, period_ms: float) -> None:
        self.period.set(period_ms)
        self._update_nominal()

    def set_missed_periods(self, value: object) -> int:
        self.missed_periods = check_missed_periods(value)
        return self.missed_periods

    def _update_nominal(self) -> None:
        # Only the internal source runs at PERIOD_SET; for the others the period is
        # unknown (0) until two consecutive IDs have been seen.
        internal = self.source == Source("local", "internal")
        self.ticks.nominal_period_us = round(self.period.setpoint_ns / 1000) if internal else 0

    # --- state transitions -------------------------------------------------------------
    def opening(self) -> Source:
        """INIT has started to open the source; from now on SOURCE is refused."""
        if self.state != State.INIT:
            raise ValueError(f"cannot open a source in {self.state.name}")
        self._opening = True
        return self.source

    def initialized(self) -> None:
        if self.state != State.INIT:
            raise ValueError(f"cannot go ON from {self.state.name}")
        self._opening = False
        self._update_nominal()
        self.state = State.ON
        self.state_text = f"ON from {self.source.uri}"
        self._bad_text = ""

    def error(self, message: str, fault: Fault = Fault.COMM) -> None:
        """The seed's errorFound: go UNKNOWN; ``fault`` says why ID is invalid."""
        if fault is Fault.NONE:
            raise ValueError("an error needs a fault")
        self._opening = False
        self.state = State.UNKNOWN
        self.fault = fault
        self.state_text = message
        self._bad_text = ""

    def reset(self, *, automatic: bool = False) -> None:
        """Back to INIT. An operator's RESET forgets the last ID (UDF until the next
        tick); an automatic reset after a failure keeps the fault and the last ID as
        the anchor, so the jump across the outage counts as a discontinuity."""
        self._opening = False
        self.state = State.INIT
        self.state_text = f"initializing {self.source.uri}"
        self._bad_text = ""
        if not automatic:
            self.fault = Fault.UDF
        self.ticks.clear(keep_anchor=automatic)

    # --- data --------------------------------------------------------------------------
    def on_id(self, train_id: int, t_ns: int) -> Tick | None:
        """A new ID from the source; the tick to publish, or None (a repeat, not ON,
        or 0, which is no train and counts as a bad message)."""
        if self.state != State.ON:
            return None
        if train_id == 0:
            self.on_bad_message("train ID 0: 0 means 'no train'")
            return None
        tick = self.ticks.on_id(train_id, t_ns)
        if tick is not None:
            self.fault = Fault.NONE
        return tick

    def on_bad_message(self, reason: str) -> None:
        self.bad_messages += 1
        self._bad_text = f"bad message #{self.bad_messages}: {reason}"

    @property
    def discontinuities(self) -> int:
        return self.ticks.discontinuities

    @property
    def last(self) -> Tick | None:
        return self.ticks.last

    def interpolate(self, t_ns: int, *, stale_after: int = 3) -> Stamp:
        return interpolate_train_id(self.last, t_ns, stale_after=stale_after)

    # --- missed periods ----------------------------------------------------------------
    @property
    def measured(self) -> bool:
        return len(self.ticks.averager) > 0

    def expected_period_ns(self) -> int:
        """max(PERIOD_SET, measured mean): see the module docstring."""
        mean = self.ticks.averager.mean_ns or 0.0
        return max(self.period.setpoint_ns, round(mean))

    def silence_limit_ns(self) -> int:
        """How long the source may deliver no new ID before it counts as dead."""
        return self.missed_periods * self.expected_period_ns()

    def pause_ns(self) -> int:
        """The pause that ends an unterminated TCP message: PAUSE_FRACTION of PERIOD_SET."""
        return max(1, round(self.period.setpoint_ns * PAUSE_FRACTION))

    def silence_message(self, silent_ns: int) -> str:
        period_ms = self.expected_period_ns() / 1e6
        basis = "measured" if self.measured else "PERIOD_SET, nothing measured yet"
        since = "since the last one" if self.last is not None else "since it went ON"
        return (f"{self.source.uri}: no train ID for {silent_ns / 1e9:.3g} s {since} "
                f"({self.missed_periods} missed periods of {period_ms:g} ms, {basis})")
