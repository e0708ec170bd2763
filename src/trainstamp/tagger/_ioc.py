"""The time tagger's EPICS IOC: channel settings and fixed measurement slots.

It runs in the same process as the Pyro5 server and shares the instrument and the tag
stream with it; its measurements run on an engine tagger of its own. Default prefix
``TT:``. PVs (all under the prefix):

Status: ``SERIAL``, ``CONNECTED``, ``TAGS``, ``TAG_RATE``, ``BLOCKS``, ``BAD_FRAMES``,
``LOST_BLOCKS``, ``OVERFLOWS``, ``MISSED_EVENTS``, ``LAST_TRAIN_ID``,
``MARKERS_PAIRED``, ``MARKERS_INFERRED``, ``MARKERS_UNMATCHED``, ``MARKERS_AMBIGUOUS``,
``PYRO_URI``, ``PYRO_OBJECTS``, ``LAST_ERROR``, ``STATUS`` (the whole chain's health
in one line: tag link, processor backlog, overflows, faults), ``FAULTS`` (exceptions
the tag-link and processor threads caught and survived), ``BACKLOG`` (blocks and
ticks waiting for the processor), ``DROPPED_TICKS``, ``BAD_PUTS`` (puts refused).

Per input channel n (``CH{n}:``): ``TEST_SIGNAL``, ``TRIGGER_LEVEL`` (V),
``DELAY`` (ps), ``DEAD_TIME`` (ps), ``EVENT_DIVIDER``, ``COUNT_RATE`` (Hz, read-only).

Measurement slots ``CORR1:`` (Correlation), ``HIST1:`` (Histogram), ``RATE1:``
(Countrate), ``CNT1:`` (Counter) share: ``DURATION`` (s of tagger time),
``N_TRAINS`` (a number of trains instead; wins when > 0), ``START``, ``STOP``,
``CLEAR``, ``ACQUIRE`` (clear, run for DURATION or N_TRAINS; the put completes when
done), ``RUNNING``, ``CAPTURE_DURATION`` (s), ``FIRST_TRAIN_ID``, ``LAST_TRAIN_ID``
(DOUBLE, exact to 2**53; 0 with INVALID severity when unknown), ``STATUS``; and their
own settings and data (see docs/tagger.md).

PV Access (``--pva``, the default; :func:`pva_mirror`): every PV under the same name,
train IDs as ``ulong``.
"""

from __future__ import annotations

from textwrap import dedent

from caproto import ChannelType
from caproto.server import PVGroup, SubGroup, pvproperty

from trainstamp.tagger._checks import number
from trainstamp.tagger._slots import (
    CorrelationSlot,
    CounterSlot,
    CountrateSlot,
    HistogramSlot,
    blocking,
    mark_unknown,
    write_train_id,
)
from trainstamp.timing._ioc import WholeNumber


