"""IMAGE over PV Access: the full newest frame as an NTNDArray, every IMAGE:PVA_PERIOD.

Over Channel Access IMAGE is a binned preview (:mod:`._preview`); over PV Access the
same name carries the whole 1024 x 1024 uint16 frame, as team1k's streamer does, built
by :func:`trainstamp._pva.ntndarray_value` (``uniqueId`` the frame number, the train ID
and the header's timestamp as attributes). Like the preview it is posted only when a
frame newer than the one shown exists, and at most every IMAGE:PVA_PERIOD seconds.
With ``--no-pva`` this part does nothing.
"""

from __future__ import annotations

import time

from trainstamp._pva import ntndarray_value
from trainstamp.detector import _pvnames as PV
from trainstamp.detector._caputil import float_pv, guarded
from trainstamp.detector._ioc._base import DetectorGroup, polled
from trainstamp.detector._ioc._preview import preview_due

#: Seconds between checks whether a frame is due (the shortest IMAGE:PVA_PERIOD).
PVA_POLL_S = 0.02
#: IMAGE:PVA_PERIOD at start-up, seconds (10 frames/s).
DEFAULT_PERIOD_S = 0.1


def newest_frame(rx):
    """(sequence, frame copy, frame number, train ID, timestamp ns) of the receiver's
    newest frame, or None if there is none or it was overwritten while being copied."""
    seq = rx.head
    if seq == 0:
        return None
    fn, train_id, timestamp_ns, _ = rx.frame_info(seq)
    frame = rx.frame_view(seq).copy()
    if not rx.valid(seq):
        return None
    return seq, frame, fn, train_id, timestamp_ns


class PvaImage(DetectorGroup):
    """IMAGE:PVA_PERIOD; feeds IMAGE of the IOC's PV Access server."""

    period = float_pv(name=PV.IMAGE_PVA_PERIOD, value=DEFAULT_PERIOD_S, units="s", precision=3,
                      doc="Seconds between full frames in IMAGE over PV Access (>= 0.02 s)")

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._shown = 0  # receiver sequence of the frame posted last
        self._next = 0.0  # monotonic time the next frame is due
        #: frames posted over PVA since start
        self.posted = 0

    @period.putter
    @guarded
    async def period(self, instance, value):
        if not PVA_POLL_S <= value <= 3600:
            raise ValueError(f"IMAGE:PVA_PERIOD {value} s outside {PVA_POLL_S}..3600 s")
        return value

    @period.scan(period=PVA_POLL_S)
    @polled("PVA image")
    async def period(self, instance, async_lib):
        """Post the newest frame over PVA if it is due and newer than the one posted."""
        mirror = self.ioc.pva
        if mirror is None or mirror.server is None:
            return
        now = time.monotonic()
        if now < self._next or not preview_due(self.server.rx.head, self._shown):
            return
        newest = newest_frame(self.server.rx)
        if newest is None:
            return
        seq, frame, fn, train_id, timestamp_ns = newest
        # on a fixed schedule, so the polls' 20 ms steps do not stretch the period
        self._next = max(self._next + max(PVA_POLL_S, float(self.period.value)), now)
        self._shown = seq
        mirror.post(self.ioc.prefix + PV.IMAGE, ntndarray_value(frame, fn, train_id, timestamp_ns))
        self.posted += 1
