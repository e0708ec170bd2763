"""Captures to HDF5: CMD:CAPTURE and the CAPTURE:* PVs of the file and its outcome.

The capture writer runs in the server (:meth:`Team1kServer.capture`); this part starts
it, names its file (CAPTURE:ROOT / DIR / NAME / NUMBER, confined to the data root),
and polls the running job every :data:`CAPTURE_POLL_S` into CAPTURE:PROGRESS and,
once it ends, into the outcome PVs (STATUS, MESSAGE, TRAIN_IDS, FINISHED ...).
"""

from __future__ import annotations

import math
import time

from caproto import ChannelType
from caproto.server import pvproperty

from trainstamp.detector import _pvnames as PV
from trainstamp.detector._acquisition import CaptureState
from trainstamp.detector._capture import confine
from trainstamp.detector._caputil import check_whole, float_pv, guarded, long_pv, switch, text_pv
from trainstamp.detector._ioc._base import DetectorGroup, polled

#: Seconds CAPTURE:OPEN 0 waits for a cancelled capture to end before closing its file.
CLOSE_WAIT_S = 5.0
#: Train IDs and frame numbers of the last capture shown (the first ones).
MAX_IDS = 4096
#: Seconds between polls of the running capture.
CAPTURE_POLL_S = 0.1
#: Train IDs above this are not exact in a DOUBLE PV.
MAX_TRAIN_ID = 2**53


