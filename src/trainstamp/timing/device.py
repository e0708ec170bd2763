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
- The device never stamps OK what the IOC does not vouch for. The IOC puts ``ID`` in
  INVALID alarm whenever it is not ON with a fresh tick. The device keeps the severity
  of each ``ID`` update, the last ``STATE`` and the connection of ``ID``, and
  :meth:`TimeServer.train_id_at` downgrades OK to STALE unless all three are healthy.
  ``ticking`` is a soft signal that is 1 while stamps are OK (healthy, and a tick within
  ``stale_after`` periods) and 0 otherwise; bluesky suspenders watch it (see
  :mod:`trainstamp.timing.suspenders`).
- :meth:`TimeServer.collector` makes the tick stream of a fly scan, from the broadcaster
  the IOC publishes in ``BROADCAST_URI`` or from the ``ID`` monitor.

The tick time comes from the EPICS timestamp of ``ID`` as a float in seconds, so it is
good to about 0.25 µs; ``SEC`` and ``FRAC`` give the exact tick when that matters.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
from ophyd import Component as Cpt
from ophyd import Device, DeviceStatus, EpicsSignalRO, Signal
from ophyd.status import Status

from trainstamp.signals import EpicsSignal  # a refused put raises PutRefused at once
from trainstamp.timing._core import Stamp, StampStatus, Tick, interpolate_train_id
from trainstamp.timing._pvnames import PV, STATE_STRINGS

if TYPE_CHECKING:
    from trainstamp.timing._collector import TickCollector

__all__ = ["TimeServer"]

#: A trigger waits at least this long (s) for the next tick before it fails.
MIN_TRIGGER_TIMEOUT = 2.0
#: ... and at least this many nominal periods.
TRIGGER_TIMEOUT_PERIODS = 5
#: EPICS alarm severity INVALID: an ID update with it is no tick.
INVALID_SEVERITY = 3
#: Where :meth:`TimeServer.collector` takes the ticks of a fly scan from.
TICKS_FROM = ("auto", "broadcaster", "monitor")


class TickStatus(DeviceStatus):
    """The status of :meth:`TimeServer.trigger`; on timeout its message says why no
    tick came (the device's :attr:`~TimeServer.health` at that moment)."""

    def __init__(self, device: TimeServer, after: int, **kwargs) -> None:
        self.after = after
        super().__init__(device, **kwargs)

    def __repr__(self) -> str:
        device = self.device
        why = getattr(device, "health", "") or "none came"
        return (f"TickStatus({device.name}: waiting for a train after {self.after} within "
                f"{self.timeout:g} s; {why}, done={self.done}, success={self.success})")


