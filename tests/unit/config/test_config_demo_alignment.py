"""The demo's train-ID alignment check on synthetic runs (no beamline)."""

from __future__ import annotations

import numpy as np
import pytest

from trainstamp.demo import check_alignment

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
