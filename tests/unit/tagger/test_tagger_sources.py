"""Emulator settings validation and vectorised tag generation."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trainstamp.tagger._settings import TEST_SIGNAL_PERIOD_PS, TaggerSettings
from trainstamp.tagger._sources import TagGenerator

MS = 1_000_000_000  # ps


def _run(settings, blocks=50, block_ps=10 * MS, seed=3, markers=None):
    gen = TagGenerator(settings, seed=seed)
    out = [gen.generate((k + 1) * block_ps, markers(k) if markers else None)
           for k in range(blocks)]
    return np.concatenate(out)


def test_settings_validation_quotes_values():
    s = TaggerSettings()
    with pytest.raises(ValueError, match="unknown channel 12"):
        s.set_trigger_level(12, 0.1)
    with pytest.raises(ValueError, match="trigger level 7"):
        s.set_trigger_level(1, 7)
    with pytest.raises(ValueError, match="dead time 1"):
        s.set_dead_time(1, 1)
    with pytest.raises(ValueError, match="event divider must be an integer"):
        s.set_event_divider(1, 1.5)
    with pytest.raises(ValueError, match="channel must be an integer"):
        s.set_input_delay("1", 5)
    with pytest.raises(ValueError, match="marker channel"):
        s.set_source(9, {"kind": "poisson", "rate": 10})
    with pytest.raises(ValueError, match="unknown operation"):
        s.apply("rm -rf", [])
    with pytest.raises(ValueError, match="bad arguments"):
        s.apply("set_deadtime" if False else "set_dead_time", [1])
    assert s.apply("set_dead_time", [1, 5000.0]) == 5000


def test_test_signal_rate_and_sorted_output():
    s = TaggerSettings()
    s.set_test_signal(1, True)
    s.set_test_signal(2, True)
    tags = _run(s, blocks=20)
    assert np.all(np.diff(tags["time"]) >= 0)
    n1 = np.count_nonzero(tags["channel"] == 1)
    expected = 20 * 10 * MS / TEST_SIGNAL_PERIOD_PS
    assert abs(n1 - expected) <= 2


def test_pair_source_gives_peak_at_delay():
    s = TaggerSettings()
    s.set_source(3, {"kind": "pair", "partner": 4, "rate": 2e5, "delay_ps": 3000,
                     "jitter_ps": 20})
    tags = _run(s, blocks=20)
    a = tags["time"][tags["channel"] == 3]
    b = tags["time"][tags["channel"] == 4]
    assert abs(len(a) - len(b)) < 0.05 * len(a)
    # every partner event sits delay ± 5 sigma after its twin
    idx = np.searchsorted(a, b - 3000)
    near = np.minimum(np.abs(b - 3000 - a[np.clip(idx, 0, len(a) - 1)]),
                      np.abs(b - 3000 - a[np.clip(idx - 1, 0, len(a) - 1)]))
    assert np.mean(near <= 100) > 0.97


def test_antibunched_has_no_coincidences_at_zero():
    s = TaggerSettings()
    s.set_source(5, {"kind": "antibunched", "partner": 6, "rate": 1e6, "lifetime_ps": 20_000})
    tags = _run(s, blocks=20)
    a = tags["time"][tags["channel"] == 5]
    b = tags["time"][tags["channel"] == 6]
    idx = np.clip(np.searchsorted(a, b), 1, len(a) - 1)
    gap = np.minimum(np.abs(b - a[idx]), np.abs(b - a[idx - 1]))
    # Poisson at this rate would give ~2% of gaps < 10 ns; antibunched gives far fewer
    assert np.mean(gap < 1_000) < 0.002


def test_trigger_level_dead_time_divider_delay():
    s = TaggerSettings()
    s.set_source(7, {"kind": "poisson", "rate": 1e6, "amplitude": 1.0, "amplitude_sigma": 0.1})
    base = np.count_nonzero(_run(s)["channel"] == 7)
    s.set_trigger_level(7, 1.0)  # half the pulses exceed it
    half = np.count_nonzero(_run(s)["channel"] == 7)
    assert 0.45 < half / base < 0.55
    s.set_trigger_level(7, 0.5)
    s.set_event_divider(7, 4)
    assert 0.23 < np.count_nonzero(_run(s)["channel"] == 7) / base < 0.27
    s.set_event_divider(7, 1)
    s.set_dead_time(7, 1_000_000)  # 1 µs at 1 MHz: about half survive
    t = _run(s)
    t7 = t["time"][t["channel"] == 7]
    assert np.all(np.diff(t7) >= 1_000_000)
    s.set_dead_time(7, 2000)
    s.set_input_delay(7, -1_500_000)
    t = _run(s)
    assert np.all(np.diff(t["time"]) >= 0)


def test_markers_land_on_marker_channel_in_order():
    s = TaggerSettings()
    s.set_test_signal(1, True)
    tags = _run(s, blocks=10, markers=lambda k: np.array([k * 10 * MS + 123]))
    m = tags[tags["channel"] == 9]
    assert list(m["time"]) == [k * 10 * MS + 123 for k in range(len(m))]
    assert len(m) >= 9


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(1, 30), min_size=3, max_size=12),
       st.integers(-2_000_000, 2_000_000), st.integers(-50_000, 50_000),
       st.integers(2_000, 500_000), st.integers(1, 5), st.integers(0, 2**31))
def test_any_settings_and_block_sizes_give_a_sorted_stream(blocks_ms, delay3, pair_delay,
                                                           dead4, divider, seed):
    s = TaggerSettings()
    s.set_test_signal(1, True)
    s.set_source(3, {"kind": "pair", "partner": 4, "rate": 3e5, "delay_ps": pair_delay,
                     "jitter_ps": 500})
    s.set_source(5, {"kind": "antibunched", "partner": 6, "rate": 2e5, "lifetime_ps": 3000})
    s.set_input_delay(3, delay3)
    s.set_dead_time(4, dead4)
    s.set_event_divider(5, divider)
    gen = TagGenerator(s, seed=seed)
    t, out, end = 0, [], gen.complete_to
    for ms in blocks_ms:
        t += ms * MS
        block = gen.generate(t)
        if len(block):  # each block lies after the previous block's promised end
            assert block["time"][0] > end and block["time"][-1] <= gen.complete_to
        end = gen.complete_to
        out.append(block)
    tags = np.concatenate(out)
    assert np.all(np.diff(tags["time"]) >= 0)
    assert gen.late_events == 0
    t4 = tags["time"][tags["channel"] == 4]
    assert np.all(np.diff(t4) >= dead4)


def test_a_delay_change_never_breaks_stream_order():
    s = TaggerSettings()
    s.set_source(2, {"kind": "poisson", "rate": 2e6})
    gen = TagGenerator(s, seed=4)
    first = gen.generate(10 * MS)
    end = gen.complete_to
    s.set_input_delay(2, -2_000_000)  # events of the next block would land in the past
    second = gen.generate(20 * MS)
    assert second["time"][0] > end
    late = second[second["type"] == 4]
    assert gen.late_events > 0 and late["missed_events"].sum() == gen.late_events
    assert np.all(np.diff(np.concatenate([first, second])["time"]) >= 0)
