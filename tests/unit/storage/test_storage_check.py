"""The one checker of stored runs, on arrays (no catalog, no beamline): one stream's
train IDs (train_id_problems), several streams of a run (train_consistency) and a
step-scan run of all three devices (check_alignment)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import trainstamp.plans
from trainstamp.storage import check_alignment, train_consistency, train_id_problems


def test_the_plans_names_are_the_storage_checker():
    from trainstamp import storage

    for name in ("check_train_consistency", "train_consistency", "TrainConsistency",
                 "StreamTrains"):
        assert getattr(trainstamp.plans, name) is getattr(storage, name)


# --- one stream: train_id_problems ------------------------------------------------------


@pytest.mark.parametrize(
    ("ids", "statuses", "problem"),
    [
        ([], None, "no events"),
        ([5, 6, 6], None, "not strictly increasing at 1 places, first 6 -> 6 at event 2"),
        ([5, 4], None, "first 5 -> 4"),
        ([-1, 5], None, "1 events without a train ID"),
        ([0, 5], None, "1 events without a train ID"),
        ([5, 6], ["OK", "STALE"], "1 events flagged in train_id_status: ['STALE']"),
    ],
)
def test_train_id_problems(ids, statuses, problem):
    assert any(problem in p for p in train_id_problems(ids, statuses)), \
        train_id_problems(ids, statuses)


def test_good_train_ids_have_no_problems():
    assert train_id_problems([5, 6, 8], ["OK", "EXACT", "OK"]) == []


# --- several streams: train_consistency -------------------------------------------------


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


# --- a step-scan run of all three devices: check_alignment ------------------------------


T0 = 1_000_000


def run(n: int = 6, spacing: int = 7, n_trains: int = 5):
    """A run that lines up: event i read tick R[i]; the detector frame is the first train
    after the trigger, and the tagger's trains start with it."""
    ticks = T0 + 1 + spacing * (np.arange(n) + 1)
    frames = ticks - n_trains
    first = frames.copy()
    last = first + n_trains - 1
    data = {
        "train_id": frames.copy(), "train_id_status": np.array(["EXACT"] * n),
        "ts_train_id": ticks.astype(float), "det_train_id": frames.astype(np.uint64),
    }
    for slot in ("corr1", "rate1"):
        data[f"tt_{slot}_first_train_id"] = first.astype(float)
        data[f"tt_{slot}_last_train_id"] = last.astype(float)
    start = {"train_id_start": T0, "train_id_start_status": "OK"}
    stop = {"train_id_end": int(ticks[-1]) + 1, "exit_status": "success"}
    return data, start, stop, frames.copy()


def check(data, start, stop, file_ids=None, n_trains=5):
    return check_alignment(data, start, stop, ts="ts", det="det", tagger="tt",
                           slots=("corr1", "rate1"), file_train_ids=file_ids, n_trains=n_trains)


def test_a_run_that_lines_up_passes():
    data, start, stop, file_ids = run()
    result = check(data, start, stop, file_ids)
    assert result.problems == []
    assert any("6 of 6 EXACT" in f for f in result.facts)
    assert any("equal to those in the HDF5 file" in f for f in result.facts)
    assert any("tagger first train - detector frame train: [0]" in f for f in result.facts)


def test_interpolated_stamps_must_equal_the_tick():
    data, start, stop, _ = run()
    data["train_id_status"] = np.array(["OK"] * 6)
    assert any("differs from the detector's exact ID" in p for p in check(data, start, stop).problems)
    data["train_id"] = data["ts_train_id"].astype(np.int64)
    assert check(data, start, stop).problems == []


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d["det_train_id"].__setitem__(2, d["ts_train_id"][2] + 1),
         "det frame: 1 events outside their TimeServer window, first event 2"),
        (lambda d: d["det_train_id"].__setitem__(3, d["ts_train_id"][2]),
         "det frame: 1 events outside their TimeServer window, first event 3"),
        (lambda d: d["tt_corr1_last_train_id"].__setitem__(1, d["tt_corr1_last_train_id"][1] + 1),
         "tt.corr1: 1 events do not cover exactly 5 train(s)"),
        (lambda d: (d["tt_rate1_first_train_id"].__setitem__(4, d["tt_rate1_first_train_id"][4] - 2),
                    d["tt_rate1_last_train_id"].__setitem__(4, d["tt_rate1_last_train_id"][4] - 2)),
         "tt.rate1: 1 events outside their TimeServer window, first event 4"),
        (lambda d: (d["tt_rate1_first_train_id"].__setitem__(0, d["tt_rate1_first_train_id"][0] + 1),
                    d["tt_rate1_last_train_id"].__setitem__(0, d["tt_rate1_last_train_id"][0] + 1)),
         "tt: slots corr1 and rate1 cover different trains"),
        (lambda d: d["train_id_status"].__setitem__(5, "STALE"),
         "event train_id: 1 events flagged in train_id_status"),
        (lambda d: d["train_id"].__setitem__(1, -1),
         "event train_id: 1 events without a train ID"),
    ],
)
def test_misaligned_runs_are_caught(change, message):
    data, start, stop, file_ids = run()
    change(data)
    if "det_train_id" in message or "det frame" in message:
        data["train_id"] = data["det_train_id"].astype(np.int64)
        file_ids = data["det_train_id"].copy()
    problems = check(data, start, stop, file_ids).problems
    assert any(message in p for p in problems), problems


def test_tagger_one_train_behind_the_detector_is_caught():
    data, start, stop, file_ids = run()
    for slot in ("corr1", "rate1"):
        data[f"tt_{slot}_first_train_id"][2] -= 1
        data[f"tt_{slot}_last_train_id"][2] -= 1
    problems = check(data, start, stop, file_ids).problems
    assert any("tt.corr1: 1 events start at another train than the detector frame, first "
               "event 2" in p for p in problems), problems


def test_tagger_trains_counted_twice_are_caught():
    data, start, stop, file_ids = run(spacing=3, n_trains=5)
    problems = check(data, start, stop, file_ids).problems
    assert any("cover a train twice" in p for p in problems), problems


def test_hdf5_ids_must_equal_the_events():
    data, start, stop, file_ids = run()
    file_ids[3] += 1
    problems = check(data, start, stop, file_ids).problems
    assert any("train IDs in the HDF5 file" in p for p in problems)


def test_start_and_stop_documents_must_bracket_the_run():
    data, start, stop, file_ids = run()
    assert any("train_id_end" in p for p in check(data, start, {**stop, "train_id_end": None},
                                                   file_ids).problems)
    late = {**start, "train_id_start": int(data["train_id"][0]) + 1}
    assert any("train_id_start" in p for p in check(data, late, stop, file_ids).problems)
    failed = {**stop, "exit_status": "fail"}
    assert any("exit status 'fail'" in p for p in check(data, start, failed, file_ids).problems)
