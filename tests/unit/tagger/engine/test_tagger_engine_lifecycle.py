"""Lifecycle, per-train slicing, overflow handling, bad input, freeing and threads."""

from __future__ import annotations

import re
import threading

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tagger_engine_refs import correlation_ref

from trainstamp.tagger.engine import (
    MAX_BINS,
    TAG_DTYPE,
    Correlation,
    CountBetweenMarkers,
    Counter,
    Countrate,
    Histogram,
    SynchronizedMeasurements,
    TaggerFreedError,
    TagType,
    TimeTaggerVirtual,
    make_tags,
)


def poisson(n, span, chans, seed=0):
    rng = np.random.default_rng(seed)
    return np.sort(rng.integers(0, span, n)), rng.choice(np.array(chans, np.int32), n)


def test_measurements_start_on_creation_and_startfor_stops_exactly():
    times, chans = poisson(5000, 100_000, [1, 2])
    t = TimeTaggerVirtual()
    t.process(make_tags(times[:1000], chans[:1000]))
    t0 = t.getStreamTime()
    c = Countrate(t, [1, 2])
    assert c.isRunning()
    c.startFor(30_000)
    for a in range(1000, 5000, 700):
        t.process(make_tags(times[a : a + 700], chans[a : a + 700]))
    assert not c.isRunning()
    assert c.waitUntilFinished(0)
    assert c.getCaptureDuration() == 30_000
    rest, rch = times[1000:], chans[1000:]
    inside = (rest >= t0) & (rest < t0 + 30_000)
    np.testing.assert_array_equal(c.getCountsTotal(), [np.sum(inside & (rch == k)) for k in (1, 2)])


def test_stop_start_accumulates_only_running_windows_and_clear_resets():
    t = TimeTaggerVirtual()
    corr = Correlation(t, 1, 2, binwidth=10, n_bins=20)
    t.process(make_tags([0, 5], [1, 2]))
    corr.stop()
    t.process(make_tags([10, 15], [1, 2]))
    corr.start()
    t.process(make_tags([20, 22], [1, 2]))
    # pairs only within running windows [0, 5] and [15, 22]: (0,5) and (20,22)
    want = correlation_ref([0], [5], 10, 20) + correlation_ref([20], [22], 10, 20)
    np.testing.assert_array_equal(corr.getData(), want)
    assert corr.getCaptureDuration() == 5 + 7
    corr.clear()
    assert not corr.getData().any() and corr.getCaptureDuration() == 0
    corr.startFor(1e3, clear=False)  # floats that are whole numbers are accepted
    assert corr.isRunning()
    t.process(make_tags([30, 31], [1, 2]))
    corr.abort()
    assert not corr.isRunning() and not corr.getData().any() and corr.waitUntilFinished(0)


def test_end_time_lets_a_quiet_stream_finish():
    t = TimeTaggerVirtual()
    t.process(make_tags([100], [1]))
    c = Counter(t, [1], binwidth=50, n_values=4)
    c.startFor(200)
    t.process(make_tags([], []), end_time=350)
    assert not c.isRunning() and c.getCaptureDuration() == 200
    with pytest.raises(ValueError, match="end_time 10 ps is before the last tag at 350 ps"):
        t.process(make_tags([], []), end_time=10)


