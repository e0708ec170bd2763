"""Pair marker tags (tagger clock) with train IDs (TimeServer feed, wall clock).

The tagger sees one marker tag per train, stamped on its own picosecond clock; the
server receives the same train's ID from the TimeServer feed, stamped with its wall
clock on arrival. :class:`MarkerMapper` keeps an estimate of the offset between the
two clocks (``wall_ns ≈ tagger_ps / 1000 + offset``) and gives each marker the train
ID whose tick is nearest to the marker's predicted wall time.

- **Bootstrap.** Before the first pairing the offset comes from the block that carried
  the marker: its arrival wall time minus how far the marker lies before the block's
  last tag. The error is the block latency.
- **Tracking.** Every pairing refines the offset (first one directly, then an
  exponential average with weight ``alpha``), which removes the constant latency
  difference between the tag link and the feed and follows slow clock drift.
- **Exactness.** A marker is paired with the tick within ±period/2 of its predicted
  time; so pairing is exact while the jitter of (feed latency − tag-link latency)
  stays below half a train period.
- **Waiting.** A marker is decided only once a tick later than ``predicted +
  period/2`` has arrived (no nearer tick can come) or ``max_wait_ns`` has passed.
  Blocks wait for their markers to be decided (see the stream client), so results keep
  stream order.
- **Misses and ambiguity.** With no tick in the window, the ID is inferred from the
  last pairing by counting periods on the tagger clock (``inferred``); with no pairing
  yet it is unknown (:data:`UNKNOWN_TRAIN_ID`, counted ``unmatched``). Two ticks in one
  window (a delayed tick next to an on-time one) are told apart by counting periods on
  the tagger clock from the last pairing; only if that fails is the marker counted
  ``ambiguous`` (the nearest tick wins). Ticks in the window, all within
  :data:`NEIGHBOUR_TRAINS` of the count but none of it, lose to the count when the
  marker lies within :data:`CLEAN_PHASE` of a whole number of measured periods from the
  last pairing (``counted``): the tagger clock is the hardware's, the ticks' arrival
  times only the feed's. A tick used twice counts as ``duplicate``. A predicted time
  more than ``reanchor_ns`` away from the nearest tick means the tagger clock
  restarted: the anchor is dropped (``reanchors``).
- **The two grids.** When the tagger announces its stream latency (the hello's
  ``stream_latency_ps``), markers are placed on the wall clock without any tick: the
  lower envelope of (block arrival − block end) over the recent blocks, less that
  latency, maps tagger time to wall time (the least-delayed block tells it), and the
  ticks' own lower envelope (:class:`~trainstamp.tagger._trigger.TrainGrid`) says
  which train is due at that wall time. Both envelopes see only the least delays, so a
  backlog of blocks or ticks on a loaded host cannot shift them by a train. That train
  is the count (``regridded`` when it corrects the count from the last pairing): the
  nearest-tick bootstrap above is off by the stream latency (several trains at 100
  Hz), and a wrong anchor stays wrong, invisible until the TimeServer skips an ID.
- **Period.** Once two markers have been paired, the train period is measured on the
  tagger clock (tagger time between pairings over the train IDs between them; median of
  the last 16), which is exact and immune to the feed's arrival jitter. Before that it
  comes from the ticks' arrival times over their IDs' spacing (span of the last 32
  ticks). A burst of IDs read in one ``recv()`` (all stamped with one arrival time)
  therefore never collapses the estimate, and the period never drops below
  :data:`MIN_PERIOD_NS`, so counting periods never divides by zero.

Pure: wall times are passed in, nothing reads a clock.
"""

from __future__ import annotations

import bisect
import collections
from dataclasses import dataclass

import numpy as np

from trainstamp.tagger._trigger import TrainGrid

#: Train ID given to a marker that cannot be paired and has no anchor to count from.
UNKNOWN_TRAIN_ID = -1
#: Largest distance (in periods) of a marker from a whole number of measured periods
#: after the last pairing for the tagger clock's count to decide its train.
CLEAN_PHASE = 0.2
#: How far (in trains) a tick in a marker's window may be from the count for the count
#: to win over it; a feed that jumps further (a restarted source) wins instead.
NEIGHBOUR_TRAINS = 16
#: Shortest train period the mapper accepts from any estimate (1 µs).
MIN_PERIOD_NS = 1_000.0
#: Blocks the link envelope is taken over, and the fewest it needs to place markers.
LINK_BLOCKS = 2048
MIN_LINK_BLOCKS = 16


