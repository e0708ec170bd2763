"""The emulator's marker input: markers on the train grid whatever the ID's delay."""

from __future__ import annotations

import time

import numpy as np

from trainstamp.tagger._trigger import TrainGrid

PERIOD_PS = 10_000_000_000  # 100 Hz
T0_PS = 123_456_789_000


def _run(delays_ps: np.ndarray, first_id: int = 1_796_239_134_612) -> np.ndarray:
    grid = TrainGrid()
    out = []
    for k, d in enumerate(delays_ps):
        out.append(grid.place(first_id + k, T0_PS + k * PERIOD_PS + int(d)))
    return np.asarray(out, np.int64)


def test_markers_lie_one_period_apart_though_arrivals_jitter_by_most_of_a_period():
    rng = np.random.default_rng(7)
    delays = rng.exponential(2e9, 600)  # mean 2 ms, the tail past 10 ms
    delays[::37] += 8e9                 # a starved CPU now and then
    delays[0:600:11] = 0.5e9            # the least delay, seen often enough
    marks = _run(delays)
    settled = marks[64:]
    # within 1 ms of one period (the arrivals jitter by up to 20 ms): far inside the
    # ±20 % of a period in which the server counts markers on the tagger clock
    spacing_err = np.abs(np.diff(settled) - PERIOD_PS)
    assert np.all(spacing_err < 1_000_000_000), spacing_err.max()
    # on the grid, plus at most the least delay, and never after the arrival
    arrivals = T0_PS + np.arange(600) * PERIOD_PS + delays.astype(np.int64)
    assert np.all(marks <= arrivals)
    err = settled - (T0_PS + np.arange(64, 600) * PERIOD_PS)
    assert np.all((err > -1_000_000_000) & (err < 1_000_000_000)), (err.min(), err.max())


def test_before_enough_ticks_and_after_a_restart_markers_go_at_arrival():
    grid = TrainGrid()
    assert grid.place(10, 1_000) == 1_000
    for k in range(1, 20):
        grid.place(10 + k, 1_000 + k * PERIOD_PS)
    assert grid.place(5, 30 * PERIOD_PS) == 30 * PERIOD_PS  # the ID went back
    assert grid.restarts == 1


def test_a_burst_of_ids_read_at_once_keeps_the_grid():
    delays = np.full(300, 1e9)
    # IDs 200..204 read in one recv(): all arrive when the last one does
    delays[200:205] = (4 - np.arange(5)) * PERIOD_PS + 1e9
    marks = _run(delays)
    assert np.all(np.abs(np.diff(marks[64:]) - PERIOD_PS) < 1_000_000_000)


def test_due_predicts_the_next_trains_grid_time():
    grid = TrainGrid()
    assert grid.due() is None  # no grid yet
    delays = np.full(40, 1e9)
    delays[::5] = 0.2e9
    marks = []
    for k, d in enumerate(delays):
        marks.append(grid.place(1000 + k, T0_PS + k * PERIOD_PS + int(d)))
        if k >= grid.min_ticks:
            # the next train's grid time, one period after this one's marker
            assert abs(grid.due() - (marks[-1] + PERIOD_PS)) < 10_000_000, k
    grid.place(5, 10**15)  # the source restarted: no grid until enough ticks again
    assert grid.due() is None


class _Clocked:
    """The emulator's block maker with its clock set by the test (no sockets)."""

    def __init__(self):
        from trainstamp.tagger._emulator import TaggerEmulator

        self.now = 0
        self.emu = TaggerEmulator(seed=1)
        self.emu.now_ps = lambda: self.now
        self.emu.latency_s = 0.05
        self.marker = self.emu.settings.marker_channel

    def arrive(self, train_id: int, at_ps: int) -> None:
        """The ID of ``train_id`` arrives at ``at_ps`` on the emulator's clock."""
        self.now = at_ps
        self.emu._on_train(train_id, time.time_ns())

    def markers(self, until_ps: int) -> list[int]:
        out = []
        while self.emu.generator.t0 < until_ps:
            self.now = min(self.now + 5_000_000_000, until_ps + 50_000_000_000)
            tags, _ = self.emu._next_block()
            out += tags["time"][tags["channel"] == self.marker].tolist()
            if self.now >= until_ps + 50_000_000_000:
                break
        return out


def test_the_stream_waits_at_the_grid_for_a_late_id_and_its_marker_lands_on_time():
    c = _Clocked()
    for k in range(20):  # IDs on time, 1 ms after their grid time
        c.arrive(100 + k, k * PERIOD_PS + 1_000_000_000)
    due = c.emu.grid.due()
    c.now = due + 300_000_000_000  # 300 ms later: well past the 50 ms latency
    made = np.concatenate([c.emu._next_block()[0] for _ in range(200)])
    assert len(made) and made["time"].max() < due  # held at the next train's time
    assert c.emu.generator.t0 == due
    # the late ID arrives 300 ms after its grid time; its marker goes on the grid
    c.arrive(120, c.now)
    marks = np.asarray(c.markers(due + 2 * PERIOD_PS))
    # on the grid (within the microseconds the test's clock takes), not 300 ms late
    assert np.abs(marks - due).min() < 100_000_000, (marks - due)
    assert c.emu.stats["late_markers"] == 0


def test_a_train_source_that_stopped_holds_the_stream_only_briefly():
    from trainstamp.tagger._emulator import HOLD_S

    c = _Clocked()
    for k in range(20):
        c.arrive(100 + k, k * PERIOD_PS)
    due = c.emu.grid.due()
    c.now = due + int(HOLD_S * 1e12) + 100_000_000_000  # no ID came within the hold
    for _ in range(200):
        c.emu._next_block()
    assert c.emu.generator.t0 > due  # the stream went on without the marker