def marker_stream(n_trains, period=1000, first_id=500, seed=1):
    """Markers on channel 8 at k*period, clicks on 1 and 2 between them."""
    rng = np.random.default_rng(seed)
    clicks = np.sort(rng.integers(0, n_trains * period, 40 * n_trains))
    clicks = np.sort(
        np.concatenate([clicks, np.arange(0, n_trains, 3) * period])
    )  # ties with markers
    cch = rng.choice(np.array([1, 2], np.int32), clicks.size)
    mt = np.arange(n_trains) * period
    times = np.concatenate([clicks, mt])
    chans = np.concatenate([cch, np.full(n_trains, 8, np.int32)])
    order = np.argsort(times, kind="stable")
    times, chans = times[order], chans[order]
    ids = first_id + np.arange(n_trains)
    return times, chans, ids


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(1, 5), st.integers(0, 8), st.lists(st.integers(0, 400), max_size=5))
def test_start_for_trains_covers_whole_trains(n, skip, cuts):
    times, chans, ids = marker_stream(20)
    t = TimeTaggerVirtual(marker_channel=8)
    rate = Countrate(t, [1, 2])
    # start after `skip` tags; the window opens at the next marker
    t.process(make_tags(times[:skip], chans[:skip]), ids[: int(np.sum(chans[:skip] == 8))])
    rate.startForTrains(n)
    assert rate.isRunning()
    bounds = sorted({skip, *[c for c in cuts if c > skip], len(times)})
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        m_before = int(np.sum(chans[:a] == 8))
        m_here = int(np.sum(chans[a:b] == 8))
        t.process(make_tags(times[a:b], chans[a:b]), ids[m_before : m_before + m_here])
    seen = chans[:skip] == 8
    k = int(np.sum(seen))  # index of the first marker after the start
    assert not rate.isRunning()
    assert rate.getTrainRange() == (int(ids[k]), int(ids[k + n - 1]))
    assert rate.getCaptureDuration() == n * 1000
    # the window runs from the k-th marker up to (not including) the (k+n)-th marker,
    # in stream order: clicks at a marker's time that precede it belong to the train before
    where = np.flatnonzero(chans == 8)
    inside = np.zeros(times.size, bool)
    inside[where[k] : where[k + n]] = True
    np.testing.assert_array_equal(
        rate.getCountsTotal(), [np.sum(inside & (chans == c)) for c in (1, 2)]
    )


def test_train_range_for_time_windows_and_inferred_ids():
    t = TimeTaggerVirtual(marker_channel=8)
    m = Countrate(t, [1])
    assert m.getTrainRange() is None
    t.process(make_tags([0, 10, 1000], [8, 1, 8]), [77, 78])
    assert m.getTrainRange() == (77, 78)
    t.process(make_tags([2000, 2500], [8, 1]))  # IDs continue from the last known one
    assert t.getLastTrainId() == 79
    m.startFor(1500)
    assert m.getTrainRange() == (79, 79)
    t.process(make_tags([3000, 4000], [8, 8]))
    assert m.getTrainRange() == (79, 80) and not m.isRunning()
    with pytest.raises(ValueError, match="marker_train_ids must be 1 integers"):
        t.process(make_tags([5000], [8]), [1, 2])
    assert t.getLastTrainId() == 81  # the bad block changed nothing
    with pytest.raises(ValueError, match="needs a tagger with a marker_channel"):
        Countrate(TimeTaggerVirtual(), [1]).startForTrains(3)


def test_overflow_is_counted_and_pairs_do_not_span_it():
    t = TimeTaggerVirtual()
    corr = Correlation(t, 1, 2, binwidth=10, n_bins=100)
    rate = Countrate(t, [1, 2])
    tags = make_tags(
        [0, 5, 10, 10, 10, 20, 25],
        [1, 2, 0, 1, 0, 1, 2],
        types=[0, 0, TagType.OverflowBegin, TagType.MissedEvents, TagType.OverflowEnd, 0, 0],
        missed_events=[0, 0, 0, 7, 0, 0, 0],
    )
    t.process(tags)
    assert t.getOverflows() == 1 and t.getMissedEvents() == {1: 7}
    assert t.getStatistics()["overflow_begins"] == 1
    want = correlation_ref([0], [5], 10, 100) + correlation_ref([20], [25], 10, 100)
    np.testing.assert_array_equal(corr.getData(), want)
    np.testing.assert_array_equal(rate.getCountsTotal(), [2 + 7, 2])
    assert t.getOverflowsAndClear() == 1 and t.getOverflows() == 0


