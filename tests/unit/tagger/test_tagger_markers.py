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


def test_a_lone_neighbour_tick_in_the_window_loses_to_the_tagger_clock_count():
    """Markers on the hardware's exact grid; the feed delivers tick 103 so late that the
    only tick near marker 4's predicted time is 103's, and 104 comes later still. The
    count on the tagger clock decides 104, not the nearest tick."""
    m = MarkerMapper(period_hint_ns=PERIOD_NS)
    base = 10**18
    out = []
    late = {3: 55_000_000, 4: 120_000_000}
    for k in range(8):
        m.add_tick(100 + k, base + k * PERIOD_NS + late.get(k, 0))
        m.add_markers(np.array([k * PERIOD_NS * 1000]), base + k * PERIOD_NS + 1_000_000,
                      k * PERIOD_NS * 1000)
        out += m.resolve(base + k * PERIOD_NS + 2_000_000)
    out += m.resolve(base + 10**10)
    assert [i for _, i in out] == list(range(100, 108))
    assert m.stats.counted >= 1


def test_a_jump_of_the_feed_is_not_counted_over():
    """A restarted TimeServer names trains far from the count: the tick wins."""
    m = MarkerMapper(period_hint_ns=PERIOD_NS)
    out = _paired_run(m, 10**18, 100, 5)
    base = 10**18 + 5 * PERIOD_NS
    m.add_tick(9000, base + 1_000_000)
    m.add_markers(np.array([5 * PERIOD_NS * 1000]), base + 2_000_000, 5 * PERIOD_NS * 1000)
    out += m.resolve(base + 10**10)
    assert [i for _, i in out] == [100, 101, 102, 103, 104, 9000]


def _paired_run(m, base, first_id, n, period_ns=PERIOD_NS):
    """n normal ticks, each with its marker (tagger ps = wall offset from base)."""
    out = []
    for k in range(n):
        wall = base + k * period_ns
        m.add_tick(first_id + k, wall + 1_000_000)
        m.add_markers(np.array([k * period_ns * 1000]), wall + 2_000_000, k * period_ns * 1000)
        out += m.resolve(wall + 3_000_000)
    return out


def test_a_burst_of_ticks_with_one_arrival_time_does_not_collapse_the_period():
    """Under load the feed reads several IDs in one recv() and stamps them alike: the
    period estimate stays the train period, and resolve() never divides by zero."""
    m = MarkerMapper(period_hint_ns=PERIOD_NS)
    base = 10**18
    out = _paired_run(m, base, 100, 5)
    burst_wall = base + 29 * PERIOD_NS + 1_000_000
    for k in range(5, 30):  # 25 ticks (105..129), all read in one recv()
        m.add_tick(100 + k, burst_wall)
    assert m.period_ns == PERIOD_NS
    t29 = 29 * PERIOD_NS * 1000
    m.add_markers(np.array([t29]), base + 29 * PERIOD_NS + 2_000_000, t29)
    out += m.resolve(base + 29 * PERIOD_NS + 10**10)
    assert [i for _, i in out] == [100, 101, 102, 103, 104, 129]
    assert m.stats.ambiguous == 0  # 25 ticks in the window: counting on the tagger clock


def test_a_burst_before_any_pairing_keeps_the_period_from_the_ticks_spacing():
    m = MarkerMapper(period_hint_ns=PERIOD_NS)
    base = 10**18
    for k in range(5):
        m.add_tick(10 + k, base + k * 20_000_000)  # 50 Hz, hint says 10 Hz
    assert m.period_ns == 20_000_000
    for k in range(5, 30):
        m.add_tick(10 + k, base + 29 * 20_000_000)  # the last one on time
    assert m.period_ns == 20_000_000
    m2 = MarkerMapper(period_hint_ns=PERIOD_NS)
    for k in range(30):
        m2.add_tick(10 + k, base)  # nothing but one burst: no spacing to measure
    assert m2.period_ns == PERIOD_NS


def test_period_is_measured_on_the_tagger_clock_once_paired():
    m = MarkerMapper(period_hint_ns=PERIOD_NS)  # hint wrong: the beam runs at 100 Hz
    out = _paired_run(m, 10**18, 7, 20, period_ns=10_000_000)
    out += m.resolve(10**18 + 10**10)
    assert [i for _, i in out] == list(range(7, 27))
    assert m.period_ns == 10_000_000



