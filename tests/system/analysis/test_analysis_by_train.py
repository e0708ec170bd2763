"""Analysis by train ID on a real embedded Tiled catalog (SQLite + DuckDB + HDF5 assets).

Runs with known train IDs are written by a RunEngine through ``make_writer`` (the
TiledWriter the session uses), then found and loaded back by train.
"""

from __future__ import annotations

import numpy as np
import pytest
from analysis_runs import (
    BIN_PS,
    N_BINS,
    SHAPE,
    FrameDetector,
    SlotTagger,
    fly_like_run,
    run_engine,
    step_run,
)

from trainstamp.storage import (
    StorageConfig,
    close_catalog,
    detector_frames,
    find_runs,
    load_trains,
    merge_streams,
    open_catalog,
    runs_with_train,
    side_by_side,
    tagger_data,
    train_key_of,
    train_table,
    write_tiled_profile,
)

pytestmark = pytest.mark.system

STEP = list(range(1000, 1010))  # every train
SPARSE = list(range(1020, 1031, 2))  # every other train
FLY = list(range(2000, 2012))  # detector every train, tagger per 3 trains


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    cfg = StorageConfig.resolve(tmp_path_factory.mktemp("analysis") / "data", environ={})
    client = open_catalog(config=cfg)
    RE, beam = run_engine(client)
    uids = {}
    for label, trains in (("step", STEP), ("sparse", SPARSE)):
        det = FrameDetector("det", beam, cfg.detector_dir)
        tagger = SlotTagger("tagger", beam)
        (uids[label],) = RE(step_run(beam, [det, tagger], trains))
    det = FrameDetector("det", beam, cfg.detector_dir)
    (uids["fly"],) = RE(fly_like_run(beam, det, SlotTagger("tagger", beam, trains=3), FLY))
    yield cfg, client, uids
    close_catalog(client)


def test_runs_with_train_checks_the_events(store):
    _, client, uids = store
    assert list(runs_with_train(client, 1004)) == [uids["step"]]
    # 1021 lies inside the sparse run's span but no event was recorded in it
    assert uids["sparse"] in find_runs(client, 1021)
    assert runs_with_train(client, 1021) == {}
    assert list(runs_with_train(client, 1021, exact=False)) == [uids["sparse"]]
    assert list(runs_with_train(client, 1022)) == [uids["sparse"]]
    # the fly-like run has no primary stream; its detector stream holds the trains
    assert list(runs_with_train(client, 2005)) == [uids["fly"]]
    assert list(runs_with_train(client, 2005, streams=["tagger"])) == [uids["fly"]]
    assert list(runs_with_train(client, 2004, streams=["tagger"])) == []  # not a tagger row
    assert runs_with_train(client, 999) == {}


@pytest.mark.parametrize("bad", [0, -3, 1.5, "1000", True])
def test_bad_train_ids_are_refused(store, bad):
    _, client, uids = store
    with pytest.raises(ValueError, match="train"):
        runs_with_train(client, bad)
    with pytest.raises(ValueError, match="train"):
        load_trains(client[uids["step"]], bad, 1005)


def test_reversed_range_is_refused(store):
    _, client, uids = store
    with pytest.raises(ValueError, match="last train 1002 is before first train 1005"):
        load_trains(client[uids["step"]], 1005, 1002)


def test_load_trains_indexes_by_train_id(store):
    _, client, uids = store
    ds = load_trains(client[uids["step"]], 1003, 1006)
    assert ds.attrs["train_key"] == "train_id"
    assert ds["train_id"].values.tolist() == [1003, 1004, 1005, 1006]
    assert ds["det_image"].shape == (4, *SHAPE)  # frames-per-point axis squeezed
    assert ds["det_image"].dtype == np.uint16
    assert ds["det_image"].values[:, 0, 0].tolist() == [1003, 1004, 1005, 1006]
    # arrays in the event table come back as numbers, not strings
    assert ds["tagger_corr1_data"].dtype == np.int32
    assert ds["tagger_corr1_data"].values[1].tolist() == (1004 + np.arange(N_BINS)).tolist()
    everything = load_trains(client[uids["step"]])
    assert everything.sizes["train_id"] == len(STEP)
    assert load_trains(client[uids["step"]], 1500).sizes["train_id"] == 0


def test_load_trains_fields_and_unknown_stream(store):
    _, client, uids = store
    run = client[uids["step"]]
    ds = load_trains(run, 1000, 1001, fields=["det_frame_number"])
    assert list(ds.data_vars) == ["det_frame_number"]
    assert ds["det_frame_number"].values.tolist() == [6000, 6001]
    with pytest.raises(KeyError, match="no stream 'baseline'"):
        load_trains(run, stream="baseline")
    with pytest.raises(KeyError, match="no data key 'nope'"):
        load_trains(run, fields=["nope"])


