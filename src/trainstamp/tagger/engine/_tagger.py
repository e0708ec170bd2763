"""The in-process tagger that is fed tag blocks, like Swabian's TimeTaggerVirtual.

It owns the channel list, the virtual channels and the measurements attached to it,
and runs every block through them under one lock. Blocks come from whatever reads the
hardware (the stream thread of the tagger server, a file replay, a test); this module
does no I/O.
"""

from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass, field

import numpy as np

from trainstamp.tagger.engine import _kernels as K
from trainstamp.tagger.engine._tags import (
    CHANNEL_UNUSED,
    MAX_TAG_TIME_PS,
    TAG_DTYPE,
    VIRTUAL_CHANNEL_BASE,
    ChannelEdge,
    TaggerFreedError,
    TagType,
    as_int,
)

DEFAULT_CHANNELS = tuple(range(1, 9)) + tuple(range(-1, -9, -1))
_INT64_MIN = np.iinfo(np.int64).min
_EMPTY_I64 = np.empty(0, np.int64)
_EMPTY_I32 = np.empty(0, np.int32)


@dataclass
class Segment:
    """A run of time tags between stream events, as handed to measurements.

    ``t_begin``/``t_end`` are the stream time (ps) the segment covers; every tag has
    ``t_begin <= time <= t_end``. ``reset`` is true when an overflow or error
    precedes the segment, so pair histories must not reach across it.
    """

    times: np.ndarray
    chans: np.ndarray
    t_begin: int
    t_end: int
    marker_times: np.ndarray = field(default_factory=lambda: _EMPTY_I64)
    marker_ids: np.ndarray = field(default_factory=lambda: _EMPTY_I64)
    missed_chans: np.ndarray = field(default_factory=lambda: _EMPTY_I32)
    missed_counts: np.ndarray = field(default_factory=lambda: _EMPTY_I64)
    missed_times: np.ndarray = field(default_factory=lambda: _EMPTY_I64)
    reset: bool = False


