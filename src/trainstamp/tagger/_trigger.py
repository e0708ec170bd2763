"""The emulated marker input: each train's marker on the train grid, not at arrival.

A real tagger's marker input is an electrical pulse at the train's true time, so the
markers of consecutive trains lie exactly one period apart on its clock. The emulator
learns of a train only when its ID arrives over TCP from the TimeServer, late by a delay
that varies, and on a starved CPU by many milliseconds. Stamped at arrival, markers
would jitter by that delay, and at 100 Hz the server could pair one with a neighbouring
train's tick.

:class:`TrainGrid` recovers the grid from the arrivals. A delay is never negative, so
the earliest arrivals lie on the grid plus the least delay: the period is the slope of
that lower envelope over the recent ticks and the phase its minimum. Each marker goes
at the grid time of its train, never later than its own arrival.

:meth:`TrainGrid.due` predicts the grid time of the next train. The emulator holds its
stream there until that ID has arrived (up to a bound), as a real tagger's stream can
never pass a marker pulse: on a starved host the ID of a train can arrive after the
stream has been made past its grid time, and the marker then goes late, a short bin a
server must not mistake for another train. Pure: times passed in.
"""

from __future__ import annotations

import collections

import numpy as np

#: Ticks the grid is fitted over, and the fewest it needs before it places markers.
HISTORY = 256
MIN_TICKS = 8
#: A step of the train ID outside 1..MAX_STEP starts a new grid (the source restarted).
MAX_STEP = 1000


class TrainGrid:
    """Train ID and arrival time (ps, the emulator's clock) in, marker time out."""

    def __init__(self, history: int = HISTORY, min_ticks: int = MIN_TICKS) -> None:
        self.min_ticks = min_ticks
        self._ids: collections.deque[int] = collections.deque(maxlen=history)
        self._at: collections.deque[int] = collections.deque(maxlen=history)
        self.restarts = 0
        self._fit: tuple[int, int, float, float] | None = None  # id0, at0, phase, period

    def place(self, train_id: int, arrival_ps: int) -> int:
        """The marker time of ``train_id``, whose ID arrived at ``arrival_ps``."""
        if self._ids and not 0 < train_id - self._ids[-1] <= MAX_STEP:
            self._ids.clear()
            self._at.clear()
            self._fit = None
            self.restarts += 1
        if self._at:  # IDs arrive in order: an earlier stamp is a clock's step
            arrival_ps = max(int(arrival_ps), self._at[-1])
        self._ids.append(int(train_id))
        self._at.append(int(arrival_ps))
        if len(self._ids) < self.min_ticks:
            return int(arrival_ps)
        # Relative to the oldest tick: absolute IDs times periods overflow a double's
        # exact range.
        ids = np.asarray(self._ids, np.float64) - self._ids[0]
        at = np.asarray(self._at, np.float64) - self._at[0]
        if ids[-1] <= 0:
            return int(arrival_ps)
        period = at[-1] / ids[-1]
        half = len(ids) // 2
        for _ in range(2):  # the envelope's slope: earliest in each half
            resid = at - ids * period
            i, j = int(np.argmin(resid[:half])), half + int(np.argmin(resid[half:]))
            if ids[j] > ids[i]:
                period = (at[j] - at[i]) / (ids[j] - ids[i])
        phase = float(np.min(at - ids * period))
        self._fit = (self._ids[0], self._at[0], phase, period)
        grid = self._at[0] + round(phase + ids[-1] * period)
        return int(min(grid, arrival_ps))

    def train_at(self, time_ps: float) -> int | None:
        """The train whose grid time is nearest ``time_ps``; None without a grid."""
        if self._fit is None or len(self._ids) < self.min_ticks:
            return None
        id0, at0, phase, period = self._fit
        if period <= 0:
            return None
        return id0 + round((time_ps - at0 - phase) / period)

    def due(self) -> int | None:
        """Grid time (ps) of the train after the last one placed; None without a grid."""
        if self._fit is None or len(self._ids) < self.min_ticks:
            return None
        id0, at0, phase, period = self._fit
        return at0 + round(phase + (self._ids[-1] + 1 - id0) * period)
