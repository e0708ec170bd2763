"""Runs of the whole simulated beamline exported as EuXFEL run directories, read back
with EuXFEL's own code (``extra-data-validate``, ``extra_data.RunDirectory``).

A ``train_fly`` with the detector and the tagger (frames only in the capture file,
per-train counts in the catalog) and a ``train_scan`` with the detector and a motor
(frames in the catalog), both short.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from acquisition_stack import CLICK_CHANNEL, acquisition_stack, connect_devices
from bluesky import RunEngine

from trainstamp.detector import read_capture
from trainstamp.plans import train_fly, train_scan
from trainstamp.storage import catalog, detector_frames, subscribe
from trainstamp.storage._euxfel_write import main

extra_data = pytest.importorskip("extra_data")

pytestmark = pytest.mark.system

DET = "TRAINSTAMP/DET/team1k:daqOutput"
TAGGER = "TRAINSTAMP/TAGGER/tagger:output"


@pytest.fixture(scope="module")
def runs(tmp_path_factory, ca_ports):
    from ophyd.sim import SynAxis

    data = tmp_path_factory.mktemp("euxfel") / "data"
    with acquisition_stack(ca_ports, data, period_ms=100) as stack:
        ts, det, tt = connect_devices(stack)
        with catalog(data) as client:
            RE = RunEngine(context_managers=[])
            subscribe(RE, client, timeserver=ts)
            (fly,) = RE(train_fly([det], 6, timeserver=ts, tagger=tt,
                                  click_channel=CLICK_CHANNEL))
            (step,) = RE(train_scan([det], SynAxis(name="axis"), 0, 1, 3, 1, timeserver=ts))
            yield data, client, {"fly": fly, "step": step}
        for dev in (ts, det, tt):
            dev.destroy()
        assert not stack.dead(), stack.dead()


def _export(data: Path, run: str, out: Path) -> None:
    assert main(["--data-dir", str(data), "--no-progress", run, str(out)]) == 0
    validate = Path(sys.executable).with_name("extra-data-validate")
    check = subprocess.run([str(validate), str(out)], capture_output=True, text=True,
                           timeout=120, stdin=subprocess.DEVNULL)
    assert check.returncode == 0, check.stdout + check.stderr


def _stored_train_ids(run) -> list[int]:
    ids = np.concatenate([np.asarray(run[s]["train_id"].read()) for s in run])
    return sorted(int(t) for t in set(ids.tolist()) if t > 0)


def test_fly_run_in_extra_data(runs, tmp_path):
    data, client, uids = runs
    run = client[uids["fly"]]
    out = tmp_path / "fly"
    _export(data, uids["fly"], out)
    ed = extra_data.RunDirectory(str(out))
    assert [int(t) for t in ed.train_ids] == _stored_train_ids(run)
    # the tagger's per-train counts, at the catalog's train IDs
    counts = ed[TAGGER, "counts.counts"].xarray()
    stored = run["tagger"]
    assert counts.coords["trainId"].values.tolist() == stored["train_id"].read().tolist()
    assert counts.values.tolist() == stored["tagger_counts_counts"].read().tolist()
    # the frames, at their header train IDs, as in the capture file
    frame_ids = run["detector"]["train_id"].read().tolist()
    assert ed[DET, "data.trainId"].ndarray().tolist() == frame_ids
    (capture,) = [p for p in (data / "detector").glob("*.h5")
                  if set(frame_ids) <= set(read_capture(p)["train_id"].tolist())]
    cap = read_capture(capture)
    for tid in (frame_ids[0], frame_ids[-1]):
        got, train = ed.train_from_id(tid)
        assert got == tid
        (row,) = np.flatnonzero(cap["train_id"] == tid)
        assert train[DET]["data.image"].dtype == np.uint16
        assert np.array_equal(train[DET]["data.image"], cap["data"][row])
    # the TimeServer's ticks are the run's trains; the others have count 0 where they lack one
    ticks = ed["TRAINSTAMP/TIMESERVER/timeserver", "trainId"]
    assert ticks.ndarray().tolist() == run["timeserver"]["train_id"].read().tolist()
    assert ed[DET, "data.image"].data_counts(labelled=False).sum() == len(frame_ids)


def test_step_run_frames_and_motor_in_extra_data(runs, tmp_path):
    data, client, uids = runs
    run = client[uids["step"]]
    out = tmp_path / "step"
    _export(data, str(run.metadata["start"]["scan_id"]), out)
    ed = extra_data.RunDirectory(str(out))
    assert [int(t) for t in ed.train_ids] == _stored_train_ids(run)
    frames = detector_frames(run, detector="team1k")
    for tid in frames.train_id.values.tolist():
        got, train = ed.train_from_id(tid)
        image = train[DET]["data.image"]
        assert image.shape == (1024, 1024) and image.dtype == np.uint16
        assert np.array_equal(image, frames.sel(train_id=tid).values)  # bit for bit
    axis = ed["TRAINSTAMP/DEVICE/axis", "value"].xarray()
    primary = run["primary"]
    assert axis.coords["trainId"].values.tolist() == primary["train_id"].read().tolist()
    assert axis.values.tolist() == primary["axis"].read().tolist()