def test_bad_blocks_raise_and_change_nothing():
    t = TimeTaggerVirtual()
    c = Countrate(t, [1])
    t.process(make_tags([100, 200], [1, 1]))
    with pytest.raises(ValueError, match=re.escape("tag 1 at 150 ps is earlier than 300 ps")):
        t.process(make_tags([300, 150], [1, 1]))
    with pytest.raises(ValueError, match=re.escape("tag 0 at 50 ps is earlier than 200 ps")):
        t.process(make_tags([50], [1]))
    with pytest.raises(ValueError, match="TAG_DTYPE"):
        t.process(np.zeros(3, np.int64))
    with pytest.raises(ValueError, match="TAG_DTYPE"):
        t.process(np.zeros((2, 2), TAG_DTYPE))
    assert c.getCountsTotal()[0] == 2 and t.getStreamTime() == 200
    t.process(make_tags([300, 301], [1, 55]))  # an unknown channel is counted, not fatal
    assert t.getStatistics()["unknown_channel_tags"] == 1
    assert c.getCountsTotal()[0] == 3


def test_bad_arguments_give_clear_errors():
    t = TimeTaggerVirtual()
    with pytest.raises(
        ValueError, match=re.escape("channel_2 9 is not a channel of this tagger; valid: [1, 2")
    ):
        Correlation(t, 1, 9)
    for nb in (0, -3, MAX_BINS + 1):
        with pytest.raises(ValueError, match=f"n_bins must be in 1..{MAX_BINS}, got {nb}"):
            Correlation(t, 1, 2, binwidth=10, n_bins=nb)
    with pytest.raises(ValueError, match="binwidth must be > 0 ps, got 0"):
        Histogram(t, 1, 2, binwidth=0, n_bins=10)
    with pytest.raises(ValueError, match="binwidth must be an integer, got 2.5"):
        Correlation(t, 1, 2, binwidth=2.5)
    with pytest.raises(ValueError, match="n_bins must be an integer, got '10'"):
        Correlation(t, 1, 2, n_bins="10")
    with pytest.raises(ValueError, match="n_values \\* channels"):
        Counter(t, [1, 2, 3], binwidth=10, n_values=MAX_BINS)
    c = Correlation(t, 1, 2)
    with pytest.raises(ValueError, match="capture_duration must be in 1"):
        c.startFor(-1)
    with pytest.raises(ValueError, match="n_trains must be in 1"):
        c.startForTrains(0)
    with pytest.raises(ValueError, match="tagger must be a TimeTaggerVirtual"):
        Correlation("tagger", 1, 2)
    with pytest.raises(ValueError, match="unique"):
        TimeTaggerVirtual(channels=[1, 1])
    with pytest.raises(ValueError, match="marker_channel 9 is not one of the channels"):
        TimeTaggerVirtual(marker_channel=9)


def test_freed_tagger_and_measurement_raise_clearly():
    t = TimeTaggerVirtual(serial="X1")
    a = Correlation(t, 1, 2)
    b = Countrate(t, [1])
    a.free()
    with pytest.raises(TaggerFreedError, match="Correlation has been freed"):
        a.getData()
    t.process(make_tags([1, 2], [1, 2]))
    assert b.getCountsTotal()[0] == 1
    t.free()
    assert t.isFreed()
    for call in (
        b.getData,
        t.getSerial,
        lambda: t.process(make_tags([3], [1])),
        lambda: Countrate(t, [1]),
    ):
        with pytest.raises(TaggerFreedError, match="freed"):
            call()
    with pytest.raises(TaggerFreedError):
        b.waitUntilFinished(0)


def test_synchronized_measurements_share_one_window():
    times, chans = poisson(4000, 80_000, [1, 2], seed=3)
    t = TimeTaggerVirtual()
    t.process(make_tags(times[:500], chans[:500]))
    sync = SynchronizedMeasurements(t)
    corr = Correlation(sync.getTagger(), 1, 2, binwidth=100, n_bins=50)
    rate = Countrate(sync.getTagger(), [1, 2])
    assert not corr.isRunning() and not sync.isRunning()
    sync.startFor(20_000)
    assert sync.isRunning()
    for a in range(500, 4000, 333):
        t.process(make_tags(times[a : a + 333], chans[a : a + 333]))
    assert sync.waitUntilFinished(1000)
    assert corr.getCaptureDuration() == rate.getCaptureDuration() == 20_000
    assert tuple(rate.getCountsTotal()) == corr.getCounts()


