"""``trainstamp export euxfel`` on runs with known train IDs, read back by EXtra-data.

The runs are written by a RunEngine through ``make_writer`` into an embedded catalog
(see ``analysis_runs``); the export is opened with ``extra_data.RunDirectory`` and
checked with ``extra-data-validate``, both EuXFEL's own code.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from analysis_runs import N_BINS, FrameDetector, SlotTagger, fly_like_run, run_engine, step_run
from bluesky import plans as bp
from ophyd.sim import SynAxis

from trainstamp.storage import StorageConfig, close_catalog, detector_frames, open_catalog
from trainstamp.storage._euxfel_write import export_euxfel, find_run, main

pytestmark = pytest.mark.system

extra_data = pytest.importorskip("extra_data")

STEP = list(range(3000, 3006))
FLY = list(range(4000, 4009))  # detector every train, tagger every 3rd
DET = "TRAINSTAMP/DET/det:daqOutput"
TAGGER = "TRAINSTAMP/TAGGER/tagger:output"


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    cfg = StorageConfig.resolve(tmp_path_factory.mktemp("euxfel") / "data", environ={})
    client = open_catalog(config=cfg)
    RE, beam = run_engine(client)
    uids = {}
    det = FrameDetector("det", beam, cfg.detector_dir)
    motor = SynAxis(name="motor")
    plan = step_run(beam, [det, SlotTagger("tagger", beam), motor], STEP, md={"proposal": 900042})
    (uids["step"],) = RE(plan)
    det = FrameDetector("det", beam, cfg.detector_dir)
    (uids["fly"],) = RE(fly_like_run(beam, det, SlotTagger("tagger", beam, trains=3), FLY))
    (uids["no_ids"],) = RE(bp.count([motor], 2))
    yield cfg, client, uids
    close_catalog(client)


def _validate(path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "extra_data.validation", str(path)],
                          capture_output=True, text=True, timeout=120)


def test_step_run_reads_back_in_extra_data(store, tmp_path):
    cfg, client, uids = store
    run = client[uids["step"]]
    out = tmp_path / "step"
    result = export_euxfel(run, out, detector_dirs=[cfg.detector_dir], progress=False)
    assert result.frames == len(STEP)
    check = _validate(out)
    assert check.returncode == 0, check.stdout + check.stderr
    ed = extra_data.RunDirectory(str(out))
    assert list(ed.train_ids) == STEP
    meta = ed.run_metadata()
    assert meta["proposalNumber"] == 900042 and meta["runNumber"] == run.metadata["start"]["scan_id"]
    frames = detector_frames(run)
    for tid in (STEP[0], STEP[3]):
        got_tid, data = ed.train_from_id(tid)
        assert got_tid == tid
        image = data[DET]["data.image"]  # one frame in the train: no frame axis
        assert image.shape == frames.shape[1:] and image.dtype == np.uint16
        assert np.array_equal(image, frames.sel(train_id=tid).values)
    hist = ed[f"{TAGGER}", "corr1.data"].xarray()
    assert hist.coords["trainId"].values.tolist() == STEP
    assert hist.shape == (len(STEP), N_BINS)
    assert np.array_equal(hist.values, run["primary"]["tagger_corr1_data"].read())
    motor = ed["TRAINSTAMP/DEVICE/motor", "value"].xarray()
    assert motor.coords["trainId"].values.tolist() == STEP
    assert ed["TRAINSTAMP/TIMESERVER/beam", "trainId"].ndarray().tolist() == STEP


def test_fly_run_keeps_each_stream_at_its_trains(store, tmp_path):
    cfg, client, uids = store
    out = tmp_path / "fly"
    export_euxfel(client[uids["fly"]], out, detector_dirs=[cfg.detector_dir],
                  chunk_frames=2, progress=False)
    check = _validate(out)
    assert check.returncode == 0, check.stdout + check.stderr
    ed = extra_data.RunDirectory(str(out))
    assert list(ed.train_ids) == FLY
    counts = ed[TAGGER, "corr1.lastTrainId"].data_counts(labelled=False)
    assert counts.tolist() == [0, 0, 1] * 3  # a reading every 3rd train, no IDs made up
    assert ed[TAGGER, "corr1.lastTrainId"].xarray().coords["trainId"].values.tolist() == FLY[2::3]
    assert ed[DET, "data.image"].data_counts(labelled=False).tolist() == [1] * len(FLY)
    assert ed[DET, "data.trainId"].ndarray().tolist() == FLY


def test_errors(store, tmp_path, capsys):
    cfg, client, uids = store
    with pytest.raises(LookupError, match="no run 'not-a-run' in the catalog"):
        find_run(client, "not-a-run")
    with pytest.raises(LookupError, match="no run with scan_id 999"):
        find_run(client, 999)
    assert find_run(client, -1).metadata["start"]["uid"] == uids["no_ids"]
    assert find_run(client, -2).metadata["start"]["uid"] == uids["fly"]
    full = tmp_path / "full"
    full.mkdir()
    (full / "x").write_text("x")
    with pytest.raises(FileExistsError, match="is not empty"):
        export_euxfel(client[uids["step"]], full, progress=False)
    with pytest.raises(ValueError, match="the run has no train IDs"):
        export_euxfel(client[uids["no_ids"]], tmp_path / "none", progress=False)
    assert not (tmp_path / "none").exists()  # nothing left behind

    base = ["--data-dir", str(cfg.data_dir), "--no-progress"]
    assert main([*base, "not-a-run", str(tmp_path / "a")]) == 1
    assert main([*base, uids["step"], str(full)]) == 1
    assert main([*base, "-1", str(tmp_path / "b")]) == 1
    err = capsys.readouterr().err
    assert "trainstamp export euxfel: no run 'not-a-run' in the catalog" in err
    assert f"OUTDIR {full} is not empty" in err
    assert "the run has no train IDs" in err
    assert main([*base, uids["step"], str(tmp_path / "c")]) == 0
    assert "6 trains" in capsys.readouterr().out
