"""External HDF5 assets (as the detector writes them) read back through the catalog only
from readable storage: the data directory and any extra directories configured."""

from __future__ import annotations

import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from event_model import compose_run

from trainstamp.storage import StorageConfig, catalog, make_writer

pytestmark = pytest.mark.system

FRAMES = np.arange(3 * 4 * 5, dtype=np.uint16).reshape(3, 4, 5)


def store_frames(client, root: Path) -> str:
    """Write FRAMES to ``root/frames.h5`` and store a run referencing them (AD_HDF5)."""
    root.mkdir(parents=True, exist_ok=True)
    with h5py.File(root / "frames.h5", "w") as f:
        f.create_dataset("entry/data/data", data=FRAMES)
    writer = make_writer(client)
    run = compose_run()
    writer("start", run.start_doc)
    res = run.compose_resource(spec="AD_HDF5", root=str(root), resource_path="frames.h5",
                               resource_kwargs={"frame_per_point": 1})
    writer("resource", res.resource_doc)
    desc = run.compose_descriptor(name="primary", data_keys={
        "img": {"dtype": "array", "shape": [4, 5], "source": "test", "external": "FILESTORE:",
                "dtype_numpy": "<u2"},
        "train_id": {"dtype": "integer", "shape": [], "source": "test"}})
    writer("descriptor", desc.descriptor_doc)
    for i in range(len(FRAMES)):
        datum = res.compose_datum(datum_kwargs={"point_number": i})
        writer("datum", datum)
        now = time.time()
        writer("event", desc.compose_event(
            data={"img": datum["datum_id"], "train_id": 100 + i},
            timestamps={"img": now, "train_id": now}, filled={"img": False}))
    writer("stop", run.compose_stop())
    return run.start_doc["uid"]


def test_hdf5_assets_read_back_only_from_readable_storage(tmp_path):
    elsewhere, forbidden = tmp_path / "elsewhere", tmp_path / "forbidden"
    cfg = StorageConfig.resolve(tmp_path / "data", readable_storage=[elsewhere], environ={})
    with catalog(config=cfg) as client:
        for root in (cfg.detector_dir, elsewhere):
            run = client[store_frames(client, root)]
            img = np.asarray(run["primary"]["img"].read())
            assert img.shape == (3, 1, 4, 5)
            assert np.array_equal(img.reshape(FRAMES.shape), FRAMES)
            assert run["primary"].read()["train_id"].values.tolist() == [100, 101, 102]
        run = client[store_frames(client, forbidden)]
        with pytest.raises(RuntimeError, match="outside the readable storage area"):
            run["primary"]["img"].read()
