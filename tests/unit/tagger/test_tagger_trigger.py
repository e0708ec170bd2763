"""The emulator's marker input: markers on the train grid whatever the ID's delay."""

from __future__ import annotations

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