def _channel_group(n: int) -> type[PVGroup]:
    """A PVGroup class for input channel ``n`` (settings forwarded to the instrument)."""

    class Channel(PVGroup):
        __doc__ = f"Settings and count rate of input channel {n}."
        test_signal = pvproperty(name="TEST_SIGNAL", value=False, doc="internal test signal on")
        trigger_level = pvproperty(name="TRIGGER_LEVEL", value=0.5, units="V", precision=3,
                                   doc="input comparator level")
        delay = pvproperty(name="DELAY", value=0, units="ps", dtype=WholeNumber,
                           doc="input delay")
        dead_time = pvproperty(name="DEAD_TIME", value=2000, units="ps", dtype=WholeNumber,
                               doc="dead time")
        event_divider = pvproperty(name="EVENT_DIVIDER", value=1, dtype=WholeNumber,
                                   doc="keep every n-th event")
        count_rate = pvproperty(name="COUNT_RATE", value=0.0, units="Hz", read_only=True,
                                precision=1, doc="rising edges per second")

        async def refuse(self, message: str) -> None:
            await self.parent.refused(f"CH{n}: {message}")
            exc = ValueError(message)
            exc.noted = True
            raise exc

        async def _set(self, op: str, value):
            try:
                return await blocking(self.parent.instrument.apply, op, n, value)
            except ValueError as exc:  # the tagger refused the value
                await self.refuse(str(exc))
            except (RuntimeError, ConnectionError, TimeoutError) as exc:
                await self.parent.note(f"CH{n}: {exc}")
                raise

        @test_signal.putter
        async def test_signal(self, instance, value):
            return await self._set("set_test_signal", value in (True, 1, "On"))

        @trigger_level.putter
        async def trigger_level(self, instance, value):
            try:
                volts = number(value)
            except (ValueError, TypeError) as exc:
                await self.refuse(f"TRIGGER_LEVEL refused: {exc}")
            return await self._set("set_trigger_level", volts)

        @delay.putter
        async def delay(self, instance, value):
            return await self._set("set_input_delay", int(value))

        @dead_time.putter
        async def dead_time(self, instance, value):
            return await self._set("set_dead_time", int(value))

        @event_divider.putter
        async def event_divider(self, instance, value):
            return await self._set("set_event_divider", int(value))

        async def refresh(self, settings: dict) -> None:
            for attr, key in (("test_signal", "test_signal"), ("trigger_level", "trigger_level"),
                              ("delay", "input_delay"), ("dead_time", "dead_time"),
                              ("event_divider", "event_divider")):
                if key in settings:
                    pv = getattr(self, attr)
                    value = settings[key]
                    if pv.value != value:
                        await pv.write(value, verify_value=False)

    Channel.__name__ = f"Channel{n}"
    return Channel


def make_ioc_class(n_channels: int = 8) -> type[PVGroup]:
    """The IOC class with ``n_channels`` channel groups (``CH1:`` ...)."""
    ns = {f"ch{n}": SubGroup(_channel_group(n), prefix=f"CH{n}:")
          for n in range(1, n_channels + 1)}
    cls = type("TaggerIOC", (TaggerIOCBase,), ns)
    cls.__doc__ = TaggerIOCBase.__doc__
    return cls