def test_a_processor_exception_is_counted_and_processing_goes_on():
    """TagService's worker survives an exception in the mapper: counted, its text kept,
    the block it held reaches the engine marked lost (an Error tag), later blocks flow."""
    from trainstamp.tagger._stream import TagService
    from trainstamp.tagger._wire import TAG_DTYPE
    from trainstamp.tagger.engine import TimeTaggerVirtual
    from trainstamp.testing import wait_until

    svc = TagService("tcp://127.0.0.1:9", marker_channel=9)
    sink = TimeTaggerVirtual(channels=list(range(1, 10)), marker_channel=9)
    svc.add_sink(sink)

    def block(t0):
        tags = np.zeros(3, TAG_DTYPE)
        tags["channel"] = [1, 9, 1]
        tags["time"] = [t0, t0 + 10, t0 + 20]
        return tags, t0 + 30

    real, calls = svc.mapper.resolve, []

    def broken(now):
        calls.append(now)
        if len(calls) == 1:
            raise ZeroDivisionError("float division by zero")
        return real(now)

    svc.mapper.resolve = broken
    svc._thread.start()
    try:
        svc._queue.put(("block", block(1000), 10**18))
        wait_until(lambda: svc.stats.blocks == 1, timeout=10)
        assert svc.stats.faults == 1 and "ZeroDivisionError" in svc.stats.fault
        assert sink.getOverflows() == 1  # the stretch is flagged, not silently missing
        svc._queue.put(("block", block(2000), 10**18))
        wait_until(lambda: svc.stats.blocks == 2, timeout=10)
        assert svc.stats.faults == 1 and svc._thread.is_alive()
    finally:
        svc._stop.set()
        svc._thread.join(5)


def _two_grid_run(n_trains, *, latency_ms=50.0, backlog_until_ms=0.0, backlog_ms=0.0,
                  tick_delay_ms=(0.2, 8.0), announce=True, seed=3):
    """A 100 Hz train source, a tagger whose stream trails by ``latency_ms``, and a
    server: ticks arrive ``tick_delay_ms`` late (uniform), the tag stream's blocks
    (every 5 ms) ``backlog_ms`` late until ``backlog_until_ms``. Returns (true, mapped)."""
    rng = np.random.default_rng(seed)
    period = 10_000_000  # ns
    wall0 = 1_700_000_000_000_000_000  # tagger time 0 on the wall clock
    first_id = 5_000
    m = MarkerMapper(period_hint_ns=period)
    if announce:
        m.set_link(int(latency_ms * 1e9))
    events = []
    for k in range(n_trains):
        t_train = k * period
        events.append((wall0 + t_train + rng.uniform(*tick_delay_ms) * 1e6, "tick", first_id + k))
    block = 5_000_000
    for b in range(1, n_trains * 2):
        end = b * block
        sent = wall0 + end + latency_ms * 1e6
        late = backlog_ms * 1e6 if end < backlog_until_ms * 1e6 else 0.0
        events.append((sent + 100_000 + late, "block", end))
    events.sort(key=lambda e: e[0])
    true, mapped = {}, {}
    for when, kind, v in events:
        if kind == "tick":
            m.add_tick(v, int(when))
        else:
            end = v
            marks = [k * period * 1000 for k in range(n_trains)
                     if end - 5_000_000 < k * period <= end]
            m.add_block(int(when), end * 1000)
            if marks:
                m.add_markers(np.asarray(marks, np.int64), int(when), end * 1000)
                for t in marks:
                    true[t] = first_id + t // (period * 1000)
            for t, i in m.resolve(int(when)):
                mapped[t] = i
    return true, mapped, m


def test_markers_take_the_train_of_the_two_grids_despite_a_backlog_at_the_start():
    # The first half second of blocks arrives 480 ms late (a loaded host): a bootstrap
    # from one block's arrival pairs the markers 48 trains off, and stays there.
    true, mapped, m = _two_grid_run(600, backlog_until_ms=500, backlog_ms=480)
    late = [t for t in mapped if t > 1_500_000_000_000]  # after 1.5 s of stream
    assert len(late) > 400
    assert all(mapped[t] == true[t] for t in late), sorted(
        (t // 10**10, mapped[t] - true[t]) for t in late if mapped[t] != true[t])[:5]
    assert m.stats.regridded > 0


def test_without_an_announced_latency_the_pairing_is_as_before():
    # No stream_latency_ps in the hello (another tagger): markers are placed by the
    # block they came in, as before; ticks 0.2..1 ms late and a 2 ms link: exact.
    true, mapped, m = _two_grid_run(300, latency_ms=2.0, tick_delay_ms=(0.2, 1.0),
                                    announce=False)
    assert all(mapped[t] == true[t] for t in mapped if t > 10**11)
    assert m.stats.regridded == 0
