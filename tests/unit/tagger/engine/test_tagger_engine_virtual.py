"""Virtual channels equal brute-force references and are independent of block cuts."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tagger_engine_refs import (
    coincidence_ref,
    correlation_ref,
    gated_ref,
    merge_virtual,
    startstop_ref,
)

from trainstamp.tagger.engine import (
    VIRTUAL_CHANNEL_BASE,
    Coincidence,
    Coincidences,
    Combiner,
    Correlation,
    Countrate,
    DelayedChannel,
    GatedChannel,
    StartStop,
    TaggerFreedError,
    TimeTaggerVirtual,
    make_tags,
)

CHANNELS = (1, 2, 3, -1)
FAST = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def streams(draw, max_tags=40):
    n = draw(st.integers(0, max_tags))
    gaps = draw(st.lists(st.integers(0, 5), min_size=n, max_size=n))
    times = 10 + np.cumsum(np.array(gaps, dtype=np.int64))
    chans = draw(st.lists(st.sampled_from(CHANNELS), min_size=n, max_size=n))
    cuts = sorted(draw(st.lists(st.integers(0, n), max_size=4)))
    return times.astype(np.int64), np.array(chans, dtype=np.int32), cuts


def feed(tagger, times, chans, cuts):
    tags = make_tags(times, chans)
    bounds = [0, *cuts, len(tags)]
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        tagger.process(tags[a:b])


def of(times, chans, ch):
    return [int(t) for t, c in zip(times, chans, strict=True) if c == ch]


@FAST
@given(streams(), st.integers(0, 8), st.integers(1, 3), st.integers(1, 6))
def test_delayed_channel_feeds_measurements_like_a_real_one(s, delay, bw, nb):
    times, chans, cuts = s
    t = TimeTaggerVirtual(channels=CHANNELS)
    d = DelayedChannel(t, 1, delay)
    vc = d.getChannel()
    corr = Correlation(t, vc, 2, binwidth=bw, n_bins=nb)
    ss = StartStop(t, 2, vc, binwidth=bw)
    feed(t, times, chans, cuts)
    now = int(times[-1]) if len(times) else 0
    delayed = [x + delay for x in of(times, chans, 1)]
    mt, mc = merge_virtual(times, chans, delayed, vc, now)
    np.testing.assert_array_equal(
        corr.getData(), correlation_ref(of(mt, mc, vc), of(mt, mc, 2), bw, nb)
    )
    np.testing.assert_array_equal(ss.getData(), startstop_ref(mt, mc, 2, vc, bw))


@FAST
@given(streams(), st.integers(0, 6))
def test_coincidence_matches_brute_force(s, window):
    times, chans, cuts = s
    t = TimeTaggerVirtual(channels=CHANNELS)
    co = Coincidences(t, [[1, 2], [1, 2, 3]], coincidenceWindow=window)
    c12, c123 = co.getChannels()
    rate = Countrate(t, [c12, c123])
    corr = Correlation(t, c12, 3, binwidth=1, n_bins=9)
    feed(t, times, chans, cuts)
    now = int(times[-1]) if len(times) else 0
    want12 = [x for x in coincidence_ref(times, chans, [1, 2], window) if x < now]
    want123 = [x for x in coincidence_ref(times, chans, [1, 2, 3], window) if x < now]
    np.testing.assert_array_equal(rate.getCountsTotal(), [len(want12), len(want123)])
    np.testing.assert_array_equal(
        corr.getData(), correlation_ref(want12, of(times, chans, 3), 1, 9)
    )


@FAST
@given(streams())
def test_gated_channel_and_combiner_match_brute_force(s):
    times, chans, cuts = s
    t = TimeTaggerVirtual(channels=CHANNELS)
    g = GatedChannel(t, 1, 2, 3)
    comb = Combiner(t, [1, -1])
    ss_g = StartStop(t, g.getChannel(), 2, binwidth=1)
    rate = Countrate(t, [g.getChannel(), comb.getChannel()])
    feed(t, times, chans, cuts)
    now = int(times[-1]) if len(times) else 0
    gated = [x for x in gated_ref(times, chans, 1, 2, 3) if x < now]
    combined = [int(x) for x, c in zip(times, chans, strict=True) if c in (1, -1) and x < now]
    np.testing.assert_array_equal(rate.getCountsTotal(), [len(gated), len(combined)])
    mt, mc = merge_virtual(times, chans, gated, g.getChannel(), now)
    np.testing.assert_array_equal(ss_g.getData(), startstop_ref(mt, mc, g.getChannel(), 2, 1))


def test_virtual_channel_numbers_and_chaining():
    t = TimeTaggerVirtual()
    d1 = DelayedChannel(t, 1, 10)
    d2 = DelayedChannel(t, d1.getChannel(), 5)
    assert d1.getChannel() == VIRTUAL_CHANNEL_BASE
    assert d2.getChannel() == VIRTUAL_CHANNEL_BASE + 1
    assert t.getVirtualChannels() == [d1.getChannel(), d2.getChannel()]
    corr = Correlation(t, 1, d2.getChannel(), binwidth=1, n_bins=41)
    t.process(make_tags([100, 200, 300], [1, 1, 1]))
    t.process(make_tags([400], [2]))
    idx = corr.getIndex()
    assert corr.getData()[idx == 15] == 3  # every tag pairs with its own copy 15 ps later


def test_virtual_channel_validation_and_free():
    t = TimeTaggerVirtual()
    with pytest.raises(ValueError, match="input_channel 42 is not a channel"):
        DelayedChannel(t, 42, 10)
    with pytest.raises(ValueError, match="delay must be in"):
        DelayedChannel(t, 1, -5)
    with pytest.raises(ValueError, match="only CoincidenceTimestamp.Last"):
        Coincidence(t, [1, 2], 100, timestamp=1)
    with pytest.raises(ValueError, match="2..64 channels"):
        Coincidence(t, [1], 100)
    with pytest.raises(ValueError, match="gate start and stop channels must differ"):
        GatedChannel(t, 1, 2, 2)
    d = DelayedChannel(t, 1, 10)
    ch = d.getChannel()
    d.free()
    with pytest.raises(TaggerFreedError):
        d.getChannel()
    with pytest.raises(ValueError, match=f"channel_1 {ch} is not a channel"):
        Correlation(t, ch, 2)


def test_gated_channel_initially_open_passes_tags_until_the_first_stop():
    from trainstamp.tagger.engine import GatedChannelInitial

    t = TimeTaggerVirtual(channels=CHANNELS)
    shut = GatedChannel(t, 1, 2, 3)
    open_ = GatedChannel(t, 1, 2, 3, initial=GatedChannelInitial.Open)
    rate = Countrate(t, [shut.getChannel(), open_.getChannel()])
    # input at 10 and 20, stop at 30, input at 40, start at 50, input at 60
    t.process(make_tags([10, 20, 30, 40, 50, 60], [1, 1, 3, 1, 2, 1]), end_time=100)
    np.testing.assert_array_equal(rate.getCountsTotal(), [1, 3])
    with pytest.raises(ValueError, match="initial must be GatedChannelInitial"):
        GatedChannel(t, 1, 2, 3, initial=2)


def test_channel_list_takes_every_swabian_channel_edge():
    from trainstamp.tagger.engine import ChannelEdge

    t = TimeTaggerVirtual(channels=(1, 2, -1))
    want = {ChannelEdge.All: [1, 2, -1], ChannelEdge.Rising: [1, 2],
            ChannelEdge.Falling: [-1], ChannelEdge.StandardAll: [1, 2, -1],
            ChannelEdge.StandardRising: [1, 2], ChannelEdge.StandardFalling: [-1],
            ChannelEdge.HighResAll: [], ChannelEdge.HighResRising: [],
            ChannelEdge.HighResFalling: []}
    assert {e: t.getChannelList(e) for e in ChannelEdge} == want
    assert t.getChannelList(9) == [1, 2]
    with pytest.raises(ValueError):
        t.getChannelList(3)