class TaggerIOCBase(PVGroup):
    """Time tagger IOC: status, channels ``CH{n}:`` and slots CORR1/HIST1/RATE1/CNT1."""

    serial = pvproperty(name="SERIAL", value="", dtype=ChannelType.STRING, read_only=True,
                        doc="tagger serial")
    connected = pvproperty(name="CONNECTED", value=False, read_only=True, doc="tag link up")
    tags = pvproperty(name="TAGS", value=0.0, read_only=True, precision=0, doc="tags received")
    tag_rate = pvproperty(name="TAG_RATE", value=0.0, read_only=True, units="Hz", precision=0,
                          doc="tags per second of wall time")
    blocks = pvproperty(name="BLOCKS", value=0.0, read_only=True, precision=0,
                        doc="tag blocks processed")
    bad_frames = pvproperty(name="BAD_FRAMES", value=0, read_only=True,
                            doc="malformed, corrupt or truncated frames dropped")
    lost_blocks = pvproperty(name="LOST_BLOCKS", value=0, read_only=True,
                             doc="blocks missing from the sequence")
    overflows = pvproperty(name="OVERFLOWS", value=0, read_only=True,
                           doc="overflow intervals reported by the tagger")
    missed_events = pvproperty(name="MISSED_EVENTS", value=0.0, read_only=True, precision=0,
                               doc="events the tagger dropped in overflows")
    last_train_id = pvproperty(name="LAST_TRAIN_ID", value=0.0, read_only=True, precision=0,
                               alarm_group="last_train_id",
                               doc="train ID of the latest marker (0 + INVALID if unknown)")
    feed_train_id = pvproperty(name="FEED_TRAIN_ID", value=0.0, read_only=True, precision=0,
                               alarm_group="feed_train_id",
                               doc="train in force: latest tick of the train feed (N-train "
                                   "acquisitions start from it)")
    markers_paired = pvproperty(name="MARKERS_PAIRED", value=0, read_only=True,
                                doc="markers paired with a TimeServer tick")
    markers_inferred = pvproperty(name="MARKERS_INFERRED", value=0, read_only=True,
                                  doc="markers numbered by counting (no tick in window)")
    markers_unmatched = pvproperty(name="MARKERS_UNMATCHED", value=0, read_only=True,
                                   doc="markers with unknown train ID")
    markers_ambiguous = pvproperty(name="MARKERS_AMBIGUOUS", value=0, read_only=True,
                                   doc="markers with two ticks in their window")
    pyro_uri = pvproperty(name="PYRO_URI", value="", dtype=ChannelType.CHAR, max_length=256,
                          read_only=True, report_as_string=True, doc="Pyro5 URI")
    pyro_objects = pvproperty(name="PYRO_OBJECTS", value=0, read_only=True,
                              doc="live objects of Pyro5 clients")
    last_error = pvproperty(name="LAST_ERROR", value="", dtype=ChannelType.CHAR, max_length=256,
                            read_only=True, report_as_string=True, doc="latest refused request")
    status = pvproperty(name="STATUS", value="starting", dtype=ChannelType.CHAR, max_length=256,
                        read_only=True, report_as_string=True,
                        doc="health of the tag link and processor, in one line")
    faults = pvproperty(name="FAULTS", value=0, read_only=True,
                        doc="exceptions the link and processor threads caught and survived")
    backlog = pvproperty(name="BACKLOG", value=0, read_only=True,
                         doc="blocks and ticks waiting for the processor")
    dropped_ticks = pvproperty(name="DROPPED_TICKS", value=0, read_only=True,
                               doc="train ticks lost to a full processor queue")
    bad_puts = pvproperty(name="BAD_PUTS", value=0, read_only=True, doc="puts refused")

    corr1 = SubGroup(CorrelationSlot, prefix="CORR1:")
    hist1 = SubGroup(HistogramSlot, prefix="HIST1:")
    rate1 = SubGroup(CountrateSlot, prefix="RATE1:")
    cnt1 = SubGroup(CounterSlot, prefix="CNT1:")

    @last_train_id.startup
    async def last_train_id(self, instance, async_lib):
        await mark_unknown(instance)

    @feed_train_id.startup
    async def feed_train_id(self, instance, async_lib):
        await mark_unknown(instance)

    @feed_train_id.scan(period=0.02)
    async def feed_train_id(self, instance, async_lib):
        current = self.service.current_train_id
        if current > 0 and current != instance.value:
            await write_train_id(instance, current)

    def __init__(self, *args, service, instrument, rpc=None, pyro_uri: str = "",
                 **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.service = service
        self.instrument = instrument
        self.rpc = rpc
        self._pyro_uri = pyro_uri
        self._tagger = None
        self._settings_version = -1
        self._last = (0.0, 0)
        self._count_puts()

    def engine_tagger(self):
        """The IOC's own engine tagger, created once the instrument has said hello."""
        if self._tagger is None:
            self.instrument.wait_connected()
            self._tagger = self.instrument.make_engine_tagger()
            self.service.add_sink(self._tagger)
        return self._tagger

    async def note(self, text: str) -> None:
        await self.last_error.write(text[:255])

    async def refused(self, text: str) -> None:
        """A putter's refusal: told in LAST_ERROR (BAD_PUTS counts it, see _count_puts)."""
        await self.note(text)

    def _count_puts(self) -> None:
        """Count every refused put of every writable PV in BAD_PUTS, once.

        Wraps each writable PV's ``write_from_dbr``, so refusals by the putters and by
        caproto itself (a string that is no number, a value that does not fit) are both
        counted. An acquisition that fails (TimeoutError, RuntimeError) or a tagger
        that cannot be reached (ConnectionError) is not a bad put.
        """
        for pv in self.pvdb.values():
            if pv.pvspec.read_only or pv is self.bad_puts:
                continue
            inner = pv.write_from_dbr

            async def counted(*args, _inner=inner, _pv=pv, **kwargs):
                try:
                    return await _inner(*args, **kwargs)
                except (TimeoutError, ConnectionError, RuntimeError):
                    raise
                except Exception as exc:
                    await self.bad_puts.write(self.bad_puts.value + 1)
                    if not getattr(exc, "noted", False):
                        await self.note(f"{_pv.pvspec.name}: {exc}")
                    raise

            pv.write_from_dbr = counted

    def health_text(self) -> str:
        """One line on the chain's health (the STATUS PV; also acquisition failures)."""
        svc, link = self.service, self.service.link
        st = svc.stats
        parts = []
        if not link.connected:
            parts.append(f"tag link down ({link.uri})")
        elif link.hello is None:
            parts.append(f"tag link up, no valid hello from the tagger ({link.uri})")
        if svc.backlog >= svc.queue_limit * 0.8:
            parts.append(f"falling behind: {svc.backlog}/{svc.queue_limit} blocks queued "
                         "(the tagger marks its overflow)")
        if svc.feed is not None and not svc.feed._connected.is_set():
            parts.append(f"train feed down ({svc.feed.uri})")
        text = "; ".join(parts) or "OK"
        if st.overflows:
            text += f"; {st.overflows} overflows"
        if st.clock_restarts:
            text += f"; tagger clock restarted {st.clock_restarts}x (tag times rebased)"
        if st.reconnects:
            text += f"; tag link reconnected {st.reconnects}x (the stretch between is lost)"
        n = st.faults + link.faults
        if n:
            text += f"; {n} faults, latest: {st.fault or link.last_fault}"
        return text

    @connected.scan(period=1.0)
    async def connected(self, instance, async_lib):
        import time

        svc, st, rs = self.service, self.service.stats, self.service.link.reader.stats
        ms = svc.mapper.stats
        await self.connected.write(self.instrument.connected())
        if self.serial.value != self.instrument.serial():
            await self.serial.write(self.instrument.serial()[:39])
        if self.pyro_uri.value != self._pyro_uri:
            await self.pyro_uri.write(self._pyro_uri)
        now = time.monotonic()
        t_prev, n_prev = self._last
        if t_prev:
            await self.tag_rate.write((st.tags - n_prev) / (now - t_prev))
            prev = getattr(self, "_counts_prev", svc.counts)
            if prev.shape != svc.counts.shape:  # the tagger (re)introduced itself
                prev = svc.counts
            rates = (svc.counts - prev) / (now - t_prev)
            for n in range(1, len(rates)):
                group = getattr(self, f"ch{n}", None)
                if group is not None:
                    await group.count_rate.write(float(rates[n]))
        self._counts_prev = svc.counts.copy()
        self._last = (now, st.tags)
        for pv, value in ((self.tags, float(st.tags)), (self.blocks, float(st.blocks)),
                          (self.bad_frames, rs.bad_headers + rs.bad_payloads),
                          (self.lost_blocks, rs.lost_blocks), (self.overflows, st.overflows),
                          (self.missed_events, float(st.missed_events)),
                          (self.markers_paired, ms.paired), (self.markers_inferred, ms.inferred),
                          (self.markers_unmatched, ms.unmatched),
                          (self.markers_ambiguous, ms.ambiguous),
                          (self.faults, st.faults + svc.link.faults),
                          (self.backlog, svc.backlog), (self.dropped_ticks, st.dropped_ticks),
                          (self.status, self.health_text()[:255])):
            if pv.value != value:
                await pv.write(value)
        await write_train_id(self.last_train_id, st.last_train_id)
        if self.rpc is not None:
            await self.pyro_objects.write(self.rpc.client_objects())
        if self.instrument.version != self._settings_version:
            self._settings_version = self.instrument.version
            desc = self.instrument.describe().get("settings", {})
            for key, settings in desc.items():
                group = getattr(self, f"ch{key}", None)
                if group is not None:
                    await group.refresh(settings)


def pva_mirror(ioc: PVGroup, conf=None):
    """The PV Access mirror of a tagger IOC: its PVs as over CA, train IDs ``ulong``.
    Start it with its ``start`` in the IOC's loop (caproto's ``startup_hook``)."""
    from trainstamp._pva import PVAMirror, train_id_codes

    return PVAMirror(ioc.pvdb, codes=train_id_codes(ioc.pvdb), conf=conf)


def ioc_doc() -> str:
    return dedent(TaggerIOCBase.__doc__ or "")
