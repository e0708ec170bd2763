"""The ophyd ``TimeServer`` device: the train-ID clock as seen from a Bluesky session.

The device is a thin shell over the TimeServer IOC (PV names from
:mod:`trainstamp.timing._pvnames`) and the pure core (:func:`interpolate_train_id`):

- ``train_id`` (hinted), ``period`` (µs) and ``state`` are read like any other signal.
- ``source`` and ``period_set`` are configuration, so every descriptor that reads the
  device (or a :class:`~trainstamp.plans.TrainStamp` built on it) carries them.
- A Channel Access monitor on ``ID`` keeps the last tick. The IOC stamps ``ID`` with the
  tick time, so one monitor update carries the ID and its time together, and
  :meth:`TimeServer.train_id_at` interpolates the train ID at any wall-clock time from it
  (Karabo's ``getActualTimestamp``), flagged STALE or INVALID by the core.
- :meth:`TimeServer.trigger` completes at the next train: a plan that triggers the
  TimeServer waits for a new tick, which is how train-synchronous step plans pace
  themselves.

The tick time comes from the EPICS timestamp of ``ID`` as a float in seconds, so it is
good to about 0.25 µs; ``SEC`` and ``FRAC`` give the exact tick when that matters.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from ophyd import Component as Cpt
from ophyd import Device, DeviceStatus, EpicsSignalRO
from ophyd.status import Status

from trainstamp.signals import EpicsSignal  # a refused put raises PutRefused at once
from trainstamp.timing._core import Stamp, StampStatus, Tick, interpolate_train_id
from trainstamp.timing._pvnames import PV

__all__ = ["TimeServer"]

#: A trigger waits at least this long (s) for the next tick before it fails.
MIN_TRIGGER_TIMEOUT = 2.0
#: ... and at least this many nominal periods.
TRIGGER_TIMEOUT_PERIODS = 5


class TimeServer(Device):
    """The TimeServer IOC: train ID, period and state, plus the last tick for stamping.

    Parameters
    ----------
    prefix : str
        PV prefix of the IOC, e.g. ``"TS:"``.
    name : str
        ophyd name; data keys are ``<name>_train_id`` and so on.
    stale_after : int
        :meth:`train_id_at` flags a result STALE once this many whole periods lie
        between the time asked for and the last tick.
    clock_ns : callable
        Wall clock in integer ns (injected for tests); ``time.time_ns`` by default.
    """

    #: where the IOC says why it refused a put (read after a refusal under pyepics)
    put_refusal_pv = PV.STATUS

    train_id = Cpt(EpicsSignalRO, PV.ID, kind="hinted", auto_monitor=True)
    period = Cpt(EpicsSignalRO, PV.PERIOD, kind="normal", auto_monitor=True)  # µs
    state = Cpt(EpicsSignalRO, PV.STATE, kind="normal", string=True, auto_monitor=True)

    source = Cpt(EpicsSignal, PV.SOURCE, kind="config", string=True)
    period_set = Cpt(EpicsSignal, PV.PERIOD_SET, kind="config")  # ms

    period_actual = Cpt(EpicsSignalRO, PV.PERIOD_ACTUAL, kind="omitted")  # ms
    tick_sec = Cpt(EpicsSignalRO, PV.SEC, kind="omitted")
    tick_frac = Cpt(EpicsSignalRO, PV.FRAC, kind="omitted")  # attoseconds
    status_text = Cpt(EpicsSignalRO, PV.STATUS, kind="omitted", string=True)
    bad_messages = Cpt(EpicsSignalRO, PV.BAD_MESSAGES, kind="omitted")
    discontinuities = Cpt(EpicsSignalRO, PV.DISCONTINUITIES, kind="omitted")
    reset_cmd = Cpt(EpicsSignal, PV.RESET, kind="omitted")

    def __init__(
        self,
        prefix: str = "",
        *,
        name: str,
        stale_after: int = 3,
        clock_ns: Callable[[], int] = time.time_ns,
        **kwargs,
    ) -> None:
        super().__init__(prefix, name=name, **kwargs)
        if stale_after < 1:
            raise ValueError(f"stale_after {stale_after} must be >= 1")
        self.stale_after = stale_after
        self.clock_ns = clock_ns
        self._lock = threading.Lock()
        self._tick: Tick | None = None
        self._period_us = 0
        self._waiters: list[tuple[int, Status]] = []
        self.period.subscribe(self._on_period, run=True)
        self.train_id.subscribe(self._on_id, run=True)

    # --- monitor callbacks (CA client thread) ------------------------------------------

    def _on_period(self, value=None, **kwargs) -> None:
        try:
            period_us = round(float(value))
        except (TypeError, ValueError, OverflowError):
            return
        if period_us < 0:
            return
        with self._lock:
            self._period_us = period_us
            if self._tick is not None and self._tick.period_us != period_us:
                tick = self._tick
                self._tick = Tick(tick.train_id, tick.sec, tick.frac_as, period_us)

    def _on_id(self, value=None, timestamp=None, **kwargs) -> None:
        # The IOC serves 0 before its first tick: that is "no tick", never a train ID.
        # Anything else that is not a whole number in range is ignored too: a bad update
        # must never become a tick.
        try:
            number = float(value)
            if not number.is_integer():
                return
            tick = Tick.from_ns(int(number), round(float(timestamp) * 1e9), self._period_us)
        except (TypeError, ValueError, OverflowError):
            return
        if tick.train_id <= 0 or tick.sec <= 0:
            return
        train_id = tick.train_id
        done: list[Status] = []
        with self._lock:
            old = self._tick
            if old is not None and (old.train_id, old.t_ns) == (tick.train_id, tick.t_ns):
                return  # a repeated update of the same tick
            self._tick = tick
            keep = []
            for after, status in self._waiters:
                if train_id > after:
                    done.append(status)
                else:
                    keep.append((after, status))
            self._waiters = keep
        for status in done:
            if not status.done:
                status.set_finished()

    # --- the clock -------------------------------------------------------------------

    @property
    def last_tick(self) -> Tick | None:
        """The last tick delivered by the ``ID`` monitor, or None before the first."""
        return self._tick

    def train_id_at(self, t: float | None = None, *, t_ns: int | None = None) -> Stamp:
        """The train ID in force at UNIX time ``t`` (s) or ``t_ns`` (ns); now by default.

        Interpolated from the last monitored tick by :func:`interpolate_train_id`: the
        result is STALE after ``stale_after`` missed periods and INVALID (``train_id``
        None) before the first tick.
        """
        if t_ns is None:
            t_ns = self.clock_ns() if t is None else round(t * 1e9)
        return interpolate_train_id(self._tick, t_ns, stale_after=self.stale_after)

    def trigger_timeout(self) -> float:
        """How long :meth:`trigger` waits for the next tick before failing (s)."""
        period_s = (self._period_us or 0) / 1e6
        return max(MIN_TRIGGER_TIMEOUT, TRIGGER_TIMEOUT_PERIODS * period_s)

    def trigger(self) -> DeviceStatus:
        """A status that completes when the next train starts.

        "Next" means a tick whose ID is above both the last tick and the ID interpolated
        for now, so a reading taken after this status completes is stamped later than
        any reading taken before it, even when a tick's monitor update arrives late. The
        status fails with a timeout if no tick comes within :meth:`trigger_timeout`.
        """
        status = DeviceStatus(self, timeout=self.trigger_timeout())
        with self._lock:
            now = interpolate_train_id(self._tick, self.clock_ns(), stale_after=self.stale_after)
            after = 0
            if self._tick is not None:
                after = self._tick.train_id
                if now.status is StampStatus.OK and now.train_id is not None:
                    after = max(after, now.train_id)
            self._waiters.append((after, status))
        return status

    def stop(self, *, success: bool = False) -> None:
        with self._lock:
            waiters, self._waiters = self._waiters, []
        for _, status in waiters:
            if not status.done:
                status.set_exception(RuntimeError(f"{self.name}: stopped while waiting for a tick"))
        super().stop(success=success)
