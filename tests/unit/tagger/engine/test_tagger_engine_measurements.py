"""Every measurement equals a brute-force reference on random streams, however the
stream is cut into blocks (hypothesis: ties, bin edges, empty channels, splits)."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tagger_engine_refs import (
    between_markers_ref,
    correlation_ref,
    counter_ref,
    histogram_ref,
    startstop_ref,
)

from trainstamp.tagger.engine import (
    Correlation,
    CountBetweenMarkers,
    Counter,
    Countrate,
    Histogram,
    StartStop,
    TimeTaggerVirtual,
    make_tags,
)

CHANNELS = (1, 2, 3, -1)
FAST = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def streams(draw, max_tags=40):
    """Sorted tag streams with many ties and small gaps, plus cut points for blocks."""
    n = draw(st.integers(0, max_tags))
    gaps = draw(st.lists(st.integers(0, 6), min_size=n, max_size=n))
    start = draw(st.integers(0, 50))
    times = start + np.cumsum(np.array(gaps, dtype=np.int64))
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
@given(streams(), st.integers(1, 5), st.integers(1, 7))
def test_correlation_cross_and_auto_match_brute_force(s, bw, nb):
    times, chans, cuts = s
    t = TimeTaggerVirtual(channels=CHANNELS)
    cross = Correlation(t, 1, 2, binwidth=bw, n_bins=nb)
    auto = Correlation(t, 1, binwidth=bw, n_bins=nb)
    empty = Correlation(t, 3, -1, binwidth=bw, n_bins=nb) if 3 not in chans else None
    feed(t, times, chans, cuts)
    a, b = of(times, chans, 1), of(times, chans, 2)
    np.testing.assert_array_equal(cross.getData(), correlation_ref(a, b, bw, nb))
    np.testing.assert_array_equal(auto.getData(), correlation_ref(a, a, bw, nb, auto=True))
    assert cross.getData().dtype == np.int32
    assert cross.getCounts() == (len(a), len(b))
    if empty is not None:
        assert not empty.getData().any()


@FAST
@given(streams(), st.integers(1, 5), st.integers(1, 7))
def test_histogram_matches_brute_force(s, bw, nb):
    times, chans, cuts = s
    t = TimeTaggerVirtual(channels=CHANNELS)
    h = Histogram(t, 2, 1, binwidth=bw, n_bins=nb)
    same = Histogram(t, 1, binwidth=bw, n_bins=nb)
    feed(t, times, chans, cuts)
    a, b = of(times, chans, 1), of(times, chans, 2)
    np.testing.assert_array_equal(h.getData(), histogram_ref(a, b, bw, nb))
    np.testing.assert_array_equal(same.getData(), histogram_ref(a, a, bw, nb, same=True))
    np.testing.assert_array_equal(h.getIndex(), np.arange(nb) * bw)


@FAST
@given(streams(), st.integers(1, 4))
def test_startstop_matches_brute_force(s, bw):
    times, chans, cuts = s
    t = TimeTaggerVirtual(channels=CHANNELS)
    m = StartStop(t, 2, 1, binwidth=bw)
    m_same = StartStop(t, 3, binwidth=bw)
    feed(t, times, chans, cuts)
    np.testing.assert_array_equal(m.getData(), startstop_ref(times, chans, 2, 1, bw))
    np.testing.assert_array_equal(m_same.getData(), startstop_ref(times, chans, 3, 3, bw))


@FAST
@given(streams())
def test_countrate_counts_and_rate(s):
    times, chans, cuts = s
    t = TimeTaggerVirtual(channels=CHANNELS)
    m = Countrate(t, [1, 2, 3, -1, 1])
    feed(t, times, chans, cuts)
    want = [sum(1 for c in chans if c == ch) for ch in (1, 2, 3, -1, 1)]
    np.testing.assert_array_equal(m.getCountsTotal(), want)
    dur = int(times[-1] - times[0]) if len(times) else 0
    assert m.getCaptureDuration() == dur
    if dur:
        np.testing.assert_allclose(m.getData(), np.array(want) / (dur * 1e-12))
    else:
        assert not m.getData().any()


@FAST
@given(streams(), st.integers(1, 9), st.integers(1, 5))
def test_counter_matches_brute_force(s, bw, nv):
    times, chans, cuts = s
    t = TimeTaggerVirtual(channels=CHANNELS)
    m = Counter(t, [1, 2, -1], binwidth=bw, n_values=nv)
    feed(t, times, chans, cuts)
    if len(times) == 0:
        assert not m.getData().any()
        return
    want = counter_ref(times, chans, [1, 2, -1], int(times[0]), int(times[-1]), bw, nv)
    np.testing.assert_array_equal(m.getData(), want)
    np.testing.assert_array_equal(
        m.getDataTotalCounts(), [sum(1 for c in chans if c == ch) for ch in (1, 2, -1)]
    )
    np.testing.assert_array_equal(m.getIndex(), np.arange(nv) * bw)


@FAST
@given(streams(), st.integers(1, 6), st.booleans())
def test_count_between_markers_matches_brute_force(s, nv, with_end):
    times, chans, cuts = s
    t = TimeTaggerVirtual(channels=CHANNELS)
    end = 3 if with_end else None
    m = CountBetweenMarkers(t, 1, 2, end if end else -134217728, n_values=nv)
    feed(t, times, chans, cuts)
    filled, data, widths, starts = between_markers_ref(times, chans, 1, 2, end, nv)
    np.testing.assert_array_equal(m.getData(), data)
    np.testing.assert_array_equal(m.getBinWidths(), widths)
    np.testing.assert_array_equal(m.getIndex(), starts)
    assert m.ready() == (filled == nv)
    assert m.isRunning() == (filled < nv)


def test_correlation_index_is_bin_centre_and_symmetric():
    t = TimeTaggerVirtual()
    c = Correlation(t, 1, 2, binwidth=10, n_bins=4)
    np.testing.assert_array_equal(c.getIndex(), [-15, -5, 5, 15])
    c = Correlation(t, 1, 2, binwidth=10, n_bins=3)
    np.testing.assert_array_equal(c.getIndex(), [-10, 0, 10])
    # dt exactly on the edge between bins goes to the upper bin (left-closed bins)
    t.process(make_tags([100, 100, 110], [1, 2, 2]))
    np.testing.assert_array_equal(c.getData(), [0, 1, 1])


def test_correlation_g2_is_flat_for_uncorrelated_poisson():
    rng = np.random.default_rng(7)
    n = 200_000
    times = np.sort(rng.integers(0, 10**11, n))
    chans = rng.choice(np.array([1, 2], np.int32), n)
    t = TimeTaggerVirtual()
    c = Correlation(t, 1, 2, binwidth=10_000, n_bins=200)
    t.process(make_tags(times, chans))
    g2 = c.getDataNormalized()
    assert abs(g2.mean() - 1.0) < 0.02
    n1, n2 = c.getCounts()
    np.testing.assert_allclose(
        g2, c.getData().astype(float) * c.getCaptureDuration() / (10_000 * n1 * n2)
    )


def test_correlation_counts_saturate_at_int32():
    t = TimeTaggerVirtual()
    c = Correlation(t, 1, 2, binwidth=10, n_bins=2)
    c._hist[0] = 2**40
    assert c.getData()[0] == 2**31 - 1


def test_long_streams_switching_between_sparse_and_dense_pairs():
    """Chunks of the pair kernel switch between breadth- and depth-first walks with the
    pair density; every mix and every cut must still give the exact histogram."""
    rng = np.random.default_rng(11)
    parts, t0 = [], 0
    for mean_gap in (20_000, 40, 5_000, 25, 300_000, 60):  # sparse and dense stretches
        n = 12_000
        tt = t0 + np.cumsum(rng.exponential(mean_gap, n).astype(np.int64))
        parts.append(tt)
        t0 = int(tt[-1])
    times = np.concatenate(parts)
    chans = rng.choice(np.array([1, 2, 3], np.int32), times.size)
    cuts = np.sort(rng.choice(times.size, 25, replace=False))
    t = TimeTaggerVirtual(channels=CHANNELS)
    cross = Correlation(t, 1, 2, binwidth=7, n_bins=301)
    auto = Correlation(t, 2, binwidth=10, n_bins=100)
    hist = Histogram(t, 2, 1, binwidth=5, n_bins=200)
    feed(t, times, chans, list(cuts))
    a, b = times[chans == 1], times[chans == 2]
    from tagger_engine_refs import correlation_np

    np.testing.assert_array_equal(cross.getData(), correlation_np(a, b, 7, 301))
    auto_ref = correlation_np(b, b, 10, 100)
    auto_ref[50] -= b.size  # the brute force pairs every tag with itself at dt = 0
    np.testing.assert_array_equal(auto.getData(), auto_ref)
    # Histogram: start 1, click 2, 0 <= dt < 1000 -> the upper half of a centred
    # correlation of width 2000 with the same binwidth
    np.testing.assert_array_equal(hist.getData(), correlation_np(a, b, 5, 400)[200:])


def test_dense_pairs_across_huge_time_jumps_stay_exact():
    """Packed bin values are re-based when the stream runs far from their origin."""
    from tagger_engine_refs import correlation_np

    rng = np.random.default_rng(5)
    parts = []
    for start in (1_000, 1 << 51, 1 << 53, (1 << 60) + 12345, (1 << 61) + 999):
        parts.append(start + np.cumsum(rng.exponential(30, 20_000).astype(np.int64)))
    times = np.concatenate(parts)
    chans = rng.choice(np.array([1, 2], np.int32), times.size)
    t = TimeTaggerVirtual(channels=CHANNELS)
    cross = Correlation(t, 1, 2, binwidth=3, n_bins=333)
    feed(t, times, chans, [7_000, 45_000, 60_001])
    a, b = times[chans == 1], times[chans == 2]
    np.testing.assert_array_equal(cross.getData(), correlation_np(a, b, 3, 333))
