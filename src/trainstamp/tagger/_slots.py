"""The measurement slots of the tagger IOC: ``CORR1:``, ``HIST1:``, ``RATE1:``, ``CNT1:``.

Each adds to the shared lifecycle (:class:`~trainstamp.tagger._slot.Slot`) its
settings, builds its engine measurement (rebuilt when a setting changes) and publishes
its arrays. Sizes and channels are checked in range by their putters, as the shared
PVs are.
"""

from __future__ import annotations

import numpy as np
from caproto import ChannelType
from caproto.server import pvproperty

from trainstamp.tagger._checks import number
from trainstamp.tagger._slot import Slot, blocking, mark_unknown, write_train_id
from trainstamp.timing._ioc import WholeNumber

__all__ = ["CorrelationSlot", "CounterSlot", "CountrateSlot", "HistogramSlot", "Slot",
           "blocking", "mark_unknown", "write_train_id"]

#: Largest n_bins (or channels x values) a slot takes; the waveform PVs are this long.
MAX_SLOT_BINS = 16384
MAX_SLOT_CHANNELS = 8
#: Queued updates per subscriber of a waveform PV (caproto's default of 1000 is for scalars).
_BACKLOG = 50


def _positive(name: str, limit: int):
    """A putter for a whole number in 1..limit (also on DOUBLE PVs, which hold ps values
    beyond the 32-bit range of CA's LONG exactly up to 2**53)."""

    def check(value):
        v = number(value)
        if not v.is_integer():
            raise ValueError(f"{v!r} is not a whole number")
        if not 1 <= v <= limit:
            raise ValueError(f"{v:.0f} outside 1..{limit}")
        return v

    async def put(self, instance, value):
        v = await self._checked(name.upper(), check, value)
        return type(instance.value)(v)

    return put


async def _channel_put(group, instance, value):
    return await group._checked(instance.pvspec.name, group.check_channel, value)


class CorrelationSlot(Slot):
    """``Correlation`` of CHAN1 and CHAN2: DATA (counts), INDEX (ps), G2."""

    chan1 = pvproperty(name="CHAN1", value=1, dtype=WholeNumber, doc="channel 1 (start)")
    chan2 = pvproperty(name="CHAN2", value=2, dtype=WholeNumber, doc="channel 2 (stop)")
    binwidth = pvproperty(name="BINWIDTH", value=1000.0, units="ps", precision=0,
                          doc="bin width (whole ps)")
    n_bins = pvproperty(name="N_BINS", value=1000, dtype=WholeNumber,
                        doc=f"bins, 1..{MAX_SLOT_BINS}")
    data = pvproperty(name="DATA", value=[0] * MAX_SLOT_BINS, dtype=ChannelType.LONG,
                      read_only=True, doc="counts per bin", max_subscription_backlog=_BACKLOG)
    index = pvproperty(name="INDEX", value=[0.0] * MAX_SLOT_BINS, read_only=True, units="ps",
                       doc="bin times", max_subscription_backlog=_BACKLOG)
    g2 = pvproperty(name="G2", value=[0.0] * MAX_SLOT_BINS, read_only=True,
                    doc="normalised correlation", max_subscription_backlog=_BACKLOG)

    chan1.putter(_channel_put)
    chan2.putter(_channel_put)
    binwidth.putter(_positive("binwidth", 10**12))
    n_bins.putter(_positive("n_bins", MAX_SLOT_BINS))

    def config(self):
        return (self.chan1.value, self.chan2.value, self.binwidth.value, self.n_bins.value)

    def build(self, tagger, config):
        from trainstamp.tagger.engine import Correlation

        c1, c2, bw, nb = config
        return Correlation(tagger, c1, c2, binwidth=int(bw), n_bins=nb)

    async def publish_data(self, m) -> None:
        await self.data.write(m.getData())
        await self.index.write(m.getIndex().astype(float))
        await self.g2.write(np.nan_to_num(m.getDataNormalized()))


