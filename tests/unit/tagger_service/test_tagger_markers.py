"""Marker → train ID pairing: exact while latency jitter stays below half a period."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from trainstamp.tagger._markers import UNKNOWN_TRAIN_ID, MarkerMapper

PERIOD_NS = 100_000_000


def _simulate(n, feed_lat, tag_lat, jitter, seed, start_id=1000, jump_at=None,
              drop_ticks=(), offset_ps=7_000_000_000_000):
    rng = np.random.default_rng(seed)
    m = MarkerMapper(period_hint_ns=PERIOD_NS)
    events = []  # (wall_ns, kind, payload)
    train_id = start_id
    for k in range(n):
        t_event = 1_700_000_000_000_000_000 + k * PERIOD_NS
        if jump_at is not None and k == jump_at:
            train_id = 5  # the feed restarted low
        if k not in drop_ticks:
            events.append((t_event + feed_lat + rng.uniform(-jitter, jitter), "tick", train_id))
        marker_ps = (t_event - 1_700_000_000_000_000_000) * 1000 + offset_ps
        events.append((t_event + tag_lat + rng.uniform(0, jitter), "marker", marker_ps))
        events.append((t_event + tag_lat + jitter, "truth", (marker_ps, train_id)))
        train_id += 1
    events.sort(key=lambda e: e[0])
    truth = {}
    got = []
    for wall, kind, payload in events:
        if kind == "tick":
            m.add_tick(payload, int(wall))
        elif kind == "marker":
            m.add_markers(np.array([payload]), int(wall), payload)
        else:
            truth[payload[0]] = payload[1]
        got += m.resolve(int(wall))
    got += m.resolve(int(events[-1][0]) + 10**10)
    return m, truth, got


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 30_000_000), st.integers(0, 30_000_000), st.integers(0, 20_000_000),
       st.integers(0, 2**31))
def test_pairing_exact_within_half_period(feed_lat, tag_lat, jitter, seed):
    m, truth, got = _simulate(60, feed_lat, tag_lat, jitter, seed)
    assert len(got) == 60
    assert all(truth[t] == i for t, i in got)
    assert m.stats.paired == 60 and m.stats.unmatched == 0


def test_missing_ticks_are_inferred_and_counted():
    m, truth, got = _simulate(40, 1_000_000, 2_000_000, 1_000_000, 1, drop_ticks={10, 11, 30})
    assert all(truth[t] == i for t, i in got)
    assert m.stats.inferred == 3


def test_feed_restart_jumps_back():
    m, truth, got = _simulate(40, 1_000_000, 2_000_000, 1_000_000, 2, jump_at=20)
    assert all(truth[t] == i for t, i in got)


def test_no_feed_gives_unknown_not_zero():
    m = MarkerMapper(max_wait_ns=10)
    m.add_markers(np.array([5, 6]), 1000, 6)
    out = m.resolve(10**12)
    assert [i for _, i in out] == [UNKNOWN_TRAIN_ID] * 2
    assert m.stats.unmatched == 2


def test_waits_for_the_tick_that_decides():
    m = MarkerMapper(period_hint_ns=PERIOD_NS)
    m.add_tick(1, 1_000)
    m.add_markers(np.array([0]), 1_000 + 1_000_000, 0)
    assert m.resolve(2_000_000) == []  # a nearer tick could still come
    m.add_tick(2, 1_000 + PERIOD_NS)
    assert m.resolve(PERIOD_NS) == [(0, 1)]


def test_a_delayed_tick_next_to_an_on_time_one_is_resolved_by_counting():
    m = MarkerMapper(period_hint_ns=PERIOD_NS)
    base = 10**18
    out = []
    for k in range(6):
        if k != 3:
            m.add_tick(100 + k, base + k * PERIOD_NS + (95_000_000 if k == 2 else 0))
        if k == 3:  # tick 102 came 95 ms late, nearer to marker 3 than tick 103 (10 ms late)
            m.add_tick(103, base + 3 * PERIOD_NS + 10_000_000)
        m.add_markers(np.array([k * PERIOD_NS * 1000]), base + k * PERIOD_NS + 1_000_000,
                      k * PERIOD_NS * 1000)
        out += m.resolve(base + k * PERIOD_NS + 2_000_000)
    out += m.resolve(base + 10**10)
    assert [i for _, i in out] == [100, 101, 102, 103, 104, 105]
    assert m.stats.ambiguous == 0
