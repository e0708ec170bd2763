"""Read stored runs back: find them by train ID, read a stream or its train-ID column.

The checks of what was read are in :mod:`trainstamp.storage._check`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from trainstamp.trainid import TRAIN_ID_KEY

__all__ = ["find_runs", "last_run", "read_stream", "read_train_ids"]


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


def read_stream(stream: Any, skip: Sequence[str] = ()) -> dict[str, np.ndarray]:
    """Every data key of a stored event stream as a numpy array (one row per event).

    Read key by key: the stream's ``read()`` turns small fixed-size arrays (a count per
    channel) into strings, and a key called ``ts_<k>`` would be taken for the timestamps
    of ``k``. External arrays (detector images) are read too; ``skip`` leaves keys out.
    """
    keys = stream.metadata["data_keys"]
    return {key: np.asarray(stream[key].read()) for key in keys if key not in skip}
