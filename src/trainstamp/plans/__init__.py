"""Train-synchronous Bluesky plans, and the train-ID stamping contract they keep.

- :func:`train_count`: one reading per train.
- :func:`wait_for_train`, :func:`one_train`: plan stubs.
- :class:`TrainStamp`, :func:`stamp_wrapper`, :func:`stamp_decorator`,
  :class:`StopStamper`: the stamping contract (``train_id`` in every event,
  ``train_id_start`` in the start document, ``train_id_end`` in the stop document), for
  these plans and any other bluesky plan.
"""

from trainstamp.plans._stamp import (
    NO_TRAIN_ID,
    TRAIN_ID_KEY,
    TRAIN_ID_STATUS_KEY,
    StopStamper,
    TrainStamp,
    stamp_decorator,
    stamp_wrapper,
)
from trainstamp.plans._stubs import one_train, wait_for_train
from trainstamp.plans._train_count import train_count

__all__ = [
    "NO_TRAIN_ID",
    "TRAIN_ID_KEY",
    "TRAIN_ID_STATUS_KEY",
    "StopStamper",
    "TrainStamp",
    "one_train",
    "stamp_decorator",
    "stamp_wrapper",
    "train_count",
    "wait_for_train",
]