class HistogramSlot(Slot):
    """``Histogram`` of CLICK_CHAN against START_CHAN: DATA and INDEX (ps)."""

    click_chan = pvproperty(name="CLICK_CHAN", value=1, dtype=WholeNumber, doc="click channel")
    start_chan = pvproperty(name="START_CHAN", value=2, dtype=WholeNumber, doc="start channel")
    binwidth = pvproperty(name="BINWIDTH", value=1000.0, units="ps", precision=0,
                          doc="bin width (whole ps)")
    n_bins = pvproperty(name="N_BINS", value=1000, dtype=WholeNumber,
                        doc=f"bins, 1..{MAX_SLOT_BINS}")
    data = pvproperty(name="DATA", value=[0] * MAX_SLOT_BINS, dtype=ChannelType.LONG,
                      read_only=True, doc="counts per bin", max_subscription_backlog=_BACKLOG)
    index = pvproperty(name="INDEX", value=[0.0] * MAX_SLOT_BINS, read_only=True, units="ps",
                       doc="bin start times", max_subscription_backlog=_BACKLOG)

    click_chan.putter(_channel_put)
    start_chan.putter(_channel_put)
    binwidth.putter(_positive("binwidth", 10**12))
    n_bins.putter(_positive("n_bins", MAX_SLOT_BINS))

    def config(self):
        return (self.click_chan.value, self.start_chan.value, self.binwidth.value,
                self.n_bins.value)

    def build(self, tagger, config):
        from trainstamp.tagger.engine import Histogram

        c1, c2, bw, nb = config
        return Histogram(tagger, c1, c2, binwidth=int(bw), n_bins=nb)

    async def publish_data(self, m) -> None:
        await self.data.write(m.getData())
        await self.index.write(m.getIndex().astype(float))


async def _channels_put(group, instance, value):
    def check(value):
        chans = [group.check_channel(v) for v in np.atleast_1d(value)]
        if not chans:
            raise ValueError("at least one channel is needed")
        return chans

    return await group._checked("CHANNELS", check, value)


class CountrateSlot(Slot):
    """``Countrate`` of CHANNELS: DATA (Hz) and COUNTS_TOTAL."""

    channels = pvproperty(name="CHANNELS", value=[1, 2], max_length=MAX_SLOT_CHANNELS,
                          dtype=WholeNumber, doc="channels to count")
    data = pvproperty(name="DATA", value=[0.0] * MAX_SLOT_CHANNELS, read_only=True, units="Hz",
                      doc="average rate per channel")
    counts_total = pvproperty(name="COUNTS_TOTAL", value=[0.0] * MAX_SLOT_CHANNELS,
                              read_only=True, doc="counts per channel")
    channels.putter(_channels_put)

    def config(self):
        return tuple(int(c) for c in np.atleast_1d(self.channels.value))

    def build(self, tagger, config):
        from trainstamp.tagger.engine import Countrate

        return Countrate(tagger, list(config))

    async def publish_data(self, m) -> None:
        await self.data.write(np.asarray(m.getData(), float))
        await self.counts_total.write(np.asarray(m.getCountsTotal(), float))


class CounterSlot(Slot):
    """``Counter`` of CHANNELS: DATA is (channels, N_VALUES) flattened row by row."""

    channels = pvproperty(name="CHANNELS", value=[1], max_length=MAX_SLOT_CHANNELS,
                          dtype=WholeNumber, doc="channels to count")
    binwidth = pvproperty(name="BINWIDTH", value=1e9, units="ps", precision=0,
                          doc="bin width (whole ps; DOUBLE, so beyond 2**31 ps)")
    n_values = pvproperty(name="N_VALUES", value=100, dtype=WholeNumber, doc="bins per channel")
    data = pvproperty(name="DATA", value=[0] * MAX_SLOT_BINS, dtype=ChannelType.LONG,
                      read_only=True, doc="counts, channel-major", max_subscription_backlog=_BACKLOG)
    channels.putter(_channels_put)
    binwidth.putter(_positive("binwidth", 10**15))

    @n_values.putter
    async def n_values(self, instance, value):
        n_ch = len(np.atleast_1d(self.channels.value))

        def check(value):
            v = number(value)
            if not v.is_integer() or v <= 0 or v * n_ch > MAX_SLOT_BINS:
                raise ValueError(f"{v:g} x {n_ch} channels outside 1..{MAX_SLOT_BINS}")
            return int(v)

        return await self._checked("N_VALUES", check, value)

    def config(self):
        return (tuple(int(c) for c in np.atleast_1d(self.channels.value)),
                self.binwidth.value, self.n_values.value)

    def build(self, tagger, config):
        from trainstamp.tagger.engine import Counter

        chans, bw, nv = config
        if len(chans) * nv > MAX_SLOT_BINS:
            raise ValueError(f"{len(chans)} channels x {nv} values exceed {MAX_SLOT_BINS}")
        return Counter(tagger, list(chans), binwidth=int(bw), n_values=nv)

    async def publish_data(self, m) -> None:
        await self.data.write(np.asarray(m.getData()).ravel())
