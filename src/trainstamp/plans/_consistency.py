"""The consistency check that proves the stamping contract on a stored run.

In a run of all three devices, the detector's frames (exact IDs from packet headers),
the tagger's marker trains and the TimeServer's ticks must name the same trains: each
stream has no missing and no duplicated train, and over the trains all of them
recorded (the overlap of their spans) every stream has exactly the same IDs.
:func:`train_consistency` is the pure check on arrays; :func:`check_train_consistency`
reads a stored run (Tiled/databroker client) and applies it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from trainstamp.trainid import TRAIN_ID_KEY, TRAIN_ID_STATUS_KEY

__all__ = ["StreamTrains", "TrainConsistency", "check_train_consistency", "train_consistency"]


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
    invalid: int  # events with train_id <= 0 or a status other than OK/EXACT


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
    bad = ids <= 0
    if statuses is not None:
        bad |= ~np.isin(np.asarray(statuses).astype(str), ["OK", "EXACT"])
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
        ref_ids = np.unique(np.asarray(streams[reference], dtype=np.int64))
        ref_ids = ref_ids[ref_ids > 0]
        skipped = per[reference].missing
    for s in per.values():
        if s.first is None:
            problems.append(f"{s.name}: no valid train ID in {s.count} events")
            continue
        if ref_ids is not None:
            # Only the reference's own IDs exist: compare against them, not a range.
            if s.name != reference:
                ids = np.unique(np.asarray(streams[s.name], dtype=np.int64))
                ids = ids[ids > 0]
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
        A stored run, e.g. from :func:`trainstamp.storage.open_catalog`.
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
