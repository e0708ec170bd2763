"""Train-synchronous acquisition with the whole simulated beamline.

TimeServer IOC -> (broadcaster) -> detector emulator in external trigger + detector IOC,
and tagger emulator (marker channel) + tagger IOC; the runs go through
``trainstamp.storage`` into an embedded Tiled catalog and are read back.
"""

from __future__ import annotations

import numpy as np
import pytest
from acquisition_stack import (
    CLICK_CHANNEL,
    PAIR_CHANNELS,
    PAIR_DELAY_PS,
    acquisition_stack,
    connect_devices,
)
from bluesky import RunEngine

from trainstamp.plans import (
    check_train_consistency,
    g2_delay_scan,
    train_count,
    train_fly,
    train_scan,
)
from trainstamp.storage import catalog, subscribe

pytestmark = pytest.mark.system


@pytest.fixture(scope="module")
def line(tmp_path_factory, ca_ports):
    data = tmp_path_factory.mktemp("acq") / "data"
    with acquisition_stack(ca_ports, data, period_ms=100) as stack:
        ts, det, tt = connect_devices(stack)
        with catalog(data) as client:
            RE = RunEngine(context_managers=[])
            subscribe(RE, client, timeserver=ts)
            yield stack, ts, det, tt, client, RE
        for dev in (ts, det, tt):
            dev.destroy()
        assert not stack.dead(), stack.dead()


def _contract(run):
    start, stop = run.metadata["start"], run.metadata["stop"]
    assert start["train_id_start_status"] == "OK" and start["train_id_start"] > 0
    assert stop["train_id_end_status"] == "OK" and stop["train_id_end"] >= start["train_id_start"]
    for name in run:
        conf = run[name].metadata["configuration"]
        assert any("timeserver_source" in c.get("data", {}) for c in conf.values()), (name, conf)


@pytest.mark.parametrize("ticks_from", ["feed", "ca"])
def test_fly_at_10_hz_all_three_devices_agree(line, ticks_from):
    stack, ts, det, tt, client, RE = line
    n = 40
    source = "broadcaster" if ticks_from == "feed" else "monitor"
    (uid,) = RE(train_fly([det], n, timeserver=ts, tagger=tt, ticks_from=source,
                          click_channel=CLICK_CHANNEL, md={"sample": "fly10"}))
    run = client[uid]
    _contract(run)
    assert set(run) == {"timeserver", "detector", "tagger"}
    frames = run["detector"].read()
    tagger = run["tagger"].read()
    assert len(frames["train_id"]) == n and set(frames["train_id_status"].values) == {"EXACT"}
    assert frames["team1k_complete"].values.all()
    assert len(tagger["train_id"]) == n
    assert tagger["tagger_counts_counts"].values.sum() > 0
    result = check_train_consistency(run, min_overlap=n // 2)  # devices start a few trains apart
    assert result.ok, result.problems
    # The ticks cover every train the detector and the tagger saw.
    ticks = result.streams["timeserver"]
    for name in ("detector", "tagger"):
        s = result.streams[name]
        assert ticks.first <= s.first and s.last <= ticks.last, (name, s, ticks)
        assert s.count == n and s.n_missing == 0 and s.n_duplicated == 0


def test_step_scan_with_detector_and_tagger(line):
    stack, ts, det, tt, client, RE = line
    from ophyd.sim import SynAxis

    axis = SynAxis(name="axis")
    tt.corr1.n_trains.set(1).wait(5)
    (uid,) = RE(train_scan([det, tt], axis, 0, 1, 2, 2, timeserver=ts))
    run = client[uid]
    _contract(run)
    data = run["primary"].read()
    ids = data["train_id"].values.astype(np.int64)
    assert len(ids) == 4 and (np.diff(ids) > 0).all()
    # Frames give the event's train ID exactly; the tagger says which trains it covered.
    assert set(data["train_id_status"].values) == {"EXACT"}
    assert (ids == data["team1k_train_id"].values.astype(np.int64)).all()
    first = data["tt_corr1_first_train_id"].values
    last = data["tt_corr1_last_train_id"].values
    assert (first > 0).all() and (last >= first).all()
    # Both were armed for the same train: the tagger's window opens at the frame's train.
    assert (first.astype(np.int64) == ids).all(), (first, ids)
    assert data["axis"].values.tolist() == [0, 0, 1, 1]


def test_train_count_detector_frame_and_tagger_window_cover_the_same_train(line):
    stack, ts, det, tt, client, RE = line
    tt.corr1.n_trains.set(1).wait(5)
    (uid,) = RE(train_count([det, tt], 10, timeserver=ts))
    data = client[uid]["primary"].read()
    ids = data["train_id"].values.astype(np.int64)
    assert len(ids) == 10 and (np.diff(ids) > 0).all()
    assert set(data["train_id_status"].values) == {"EXACT"}
    first = data["tt_corr1_first_train_id"].values.astype(np.int64)
    last = data["tt_corr1_last_train_id"].values.astype(np.int64)
    # every event: one tagger train, the frame's own
    assert (first == ids).all() and (last == ids).all(), (first, last, ids)
    # the start-train setpoints were used once each and are back at 0
    assert det.capture_start_train.get() == 0 and tt.corr1.start_train.get() == 0


def test_g2_delay_scan_moves_the_pair_peak(line):
    stack, ts, det, tt, client, RE = line
    a, b = PAIR_CHANNELS
    try:
        (uid,) = RE(g2_delay_scan(tt, b, -500, 500, 2, timeserver=ts, trains_per_measurement=3,
                                  chan1=a, chan2=b, binwidth_ps=100, n_bins=100))
    finally:
        tt.ch4.delay.set(0).wait(5)
    run = client[uid]
    _contract(run)
    data = run["primary"].read()
    assert run.metadata["start"]["plan_name"] == "g2_delay_scan"
    assert set(data["train_id_status"].values) == {"OK"}
    index = data["tt_corr1_index"].values[0][:100]
    peaks = [index[np.argmax(counts[:100])] for counts in data["tt_corr1_data"].values]
    # Delaying channel b by d moves the peak of (b - a) from +PAIR_DELAY_PS to +PAIR_DELAY_PS + d.
    assert peaks[0] == pytest.approx(PAIR_DELAY_PS - 500, abs=300)
    assert peaks[1] == pytest.approx(PAIR_DELAY_PS + 500, abs=300)
    assert np.nanmax(data["tt_corr1_g2"].values) > 1
