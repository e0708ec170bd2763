"""The train consistency check on arrays (pure)."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from trainstamp.plans import train_consistency


def test_streams_that_agree():
    ids = np.arange(100, 110)
    result = train_consistency({"detector": ids, "tagger": ids[1:], "timeserver": ids},
                               {"detector": ["EXACT"] * 10})
    assert result.ok, result.problems
    assert result.overlap == (101, 109)
    assert result.streams["detector"].count == 10


def test_gaps_duplicates_and_flags_are_reported():
    result = train_consistency({
        "detector": [100, 101, 103, 104],
        "tagger": [100, 101, 102, 102, 103, 104],
        "timeserver": [100, 101, 102, 103, -1, 104],
    }, {"timeserver": ["OK", "OK", "OK", "OK", "INVALID", "OK"]})
    assert not result.ok
    text = "\n".join(result.problems)
    assert "detector: 1 trains missing in 100..104, first [102]" in text
    assert "tagger: 1 trains recorded twice, first [102]" in text
    assert "timeserver: 1 events with an invalid or flagged train ID" in text
    assert result.disagreements == {"detector": [102]}


def test_streams_that_do_not_overlap():
    result = train_consistency({"a": [1, 2, 3], "b": [10, 11]}, min_overlap=1)
    assert not result.ok and "share 0 trains" in result.problems[0]


def test_a_stream_without_valid_ids():
    result = train_consistency({"a": [1, 2], "b": [-1, -1]})
    assert "b: no valid train ID in 2 events" in result.problems


@settings(deadline=None)
@given(st.integers(1, 10**15), st.lists(st.integers(0, 40), min_size=1, max_size=50))
def test_never_passes_with_a_gap_or_duplicate(base, offsets):
    ids = base + np.asarray(offsets)
    full = np.arange(ids.min(), ids.max() + 1)
    result = train_consistency({"a": ids, "b": full})
    contiguous = np.array_equal(np.sort(ids), full)
    assert result.ok == contiguous


def test_a_wild_id_costs_nothing():
    result = train_consistency({"a": [5, 10**15], "b": [5]})
    assert result.streams["a"].n_missing == 10**15 - 6
    assert result.streams["a"].missing[:3] == [6, 7, 8]


def test_a_train_the_timeserver_skipped_is_missing_nowhere():
    ticks = [100, 101, 103, 104]  # 102 never issued
    result = train_consistency({"timeserver": ticks, "detector": [101, 103, 104],
                                "tagger": [100, 101, 103]}, reference="timeserver")
    assert result.ok, result.problems
    assert result.skipped == [102] and result.overlap == (101, 103)


def test_against_the_reference_extra_and_missing_trains_are_problems():
    result = train_consistency({"timeserver": [100, 101, 103, 104],
                                "detector": [100, 102, 103, 104]}, reference="timeserver")
    text = "\n".join(result.problems)
    assert "detector: 1 trains the reference 'timeserver' never issued, first [102]" in text
    assert "detector: 1 trains missing in 100..104, first [101]" in text