class Capture(DetectorGroup):
    """CMD:CAPTURE; CAPTURE:STATUS, PROGRESS, TOTAL, ROOT, DIR, NAME, NUMBER, FULL_PATH,
    OPEN, FILE_FRAMES, FIRST_INDEX, FINISHED, MESSAGE, TRAIN_IDS, FRAME_NUMBERS, OVERRUNS,
    CANCEL, BAD_TRAIN_IDS, TIMEOUT, START_TRAIN."""

    command = long_pv(name=PV.CMD_CAPTURE, value=0, doc="Capture N frames to HDF5")
    status = pvproperty(name=PV.CAPTURE_STATUS, value=CaptureState.IDLE, dtype=ChannelType.STRING,
                        read_only=True, doc="IDLE / CAPTURING / READY / ERROR")
    progress = pvproperty(name=PV.CAPTURE_PROGRESS, value=0, read_only=True, doc="Frames captured so far")
    total = pvproperty(name=PV.CAPTURE_TOTAL, value=0, read_only=True, doc="Frames requested")
    root = text_pv(name=PV.CAPTURE_ROOT, read_only=True, doc="Data directory (all files under it)")
    directory = text_pv(name=PV.CAPTURE_DIR, value=".", doc="Capture directory, relative to the root")
    stem = text_pv(value="team1k", length=255, name=PV.CAPTURE_NAME, doc="Capture file stem")
    number = long_pv(name=PV.CAPTURE_NUMBER, value=1, doc="Next file number")
    full_path = text_pv(name=PV.CAPTURE_FULL_PATH, read_only=True, doc="File being/last written")
    file_open = long_pv(name=PV.CAPTURE_OPEN, value=0, doc="1=open a file that later captures append to, 0=close it")
    file_frames = pvproperty(name=PV.CAPTURE_FILE_FRAMES, value=0, read_only=True,
                             doc="Frames in the current file")
    first_index = pvproperty(name=PV.CAPTURE_FIRST_INDEX, value=0, read_only=True,
                             doc="Index in the file of the last capture's first frame")
    finished = pvproperty(name=PV.CAPTURE_FINISHED, value=0, read_only=True,
                          doc="Captures finished (READY or ERROR) since start")
    message = text_pv(name=PV.CAPTURE_MESSAGE, length=255, read_only=True, doc="Why a capture failed")
    train_ids = pvproperty(name=PV.CAPTURE_TRAIN_IDS, value=[0.0], max_length=MAX_IDS,
                           read_only=True, doc="Train IDs of the last capture (first 4096)")
    frame_numbers = pvproperty(name=PV.CAPTURE_FRAME_NUMBERS, value=[0.0], max_length=MAX_IDS,
                               read_only=True, doc="Frame numbers of the last capture")
    overruns = pvproperty(name=PV.CAPTURE_OVERRUNS, value=0, read_only=True,
                          doc="Frames the writer missed because it fell behind the ring")
    cancel = long_pv(name=PV.CAPTURE_CANCEL, value=0,
                     doc="1=cancel the capture in progress (it ends ERROR 'cancelled')")
    bad_train_ids = pvproperty(name=PV.CAPTURE_BAD_TRAIN_IDS, value=0, read_only=True,
                               doc="Frames of the last capture without a train ID "
                                   "although external trigger was configured")
    start_train = float_pv(name=PV.CAPTURE_START_TRAIN, value=0.0, precision=0,
                           doc="The next capture starts with the frame of this train "
                               "(external trigger; 0: the train in force at the put). "
                               "Used once: the capture sets it back to 0")
    timeout = float_pv(name=PV.CAPTURE_TIMEOUT, value=10.0, units="s",
                       doc="A capture fails after this long without a frame")

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._reported_job = None  # the finished job the outcome PVs show

    async def _next_path(self):
        """The capture path for CAPTURE:NUMBER, moving the number past files that exist."""
        number = int(self.number.value)
        for n in range(number, 100_000):
            path = self.server.capture_path(self.directory.value, self.stem.value, n)
            if not path.exists():
                if n != number:
                    await self.number.write(n)
                return path
        raise ValueError(f"no free file number for {self.stem.value!r} below 100000")

    @command.putter
    @guarded
    async def command(self, instance, value):
        put_ns = time.time_ns()  # the capture starts with the train in force now
        srv = self.server
        srv.capture_timeout_s = float(self.timeout.value)
        path = None if srv.file is not None else await self._next_path()
        start_train = int(self.start_train.value)
        job = await self._file_io(srv.capture, value, path, put_ns, start_train)
        if start_train:
            await self.start_train.write(0.0)
        if path is not None:
            await self.number.write(self.number.value + 1)
        await self.full_path.write(str(job.path))
        await self.total.write(job.total)
        await self.progress.write(0)
        await self.first_index.write(job.first_index)
        await self.message.write("")
        await self.bad_train_ids.write(0)
        await self.status.write(CaptureState.CAPTURING)
        return value

    @cancel.putter
    @switch("1 (cancel) or 0")
    async def cancel(self, instance, value):
        if value and not self.server.cancel_capture():
            raise ValueError("no capture in progress")
        return 0

    @directory.putter
    @guarded
    async def directory(self, instance, value):
        confine(self.server.data_dir, value, "probe")
        return value

    @stem.putter
    @guarded
    async def stem(self, instance, value):
        confine(self.server.data_dir, self.directory.value, f"{value}_00000.h5")
        return value

    @start_train.putter
    @guarded
    async def start_train(self, instance, value):
        value = float(value)
        if not (math.isfinite(value) and value.is_integer() and 0 <= value < MAX_TRAIN_ID):
            raise ValueError(f"start train {value} is not a train ID (a whole number in "
                             f"0..{MAX_TRAIN_ID - 1}; 0 = the train in force at the put)")
        return value

    @number.putter
    @guarded
    async def number(self, instance, value):
        if not 0 <= check_whole(PV.CAPTURE_NUMBER, value) <= 99999:
            raise ValueError(f"capture number {value} outside 0..99999")
        return value

    @timeout.putter
    @guarded
    async def timeout(self, instance, value):
        if not 0.1 <= value <= 3600:
            raise ValueError(f"capture timeout {value} s outside 0.1..3600 s")
        return value

    @file_open.putter
    @switch("0 or 1")
    async def file_open(self, instance, value):
        srv = self.server
        if value:
            path = await self._next_path()
            await self._file_io(srv.open_file, path)
            await self.number.write(self.number.value + 1)
            await self.full_path.write(str(path))
            await self.file_frames.write(0)
        else:
            if srv.busy:
                # Closing the file ends the capture in it (a plan that failed mid-capture
                # closes it while unstaging): cancel it, wait for the writer, then close.
                srv.cancel_capture("cancelled: the capture file was closed")
                if not await self._file_io(srv.wait_idle, CLOSE_WAIT_S):
                    raise ValueError(f"a capture is in progress and did not stop within "
                                     f"{CLOSE_WAIT_S:g} s of its cancel")
            await self._file_io(srv.close_file)
        return value

    @progress.scan(period=CAPTURE_POLL_S)
    @polled("capture poll")
    async def progress(self, instance, async_lib):
        """Show the running capture's progress, and its outcome once it has ended."""
        job = self.server.job
        if job is None:
            return
        if job.progress != self.progress.value:
            await self.progress.write(job.progress)
        if job.done.is_set() and self._reported_job is not job:
            self._reported_job = job
            f = self.server.file
            await self.file_frames.write(job.first_index + job.progress if f is None else f.count)
            await self.train_ids.write([float(t) for t in job.train_ids[:MAX_IDS]] or [0.0])
            await self.frame_numbers.write([float(t) for t in job.frame_numbers[:MAX_IDS]] or [0.0])
            await self.overruns.write(self.overruns.value + job.overruns)
            await self.bad_train_ids.write(job.bad_train_ids)
            await self.message.write(job.message)
            await self.status.write(job.status)
            await self.finished.write(self.finished.value + 1)
