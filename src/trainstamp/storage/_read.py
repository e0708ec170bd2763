"""Read stored runs back, and check their train IDs."""

from __future__ import annotations

from typing import Any

import numpy as np

from trainstamp.trainid import NO_TRAIN_ID, TRAIN_ID_KEY, TRAIN_ID_STATUS_KEY

__all__ = ["find_runs", "last_run", "read_train_ids", "train_id_problems"]


def last_run(client: Any) -> Any:
    """The most recently stored run in the catalog."""
    if len(client) == 0:
        raise LookupError("the catalog holds no runs")
    return client.values().last()


def find_runs(client: Any, train_id: int) -> Any:
    """The runs whose span of trains contains ``train_id``.

    A run spans ``train_id_start`` (start document) to ``train_id_end`` (stop document),
    both inclusive, so this finds the runs recorded while that train was in force.
    Runs without both keys (not written by trainstamp plans and writer) are not found.
    Returns a Tiled container: iterate it, or index it by uid.
    """
    from tiled.queries import Key

    if isinstance(train_id, bool) or not isinstance(train_id, int | np.integer):
        raise ValueError(f"train_id must be an integer, got {train_id!r}")
    train_id = int(train_id)
    return (client.search(Key("start.train_id_start") <= train_id)
            .search(Key("stop.train_id_end") >= train_id))


def read_train_ids(run: Any, stream: str = "primary") -> np.ndarray:
    """The ``train_id`` column of ``stream`` in ``run``, as int64."""
    data = run[stream].read()
    if TRAIN_ID_KEY not in data:
        raise KeyError(f"stream {stream!r} of run {run.metadata['start']['uid']} has no "
                       f"{TRAIN_ID_KEY!r} data key")
    return np.asarray(data[TRAIN_ID_KEY].values).astype(np.int64)


def train_id_problems(train_ids: Any, statuses: Any = None) -> list[str]:
    """What is wrong with a sequence of event train IDs; empty if nothing.

    Checks: at least one event, no :data:`~trainstamp.trainid.NO_TRAIN_ID` or 0, strictly
    increasing, and (if ``statuses`` are given) every status ``OK`` or ``EXACT``.
    """
    ids = np.asarray(train_ids, dtype=np.int64)
    problems = []
    if ids.size == 0:
        return ["no events"]
    bad = np.flatnonzero(ids <= 0)
    if bad.size:
        problems.append(f"{bad.size} events without a train ID (value {NO_TRAIN_ID} or 0) "
                        f"at event indices {bad[:10].tolist()}")
    steps = np.diff(ids)
    not_up = np.flatnonzero(steps <= 0)
    if not_up.size:
        i = int(not_up[0])
        problems.append(f"train_id not strictly increasing at {not_up.size} places, first "
                        f"{int(ids[i])} -> {int(ids[i + 1])} at event {i + 1}")
    if statuses is not None:
        st = np.asarray(statuses).astype(str)
        flagged = np.flatnonzero(~np.isin(st, ["OK", "EXACT"]))
        if flagged.size:
            problems.append(f"{flagged.size} events flagged in {TRAIN_ID_STATUS_KEY}: "
                            f"{sorted(set(st[flagged].tolist()))}")
    return problems
