"""The TimeServer: the single source of train IDs for everything in trainstamp.

- :mod:`._core`: ticks, interpolation, averaging, discontinuities, the P-loop and source
  URIs (pure, no I/O).
- :mod:`._model`: the state machine, faults, the missed-period rule and STATUS (pure).
- :mod:`._protocol`: the decimal-ASCII train-ID TCP protocol (pure).
- :mod:`.feed`: a blocking consumer of that protocol for hardware-side programs.
- :class:`TickCollector`: the ``timeserver`` stream of a fly scan (imported lazily, since
  ophyd and bluesky are heavy).
"""

from trainstamp.timing._core import (
    AS_PER_NS,
    MAX_PERIOD_MS,
    MIN_PERIOD_MS,
    P_GAIN,
    PeriodAverager,
    PeriodLoop,
    Source,
    Stamp,
    StampStatus,
    Tick,
    TickBuilder,
    check_period_ms,
    first_internal_id,
    interpolate_train_id,
    parse_source,
)
from trainstamp.timing._model import (
    DEFAULT_MISSED_PERIODS,
    Fault,
    RateLimit,
    State,
    TimerModel,
    check_missed_periods,
)
from trainstamp.timing._protocol import MAX_TRAIN_ID, BadMessage, encode_train_id, parse_train_id
from trainstamp.timing._pvnames import (
    DEFAULT_BROADCAST_PORT,
    DEFAULT_PREFIX,
    PV,
    STATE_STRINGS,
)

__all__ = [
    "DEFAULT_BROADCAST_PORT",
    "DEFAULT_MISSED_PERIODS",
    "DEFAULT_PREFIX",
    "PV",
    "STATE_STRINGS",
    "AS_PER_NS",
    "MAX_PERIOD_MS",
    "MAX_TRAIN_ID",
    "MIN_PERIOD_MS",
    "P_GAIN",
    "BadMessage",
    "Fault",
    "RateLimit",
    "PeriodAverager",
    "PeriodLoop",
    "Source",
    "Stamp",
    "StampStatus",
    "State",
    "Tick",
    "TickBuilder",
    "TickCollector",
    "TimerModel",
    "check_missed_periods",
    "check_period_ms",
    "encode_train_id",
    "first_internal_id",
    "interpolate_train_id",
    "parse_source",
    "parse_train_id",
]


def __getattr__(name: str):
    if name == "TickCollector":
        from trainstamp.timing._collector import TickCollector

        return TickCollector
    raise AttributeError(f"module 'trainstamp.timing' has no attribute {name!r}")
