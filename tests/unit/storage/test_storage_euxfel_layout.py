"""The EuXFEL layout of a run (pure): sources, keys, train index and metadata."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest

from trainstamp.storage._euxfel import (
    camel,
    file_name,
    index_of,
    metadata_values,
    plan_sources,
    run_train_ids,
    sources_table,
)


def _keys(obj: str, *names: str, dtype: str = "integer", **extra) -> dict:
    return {n: {"object_name": obj, "dtype": dtype, "shape": [], "source": "x", **extra}
            for n in names}


#: the data keys of a train_fly run, as its descriptors have them
FLY = {
    "timeserver": {**_keys("timeserver_ticks", "train_id", "timeserver_tick_time"),
                   **_keys("timeserver_ticks", "train_id_status", dtype="string")},
    "detector": {**_keys("team1k_frames", "train_id", "team1k_frame_number"),
                 **_keys("team1k_frames", "train_id_status", dtype="string"),
                 **_keys("team1k_frames", "team1k_complete", dtype="boolean")},
    "tagger": {**_keys("tagger_counts", "train_id", "tagger_counts_first_train_id",
                       "tagger_counts_last_train_id", "tagger_counts_counts",
                       "tagger_counts_width"),
               **_keys("tagger_counts", "train_id_status", dtype="string")},
}

#: a train_scan's primary stream: the stamp, the detector, a tagger slot and a motor
STEP = {"primary": {
    **_keys("timeserver_stamp", "train_id"),
    **_keys("timeserver_stamp", "train_id_status", dtype="string"),
    **_keys("team1k", "team1k_image", dtype="array", external="STREAM:"),
    **_keys("team1k", "team1k_train_id", "team1k_frame_number"),
    **_keys("team1k", "team1k_train_id_valid", dtype="boolean"),
    **_keys("tt", "tt_corr1_first_train_id", "tt_corr1_last_train_id"),
    **_keys("tt", "tt_corr1_data", "tt_corr1_index", "tt_corr1_g2", dtype="array"),
    **_keys("axis", "axis", "axis_setpoint", dtype="number"),
}}


def _by_name(sources):
    return {s.index_path: s for s in sources}


def test_fly_run_sources_and_keys():
    sources, notes = plan_sources(FLY)
    assert notes == []
    got = _by_name(sources)
    assert set(got) == {"TRAINSTAMP/TIMESERVER/timeserver", "TRAINSTAMP/DET/team1k:daqOutput/data",
                        "TRAINSTAMP/TAGGER/tagger:output/counts"}
    det = got["TRAINSTAMP/DET/team1k:daqOutput/data"]
    assert det.section == "INSTRUMENT" and det.kind == "detector"
    assert det.train_key == "train_id" and det.image_key is None  # frames in the capture file
    assert {k.name: k.data_key for k in det.keys} == {
        "data.image": "team1k_image", "data.trainId": "train_id",
        "data.frameNumber": "team1k_frame_number", "data.complete": "team1k_complete"}
    tag = got["TRAINSTAMP/TAGGER/tagger:output/counts"]
    assert [k.name for k in tag.keys] == ["counts.firstTrainId", "counts.lastTrainId",
                                          "counts.counts", "counts.width"]
    ts = got["TRAINSTAMP/TIMESERVER/timeserver"]
    assert ts.section == "CONTROL" and ts.group == ""
    assert {k.name for k in ts.keys} == {"trainId", "trainIdStatus", "tickTime"}
    assert sources_table(sources) == {
        "dataSourceId": ["CONTROL/TRAINSTAMP/TIMESERVER/timeserver",
                         "INSTRUMENT/TRAINSTAMP/DET/team1k:daqOutput/data",
                         "INSTRUMENT/TRAINSTAMP/TAGGER/tagger:output/counts"],
        "root": ["CONTROL", "INSTRUMENT", "INSTRUMENT"],
        "deviceId": ["TRAINSTAMP/TIMESERVER/timeserver", "TRAINSTAMP/DET/team1k:daqOutput/data",
                     "TRAINSTAMP/TAGGER/tagger:output/counts"]}


def test_step_run_sources_detector_tagger_motor():
    sources, _ = plan_sources(STEP)
    got = _by_name(sources)
    det = got["TRAINSTAMP/DET/team1k:daqOutput/data"]
    assert det.train_key == "team1k_train_id"  # the header IDs, not the stamp
    assert det.image_key == "team1k_image"
    assert {k.name for k in det.keys} == {"data.image", "data.trainId", "data.frameNumber",
                                          "data.trainIdValid"}
    corr = got["TRAINSTAMP/TAGGER/tt:output/corr1"]
    assert {k.name for k in corr.keys} == {"corr1.firstTrainId", "corr1.lastTrainId",
                                           "corr1.data", "corr1.index", "corr1.g2"}
    motor = got["TRAINSTAMP/DEVICE/axis"]
    assert motor.section == "CONTROL"
    assert {k.name: k.data_key for k in motor.keys} == {"value": "axis",
                                                        "setpoint": "axis_setpoint"}
    assert {k.name for k in got["TRAINSTAMP/TIMESERVER/timeserver"].keys} == {
        "trainId", "trainIdStatus"}


def test_a_device_in_two_streams_gets_two_sources_and_a_stream_without_ids_is_noted():
    streams = {"primary": {**_keys("ts_stamp", "train_id"), **_keys("m", "m", dtype="number")},
               "baseline": {**_keys("ts_stamp", "train_id"), **_keys("m", "m", dtype="number")},
               "monitor": _keys("m", "m", dtype="number")}
    sources, notes = plan_sources(streams)
    names = sorted(s.name for s in sources)
    assert names == ["TRAINSTAMP/DEVICE/m", "TRAINSTAMP/DEVICE/m_baseline",
                     "TRAINSTAMP/TIMESERVER/ts", "TRAINSTAMP/TIMESERVER/ts_baseline"]
    assert notes == ["stream 'monitor' has no 'train_id' key: m left out"]


def test_unexportable_keys_are_noted():
    streams = {"primary": {**_keys("ts_stamp", "train_id"),
                           **_keys("cam", "cam_image", dtype="array", external="STREAM:"),
                           **_keys("cam", "cam_blob", dtype="object")}}
    sources, notes = plan_sources(streams)
    assert [s.name for s in sources] == ["TRAINSTAMP/TIMESERVER/ts"]
    assert notes == ["primary/cam_image: array data not exported",
                     "primary/cam_blob: object data not exported"]


def test_index_gives_count_0_to_missing_trains_and_drops_rows_without_an_id():
    trains = np.array([10, 11, 12, 13, 14], dtype=np.uint64)
    rows, first, count = index_of(np.array([13, -1, 10, 0, 14, 10]), trains,
                                  one_per_train=False)
    assert rows.tolist() == [2, 5, 0, 4]  # sorted by train, stable within a train
    assert count.tolist() == [2, 0, 0, 1, 1]
    assert first.tolist() == [0, 2, 2, 2, 3]
    assert first.dtype == count.dtype == np.uint64
    rows, first, count = index_of(np.array([13, 10, 10]), trains, one_per_train=True)
    assert rows.tolist() == [1, 0] and count.tolist() == [1, 0, 0, 1, 0]
    assert first.tolist() == [0, 1, 1, 1, 2]


def test_index_refuses_rows_outside_the_trains():
    with pytest.raises(ValueError, match=r"train IDs \[99\]"):
        index_of(np.array([10, 99]), np.array([10, 11]), one_per_train=False)


def test_run_train_ids_are_the_union_above_0():
    ids = run_train_ids([np.array([5, 3, -1]), np.array([[4, 3], [0, 9]])])
    assert ids.tolist() == [3, 4, 5, 9] and ids.dtype == np.uint64
    with pytest.raises(ValueError, match="the run has no train IDs"):
        run_train_ids([np.array([-1, 0]), np.array([], dtype=np.int64)])
    with pytest.raises(ValueError, match="the run has no train IDs"):
        run_train_ids([])


def test_metadata_from_the_start_document():
    now = datetime(2026, 12, 3, 7, 5, 9, tzinfo=UTC)
    meta = metadata_values({"scan_id": 12, "proposal": "p900123"}, now=now)
    assert meta["runNumber"] == 12 and meta["proposalNumber"] == 900123
    assert meta["creationDate"] == "20261203T070509Z" and meta["dataFormatVersion"] == "1.0"
    meta = metadata_values({"scan_id": 12, "run_number": 3, "proposal_number": 7}, now=now)
    assert (meta["runNumber"], meta["proposalNumber"]) == (3, 7)
    assert metadata_values({}, now=now)["runNumber"] == 0


def test_file_names_and_camel_case():
    assert file_name(12, "DA01") == "RAW-R0012-DA01-S00000.h5"
    assert file_name(3, "TEAM1K01", 2) == "RAW-R0003-TEAM1K01-S00002.h5"
    with pytest.raises(ValueError, match="aggregator 'da-1'"):
        file_name(1, "da-1")
    assert camel("first_train_id") == "firstTrainId" and camel("g2") == "g2"