def test_reading_from_other_threads_while_blocks_stream_in():
    times, chans = poisson(200_000, 10**9, [1, 2], seed=5)
    t = TimeTaggerVirtual()
    corr = Correlation(t, 1, 2, binwidth=1000, n_bins=100)
    corr.startFor(int(times[-1]) // 2)
    errors = []
    finished = threading.Event()

    def reader():
        try:
            while not finished.is_set():
                assert corr.getData().shape == (100,)
                corr.getCaptureDuration()
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    th = threading.Thread(target=reader)
    th.start()
    waiter = threading.Thread(
        target=lambda: corr.waitUntilFinished(10_000) or errors.append("timeout")
    )
    waiter.start()
    tags = make_tags(times, chans)
    for a in range(0, len(tags), 10_000):
        t.process(tags[a : a + 10_000])
    finished.set()
    th.join(10)
    waiter.join(10)
    assert not errors and not corr.isRunning()


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(
            st.integers(0, 4),
            st.sampled_from([0, 0, 0, 0, 1, 2, 3, 4]),
            st.sampled_from([1, 2]),
            st.integers(0, 9),
        ),
        max_size=40,
    ),
    st.lists(st.integers(0, 40), max_size=4),
)
def test_stream_events_anywhere_are_counted_and_cut_pair_histories(rows, cuts):
    times = np.cumsum([r[0] for r in rows]).astype(np.int64)
    types = np.array([r[1] for r in rows], np.uint8)
    chans = np.array([r[2] for r in rows], np.int32)
    missed = np.array([r[3] if r[1] == TagType.MissedEvents else 0 for r in rows], np.uint16)
    tags = make_tags(times, chans, types, missed)
    t = TimeTaggerVirtual(channels=(1, 2))
    corr = Correlation(t, 1, 2, binwidth=2, n_bins=5)
    rate = Countrate(t, [1, 2])
    bounds = [0, *sorted(c for c in cuts if c <= len(tags)), len(tags)]
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        t.process(tags[a:b])
    cut = (types == TagType.OverflowBegin) | (types == TagType.Error)
    assert t.getOverflows() == int(cut.sum())
    is_t = types == TagType.TimeTag
    is_m = types == TagType.MissedEvents
    assert t.getMissedEvents() == {
        c: int(missed[is_m & (chans == c)].sum()) for c in (1, 2) if (is_m & (chans == c)).any()
    }
    want = [int((is_t & (chans == c)).sum() + missed[is_m & (chans == c)].sum()) for c in (1, 2)]
    np.testing.assert_array_equal(rate.getCountsTotal(), want)
    ref = np.zeros(5, np.int64)
    seg = np.cumsum(cut)  # pairs only within the stretches between cuts
    for k in np.unique(seg):
        sel = (seg == k) & is_t
        ref += correlation_ref(times[sel & (chans == 1)], times[sel & (chans == 2)], 2, 5)
    np.testing.assert_array_equal(corr.getData(), ref)


def test_synchronized_trains_and_registration():
    times, chans, ids = marker_stream(12)
    t = TimeTaggerVirtual(marker_channel=8)
    rate = Countrate(t, [1, 2])
    cbm = CountBetweenMarkers(t, 1, 8, n_values=3)
    sync = SynchronizedMeasurements(t)
    sync.registerMeasurement(rate)
    sync.registerMeasurement(cbm)
    assert not rate.isRunning() and not cbm.isRunning()
    with pytest.raises(ValueError, match="another tagger"):
        sync.registerMeasurement(Countrate(TimeTaggerVirtual(), [1]))
    t.process(make_tags(times[:50], chans[:50]), ids[: int(np.sum(chans[:50] == 8))])
    sync.startForTrains(3)
    m0 = int(np.sum(chans[:50] == 8))
    t.process(make_tags(times[50:], chans[50:]), ids[m0:])
    assert not sync.isRunning() and sync.waitUntilFinished(0)
    assert rate.getTrainRange() == cbm.getTrainRange() == (int(ids[m0]), int(ids[m0 + 2]))
    # one bin per train, the last one closed by the end of the window
    assert cbm.ready() and cbm.getBinWidths().tolist() == [1000, 1000, 1000]
    assert int(cbm.getData().sum()) == int(rate.getCountsTotal()[0])
    sync.unregisterMeasurement(rate)
    rate.start()
    assert rate.isRunning() and not sync.isRunning()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(1, 5), st.integers(0, 6), st.lists(st.integers(0, 400), max_size=5))
