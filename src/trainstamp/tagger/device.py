"""ophyd device for the tagger IOC (:mod:`trainstamp.tagger._ioc`).

:class:`TimeTagger` has one sub-device per measurement slot (``corr1``, ``hist1``,
``rate1``, ``cnt1``) and one per input channel (``ch1`` ...). ``trigger()`` puts 1 to
each active slot's ``ACQUIRE`` with put-completion: the IOC clears the slot, runs it
for ``DURATION`` seconds or ``N_TRAINS`` trains, and completes the put when the
measurement has finished. ``read()`` then returns the slot arrays inline (a 2,000-bin
histogram is small), the capture duration and the first and last train ID covered.
Channel settings and slot settings are in ``read_configuration()``.
:meth:`TimeTagger.collector` makes the per-train counts stream of a fly scan, from the
tagger server at the Pyro5 URI the IOC publishes.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ophyd import Component as Cpt
from ophyd import Device, EpicsSignalRO, Kind
from ophyd.status import AndStatus, Status

from trainstamp.signals import EpicsSignal  # a refused put raises PutRefused at once

if TYPE_CHECKING:
    from trainstamp.tagger._collector import MarkerCountCollector
    from trainstamp.timing._collector import TickCollector

SLOTS = ("corr1", "hist1", "rate1", "cnt1")


class SlotBase(Device):
    """Lifecycle and train range shared by every slot (PV suffixes as in the IOC)."""

    duration = Cpt(EpicsSignal, "DURATION", kind="config")
    n_trains = Cpt(EpicsSignal, "N_TRAINS", kind="config")
    acquire = Cpt(EpicsSignal, "ACQUIRE", put_complete=True, kind="omitted")
    start_train = Cpt(EpicsSignal, "START_TRAIN", put_complete=True, kind="omitted")
    start_ = Cpt(EpicsSignal, "START", kind="omitted")
    stop_ = Cpt(EpicsSignal, "STOP", kind="omitted")
    clear = Cpt(EpicsSignal, "CLEAR", kind="omitted")
    running = Cpt(EpicsSignalRO, "RUNNING", kind="omitted")
    status_text = Cpt(EpicsSignalRO, "STATUS", string=True, kind="omitted")
    capture_duration = Cpt(EpicsSignalRO, "CAPTURE_DURATION", kind="normal")
    first_train_id = Cpt(EpicsSignalRO, "FIRST_TRAIN_ID", kind="normal")
    last_train_id = Cpt(EpicsSignalRO, "LAST_TRAIN_ID", kind="normal")

    #: Longest train period (s) the deadline allows for; the IOC itself fails an
    #: acquisition after 2 x its expected time + 10 s, with the measured period.
    max_train_period = 1.0
    #: Seconds added to 2 x the expected time before trigger() gives up on the IOC.
    trigger_margin = 30.0

    def trigger_timeout_s(self, n: int | None = None, d: float | None = None) -> float:
        """Seconds ``trigger()`` waits for the IOC before failing its Status."""
        n = self.n_trains.get() if n is None else n
        d = float(self.duration.get()) if d is None else d
        if not (math.isfinite(d) and math.isfinite(n)) or d < 0 or n < 0:
            raise ValueError(f"{self.name}: N_TRAINS = {n}, DURATION = {d} s: not a finite, "
                             "non-negative setting; trigger() needs a bounded deadline")
        n = int(n)
        if n <= 0 and d <= 0:
            raise ValueError(f"{self.name}: N_TRAINS = 0 and DURATION = 0 s: ACQUIRE would "
                             "run until STOP and trigger() would never finish; set one of them")
        expected = n * self.max_train_period if n > 0 else d
        return 2 * expected + self.trigger_margin

    def trigger(self) -> Status:
        """Clear, acquire for DURATION or N_TRAINS; done when the IOC says so.

        The Status fails with a ``TimeoutError`` naming the slot and its settings if the
        IOC has not completed the put within :meth:`trigger_timeout_s` seconds (IOC hung
        or unreachable), so a plan never waits forever.
        """
        n, d = self.n_trains.get(), float(self.duration.get())
        timeout = self.trigger_timeout_s(n, d)  # always finite, or ValueError
        n = int(n)
        status = Status(obj=self)
        put = self.acquire.set(1)
        lock = threading.Lock()

        def finish(exc: BaseException | None = None) -> None:
            with lock:
                if status.done:
                    return
                if exc is None:
                    status.set_finished()
                else:
                    status.set_exception(exc)

        def on_put(st) -> None:
            if st.success:
                finish()
            else:
                finish(st.exception() or RuntimeError(f"{self.acquire.pvname} put failed"))

        def expired() -> None:
            if not status.done:
                finish(TimeoutError(
                    f"{self.name}: {self.acquire.pvname} = 1 not completed by the IOC within "
                    f"{timeout:.0f} s (N_TRAINS {n}, DURATION {d:g} s); is the tagger IOC "
                    "running (and not stalled), with its tag stream and train feed? "
                    "A put the IOC refused is never reported complete to an ophyd client: "
                    "its STATUS PV says why."))

        timer = threading.Timer(timeout, expired)
        timer.daemon = True
        timer.start()
        put.add_callback(on_put)
        status.add_callback(lambda _st: timer.cancel())
        return status


class CorrelationSlot(SlotBase):
    chan1 = Cpt(EpicsSignal, "CHAN1", kind="config")
    chan2 = Cpt(EpicsSignal, "CHAN2", kind="config")
    binwidth = Cpt(EpicsSignal, "BINWIDTH", kind="config")
    n_bins = Cpt(EpicsSignal, "N_BINS", kind="config")
    data = Cpt(EpicsSignalRO, "DATA", kind="normal")
    index = Cpt(EpicsSignalRO, "INDEX", kind="normal")
    g2 = Cpt(EpicsSignalRO, "G2", kind="normal")


class HistogramSlot(SlotBase):
    click_chan = Cpt(EpicsSignal, "CLICK_CHAN", kind="config")
    start_chan = Cpt(EpicsSignal, "START_CHAN", kind="config")
    binwidth = Cpt(EpicsSignal, "BINWIDTH", kind="config")
    n_bins = Cpt(EpicsSignal, "N_BINS", kind="config")
    data = Cpt(EpicsSignalRO, "DATA", kind="normal")
    index = Cpt(EpicsSignalRO, "INDEX", kind="normal")


class CountrateSlot(SlotBase):
    channels = Cpt(EpicsSignal, "CHANNELS", kind="config")
    data = Cpt(EpicsSignalRO, "DATA", kind="normal")
    counts_total = Cpt(EpicsSignalRO, "COUNTS_TOTAL", kind="normal")


class CounterSlot(SlotBase):
    channels = Cpt(EpicsSignal, "CHANNELS", kind="config")
    binwidth = Cpt(EpicsSignal, "BINWIDTH", kind="config")
    n_values = Cpt(EpicsSignal, "N_VALUES", kind="config")
    data = Cpt(EpicsSignalRO, "DATA", kind="normal")


class ChannelSettings(Device):
    """One input channel's settings (all configuration) and its count rate."""

    test_signal = Cpt(EpicsSignal, "TEST_SIGNAL", kind="config")
    trigger_level = Cpt(EpicsSignal, "TRIGGER_LEVEL", kind="config")
    delay = Cpt(EpicsSignal, "DELAY", kind="config")
    dead_time = Cpt(EpicsSignal, "DEAD_TIME", kind="config")
    event_divider = Cpt(EpicsSignal, "EVENT_DIVIDER", kind="config")
    count_rate = Cpt(EpicsSignalRO, "COUNT_RATE", kind="omitted")