def state_name(value: object) -> str | None:
    """``STATE`` as its name. A monitor gives the name under caproto, but the index
    under pyepics (as a number, or as its digits: a "time" monitor has no enum strings
    to convert with); each must read "ON" when the IOC is ON."""
    if value is None:
        return None
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, int | np.integer) and not isinstance(value, bool):
        index = int(value)
        return STATE_STRINGS[index] if 0 <= index < len(STATE_STRINGS) else f"state {index}"
    return str(value)


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
    missed_periods = Cpt(EpicsSignal, PV.MISSED_PERIODS, kind="omitted")
    reset_cmd = Cpt(EpicsSignal, PV.RESET, kind="omitted")
    #: ``tcp://host:port`` of the IOC's tick broadcaster ("" if it has none).
    broadcast_uri = Cpt(EpicsSignalRO, PV.BROADCAST_URI, kind="omitted", string=True)
    #: 1 while stamps from this device are OK, 0 otherwise (for suspenders).
    ticking = Cpt(Signal, value=0, kind="omitted")

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
        self._health_lock = threading.RLock()
        self._tick: Tick | None = None
        self._period_us = 0
        self._waiters: list[tuple[int, Status]] = []
        self._severity = 0  # of the last ID update
        self._server_state: str | None = None  # None until STATE has been heard from
        self._id_connected = True
        self._wake = threading.Event()
        self._watchdog: threading.Thread | None = None
        self._closing = threading.Event()
        self.period.subscribe(self._on_period, run=True)
        self.state.subscribe(self._on_state, run=True)
        self.train_id.subscribe(self._on_id_meta, event_type=self.train_id.SUB_META, run=False)
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
        self._health_changed()

    def _on_state(self, value=None, **kwargs) -> None:
        with self._lock:
            self._server_state = state_name(value)
        self._health_changed()

    def _on_id_meta(self, connected=None, **kwargs) -> None:
        if connected is not None:
            with self._lock:
                self._id_connected = bool(connected)
            self._health_changed()

    def _on_id(self, value=None, timestamp=None, severity=None, **kwargs) -> None:
        try:
            severity = int(severity or 0)
        except (TypeError, ValueError):
            severity = INVALID_SEVERITY
        with self._lock:
            self._severity = severity
        # An update in INVALID alarm is no tick: the IOC is not ON (or has no tick since
        # it went ON). The IOC serves 0 before its first tick: that is "no tick", never
        # a train ID. Anything else that is not a whole number in range is ignored too:
        # a bad update must never become a tick.
        try:
            number = float(value)
            if severity >= INVALID_SEVERITY or not number.is_integer():
                raise ValueError
            tick = Tick.from_ns(int(number), round(float(timestamp) * 1e9), self._period_us)
            if tick.train_id <= 0 or tick.sec <= 0:
                raise ValueError
        except (TypeError, ValueError, OverflowError):
            self._health_changed()
            return
        train_id = tick.train_id
        done: list[Status] = []
        with self._lock:
            old = self._tick
            if old is not None and (old.train_id, old.t_ns) == (tick.train_id, tick.t_ns):
                tick = None  # a repeated update of the same tick (an alarm change, say)
            else:
                self._tick = tick
                backwards = old is not None and train_id < old.train_id
                keep = []
                for after, status in self._waiters:
                    # A jump backwards (a restarted source) is a new train too.
                    if train_id > after or backwards:
                        done.append(status)
                    else:
                        keep.append((after, status))
                self._waiters = keep
        self._health_changed()
        for status in done:
            if not status.done:
                status.set_finished()

    # --- health ------------------------------------------------------------------------

    @property
    def health(self) -> str:
        """Why stamps would not be OK, or "" when the IOC vouches for its ticks."""
        # No lock: three attribute reads, and this runs inside status reprs and logs.
        connected, state, severity = self._id_connected, self._server_state, self._severity
        if not connected:
            return f"{self.prefix}{PV.ID} is disconnected"
        if state is not None and state != "ON":
            return f"TimeServer STATE is {state}"
        if severity:
            return f"{self.prefix}{PV.ID} is in alarm (severity {severity})"
        return ""

    @property
    def healthy(self) -> bool:
        return not self.health

    def _stamp_now(self) -> Stamp:
        return self.train_id_at()

    def _health_changed(self) -> None:
        with self._health_lock:  # the CA thread and the watchdog thread both get here
            ticking = int(self._stamp_now().status is StampStatus.OK)
            if self.ticking.get() != ticking:
                self.ticking.put(ticking)
        if ticking and self._watchdog is None and not self._closing.is_set():
            self._watchdog = threading.Thread(target=self._watch, daemon=True,
                                              name=f"{self.name}-staleness")
            self._watchdog.start()
        self._wake.set()

    def _watch(self) -> None:
        """Turn ``ticking`` off once the last tick is ``stale_after`` periods old."""
        while not self._closing.is_set():
            self._wake.clear()
            with self._lock:
                tick = self._tick
            timeout = None
            if tick is not None and tick.period_ns > 0 and self.ticking.get():
                stale_at = tick.t_ns + self.stale_after * tick.period_ns
                timeout = max(0.0, (stale_at - self.clock_ns()) / 1e9) + 1e-3
            if not self._wake.wait(timeout) and not self._closing.is_set():
                self._health_changed()

    def destroy(self) -> None:
        self._closing.set()
        self._wake.set()
        super().destroy()

    # --- the clock -------------------------------------------------------------------

    @property
    def last_tick(self) -> Tick | None:
        """The last tick delivered by the ``ID`` monitor, or None before the first."""
        return self._tick

    def train_id_at(self, t: float | None = None, *, t_ns: int | None = None) -> Stamp:
        """The train ID in force at UNIX time ``t`` (s) or ``t_ns`` (ns); now by default.

        Interpolated from the last monitored tick by :func:`interpolate_train_id`: the
        result is STALE after ``stale_after`` missed periods, and INVALID (``train_id``
        None) before the first tick. It is STALE too, never OK, while the IOC does not
        vouch for its ticks: ``STATE`` not ON, ``ID`` in alarm or disconnected (see
        :attr:`health`).
        """
        if t_ns is None:
            t_ns = self.clock_ns() if t is None else round(t * 1e9)
        stamp = interpolate_train_id(self._tick, t_ns, stale_after=self.stale_after)
        if stamp.status is StampStatus.OK and not self.healthy:
            return Stamp(stamp.train_id, StampStatus.STALE)
        return stamp

    def trigger_timeout_s(self) -> float:
        """How long :meth:`trigger` waits for the next tick before failing (s)."""
        period_s = (self._period_us or 0) / 1e6
        return max(MIN_TRIGGER_TIMEOUT, TRIGGER_TIMEOUT_PERIODS * period_s)

    def trigger(self) -> DeviceStatus:
        """A status that completes when the next train starts.

        "Next" means a tick whose ID is above both the last tick and the ID interpolated
        for now, so a reading taken after this status completes is stamped later than
        any reading taken before it, even when a tick's monitor update arrives late. A
        jump backwards (a restarted source) counts as the next train too. The status
        fails with a timeout if no tick comes within :meth:`trigger_timeout_s`.
        """
        with self._lock:
            now = interpolate_train_id(self._tick, self.clock_ns(), stale_after=self.stale_after)
            after = 0
            if self._tick is not None:
                after = self._tick.train_id
                if now.status is StampStatus.OK and now.train_id is not None:
                    after = max(after, now.train_id)
        status = TickStatus(self, after, timeout=self.trigger_timeout_s())
        with self._lock:  # (not held while the status is made: its repr takes no lock)
            tick = self._tick
            if tick is None or tick.train_id <= after:
                self._waiters.append((after, status))
                return status
        status.set_finished()  # a tick came while the status was being made
        return status

    # --- fly scans ----------------------------------------------------------------------

    def collector(self, num_trains: int, *, ticks_from: str = "auto",
                  timeout_s: float = 5.0) -> TickCollector:
        """The collector of this TimeServer's ticks for a fly scan (stream ``timeserver``
        of :func:`~trainstamp.plans.train_fly`).

        Parameters
        ----------
        num_trains : int
            Ticks to record.
        ticks_from : {"auto", "broadcaster", "monitor"}
            ``"broadcaster"``: from the tick broadcaster the IOC publishes in
            ``BROADCAST_URI`` (TCP, loses no tick), failing if it has none or it cannot be
            reached; ``"monitor"``: from the CA monitor on ``ID`` (may skip an update on a
            busy client); ``"auto"``: the broadcaster if the IOC has one, else (or if it
            cannot be reached) the monitor.
        timeout_s : float
            Seconds without a tick after which the collector fails.
        """
        from trainstamp.timing._collector import TickCollector

        if ticks_from not in TICKS_FROM:
            raise ValueError(f"ticks_from must be one of {', '.join(TICKS_FROM)}, "
                             f"got {ticks_from!r}")
        feed_uri = None
        if ticks_from != "monitor":
            value = self.broadcast_uri.get()
            feed_uri = value.strip() or None if isinstance(value, str) else None
            if feed_uri is None and ticks_from == "broadcaster":
                raise RuntimeError(f"TimeServer {self.prefix or self.name} publishes no tick "
                                   f"broadcaster ({self.prefix}{PV.BROADCAST_URI} is empty: "
                                   "started with --broadcast-port 0?)")
        return TickCollector(self, num_trains, timeout_s=timeout_s, feed_uri=feed_uri,
                             feed_fallback=ticks_from == "auto")

    def pause(self) -> None:
        """The RunEngine suspends or pauses: it abandons the pending triggers and,
        on resume, rewinds to its last checkpoint and triggers again. Release the
        abandoned ones now, so that their timeout does not fail the run that left
        them. The readings after the resume are stamped at that time."""
        with self._lock:
            waiters, self._waiters = self._waiters, []
        for _, status in waiters:
            if not status.done:
                status.set_finished()

    def stop(self, *, success: bool = False) -> None:
        with self._lock:
            waiters, self._waiters = self._waiters, []
        for _, status in waiters:
            if not status.done:
                status.set_exception(RuntimeError(f"{self.name}: stopped while waiting for a tick"))
        super().stop(success=success)