class TimeTaggerVirtual:
    """A time tagger whose tags are pushed in as blocks with :meth:`process`.

    Parameters
    ----------
    channels
        The physical channels: +n for rising and -n for falling edges of input n.
    marker_channel
        The channel that gets one tag per train, or None. Its tags are mapped to train
        IDs so measurements can run for a number of trains.
    serial
        The serial number reported by :meth:`getSerial`.
    """

    def __init__(
        self,
        channels=DEFAULT_CHANNELS,
        marker_channel: int | None = None,
        serial: str = "TRAINSTAMP-VIRTUAL",
    ):
        chans = [as_int(c, "channel") for c in channels]
        if not chans:
            raise ValueError("a tagger needs at least one channel, got none")
        for c in chans:
            if c == 0 or abs(c) >= VIRTUAL_CHANNEL_BASE:
                raise ValueError(
                    f"physical channel {c} is out of range: use ±1..±{VIRTUAL_CHANNEL_BASE - 1}"
                )
        if len(set(chans)) != len(chans):
            raise ValueError(f"channels must be unique, got {chans}")
        self._channels = tuple(chans)
        if marker_channel is not None:
            marker_channel = as_int(marker_channel, "marker_channel")
            if marker_channel not in self._channels:
                raise ValueError(
                    f"marker_channel {marker_channel} is not one of the channels {list(self._channels)}"
                )
        self._marker = marker_channel
        self._serial = str(serial)
        self._lock = threading.RLock()
        self._alive = True
        lo, hi = min(chans), max(chans)
        self._lut_lo = lo
        self._lut = np.zeros(hi - lo + 1, np.bool_)
        for c in chans:
            self._lut[c - lo] = True
        self._virtual: list = []  # virtual channels in creation order (strong refs)
        self._virtual_out: dict[int, object] = {}
        self._next_virtual = VIRTUAL_CHANNEL_BASE
        self._measurements: list[weakref.ref] = []
        self._now: int | None = None
        self._last_train_id = 0
        self._stats = {
            "blocks": 0,
            "tags": 0,
            "unknown_channel_tags": 0,
            "error_tags": 0,
            "overflow_begins": 0,
            "overflow_ends": 0,
            "missed_events": 0,
            "markers": 0,
        }
        self._missed: dict[int, int] = {}
        self._overflows = 0

    # ------------------------------------------------------------------ info
    def getSerial(self) -> str:
        """The serial number given at construction."""
        self._check_alive()
        return self._serial

    def getChannelList(self, type=ChannelEdge.All) -> list[int]:
        """The physical channels, optionally only rising (>0) or falling (<0) edges

        (any :class:`ChannelEdge`; all inputs are standard resolution).
        """
        self._check_alive()
        edge = ChannelEdge(as_int(type, "type"))
        if edge & 4:  # no standard-resolution inputs: every input here is one
            return []
        return [c for c in self._channels
                if not (edge & 1 and c < 0) and not (edge & 2 and c > 0)]

    def getMarkerChannel(self) -> int | None:
        """The marker channel (one tag per train), or None."""
        return self._marker

    def getStreamTime(self) -> int | None:
        """The stream time (ps) covered by the blocks processed so far, or None."""
        with self._lock:
            return self._now

    def getLastTrainId(self) -> int:
        """The train ID of the latest marker tag seen (0 if none or unknown)."""
        with self._lock:
            return self._last_train_id

    def getOverflows(self) -> int:
        """Number of overflow intervals and error tags seen since the last clear."""
        with self._lock:
            return self._overflows

    def clearOverflows(self) -> None:
        """Reset the :meth:`getOverflows` counter."""
        with self._lock:
            self._overflows = 0

    def getOverflowsAndClear(self) -> int:
        """:meth:`getOverflows`, then :meth:`clearOverflows`, atomically."""
        with self._lock:
            n, self._overflows = self._overflows, 0
            return n

    def getMissedEvents(self) -> dict[int, int]:
        """Events dropped during overflows, per channel, from MissedEvents tags."""
        with self._lock:
            return dict(self._missed)

    def getStatistics(self) -> dict[str, int]:
        """Counters of everything the tagger has been fed (blocks, tags, bad tags ...)."""
        with self._lock:
            return dict(self._stats)

    def getVirtualChannels(self) -> list[int]:
        """The channels of the virtual channels currently defined on this tagger."""
        with self._lock:
            return sorted(self._virtual_out)

    # ------------------------------------------------------------ lifecycle
    def free(self) -> None:
        """Detach every measurement and virtual channel; further use raises."""
        with self._lock:
            if not self._alive:
                return
            for m in self._live_measurements():
                m._detach()
            for v in list(self._virtual):
                v._detach()
            self._measurements.clear()
            self._virtual.clear()
            self._virtual_out.clear()
            self._alive = False

    def isFreed(self) -> bool:
        """True after :meth:`free`."""
        return not self._alive

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.free()

    def _check_alive(self) -> None:
        if not self._alive:
            raise TaggerFreedError(f"time tagger {self._serial!r} has been freed")

    # ------------------------------------------------------------- channels
    def _valid_channels(self) -> list[int]:
        return list(self._channels) + sorted(self._virtual_out)

    def _check_channel(self, channel, name: str, *, allow_unused: bool = False) -> int:
        ch = as_int(channel, name)
        if allow_unused and ch == CHANNEL_UNUSED:
            return ch
        if ch in self._channels or ch in self._virtual_out:
            return ch
        raise ValueError(
            f"{name} {ch} is not a channel of this tagger; valid: {self._valid_channels()}"
        )

    def _register_virtual(self, vc, n_outputs: int) -> list[int]:
        with self._lock:
            self._check_alive()
            outs = list(range(self._next_virtual, self._next_virtual + n_outputs))
            self._next_virtual += n_outputs
            self._virtual.append(vc)
            for c in outs:
                self._virtual_out[c] = vc
            return outs

    def _unregister_virtual(self, vc) -> None:
        with self._lock:
            if vc in self._virtual:
                self._virtual.remove(vc)
            for c in [c for c, v in self._virtual_out.items() if v is vc]:
                del self._virtual_out[c]

    def _register_measurement(self, m) -> None:
        with self._lock:
            self._check_alive()
            self._measurements = [r for r in self._measurements if r() is not None]
            self._measurements.append(weakref.ref(m))

    def _unregister_measurement(self, m) -> None:
        with self._lock:
            self._measurements = [r for r in self._measurements if r() not in (None, m)]

    def _live_measurements(self) -> list:
        return [m for m in (r() for r in self._measurements) if m is not None]

    # -------------------------------------------------------------- process
    def process(self, tags, marker_train_ids=None, *, end_time=None) -> None:
        """Run one block of tags through the virtual channels and measurements.

        Parameters
        ----------
        tags
            A 1-D TAG_DTYPE array sorted by time; its first tag must not be earlier
            than the last tag (or ``end_time``) of the previous block.
        marker_train_ids
            The train ID of each TimeTag on the marker channel in this block, in order.
            If None, IDs continue from the last known one (0, "unknown", if none).
        end_time
            The stream time (ps) the block covers up to, if later than its last tag.
            It lets measurements finish in a quiet stream.

        A bad block raises ValueError and changes nothing. Thread-safe.
        """
        if not isinstance(tags, np.ndarray) or tags.dtype != TAG_DTYPE or tags.ndim != 1:
            raise ValueError(
                f"tags must be a 1-D array of TAG_DTYPE, got {type(tags).__name__} "
                f"dtype={getattr(tags, 'dtype', None)} ndim={getattr(tags, 'ndim', None)}"
            )
        with self._lock:
            self._check_alive()
            times = tags["time"]
            chans = tags["channel"]
            types = tags["type"]
            n = times.shape[0]
            prev = _INT64_MIN if self._now is None else self._now
            bad, n_unknown, n_special = K.check_block(
                times, chans, types, prev, self._lut, self._lut_lo
            )
            if bad >= 0:
                before = prev if bad == 0 else int(times[bad - 1])
                raise ValueError(
                    f"tag {bad} at {int(times[bad])} ps is earlier than {before} ps: "
                    "tags must be sorted by time and follow the previous block"
                )
            if n and (int(times[0]) < 0 or int(times[-1]) > MAX_TAG_TIME_PS):
                raise ValueError(
                    f"tag times must be in 0..{MAX_TAG_TIME_PS} ps, got {int(times[0])}..{int(times[-1])}"
                )
            last = int(times[-1]) if n else prev
            if end_time is not None:
                end_time = as_int(end_time, "end_time")
                if end_time < last:
                    raise ValueError(f"end_time {end_time} ps is before the last tag at {last} ps")
                last = end_time
            if last == _INT64_MIN:
                return  # nothing at all yet
            tmask = types == TagType.TimeTag if n_special else None
            mtimes, mids = self._markers(times, chans, tmask, marker_train_ids)
            # Everything is valid: from here on the block is committed.
            t_begin = (
                int(times[0])
                if self._now is None and n
                else (prev if self._now is not None else last)
            )
            st = self._stats
            st["blocks"] += 1
            st["tags"] += n
            st["unknown_channel_tags"] += int(n_unknown)
            st["markers"] += int(mtimes.shape[0])
            if n_special == 0:
                segs = [Segment(times, chans, t_begin, last, mtimes, mids)]
            else:
                segs = self._segments(tags, t_begin, last, mtimes, mids)
            for seg in segs:
                self._run_segment(seg)
            self._now = last

    def _markers(self, times, chans, tmask, marker_train_ids):
        if self._marker is None:
            if marker_train_ids is not None and len(marker_train_ids):
                raise ValueError("marker_train_ids given but this tagger has no marker_channel")
            return _EMPTY_I64, _EMPTY_I64
        sel = chans == self._marker
        if tmask is not None:
            sel &= tmask
        mtimes = np.ascontiguousarray(times[sel])
        m = mtimes.shape[0]
        if marker_train_ids is None:
            if self._last_train_id > 0:
                mids = self._last_train_id + 1 + np.arange(m, dtype=np.int64)
            else:
                mids = np.zeros(m, np.int64)
        else:
            mids = np.asarray(marker_train_ids)
            if mids.ndim != 1 or mids.shape[0] != m or (m and mids.dtype.kind not in "iu"):
                raise ValueError(
                    f"marker_train_ids must be {m} integers (one per marker tag), "
                    f"got shape {mids.shape} dtype {mids.dtype}"
                )
            mids = mids.astype(np.int64)
            if m and int(mids.min()) < 0:
                raise ValueError(f"train IDs must be >= 0, got {int(mids.min())}")
        if m:
            self._last_train_id = int(mids[-1])
        return mtimes, mids

    def _segments(self, tags, t_begin, last, mtimes, mids) -> list[Segment]:
        """Split a block with stream events into segments of plain time tags."""
        types = tags["type"]
        st = self._stats
        cut = np.flatnonzero((types == TagType.OverflowBegin) | (types == TagType.Error))
        st["error_tags"] += int(np.count_nonzero(types == TagType.Error))
        st["overflow_begins"] += int(np.count_nonzero(types == TagType.OverflowBegin))
        st["overflow_ends"] += int(np.count_nonzero(types == TagType.OverflowEnd))
        self._overflows += int(cut.shape[0])
        bounds = [0, *cut.tolist(), tags.shape[0]]
        segs = []
        t_lo = t_begin
        m0 = 0
        for k in range(len(bounds) - 1):
            part = tags[bounds[k] : bounds[k + 1]]
            t_hi = int(tags["time"][bounds[k + 1]]) if k + 1 < len(bounds) - 1 else last
            ptypes = part["type"]
            keep = ptypes == TagType.TimeTag
            me = ptypes == TagType.MissedEvents
            mch = part["channel"][me].astype(np.int32)
            mcnt = part["missed_events"][me].astype(np.int64)
            for c, cnt in zip(mch.tolist(), mcnt.tolist(), strict=True):
                self._missed[c] = self._missed.get(c, 0) + cnt
                st["missed_events"] += cnt
            n_mark = 0
            if self._marker is not None:
                n_mark = int(np.count_nonzero(keep & (part["channel"] == self._marker)))
            segs.append(
                Segment(
                    np.ascontiguousarray(part["time"][keep]),
                    np.ascontiguousarray(part["channel"][keep]),
                    t_lo,
                    t_hi,
                    mtimes[m0 : m0 + n_mark],
                    mids[m0 : m0 + n_mark],
                    mch,
                    mcnt,
                    np.ascontiguousarray(part["time"][me]),
                    reset=k > 0,
                )
            )
            m0 += n_mark
            t_lo = t_hi
        return segs

    def _run_segment(self, seg: Segment) -> None:
        for vc in self._virtual:
            out_t, out_c = vc._feed(seg)
            if out_t.shape[0]:
                pos = np.searchsorted(seg.times, out_t, side="right")
                seg.times = np.insert(seg.times, pos, out_t)
                seg.chans = np.insert(seg.chans, pos, out_c)
        for m in self._live_measurements():
            m._feed(seg)
