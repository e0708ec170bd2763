"""Pure checks of the values put to the tagger IOC's slot PVs (see :mod:`._slots`).

Each returns the value to store or raises ``ValueError`` saying what is wrong; the
putters turn that into a refusal with the PV's name.
"""

from __future__ import annotations

import numpy as np

#: Longest DURATION (s of tagger time) and most N_TRAINS an acquisition takes.
MAX_DURATION_S = 86_400.0
MAX_N_TRAINS = 10_000_000


def number(value) -> float:
    """A finite float from a put's value; strings and NaN/inf refused."""
    if isinstance(value, str | bytes):
        raise ValueError(f"{value!r} is not a number")
    v = float(value)
    if not np.isfinite(v):
        raise ValueError(f"{v!r} is not a finite number")
    return v


def check_duration(value) -> float:
    """DURATION: seconds of tagger time, finite, 0..MAX_DURATION_S (0: use N_TRAINS)."""
    v = number(value)
    if not 0 <= v <= MAX_DURATION_S:
        raise ValueError(f"{v:g} s outside 0..{MAX_DURATION_S:g} s")
    return v


def check_n_trains(value) -> int:
    """N_TRAINS: a whole 0..MAX_N_TRAINS (0: use DURATION)."""
    v = number(value)
    if not v.is_integer() or not 0 <= v <= MAX_N_TRAINS:
        raise ValueError(f"{v:g} is not a whole number in 0..{MAX_N_TRAINS}")
    return int(v)


#: Train IDs above this are not exact in a DOUBLE PV.
MAX_TRAIN_ID = 2**53


def check_train_id(value) -> int:
    """START_TRAIN: a train ID, or 0 for the train in force at the put."""
    v = number(value)
    if not v.is_integer() or not 0 <= v < MAX_TRAIN_ID:
        raise ValueError(f"{v:g} is not a train ID (a whole number in 0..2**53-1)")
    return int(v)


def check_switch(value) -> int:
    """START/STOP/CLEAR/ACQUIRE: 1 acts, 0 does nothing."""
    v = number(value)
    if v not in (0, 1):
        raise ValueError(f"{v:g}; write 1 (0 does nothing)")
    return int(v)
