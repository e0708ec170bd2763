"""Where a capture starts: the frame of the train in force at the put, or of the train
named in CAPTURE:START_TRAIN (pure rules)."""

from __future__ import annotations

import pytest

from trainstamp.detector._capture_job import (
    CLOCK_MATCH_NS,
    frame_period_ns,
    precedes_start_train,
    predates_put,
)

P = 100_000_000  # 100 ms trains
PUT = 1_800_000_000_000_000_000  # host wall clock, ns


def test_train_in_force_is_kept_and_earlier_trains_are_old():
    in_force = PUT - 20_000_000  # triggered 20 ms before the put
    assert predates_put(in_force, PUT, P) is False
    assert predates_put(in_force - P, PUT, P) is True  # ended 20 ms before the put
    assert predates_put(PUT + 5, PUT, P) is False  # triggered after the put
    # the next frame's trigger decides without a period
    assert predates_put(in_force - P, PUT, None, next_ts_ns=in_force) is True
    assert predates_put(in_force, PUT, None, next_ts_ns=in_force + P) is False
    assert predates_put(in_force, PUT, None) is None  # not decidable yet


def test_frames_on_another_time_base_are_never_old():
    assert predates_put(PUT - CLOCK_MATCH_NS - 1, PUT, P) is False
    assert predates_put(0, PUT, P) is False
    assert predates_put(12345, PUT, P, next_ts_ns=23456) is False


def test_period_from_recent_frames():
    stamps = [(10, 500, PUT - 3 * P), (11, 501, PUT - 2 * P), (12, 503, PUT)]
    assert frame_period_ns(stamps, PUT) == P  # a skipped train counts two periods
    no_ids = [(10, 0, PUT - 2 * P), (11, 0, PUT - P)]
    assert frame_period_ns(no_ids, PUT) == P
    assert frame_period_ns(stamps[:1], PUT) is None
    far = [(1, 1, 10), (2, 2, 10 + P)]  # detector clock unrelated to the host's
    assert frame_period_ns(far, PUT) is None


def test_start_train_skips_earlier_trains_and_frames_without_an_id():
    assert precedes_start_train(499, 500) is True
    assert precedes_start_train(0, 500) is True  # no ID: cannot be placed, skipped
    assert precedes_start_train(500, 500) is False


def test_a_frame_past_the_start_train_fails_the_capture():
    with pytest.raises(RuntimeError, match=r"no frame of train 500 .*first frame after it is of train 501"):
        precedes_start_train(501, 500)
    # a frame was lost between (frame numbers 10 -> 12): the frame of 500 may be that one
    with pytest.raises(RuntimeError, match="no frame of train 500"):
        precedes_start_train(501, 500, frame_number=12, before=(10, 499))
    # the frame before is already past the start train (the put came late)
    with pytest.raises(RuntimeError, match="no frame of train 500"):
        precedes_start_train(502, 500, frame_number=12, before=(11, 501))


def test_trains_the_source_skipped_are_not_a_miss():
    # frames 10 -> 11 with trains 499 -> 540: nothing lost, the trains between never came
    assert precedes_start_train(540, 500, frame_number=11, before=(10, 499)) is False


def test_a_train_far_from_the_start_train_is_a_restarted_source_not_a_miss():
    # the source restarted (IDs jumped either way): the capture starts there
    assert precedes_start_train(500 + 1001, 500) is False
    assert precedes_start_train(5000 - 1001, 5000) is False
    assert precedes_start_train(5000 - 1000, 5000) is True  # still just an earlier train