def test_start_for_trains_from_a_given_train(n, ahead, cuts):
    """The stream runs behind the train source: the window opens at the marker of the
    train in force when the acquisition started, not at the next (older) marker."""
    times, chans, ids = marker_stream(20)
    t = TimeTaggerVirtual(marker_channel=8)
    rate = Countrate(t, [1, 2])
    first = int(ids[0]) + ahead
    rate.startForTrains(n, first_train_id=first)
    bounds = sorted({0, *cuts, len(times)})
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        m_before = int(np.sum(chans[:a] == 8))
        m_here = int(np.sum(chans[a:b] == 8))
        t.process(make_tags(times[a:b], chans[a:b]), ids[m_before : m_before + m_here])
    assert not rate.isRunning()
    assert rate.getTrainRange() == (first, first + n - 1)
    assert rate.getCaptureDuration() == n * 1000
    where = np.flatnonzero(chans == 8)
    inside = np.zeros(times.size, bool)
    inside[where[ahead] : where[ahead + n]] = True
    np.testing.assert_array_equal(
        rate.getCountsTotal(), [np.sum(inside & (chans == c)) for c in (1, 2)]
    )


def test_start_for_trains_first_train_edge_cases():
    t = TimeTaggerVirtual(marker_channel=8)
    m = Countrate(t, [1])
    with pytest.raises(ValueError, match="first_train_id must be >= 0, got -1"):
        m.startForTrains(1, first_train_id=-1)
    # unknown IDs (0) open the window: nothing to compare with
    m.startForTrains(1, first_train_id=500)
    t.process(make_tags([0, 10, 1000], [8, 1, 8]), [0, 0])
    assert m.getCaptureDuration() == 1000 and not m.isRunning()
    # a train source that restarted (IDs far below) does not leave it waiting forever
    m.startForTrains(1, first_train_id=50_000)
    t.process(make_tags([2000, 2010, 3000], [8, 1, 8]), [7, 8])
    assert m.getTrainRange() == (7, 7) and not m.isRunning()
    # earlier trains' markers are passed over, later ones open it
    m.startForTrains(2, first_train_id=12)
    t.process(make_tags([4000, 4010, 5000, 5010, 6000, 7000], [8, 1, 8, 1, 8, 8]),
              [10, 11, 12, 13])
    assert m.getTrainRange() == (12, 13) and m.getCountsTotal()[0] == 0
    sync = SynchronizedMeasurements(t)
    a = Countrate(sync.getTagger(), [1])
    sync.startForTrains(1, first_train_id=15)
    t.process(make_tags([8000, 9000, 9010, 10000], [8, 8, 1, 8]), [14, 15, 16])
    assert a.getTrainRange() == (15, 15) and a.getCountsTotal()[0] == 1


def test_bins_carry_their_markers_train_ids_and_an_overflow_loses_a_train_not_the_order():
    t = TimeTaggerVirtual(marker_channel=8)
    cbm = CountBetweenMarkers(t, 1, 8, n_values=4)
    cbm.startForTrains(4)
    # markers at 0, 1000, 2000, 3000, 4000 for trains 100..104; clicks in between; an
    # overflow inside train 101 drops its open bin
    t.process(make_tags([0, 10, 1000, 1010], [8, 1, 8, 1]), [100, 101])
    t.process(make_tags([1500, 1500], [0, 0], types=[TagType.OverflowBegin, TagType.OverflowEnd]))
    t.process(make_tags([2000, 2010, 3000, 3010, 4000], [8, 1, 8, 1, 8]), [102, 103, 104])
    assert not cbm.isRunning()
    widths = cbm.getBinWidths()
    filled = int(np.count_nonzero(widths > 0))
    assert filled == 3  # the window of 4 markers is over; train 101's bin was lost
    assert cbm.getBinTrainIds()[:filled].tolist() == [100, 102, 103]
    assert cbm.getData()[:filled].tolist() == [1, 1, 1]
