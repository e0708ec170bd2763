"""trainstamp profile, step 4: the plans.

Every plan exported by :mod:`trainstamp.plans` (``train_count`` and the others), the
common bluesky plans, the plan stubs as ``bps``, and the analysis helpers of
:mod:`trainstamp.storage` for reading runs back by train ID.
"""

import bluesky.plan_stubs as bps  # noqa: F401
from bluesky.plans import count, grid_scan, list_scan, rel_scan, scan  # noqa: F401

from trainstamp.plans import *  # noqa: F403
from trainstamp.storage import (  # noqa: F401
    detector_frames,
    find_runs,
    last_run,
    load_trains,
    merge_streams,
    runs_with_train,
    side_by_side,
    tagger_data,
    train_table,
)
