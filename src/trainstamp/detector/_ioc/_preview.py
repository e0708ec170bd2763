"""The live preview: IMAGE, a binned copy of the newest frame, and its IMAGE:* PVs.

Full frames never travel over CA (they go to HDF5). IMAGE is posted at most every
IMAGE:PERIOD (>= 0.5 s), and only when a frame newer than the one shown exists.
"""

from __future__ import annotations

import time

import numpy as np
from caproto import ChannelType
from caproto.server import pvproperty

from trainstamp.detector import _pvnames as PV
from trainstamp.detector._acquisition import bin_image
from trainstamp.detector._caputil import float_pv, guarded, long_pv
from trainstamp.detector._ioc._base import DetectorGroup, polled
from trainstamp.detector._protocol import FRAME_COLS, FRAME_ROWS

#: Seconds between checks whether a preview is due (IMAGE:PERIOD is its period).
PREVIEW_POLL_S = 0.1
#: The shortest IMAGE:PERIOD, seconds.
MIN_PERIOD_S = 0.5


def preview_due(head: int, shown: int) -> bool:
    """Whether IMAGE should be posted: a frame newer than the one shown exists.

    While the DAQ is stopped (the receiver's head does not move) nothing is posted, so
    a viewer never shows an old frame as live.
    """
    return head > 0 and head != shown


class Preview(DetectorGroup):
    """IMAGE; IMAGE:WIDTH, HEIGHT, BINNING, PERIOD, TRAIN_ID."""

    image = pvproperty(name=PV.IMAGE, value=[0], dtype=ChannelType.LONG,
                       max_length=FRAME_ROWS * FRAME_COLS, read_only=True,
                       doc="Throttled, binned live preview (row-major IMAGE:HEIGHT x IMAGE:WIDTH)")
    width = pvproperty(name=PV.IMAGE_WIDTH, value=FRAME_COLS // 4, read_only=True, doc="Preview width")
    height = pvproperty(name=PV.IMAGE_HEIGHT, value=FRAME_ROWS // 4, read_only=True, doc="Preview height")
    binning = long_pv(name=PV.IMAGE_BINNING, value=4, doc="Preview binning: 1, 2, 4 or 8")
    period = float_pv(name=PV.IMAGE_PERIOD, value=MIN_PERIOD_S, units="s", doc="Preview period (>= 0.5 s)")
    train_id = pvproperty(name=PV.IMAGE_TRAIN_ID, value=0.0, read_only=True, precision=0,
                          doc="Train ID of the frame in IMAGE")

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._shown = 0  # receiver sequence of the frame in IMAGE
        self._next = 0.0  # monotonic time the next preview is due

    @binning.putter
    @guarded
    async def binning(self, instance, value):
        if value not in (1, 2, 4, 8):
            raise ValueError(f"IMAGE:BINNING {value} not one of 1, 2, 4, 8")
        await self.width.write(FRAME_COLS // value)
        await self.height.write(FRAME_ROWS // value)
        return value

    @period.putter
    @guarded
    async def period(self, instance, value):
        if not MIN_PERIOD_S <= value <= 3600:
            raise ValueError(f"IMAGE:PERIOD {value} s outside 0.5..3600 s")
        return value

    @image.scan(period=PREVIEW_POLL_S)
    @polled("preview")
    async def image(self, instance, async_lib):
        """Every IMAGE:PERIOD, post the newest frame if it is newer than the one shown."""
        now = time.monotonic()
        if now < self._next:
            return
        self._next = now + max(MIN_PERIOD_S, float(self.period.value))
        head = self.server.rx.head
        if not preview_due(head, self._shown):
            return
        latest = self.server.latest_frame()
        if latest is None:
            return
        frame, train_id, _ = latest
        self._shown = head
        img = await self._io(bin_image, frame, int(self.binning.value))
        value = np.ascontiguousarray(img, dtype=np.int32).reshape(-1)
        value.flags.writeable = False
        await self.train_id.write(float(train_id))
        await self.image.write(value)
