"""What a capture is and where it starts: the pure rules behind ``CMD:CAPTURE``.

A :class:`CaptureJob` is one ``CMD:CAPTURE N`` and its outcome. Where it starts is
decided frame by frame as frames are published: by the put's time (the frame of the
train in force then, :func:`predates_put`), or by the train named in
``CAPTURE:START_TRAIN`` (:func:`precedes_start_train`). No I/O here; the writer thread
of :class:`~trainstamp.detector._acquisition.Team1kServer` applies them.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from trainstamp.trainid import SOURCE_JUMP_TRAINS

__all__ = ["CLOCK_MATCH_NS", "CaptureJob", "CaptureState", "frame_period_ns",
           "precedes_start_train", "predates_put"]


class CaptureState:
    IDLE = "IDLE"
    CAPTURING = "CAPTURING"
    READY = "READY"
    ERROR = "ERROR"


@dataclass
class CaptureJob:
    """One ``CMD:CAPTURE N`` and what came of it."""

    total: int
    path: Path
    first_index: int = 0
    progress: int = 0
    overruns: int = 0
    skipped: int = 0  # frames of trains that ended before the put (or before start_train)
    #: CAPTURE:START_TRAIN: the capture starts with the frame of this train (0: by the put)
    start_train: int = 0
    status: str = CaptureState.CAPTURING
    message: str = ""
    #: external trigger configured: every frame must carry a train ID (0 = none)
    expects_train_ids: bool = False
    #: frames stored without a valid train ID although one was expected
    bad_train_ids: int = 0
    train_ids: list[int] = field(default_factory=list)
    frame_numbers: list[int] = field(default_factory=list)
    done: threading.Event = field(default_factory=threading.Event)


#: A frame timestamp further than this from the host clock means the detector keeps its
#: own time base, which cannot be compared with the time of a put.
CLOCK_MATCH_NS = 60 * 10**9


def frame_period_ns(stamps: list[tuple[int, int, int]], now_ns: int) -> float | None:
    """The trigger period from recent frames ``(frame_number, train_id, timestamp_ns)``.

    Per step between frames in publication order: the time per train (or per frame
    without train IDs). The median of the steps, or None without two comparable
    frames on the host's time base.
    """
    steps = []
    for (f0, t0, s0), (f1, t1, s1) in zip(stamps[:-1], stamps[1:], strict=True):
        if abs(s0 - now_ns) > CLOCK_MATCH_NS or s1 <= s0:
            continue
        n = t1 - t0 if t0 and t1 else f1 - f0
        if n > 0:
            steps.append((s1 - s0) / n)
    return float(np.median(steps)) if steps else None


def predates_put(ts_ns: int, put_ns: int, period_ns: float | None,
                 next_ts_ns: int | None = None) -> bool | None:
    """Whether a frame triggered at ``ts_ns`` belongs to a train that ended before the put.

    A frame's train runs until the next trigger: ``next_ts_ns`` if that frame is known,
    else ``ts_ns + period_ns``. The train in force at the put (triggered before it, ending
    after it) is kept, as are frames triggered after it. Returns None when it cannot be
    told yet (no period and no next frame). Frames stamped on a time base other than
    the host's (more than ``CLOCK_MATCH_NS`` away) are never judged old.
    """
    if ts_ns <= 0 or abs(ts_ns - put_ns) > CLOCK_MATCH_NS or ts_ns > put_ns:
        return False
    if next_ts_ns is not None and next_ts_ns > ts_ns:
        return next_ts_ns <= put_ns
    if period_ns is None:
        return None
    return ts_ns + period_ns <= put_ns


def precedes_start_train(train_id: int, start_train: int, frame_number: int | None = None,
                         before: tuple[int, int] | None = None) -> bool:
    """Whether a capture that starts at ``start_train`` skips this frame.

    Frames of earlier trains are skipped, and so are frames with no train ID (0), which
    cannot be placed. A frame of a later train is taken only if the frame just before
    it (``before``: its frame number and train ID) is of an earlier train and numbered
    one less: no frame was lost between, so the source skipped ``start_train``.
    Otherwise the frame of ``start_train`` was missed (lost, or gone from the ring when
    the put came): ``RuntimeError``. A train more than
    :data:`~trainstamp.trainid.SOURCE_JUMP_TRAINS` away, either way, means the train
    source restarted: ``start_train`` will never come, and the capture starts there.
    """
    if train_id and abs(train_id - start_train) > SOURCE_JUMP_TRAINS:
        return False
    if train_id <= start_train:
        return train_id < start_train
    if (before is not None and frame_number is not None and 0 < before[1] < start_train
            and frame_number == before[0] + 1):
        return False  # the trains between never came: the source skipped them
    raise RuntimeError(f"no frame of train {start_train} (CAPTURE:START_TRAIN): the first "
                       f"frame after it is of train {train_id}; the put came too late, "
                       "or that frame was lost")
