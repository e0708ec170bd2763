"""Train-synchronous Bluesky plans, and the train-ID stamping contract they keep.

- :func:`train_count`: one reading per train; :func:`train_scan`: a step scan with
  ``trains_per_point`` trains per point; :func:`train_fly`: every train of a free-running
  acquisition, collected in event pages as it goes; :func:`g2_delay_scan`: g2 against a
  tagger input delay.
- :func:`check_train_consistency` / :func:`train_consistency`: detector frames, tagger
  marker trains and TimeServer ticks of a run name the same trains (the checker of
  :mod:`trainstamp.storage`, re-exported here).
- :func:`wait_for_train`, :func:`arm_train`, :func:`one_train`: plan stubs.
- :class:`TrainStamp`, :func:`stamp_wrapper`, :func:`stamp_decorator`,
  :func:`stamp_stop_documents`, :class:`StopStamper`: the stamping contract (``train_id`` in every event,
  ``train_id_start`` in the start document, ``train_id_end`` in the stop document), for
  these plans and any other bluesky plan. The contract itself (keys, statuses,
  :data:`NO_TRAIN_ID`, the stop stamp) is :mod:`trainstamp.trainid`; its
  :data:`TRAIN_ID_KEY`, :data:`TRAIN_ID_STATUS_KEY`, :data:`NO_TRAIN_ID`,
  :func:`stamp_stop_documents` and :class:`StopStamper` are re-exported here.

The plans run in bluesky-queueserver as they do in a session. Their annotations are real
objects (the plan modules do not use ``from __future__ import annotations``) and name
bluesky protocols (``Readable``, ``Triggerable``, ``Movable``) for every device
parameter: the queue server validates a queued item against them and turns the device
names it gives (``"det"``, ``"timeserver"``) into the devices of its namespace.
"""

from trainstamp.plans._exact import ExactTrainId
from trainstamp.plans._science import g2_delay_scan
from trainstamp.plans._stamp import TrainStamp, stamp_decorator, stamp_wrapper
from trainstamp.plans._stubs import arm_train, one_train, wait_for_train
from trainstamp.plans._train_count import train_count
from trainstamp.plans._train_fly import train_fly
from trainstamp.plans._train_scan import train_scan
from trainstamp.storage._check import (
    StreamTrains,
    TrainConsistency,
    check_train_consistency,
    train_consistency,
)
from trainstamp.trainid import (
    NO_TRAIN_ID,
    TRAIN_ID_KEY,
    TRAIN_ID_STATUS_KEY,
    StopStamper,
    stamp_stop_documents,
)

__all__ = [
    "NO_TRAIN_ID",
    "TRAIN_ID_KEY",
    "TRAIN_ID_STATUS_KEY",
    "ExactTrainId",
    "StopStamper",
    "StreamTrains",
    "TrainConsistency",
    "TrainStamp",
    "check_train_consistency",
    "g2_delay_scan",
    "arm_train",
    "one_train",
    "stamp_decorator",
    "stamp_stop_documents",
    "stamp_wrapper",
    "train_consistency",
    "train_count",
    "train_fly",
    "train_scan",
    "wait_for_train",
]
