"""``trainstamp export euxfel --tiled-uri``: a run read from a Tiled server over HTTP,
its frames from a capture file given with ``--detector-dir``."""

from __future__ import annotations

import subprocess
import sys
import time
from collections import OrderedDict
from pathlib import Path

import h5py
import numpy as np
import pytest
from bluesky import RunEngine
from bluesky import plan_stubs as bps
from bluesky import preprocessors as bpp
from ophyd.sim import SynAxis

from trainstamp.detector._capture import DATA, FRAME_NUMBER, TRAIN_ID
from trainstamp.storage import close_catalog, make_writer, open_catalog
from trainstamp.storage._euxfel_write import main

extra_data = pytest.importorskip("extra_data")

pytestmark = pytest.mark.system

TRAINS = [5000, 5001, 5003, 5004]  # no event in 5002: the export has no such train


class Camera:
    """Reads like a detector in a fly run: its frame's train ID and frame number; the
    frame itself stays in the capture file."""

    name, parent = "cam", None

    def __init__(self) -> None:
        self.train = 0

    def trigger(self):
        from ophyd.status import StatusBase

        status = StatusBase()
        status.set_finished()
        return status

    def read(self):
        now = time.time()
        return OrderedDict(train_id={"value": self.train, "timestamp": now},
                           cam_frame_number={"value": self.train - 4000, "timestamp": now})

    def describe(self):
        return OrderedDict(
            train_id={"source": "cam", "dtype": "integer", "shape": [], "dtype_numpy": "<i8"},
            cam_frame_number={"source": "cam", "dtype": "integer", "shape": [],
                              "dtype_numpy": "<u8"})

    def read_configuration(self):
        return OrderedDict()

    def describe_configuration(self):
        return OrderedDict()


def test_export_from_a_tiled_server(tmp_path):
    from tiled.server import SimpleTiledServer

    frames = np.random.default_rng(3).integers(0, 65535, (len(TRAINS), 1024, 1024), np.uint16)
    capture_dir = tmp_path / "detector"
    capture_dir.mkdir()
    with h5py.File(capture_dir / "cam_1.h5", "w") as f:
        f[DATA] = frames
        f[TRAIN_ID] = np.asarray(TRAINS, np.uint64)
        f[FRAME_NUMBER] = np.asarray(TRAINS, np.uint64) - 4000
    with SimpleTiledServer(tmp_path / "server") as server:
        uri = f"http://127.0.0.1:{server.port}/api/v1"
        client = open_catalog(tmp_path / "spool-dir", tiled_uri=uri, api_key=server.api_key)
        cam, motor = Camera(), SynAxis(name="motor")
        RE = RunEngine(context_managers=[])
        RE.subscribe(make_writer(client))

        @bpp.run_decorator(md={"scan_id": 7, "proposal": "p900001"})
        def plan():
            for i, train in enumerate(TRAINS):
                cam.train = train
                yield from bps.mv(motor, i)
                yield from bps.trigger_and_read([cam, motor])

        (uid,) = RE(plan())
        close_catalog(client)
        out = tmp_path / "out"
        args = ["--tiled-uri", uri, "--api-key", server.api_key, "--no-progress"]
        assert main([*args, "--detector-dir", str(capture_dir), uid, str(out)]) == 0
        # without the capture directory the frames cannot be found: said, nothing left
        assert main([*args, uid, str(tmp_path / "none")]) == 1
        assert not (tmp_path / "none").exists()
    validate = Path(sys.executable).with_name("extra-data-validate")
    check = subprocess.run([str(validate), str(out)], capture_output=True, text=True,
                           timeout=120, stdin=subprocess.DEVNULL)
    assert check.returncode == 0, check.stdout + check.stderr
    run = extra_data.RunDirectory(str(out))
    assert [int(t) for t in run.train_ids] == TRAINS
    assert run.run_metadata()["proposalNumber"] == 900001
    for k, tid in enumerate(TRAINS):
        _, data = run.train_from_id(tid)
        assert np.array_equal(data["TRAINSTAMP/DET/cam:daqOutput"]["data.image"], frames[k])
    assert run["TRAINSTAMP/DEVICE/motor", "value"].ndarray().tolist() == [0, 1, 2, 3]