def test_detector_frames_use_the_exact_ids(store):
    _, client, uids = store
    frames = detector_frames(client[uids["fly"]], 2004, 2007, stream="det")
    assert frames.dims == ("train_id", "y", "x")
    assert frames["train_id"].values.tolist() == [2004, 2005, 2006, 2007]
    assert frames["frame_number"].values.tolist() == [7004, 7005, 7006, 7007]
    assert np.all(frames.values == np.array([2004, 2005, 2006, 2007])[:, None, None])
    assert train_key_of(client[uids["fly"]]["det"]) == "det_train_id"


def test_tagger_data_covers_train_ranges(store):
    _, client, uids = store
    # readings cover 2000-2002, 2003-2005, 2006-2008, 2009-2011
    tag = tagger_data(client[uids["fly"]], 2004, 2006, stream="tagger")
    assert tag["train_id"].values.tolist() == [2003, 2006]
    assert tag["tagger_corr1_last_train_id"].values.tolist() == [2005, 2008]
    assert tag["tagger_corr1_data"].dims == ("train_id", "bin")
    assert tag["bin"].values.tolist() == ((np.arange(N_BINS) - N_BINS // 2) * BIN_PS).tolist()
    with pytest.raises(KeyError, match="tagger_corr1_first_train_id"):
        tagger_data(client[uids["fly"]], stream="det")


def test_side_by_side_same_events(store):
    _, client, uids = store
    ds = side_by_side(client[uids["step"]], 1002, 1004)
    assert ds["train_id"].values.tolist() == [1002, 1003, 1004]
    assert ds["det_image"].values[:, 0, 0].tolist() == [1002, 1003, 1004]
    assert ds["tagger_corr1_data"].values[:, 0].tolist() == [1002, 1003, 1004]
    assert ds["tagger_corr1_last_train_id"].values.tolist() == [1002, 1003, 1004]
    table = train_table(ds)
    assert table.index.name == "train_id" and list(table.index) == [1002, 1003, 1004]
    assert table["frame_number"].tolist() == [6002, 6003, 6004]
    assert "det_image" not in table and "tagger_corr1_data" not in table


def test_side_by_side_fly_streams_outer_join(store):
    _, client, uids = store
    ds = side_by_side(client[uids["fly"]], 2000, 2005, detector_stream="det",
                      tagger_stream="tagger")
    assert ds["train_id"].values.tolist() == list(range(2000, 2006))
    got = ds["tagger_corr1_last_train_id"].values
    assert got[0] == 2002 and got[3] == 2005
    assert np.isnan(got[[1, 2, 4, 5]]).all()  # tagger rows sit at their first train
    assert ds["det_image"].values[:, 0, 0].tolist() == list(range(2000, 2006))
    with pytest.raises(ValueError, match="nothing to load"):
        side_by_side(client[uids["fly"]], detector=None, tagger=None)


def test_merge_streams_lines_up_a_fly_run(store):
    _, client, uids = store
    ds = merge_streams(client[uids["fly"]], 2000, 2005)
    assert ds.attrs["streams"] == ["det", "tagger"]
    assert ds["train_id"].values.tolist() == list(range(2000, 2006))
    assert ds["det_image"].values[:, 0, 0].tolist() == list(range(2000, 2006))
    last = ds["tagger_corr1_last_train_id"].values
    assert last[2] == 2002 and last[5] == 2005 and np.isnan(last[[0, 1, 3, 4]]).all()
    assert "train_id_status" in ds  # only the tagger stream has the stamp here
    with pytest.raises(KeyError, match="no stream 'nope'"):
        merge_streams(client[uids["fly"]], streams=["nope"])


def test_databroker_from_profile_reads_the_embedded_catalog(store, tmp_path, monkeypatch):
    import databroker
    import tiled.profiles

    cfg, _, uids = store
    write_tiled_profile(tmp_path / "profiles", "tsdata", cfg)
    # TILED_PROFILES is read when tiled is imported; point the search path here instead.
    monkeypatch.setattr(tiled.profiles, "paths", [tmp_path / "profiles"])
    tiled.profiles.load_profiles.cache_clear()
    try:
        client = databroker.from_profile("tsdata")
        try:
            run = client[uids["step"]]
            assert run["primary"]["train_id"].read().tolist() == STEP
            assert run["primary"]["det_image"][2:3, 0, 0, 0].tolist() == [1002]
            assert load_trains(run, 1001, 1001)["train_id"].values.tolist() == [1001]
        finally:
            close_catalog(client)
    finally:
        tiled.profiles.load_profiles.cache_clear()
