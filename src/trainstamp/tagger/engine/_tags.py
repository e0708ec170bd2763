"""Tag layout, constants and argument checks shared by the whole engine.

A tag is one detected edge (or a stream event such as an overflow) in Swabian's
16-byte layout. Times are int64 picoseconds; a rising edge on input n is channel +n and
a falling edge is -n. Nothing here does I/O.
"""

from __future__ import annotations

import enum
import numbers

import numpy as np

TAG_DTYPE = np.dtype(
    [
        ("type", "u1"),
        ("reserved", "u1"),
        ("missed_events", "u2"),
        ("channel", "i4"),
        ("time", "i8"),
    ]
)
"""One tag, 16 bytes, Swabian's ``Tag`` layout. ``time`` is in ps."""

CHANNEL_UNUSED = -134217728
"""Passed instead of a channel where a measurement allows leaving one out."""

VIRTUAL_CHANNEL_BASE = 1000
"""Virtual channels are numbered from here upwards, above every physical channel."""

MAX_BINS = 1 << 23
"""Upper bound on bins (or values x channels) of one measurement: 8,388,608.

At int64 accumulation that is 64 MiB, the largest array a client may ask for. The
bound exists so that a typo or a hostile RPC call cannot exhaust the server's memory.
"""

MAX_SPAN_PS = 1 << 62
"""Upper bound on ``binwidth * n_bins`` and on durations, so int64 arithmetic is exact."""

MAX_TAG_TIME_PS = (1 << 62) - 1
"""Latest tag time accepted (about 53 days after the tagger started counting)."""


class TagType(enum.IntEnum):
    """What a tag means (the ``type`` field)."""

    TimeTag = 0
    """A detected edge on ``channel`` at ``time``."""
    Error = 1
    """The stream lost synchronisation; tags around it may be missing."""
    OverflowBegin = 2
    """From here on the link could not keep up and tags are being dropped."""
    OverflowEnd = 3
    """The link has caught up again."""
    MissedEvents = 4
    """``missed_events`` edges on ``channel`` were dropped during an overflow."""


class ChannelEdge(enum.IntEnum):
    """Which physical channels :meth:`TimeTaggerVirtual.getChannelList` returns.

    Swabian's names and values: bit 0 drops falling edges, bit 1 rising edges, bit 2
    standard-resolution inputs and bit 3 high-resolution ones (this tagger's inputs are
    all standard resolution, so ``HighRes*`` give none).
    """

    All = 0
    Rising = 1
    Falling = 2
    HighResAll = 4
    HighResRising = 5
    HighResFalling = 6
    StandardAll = 8
    StandardRising = 9
    StandardFalling = 10


class GatedChannelInitial(enum.IntEnum):
    """Whether a :class:`GatedChannel`'s gate starts closed or open (Swabian's values)."""

    Closed = 0
    Open = 1


class CoincidenceTimestamp(enum.IntEnum):
    """Which time a coincidence tag carries. Only ``Last`` is supported (see docs)."""

    Last = 0
    Average = 1
    First = 2
    ListedFirst = 3


class TaggerFreedError(RuntimeError):
    """A tagger, measurement or virtual channel was used after it was freed."""


def as_int(value, name: str) -> int:
    """Return ``value`` as an int, accepting ints and integral floats (``1e12``).

    Raises ValueError quoting the value for anything else (bools, fractions, strings).
    """
    if isinstance(value, bool) or value is None:
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        f = float(value)
        if f.is_integer() and abs(f) < 2.0**63:
            return int(f)
    raise ValueError(f"{name} must be an integer, got {value!r}")


def check_binning(binwidth, n_bins, *, n_bins_name: str = "n_bins") -> tuple[int, int]:
    """Validate a binwidth (ps, > 0) and a bin count (1..MAX_BINS); return them as ints."""
    bw = as_int(binwidth, "binwidth")
    nb = as_int(n_bins, n_bins_name)
    if bw <= 0:
        raise ValueError(f"binwidth must be > 0 ps, got {bw}")
    if nb <= 0 or nb > MAX_BINS:
        raise ValueError(f"{n_bins_name} must be in 1..{MAX_BINS}, got {nb}")
    if bw * nb > MAX_SPAN_PS:
        raise ValueError(f"binwidth * {n_bins_name} = {bw * nb} ps exceeds the limit {MAX_SPAN_PS}")
    return bw, nb


def check_duration(duration, name: str = "capture_duration") -> int:
    """Validate a duration in ps (1..MAX_SPAN_PS) and return it as an int."""
    d = as_int(duration, name)
    if d <= 0 or d > MAX_SPAN_PS:
        raise ValueError(f"{name} must be in 1..{MAX_SPAN_PS} ps, got {d}")
    return d


def make_tags(times, channels, types=None, missed_events=None) -> np.ndarray:
    """Build a TAG_DTYPE array from columns (a convenience for tests and replays)."""
    times = np.asarray(times, dtype=np.int64)
    tags = np.zeros(times.shape[0], dtype=TAG_DTYPE)
    tags["time"] = times
    tags["channel"] = np.asarray(channels, dtype=np.int32)
    if types is not None:
        tags["type"] = np.asarray(types, dtype=np.uint8)
    if missed_events is not None:
        tags["missed_events"] = np.asarray(missed_events, dtype=np.uint16)
    return tags