_SLOT_KIND = Kind.normal | Kind.config


class TimeTagger(Device):
    """The tagger IOC as one ophyd device.

    Parameters
    ----------
    prefix
        The IOC prefix, e.g. ``"TT:"``.
    slots
        The slots that ``trigger()`` runs and ``read()`` reports (default: ``corr1``).
        The others stay reachable as attributes but are left out of readings.
    """

    #: where the IOC says why it refused a put (read after a refusal under pyepics)
    put_refusal_pv = "LAST_ERROR"

    corr1 = Cpt(CorrelationSlot, "CORR1:", kind=_SLOT_KIND)
    hist1 = Cpt(HistogramSlot, "HIST1:", kind=_SLOT_KIND)
    rate1 = Cpt(CountrateSlot, "RATE1:", kind=_SLOT_KIND)
    cnt1 = Cpt(CounterSlot, "CNT1:", kind=_SLOT_KIND)
    ch1 = Cpt(ChannelSettings, "CH1:", kind="config")
    ch2 = Cpt(ChannelSettings, "CH2:", kind="config")
    ch3 = Cpt(ChannelSettings, "CH3:", kind="config")
    ch4 = Cpt(ChannelSettings, "CH4:", kind="config")
    ch5 = Cpt(ChannelSettings, "CH5:", kind="config")
    ch6 = Cpt(ChannelSettings, "CH6:", kind="config")
    ch7 = Cpt(ChannelSettings, "CH7:", kind="config")
    ch8 = Cpt(ChannelSettings, "CH8:", kind="config")
    last_train_id = Cpt(EpicsSignalRO, "LAST_TRAIN_ID", kind="omitted")
    feed_train_id = Cpt(EpicsSignalRO, "FEED_TRAIN_ID", kind="omitted")
    # The tag link's state (PV ``CONNECTED``). Not called ``connected``: that would hide
    # ophyd's ``Device.connected`` property, which wait_for_connection and users rely on.
    link_connected = Cpt(EpicsSignalRO, "CONNECTED", kind="omitted")
    #: The Pyro5 URI of the IOC's tagger server, as the IOC serves it.
    pyro_uri = Cpt(EpicsSignalRO, "PYRO_URI", string=True, kind="omitted")

    def __init__(self, prefix: str = "TT:", *, name: str, slots: Sequence[str] = ("corr1",),
                 **kwargs) -> None:
        super().__init__(prefix, name=name, **kwargs)
        self.active_slots = tuple(slots)

    @property
    def active_slots(self) -> tuple[str, ...]:
        return self._active_slots

    @active_slots.setter
    def active_slots(self, slots: Sequence[str]) -> None:
        bad = [s for s in slots if s not in SLOTS]
        if bad or not slots:
            raise ValueError(f"slots must be a non-empty subset of {SLOTS}, got {list(slots)}")
        self._active_slots = tuple(slots)
        for s in SLOTS:
            getattr(self, s).kind = _SLOT_KIND if s in slots else Kind.omitted

    def train_start_signals(self) -> list[EpicsSignal]:
        """What a plan sets to make the next acquisition of every active slot that counts
        trains (N_TRAINS > 0) open at a named train (:func:`~trainstamp.plans.arm_train`).
        A slot timed by DURATION has no train to start on."""
        return [getattr(self, s).start_train for s in self.active_slots
                if getattr(self, s).n_trains.get() > 0]

    def trigger(self) -> Status:
        statuses = [getattr(self, s).trigger() for s in self.active_slots]
        status = statuses[0]
        for st in statuses[1:]:
            status = AndStatus(status, st)
        return status

    def collector(self, num_trains: int, *, timeserver: Any, click_channel: int = 1,
                  marker_channel: int | None = None, ticks: TickCollector | None = None,
                  timeout_s: float = 10.0) -> MarkerCountCollector:
        """The collector of photon counts per train for a fly scan (stream ``tagger`` of
        :func:`~trainstamp.plans.train_fly`): a ``CountBetweenMarkers`` on the tagger
        server the IOC publishes in ``PYRO_URI``, counting ``click_channel`` between
        the markers; ``ticks`` (the fly's tick collector) gives the bins their trains.
        """
        from trainstamp.tagger._collector import MarkerCountCollector

        value = self.pyro_uri.get()
        uri = value.strip() if isinstance(value, str) else ""
        if not uri:
            raise RuntimeError(f"{self.name}: the tagger IOC {self.prefix} publishes no Pyro5 "
                               f"server ({self.prefix}PYRO_URI is empty)")
        return MarkerCountCollector(uri, click_channel, timeserver, num_trains,
                                    marker_channel=marker_channel, timeout_s=timeout_s, ticks=ticks)

