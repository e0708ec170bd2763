"""Analysis by train on runs of the real simulated beamline.

The three emulators and IOCs run as subprocesses (``trainstamp.beamline``) on free
loopback ports with random prefixes; a ``trainstamp session`` subprocess (the IPython
profile) runs ``train_count`` with the TEAM1k detector and the tagger, and reads the run
back with the analysis helpers. The frames come from the detector's HDF5 capture file,
the histograms from the event table.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from trainstamp.beamline import Beamline, services
from trainstamp.config import load_config
from trainstamp.testing import random_prefix

pytestmark = pytest.mark.system


def _toml(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, tuple | list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return json.dumps(value)


def write_toml(config, path: Path) -> Path:
    lines = []
    for section in ("timeserver", "detector", "tagger"):
        lines.append(f"[{section}]")
        for key, value in getattr(config, section):  # a pydantic model: (key, value) pairs
            lines.append(f"{key} = {_toml(value)}")
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def beamline(tmp_path):
    config = load_config(environ={}).with_free_ports()
    for section, stem in (("timeserver", "ATS"), ("detector", "ADET"), ("tagger", "ATT")):
        config = config.replace_section(section, prefix=random_prefix(stem))
    config = config.replace_section("detector", test_mode=True)
    data_dir = tmp_path / "data"
    with Beamline(services(config, tmp_path / "run", data_dir=data_dir), log_dir=tmp_path / "run",
                  out=lambda s: None):
        yield config, data_dir


@pytest.mark.timeout(170)
def test_frames_and_histograms_by_train(beamline, tmp_path):
    config, data_dir = beamline
    code = textwrap.dedent("""
        import json
        for d in devices.values():
            d.wait_for_connection(timeout=20)
        tagger.corr1.n_trains.put(1)
        (uid,) = RE(train_count([det, tagger], 4, timeserver=timeserver))
        run = db[uid]
        events = load_trains(run)
        frames = detector_frames(run)
        tag = tagger_data(run)
        both = side_by_side(run)
        t = int(frames.train_id[2])
        print("RESULT", json.dumps({
            "uid": uid,
            "event_ids": events.train_id.values.tolist(),
            "det_ids": events["det_train_id"].values.tolist(),
            "frame_ids": frames.train_id.values.tolist(),
            "frame_shape": list(frames.shape),
            "frame_dtype": str(frames.dtype),
            "tag_first": tag.train_id.values.tolist(),
            "tag_last": tag["tagger_corr1_last_train_id"].values.tolist(),
            "tag_data_dims": list(tag["tagger_corr1_data"].dims),
            "tag_data_dtype": str(tag["tagger_corr1_data"].dtype),
            "both_ids": both.train_id.values.tolist(),
            "found": list(runs_with_train(db, t)),
            "one_frame_equal": bool((both["det_image"].sel(train_id=t) == frames.sel(train_id=t)).all()),
        }))
    """)
    env = {**os.environ, "TRAINSTAMP_CONNECT_TIMEOUT": "10", "PYTHONUNBUFFERED": "1"}
    env.pop("DISPLAY", None)
    out = subprocess.run(
        [sys.executable, "-m", "trainstamp", "session",
         "--config", str(write_toml(config, tmp_path / "beamline.toml")),
         "--data-dir", str(data_dir), "--", "--HistoryManager.enabled=False", "--no-banner",
         "--colors=NoColor", "-c", code],
        env=env, capture_output=True, text=True, timeout=150, stdin=subprocess.DEVNULL)
    text = out.stdout + out.stderr
    assert out.returncode == 0, text[-4000:]
    # the session disconnects its devices before the interpreter shuts down
    assert "cannot schedule new futures" not in text, text[-4000:]
    (line,) = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")] or [text[-4000:]]
    r = json.loads(line.removeprefix("RESULT "))
    assert len(r["event_ids"]) == 4
    # frames are indexed by their exact header IDs: the detector's own column
    assert r["frame_ids"] == r["det_ids"]
    assert all(b > a for a, b in zip(r["frame_ids"], r["frame_ids"][1:], strict=False))
    assert r["frame_shape"] == [4, 1024, 1024] and r["frame_dtype"] == "uint16"
    assert len(r["tag_first"]) == 4
    assert all(f <= last for f, last in zip(r["tag_first"], r["tag_last"], strict=True))
    assert r["tag_data_dims"] == ["train_id", "bin"]
    assert r["tag_data_dtype"].startswith(("int", "float"))  # numbers, not strings
    assert set(r["frame_ids"]) <= set(r["both_ids"]) and set(r["tag_first"]) <= set(r["both_ids"])
    assert r["found"] == [r["uid"]]
    assert r["one_frame_equal"]
