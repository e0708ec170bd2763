"""The time-tagger measurement engine: Swabian's API over tag blocks, in numba.

- :mod:`._tags`: the 16-byte tag layout, tag types, constants and argument checks.
- :mod:`._tagger`: :class:`TimeTaggerVirtual`, fed tag blocks with ``process``.
- :mod:`._measurement`: the shared lifecycle and :class:`SynchronizedMeasurements`.
- :mod:`._histograms`: :class:`Correlation`, :class:`Histogram`, :class:`StartStop`.
- :mod:`._counting`: :class:`Countrate`, :class:`Counter`, :class:`CountBetweenMarkers`.
- :mod:`._virtual`: :class:`DelayedChannel`, :class:`GatedChannel`,
  :class:`Coincidence`, :class:`Coincidences`, :class:`Combiner`.
- :mod:`._kernels`, :mod:`._pairs`: the numba kernels (no GIL), used by all of the above.

No I/O happens here; see ``docs/tagger-engine.md`` for conventions and limits.
"""

from trainstamp.tagger.engine._counting import CountBetweenMarkers, Counter, Countrate
from trainstamp.tagger.engine._histograms import Correlation, Histogram, StartStop
from trainstamp.tagger.engine._measurement import Measurement, SynchronizedMeasurements
from trainstamp.tagger.engine._tagger import DEFAULT_CHANNELS, TimeTaggerVirtual
from trainstamp.tagger.engine._tags import (
    CHANNEL_UNUSED,
    MAX_BINS,
    MAX_SPAN_PS,
    MAX_TAG_TIME_PS,
    TAG_DTYPE,
    VIRTUAL_CHANNEL_BASE,
    ChannelEdge,
    CoincidenceTimestamp,
    GatedChannelInitial,
    TaggerFreedError,
    TagType,
    make_tags,
)
from trainstamp.tagger.engine._virtual import (
    Coincidence,
    Coincidences,
    Combiner,
    DelayedChannel,
    GatedChannel,
)

__all__ = [
    "CHANNEL_UNUSED",
    "DEFAULT_CHANNELS",
    "MAX_BINS",
    "MAX_SPAN_PS",
    "MAX_TAG_TIME_PS",
    "TAG_DTYPE",
    "VIRTUAL_CHANNEL_BASE",
    "ChannelEdge",
    "Coincidence",
    "CoincidenceTimestamp",
    "Coincidences",
    "Combiner",
    "Correlation",
    "CountBetweenMarkers",
    "Counter",
    "Countrate",
    "DelayedChannel",
    "GatedChannel",
    "GatedChannelInitial",
    "Histogram",
    "Measurement",
    "StartStop",
    "SynchronizedMeasurements",
    "TagType",
    "TaggerFreedError",
    "TimeTaggerVirtual",
    "make_tags",
]
