"""The Swabian-style time tagger: engine in process, server, IOC and ophyd device.

- In process: the measurement engine (``TimeTaggerVirtual``, ``Correlation``, ...),
  re-exported from :mod:`trainstamp.tagger.engine`.
- Over the network: ``trainstamp emulate tagger`` (the instrument),
  ``trainstamp ioc tagger`` (tag link + Pyro5 server + caproto IOC), see docs/tagger.md.
- Clients: :func:`fast_path` (numpy arrays from the Pyro5 server) and the ophyd
  :class:`TimeTagger` device and :class:`MarkerCountCollector`, the ``tagger`` stream of
  a fly scan (both imported lazily, since ophyd is heavy).
"""

from __future__ import annotations

from trainstamp.tagger._fastpath import FastPath, fast_path
from trainstamp.tagger.engine import (
    CHANNEL_UNUSED,
    TAG_DTYPE,
    Coincidence,
    Coincidences,
    Combiner,
    Correlation,
    CountBetweenMarkers,
    Counter,
    Countrate,
    DelayedChannel,
    GatedChannel,
    Histogram,
    StartStop,
    SynchronizedMeasurements,
    TaggerFreedError,
    TagType,
    TimeTaggerVirtual,
)

__all__ = [
    "CHANNEL_UNUSED",
    "TAG_DTYPE",
    "Coincidence",
    "Coincidences",
    "Combiner",
    "CountBetweenMarkers",
    "Counter",
    "Correlation",
    "Countrate",
    "DelayedChannel",
    "FastPath",
    "GatedChannel",
    "MarkerCountCollector",
    "Histogram",
    "StartStop",
    "SynchronizedMeasurements",
    "TagType",
    "TaggerFreedError",
    "TimeTagger",
    "TimeTaggerVirtual",
    "fast_path",
]


def __getattr__(name: str):
    if name == "TimeTagger":
        from trainstamp.tagger.device import TimeTagger

        return TimeTagger
    if name == "MarkerCountCollector":
        from trainstamp.tagger._collector import MarkerCountCollector

        return MarkerCountCollector
    raise AttributeError(f"module 'trainstamp.tagger' has no attribute {name!r}")