@dataclass
class MarkerStats:
    markers: int = 0
    paired: int = 0
    inferred: int = 0
    unmatched: int = 0
    ambiguous: int = 0
    duplicate: int = 0
    reanchors: int = 0
    counted: int = 0  # decided by counting on the tagger clock over a disagreeing tick
    regridded: int = 0  # the two grids corrected the count from the last pairing
    ticks: int = 0


class MarkerMapper:
    """Marker tag times in, ``(time_ps, train_id)`` pairs out, in order."""

    def __init__(self, period_hint_ns: int = 100_000_000, max_wait_ns: int = 1_000_000_000,
                 alpha: float = 0.2, reanchor_ns: int = 5_000_000_000) -> None:
        self.period_hint_ns = period_hint_ns
        self.max_wait_ns = max_wait_ns
        self.alpha = alpha
        self.reanchor_ns = reanchor_ns
        self.offset_ns: float | None = None
        self.stats = MarkerStats()
        self._tick_wall: list[int] = []  # sorted by arrival
        self._tick_id: list[int] = []
        self._pending: collections.deque[tuple[int, float]] = collections.deque()
        self._last_pair: tuple[int, int] | None = None  # (tagger ps, train id)
        self._last_tick_used: tuple[int, int] | None = None
        self._marker_periods: collections.deque[float] = collections.deque(maxlen=16)
        #: Stream latency the tagger announced (ns); None: unknown, no grid placement.
        self.link_latency_ns: float | None = None
        self._link: collections.deque[float] = collections.deque(maxlen=LINK_BLOCKS)
        self.tick_grid = TrainGrid()

    # -- inputs ------------------------------------------------------------------------
    def add_tick(self, train_id: int, wall_ns: int) -> None:
        self.stats.ticks += 1
        if self._tick_wall and wall_ns < self._tick_wall[-1]:
            wall_ns = self._tick_wall[-1]  # arrival order is the truth; keep the list sorted
        self._tick_wall.append(int(wall_ns))
        self._tick_id.append(int(train_id))
        self.tick_grid.place(int(train_id), int(wall_ns) * 1000)
        if len(self._tick_wall) > 4096:
            del self._tick_wall[:2048], self._tick_id[:2048]

    def add_block(self, arrival_wall_ns: int, end_ps: int) -> None:
        """One block of the stream arrived: its wall time and the stream time it ends at."""
        self._link.append(arrival_wall_ns - end_ps / 1000.0)

    def set_link(self, latency_ps: int | None) -> None:
        """A new link (hello): its announced stream latency; the envelope starts afresh."""
        self.link_latency_ns = None if latency_ps is None else latency_ps / 1000.0
        self._link.clear()

    def _wall_of(self, t: int) -> float | None:
        """Wall time (ns) of tagger time ``t`` from the link envelope; None if unknown."""
        if self.link_latency_ns is None or len(self._link) < MIN_LINK_BLOCKS:
            return None
        return t / 1000.0 + min(self._link) - self.link_latency_ns

    def add_markers(self, times_ps: np.ndarray, arrival_wall_ns: int, block_end_ps: int) -> None:
        """Queue the markers of one block (``block_end_ps``: its last tag's time)."""
        for t in np.asarray(times_ps, np.int64).tolist():
            self.stats.markers += 1
            wall = self._wall_of(t)
            guess = arrival_wall_ns - (block_end_ps - t) / 1000.0 if wall is None else wall
            self._pending.append((int(t), guess))

    def reset_anchor(self) -> None:
        """Forget the clock offset (the tag link reconnected; the tagger may have restarted)."""
        self.offset_ns = None
        self._last_pair = None

    def drop_pending(self) -> None:
        """Forget markers not yet decided (their blocks were flagged lost)."""
        self._pending.clear()

    @property
    def pending(self) -> int:
        return len(self._pending)

    @property
    def period_ns(self) -> float:
        """Train period: tagger clock if measured, else tick spacing, else the hint."""
        if self._marker_periods:
            return max(float(np.median(self._marker_periods)), MIN_PERIOD_NS)
        tick = self._tick_period()
        return max(tick if tick is not None else float(self.period_hint_ns), MIN_PERIOD_NS)

    def _tick_period(self) -> float | None:
        """Arrival time over ID spacing across the last run of rising IDs (≤ 33 ticks).

        A span, not a median of neighbours: ticks of one burst share one arrival time,
        which only shortens the span's measured time by the burst's delay.
        """
        walls, ids = self._tick_wall[-33:], self._tick_id[-33:]
        start = len(ids) - 1
        while start > 0 and 0 < ids[start] - ids[start - 1] <= 16:
            start -= 1
        if len(ids) - start < 3:
            return None
        dw, di = walls[-1] - walls[start], ids[-1] - ids[start]
        return dw / di if dw > 0 and di > 0 else None

    # -- pairing -----------------------------------------------------------------------
    def resolve(self, now_wall_ns: int) -> list[tuple[int, int]]:
        """Decide every pending marker that can be decided; return them in order."""
        out: list[tuple[int, int]] = []
        half = self.period_ns / 2
        walls = self._tick_wall
        while self._pending:
            t, guess = self._pending[0]
            predicted = self._wall_of(t)  # the link envelope, where the tagger says how
            if predicted is None:
                predicted = guess if self.offset_ns is None else t / 1000.0 + self.offset_ns
            if self.offset_ns is not None and walls and self._far_from_ticks(predicted):
                self.stats.reanchors += 1
                self.reset_anchor()
                predicted = guess
            later = bool(walls) and walls[-1] >= predicted + half
            if not later and now_wall_ns < predicted + self.max_wait_ns:
                break
            self._pending.popleft()
            out.append((t, self._decide(t, predicted, half)))
        return out

    def _far_from_ticks(self, predicted: float) -> bool:
        i = bisect.bisect_left(self._tick_wall, predicted)
        near = [abs(self._tick_wall[j] - predicted) for j in (i - 1, i)
                if 0 <= j < len(self._tick_wall)]
        return min(near) > self.reanchor_ns

    def _learn_period(self, t: int, train_id: int) -> None:
        """One period measurement on the tagger clock from the last pairing to this one."""
        if self._last_pair is None:
            return
        t0, id0 = self._last_pair
        if 0 < train_id - id0 <= 64 and t > t0:
            self._marker_periods.append((t - t0) / 1000.0 / (train_id - id0))

    def _decide(self, t: int, predicted: float, half: float) -> int:
        walls = self._tick_wall
        lo = bisect.bisect_left(walls, predicted - half)
        hi = bisect.bisect_right(walls, predicted + half)
        expected = None
        clean = False
        if self._last_pair is not None:  # the tagger clock is exact: count periods
            t0, id0 = self._last_pair
            periods = (t - t0) / (max(2 * half, MIN_PERIOD_NS) * 1000.0)
            expected = id0 + round(periods)
            # Markers a whole number of measured periods apart are the hardware's own
            # count: it outranks a tick that the feed delivered late or early.
            clean = bool(self._marker_periods) and abs(periods - round(periods)) < CLEAN_PHASE
        wall = self._wall_of(t)
        due = None if wall is None else self.tick_grid.train_at(wall * 1000.0)
        if due is not None:  # the two grids name the train; see the module docstring
            if expected is not None and due != expected:
                self.stats.regridded += 1
            expected, clean = due, True
        window = self._tick_id[lo:hi]
        neighbours = bool(window) and all(abs(i - expected) <= NEIGHBOUR_TRAINS
                                          for i in window) if expected is not None else False
        if clean and neighbours and expected not in window:
            self.stats.counted += 1
            hi = lo  # a nearby train's tick, early or late: count instead (a jump of the
            # feed, a restarted TimeServer, names trains far off and still wins)
        if hi > lo:
            best = min(range(lo, hi), key=lambda i: abs(walls[i] - predicted))
            if hi - lo > 1:
                counted = [i for i in range(lo, hi) if self._tick_id[i] == expected]
                if counted:  # two ticks in the window (a delayed one): counting decides
                    best = counted[0]
                else:
                    self.stats.ambiguous += 1
            tick = (walls[best], self._tick_id[best])
            if tick == self._last_tick_used:
                self.stats.duplicate += 1
            self._last_tick_used = tick
            if self.offset_ns is None:
                self.offset_ns = walls[best] - t / 1000.0
            else:
                self.offset_ns += self.alpha * (walls[best] - predicted)
            if hi - lo == 1 or expected == tick[1]:  # an unambiguous pairing
                self._learn_period(t, tick[1])
            self._last_pair = (t, tick[1])
            self.stats.paired += 1
            return tick[1]
        if expected is not None:
            self.stats.inferred += 1
            return expected
        self.stats.unmatched += 1
        return UNKNOWN_TRAIN_ID
