"""What ``trainstamp demo`` prints and plots (trainstamp._demo_report), on synthetic runs."""

from __future__ import annotations

import numpy as np

from trainstamp._demo_report import DemoSetup, print_fly, print_outcome, print_scan, save_plots
from trainstamp.storage import Alignment, read_stream, train_consistency

SETUP = DemoSetup(scan_channel=2, chan1=1, chan2=2, tagger_trains=5, fly_counter="tt_counts")
NAMES = ("ts", "det", "tt")


def scan_data(n: int = 4, bins: int = 8):
    frames = 1000 + 10 * np.arange(n)
    g2 = np.ones((n, bins))
    g2[:, 3] = 0.2  # the dip, at tau = index[3] = -1 ns
    return {
        "train_id": frames, "train_id_status": np.array(["EXACT"] * n),
        "ts_train_id": frames + 5, "det_train_id": frames,
        "tt_corr1_first_train_id": frames, "tt_corr1_last_train_id": frames + 4,
        "tt_ch2_delay": np.repeat([-1000.0, 1000.0], n // 2),
        "tt_corr1_data": np.full((n, bins), 3), "tt_corr1_g2": g2,
        "tt_corr1_index": np.tile(np.arange(bins) * 1000 - 4000, (n, 1)),
    }


def fly_data(n: int = 6):
    ids = 2000 + np.arange(n)
    return {"timeserver": {"train_id": ids}, "detector": {"train_id": ids},
            "tagger": {"train_id": ids, "tt_counts_counts": np.arange(n) * 2}}


def test_the_scan_is_printed_event_by_event(capsys):
    data = scan_data()
    start = {"uid": "u" * 36, "scan_id": 7, "plan_name": "train_scan", "train_id_start": 990}
    stop = {"train_id_end": 1040, "exit_status": "success"}
    images = np.zeros((4, 3, 2), dtype=np.uint16)
    print_scan(start, stop, data, NAMES, Alignment([], ["a fact"]), images, setup=SETUP)
    out = capsys.readouterr().out
    assert "train_id_start=990, train_id_end=1040, exit_status=success" in out
    assert ("  3         +1.0           1030   EXACT            1035           1030           "
            "1030..034") in out
    assert "det             4 frames 3x2 uint16" in out
    assert "tt              96 coincidences" in out
    # g2 smoothed over 3 bins: the one-bin dip at -1 ns shows first at the bin before it.
    assert ("CH2 delay -> τ of the antibunching dip: -1 ns -> -2.0 ns (g2 0.73), "
            "+1 ns -> -2.0 ns (g2 0.73)") in out
    assert "  check           a fact" in out


def test_the_fly_run_and_the_verdict(capsys):
    ids = np.arange(2000, 2006)
    print_fly("f" * 36, train_consistency({"a": ids, "b": ids}))
    out = capsys.readouterr().out
    assert "  a               6 events, trains 2000..2005, 0 missing, 0 duplicated" in out
    assert "all streams hold exactly the same trains 2000..2005 (6)" in out
    assert print_outcome([], {"demo": 1.0}, []) == 0
    assert "OK: detector frames" in capsys.readouterr().out
    assert print_outcome([], {"demo": 1.0}, ["fly run: x"]) == 1
    assert "FAILED: the train IDs do not line up:\n  fly run: x" in capsys.readouterr().err


def test_three_plots_are_saved(tmp_path):
    paths = save_plots(tmp_path, scan_data(), fly_data(), names=NAMES,
                       image=np.arange(12.0).reshape(3, 4), uids=("s" * 36, "f" * 36),
                       setup=SETUP)
    assert [p.name for p in paths] == ["detector_frame.png", "g2_histogram.png",
                                       "counts_per_train.png"]
    assert all(p.read_bytes()[:4] == b"\x89PNG" for p in paths)


class Column:
    def __init__(self, values):
        self.values = values

    def read(self):
        return self.values


class Stream(dict):
    """A stored stream as read_stream sees it: metadata data keys, a node per key."""

    @property
    def metadata(self):
        return {"data_keys": {k: {} for k in self}}


def test_read_stream_reads_every_key_but_the_skipped():
    stream = Stream(train_id=Column([1, 2]), counts=Column([[1, 2], [3, 4]]), image=Column([0]))
    data = read_stream(stream, skip=("image",))
    assert sorted(data) == ["counts", "train_id"]
    assert data["counts"].shape == (2, 2)
