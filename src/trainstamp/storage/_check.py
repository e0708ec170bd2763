"""The one checker of stored runs: do their train IDs keep the contract and line up?

Three questions, each built on the one before:

- :func:`train_id_problems`: do one stream's event train IDs keep the contract of
  :mod:`trainstamp.trainid` (events, no missing ID, strictly increasing, trusted)?
- :func:`train_consistency` (arrays) / :func:`check_train_consistency` (a stored run):
  do the streams of a run (a fly run's detector frames, tagger marker trains and
  TimeServer ticks) each miss and repeat no train, and agree where their spans overlap?
- :func:`check_alignment`: in a step scan of all three devices, does every train a
  device reports lie in its event's TimeServer window, within the run's start and stop?

An ID is trusted when it is above 0 and its status is one of
:data:`~trainstamp.trainid.TRUSTED_STATUSES`; every check uses that one rule.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from trainstamp.trainid import (
    EXACT,
    NO_TRAIN_ID,
    TRAIN_ID_END_KEY,
    TRAIN_ID_KEY,
    TRAIN_ID_START_KEY,
    TRAIN_ID_STATUS_KEY,
    TRUSTED_STATUSES,
)

__all__ = [
    "Alignment",
    "StreamTrains",
    "TrainConsistency",
    "check_alignment",
    "check_train_consistency",
    "train_consistency",
    "train_id_problems",
]


def _without_id(ids: np.ndarray) -> np.ndarray:
    """Where ``ids`` hold no train ID (:data:`~trainstamp.trainid.NO_TRAIN_ID` or 0)."""
    return ids <= 0


def _flagged(statuses: Any) -> np.ndarray:
    """Where ``statuses`` are not trusted (not OK or EXACT)."""
    return ~np.isin(np.asarray(statuses).astype(str), TRUSTED_STATUSES)


def _issued(ids: Any) -> np.ndarray:
    """The distinct train IDs among ``ids``, sorted, without the missing ones."""
    uniq = np.unique(np.asarray(ids, dtype=np.int64))
    return uniq[~_without_id(uniq)]


# --- one stream -------------------------------------------------------------------------


def train_id_problems(train_ids: Any, statuses: Any = None) -> list[str]:
    """What is wrong with a sequence of event train IDs; empty if nothing.

    Checks: at least one event, no :data:`~trainstamp.trainid.NO_TRAIN_ID` or 0, strictly
    increasing, and (if ``statuses`` are given) every status trusted (``OK`` or ``EXACT``).
    """
    ids = np.asarray(train_ids, dtype=np.int64)
    problems = []
    if ids.size == 0:
        return ["no events"]
    bad = np.flatnonzero(_without_id(ids))
    if bad.size:
        problems.append(f"{bad.size} events without a train ID (value {NO_TRAIN_ID} or 0) "
                        f"at event indices {bad[:10].tolist()}")
    not_up = np.flatnonzero(np.diff(ids) <= 0)
    if not_up.size:
        i = int(not_up[0])
        problems.append(f"train_id not strictly increasing at {not_up.size} places, first "
                        f"{int(ids[i])} -> {int(ids[i + 1])} at event {i + 1}")
    if statuses is not None:
        st = np.asarray(statuses).astype(str)
        flagged = np.flatnonzero(_flagged(st))
        if flagged.size:
            problems.append(f"{flagged.size} events flagged in {TRAIN_ID_STATUS_KEY}: "
                            f"{sorted(set(st[flagged].tolist()))}")
    return problems


# --- several streams of one run ---------------------------------------------------------


@dataclass(frozen=True)
class StreamTrains:
    """What one stream says about its trains."""

    name: str
    count: int
    first: int | None
    last: int | None
    missing: list[int]  # gaps inside the stream's own span (first 20)
    n_missing: int
    duplicated: list[int]  # IDs recorded more than once (first 20)
    n_duplicated: int
    invalid: int  # events without a trusted train ID (<= 0, or not OK/EXACT)


@dataclass(frozen=True)
class TrainConsistency:
    """The result of the check; ``ok`` is True when ``problems`` is empty."""

    streams: dict[str, StreamTrains]
    overlap: tuple[int, int] | None
    disagreements: dict[str, list[int]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    skipped: list[int] = field(default_factory=list)  # IDs the reference never issued

    @property
    def ok(self) -> bool:
        return not self.problems


def _gaps(uniq: np.ndarray, lo: int, hi: int, limit: int = 20) -> tuple[int, list[int]]:
    """How many IDs of ``lo..hi`` are not in the sorted unique ``uniq``, and the first few.

    Works from the gaps between recorded IDs, so a wild ID far away costs nothing.
    """
    inside = uniq[(uniq >= lo) & (uniq <= hi)]
    n_missing = (hi - lo + 1) - int(inside.size)
    first: list[int] = []
    edges = np.concatenate(([lo - 1], inside, [hi + 1]))
    for i in np.flatnonzero(np.diff(edges) > 1):
        start = int(edges[i]) + 1
        stop = int(edges[i + 1])
        first.extend(range(start, min(stop, start + limit - len(first))))
        if len(first) >= limit:
            break
    return n_missing, first


def _stream_trains(name: str, ids: np.ndarray, statuses: np.ndarray | None) -> StreamTrains:
    ids = np.asarray(ids, dtype=np.int64)
    bad = _without_id(ids)
    if statuses is not None:
        bad |= _flagged(statuses)
    good = ids[~bad]
    if good.size == 0:
        return StreamTrains(name, int(ids.size), None, None, [], 0, [], 0, int(bad.sum()))
    uniq, counts = np.unique(good, return_counts=True)
    dup = uniq[counts > 1]
    n_missing, missing = _gaps(uniq, int(uniq[0]), int(uniq[-1]))
    return StreamTrains(name, int(ids.size), int(uniq[0]), int(uniq[-1]), missing, n_missing,
                        dup[:20].tolist(), int(dup.size), int(bad.sum()))


def train_consistency(
    streams: Mapping[str, Any],
    statuses: Mapping[str, Any] | None = None,
    *,
    min_overlap: int = 1,
    reference: str | None = None,
) -> TrainConsistency:
    """Check that the train IDs of several streams agree exactly.

    Without a ``reference`` every stream must be contiguous (no gap, no duplicate) and
    all must hold the same IDs over their common span. With ``reference`` (the
    TimeServer's tick stream) the trains that exist are the reference's: an ID the
    TimeServer never issued (it skipped one) is not missing anywhere, and is reported in
    ``skipped`` instead; every other stream must hold exactly the reference's IDs over
    the common span, and no ID the reference lacks.

    Parameters
    ----------
    streams : mapping
        Stream name -> train IDs of its events (one per event).
    statuses : mapping, optional
        Stream name -> ``train_id_status`` of its events.
    min_overlap : int
        Fewest trains the streams must have in common.
    reference : str, optional
        The stream whose IDs are the trains that exist.

    Returns
    -------
    TrainConsistency
        Per-stream counts, gaps and duplicates, the common span, the trains of that span
        each stream lacks, and a list of problems (empty if all agree).
    """
    statuses = statuses or {}
    per = {name: _stream_trains(name, np.asarray(ids), statuses.get(name))
           for name, ids in streams.items()}
    problems = []
    if reference is not None and reference not in per:
        raise KeyError(f"reference stream {reference!r} not among {list(per)}")
    ref_ids = None
    skipped: list[int] = []
    if reference is not None and per[reference].first is not None:
        ref_ids = _issued(streams[reference])
        skipped = per[reference].missing
    for s in per.values():
        if s.first is None:
            problems.append(f"{s.name}: no valid train ID in {s.count} events")
            continue
        if ref_ids is not None:
            # Only the reference's own IDs exist: compare against them, not a range.
            if s.name != reference:
                ids = _issued(streams[s.name])
                extra = np.setdiff1d(ids, ref_ids, assume_unique=True)
                if extra.size:
                    problems.append(f"{s.name}: {extra.size} trains the reference "
                                    f"{reference!r} never issued, first {extra[:5].tolist()}")
                inside = ref_ids[(ref_ids >= s.first) & (ref_ids <= s.last)]
                lacking = np.setdiff1d(inside, ids, assume_unique=True)
                if lacking.size:
                    problems.append(f"{s.name}: {lacking.size} trains missing in "
                                    f"{s.first}..{s.last}, first {lacking[:5].tolist()}")
        elif s.n_missing:
            problems.append(f"{s.name}: {s.n_missing} trains missing in {s.first}..{s.last}, "
                            f"first {s.missing[:5]}")
        if s.n_duplicated:
            problems.append(f"{s.name}: {s.n_duplicated} trains recorded twice, first "
                            f"{s.duplicated[:5]}")
        if s.invalid:
            problems.append(f"{s.name}: {s.invalid} events with an invalid or flagged train ID")
    valid = [s for s in per.values() if s.first is not None]
    overlap = None
    disagreements: dict[str, list[int]] = {}
    if valid and len(valid) == len(per):
        lo, hi = max(s.first for s in valid), min(s.last for s in valid)
        if hi - lo + 1 < min_overlap:
            problems.append(f"the streams share {max(hi - lo + 1, 0)} trains "
                            f"(at least {min_overlap} wanted): spans "
                            + ", ".join(f"{s.name} {s.first}..{s.last}" for s in valid))
        if hi >= lo:
            overlap = (lo, hi)
            for name, ids in streams.items():
                uniq = np.unique(np.asarray(ids, dtype=np.int64))
                if ref_ids is not None:
                    want = ref_ids[(ref_ids >= lo) & (ref_ids <= hi)]
                    gone = np.setdiff1d(want, uniq, assume_unique=True)
                    n_lacking, lacking = int(gone.size), gone[:20].tolist()
                else:
                    n_lacking, lacking = _gaps(uniq, lo, hi)
                if n_lacking:
                    disagreements[name] = lacking
                    problems.append(f"{name}: lacks {n_lacking} trains of the common span "
                                    f"{lo}..{hi}, first {lacking[:5]}")
    return TrainConsistency(per, overlap, disagreements, problems, skipped)


def check_train_consistency(
    run: Any,
    streams: tuple[str, ...] | None = None,
    *,
    min_overlap: int = 1,
    reference: str | None = "timeserver",
) -> TrainConsistency:
    """Read ``run`` (a Tiled/databroker run) and check its streams' train IDs agree.

    Parameters
    ----------
    run : BlueskyRun
        A stored run, e.g. from :func:`~trainstamp.storage.open_catalog`.
    streams : tuple of str, optional
        Streams to compare; by default every stream of the run with a ``train_id``.
    min_overlap : int
        Fewest trains all streams must share.
    reference : str or None
        The stream whose IDs are the trains that exist (see :func:`train_consistency`);
        ``"timeserver"`` (the tick stream of :func:`~trainstamp.plans.train_fly`) if the
        run has it, else none.
    """
    names = list(streams) if streams is not None else list(run)
    ids: dict[str, np.ndarray] = {}
    status: dict[str, np.ndarray] = {}
    for name in names:
        node = run[name]
        keys = set(node)  # read only the columns needed, never the images
        if TRAIN_ID_KEY not in keys:
            if streams is not None:
                raise KeyError(f"stream {name!r} has no {TRAIN_ID_KEY!r} data key")
            continue
        ids[name] = np.asarray(node[TRAIN_ID_KEY].read()).astype(np.int64)
        if TRAIN_ID_STATUS_KEY in keys:
            status[name] = np.asarray(node[TRAIN_ID_STATUS_KEY].read()).astype(str)
    if not ids:
        raise KeyError("the run has no stream with a train_id data key")
    if reference is not None and reference not in ids:
        reference = None
    return train_consistency(ids, status, min_overlap=min_overlap, reference=reference)


# --- a step-scan run of all three devices -----------------------------------------------


@dataclass(frozen=True)
class Alignment:
    """What :func:`check_alignment` found: the problems (empty if none) and the facts."""

    problems: list[str]
    facts: list[str]


def check_alignment(data: Mapping[str, Any], start: Mapping[str, Any], stop: Mapping[str, Any],
                    *, ts: str, det: str, tagger: str, slots: Sequence[str],
                    file_train_ids: Any = None, n_trains: int = 1) -> Alignment:
    """Check that the train IDs of a stored run of all three devices line up.

    ``data`` maps data keys to per-event arrays (a primary stream read back). The event
    at index ``i`` read the TimeServer tick ``R[i]`` (``<ts>_train_id``); its devices
    were triggered after a train later than ``R[i-1]`` began and read after ``R[i]``, so
    every train a device reports for event ``i`` must lie in ``(R[i-1], R[i]]`` (for the
    first event ``[train_id_start, R[0]]``). Exactly:

    - the event ``train_id`` keeps the contract (increasing, no invalid ID), and equals the
      detector's packet-header ID where its status is ``EXACT``, else the tick ``R[i]``;
    - the detector frame ID (``<det>_train_id``) lies in the window, and equals the ID the
      detector wrote into its HDF5 file for that frame (``file_train_ids``);
    - each tagger slot covers exactly ``n_trains`` trains (``last - first + 1``), all
      slots cover the same trains, those lie in the window, and the first is the
      detector frame's train (both start at the train in force when triggered);
    - ``train_id_start`` / ``train_id_end`` in the start / stop documents bracket them all.
    """
    problems: list[str] = []
    facts: list[str] = []
    stamp = np.asarray(data[TRAIN_ID_KEY]).astype(np.int64)
    status = np.asarray(data[TRAIN_ID_STATUS_KEY]).astype(str)
    ticks = np.asarray(data[f"{ts}_{TRAIN_ID_KEY}"]).astype(np.int64)
    frames = np.asarray(data[f"{det}_{TRAIN_ID_KEY}"]).astype(np.int64)
    problems += [f"event train_id: {p}" for p in train_id_problems(stamp, status)]
    if problems:
        return Alignment(problems, facts)
    exact = status == EXACT
    expected = np.where(exact, frames, ticks)
    if (wrong := np.flatnonzero(stamp != expected)).size:
        problems.append(f"event train_id differs from the detector's exact ID (EXACT) or the "
                        f"TimeServer tick at events {wrong[:10].tolist()}")
    facts.append(f"event train_id: {int(exact.sum())} of {stamp.size} EXACT from the detector headers")

    t0 = start.get(TRAIN_ID_START_KEY)
    # The window of event i: after the previous tick, up to its own (R[i]).
    lower = np.concatenate([[t0 if isinstance(t0, int) and t0 > 0 else 1], ticks[:-1] + 1])

    def within(name: str, first: np.ndarray, last: np.ndarray) -> None:
        bad = np.flatnonzero((first < lower) | (last > ticks) | _without_id(first))
        if bad.size:
            i = int(bad[0])
            problems.append(f"{name}: {bad.size} events outside their TimeServer window, first "
                            f"event {i}: trains {int(first[i])}..{int(last[i])} not within "
                            f"{int(lower[i])}..{int(ticks[i])}")

    within(f"{det} frame", frames, frames)
    if file_train_ids is not None:
        in_file = np.asarray(file_train_ids).astype(np.int64)
        if in_file.shape != frames.shape or (in_file != frames).any():
            problems.append(f"{det}: train IDs in the HDF5 file {in_file[:10].tolist()} differ "
                            f"from the events' {frames[:10].tolist()}")
        else:
            facts.append(f"{det}: {frames.size} frame IDs equal to those in the HDF5 file")
    spans = {}
    for slot in slots:
        first = np.asarray(data[f"{tagger}_{slot}_first_train_id"]).astype(np.int64)
        last = np.asarray(data[f"{tagger}_{slot}_last_train_id"]).astype(np.int64)
        spans[slot] = (first, last)
        if (bad := np.flatnonzero(last - first + 1 != n_trains)).size:
            problems.append(f"{tagger}.{slot}: {bad.size} events do not cover exactly "
                            f"{n_trains} train(s), e.g. {int(first[bad[0]])}..{int(last[bad[0]])}")
        # The tagger starts at the train in force when it was triggered, as the detector
        # does: both report the same first train.
        within(f"{tagger}.{slot}", first, last)
        if (off := np.flatnonzero(first != frames)).size:
            i = int(off[0])
            problems.append(f"{tagger}.{slot}: {off.size} events start at another train than "
                            f"the detector frame, first event {i}: tagger {int(first[i])}, "
                            f"detector {int(frames[i])}")
        if (overlap := np.flatnonzero(first[1:] <= last[:-1])).size:
            problems.append(f"{tagger}.{slot}: events {overlap[:10].tolist()} and the next "
                            "cover a train twice")
    ref_first, ref_last = spans[slots[0]]
    for slot in slots[1:]:
        if (spans[slot][0] != ref_first).any() or (spans[slot][1] != ref_last).any():
            problems.append(f"{tagger}: slots {slots[0]} and {slot} cover different trains")
    offsets = sorted(set((ref_first - frames).tolist()))
    facts.append(f"every device's trains within its event's TimeServer window; tagger first "
                 f"train - detector frame train: {offsets}")

    t1 = stop.get(TRAIN_ID_END_KEY)
    everything = np.concatenate([stamp, frames, ref_first, ref_last, ticks])
    if not isinstance(t0, int) or t0 > everything.min():
        problems.append(f"train_id_start {t0!r} does not precede the run's first train "
                        f"{int(everything.min())}")
    if not isinstance(t1, int) or t1 < everything.max():
        problems.append(f"train_id_end {t1!r} is before the run's last train "
                        f"{int(everything.max())}")
    if stop.get("exit_status") != "success":
        problems.append(f"run exit status {stop.get('exit_status')!r}")
    return Alignment(problems, facts)
