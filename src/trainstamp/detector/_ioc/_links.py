"""The two links to the detector, counted: the data receiver (RX:*, frames) and the
register client (REG:*).

Both are polled every :data:`COUNTERS_POLL_S`; a counter PV is written only when its
value changed. Counters are DOUBLEs (exact to 2**53) so that they never wrap.
"""

from __future__ import annotations

import time

from caproto.server import pvproperty

from trainstamp.detector import _pvnames as PV
from trainstamp.detector._caputil import counter_pv, text_pv
from trainstamp.detector._ioc._base import DetectorGroup, polled

#: Seconds between polls of the receiver's and the register client's counters.
COUNTERS_POLL_S = 0.5


class ReceiverCounters(DetectorGroup):
    """FRAME_RATE, FRAME_COUNT; LAST:TRAIN_ID, FRAME_NUMBER, COMPLETE; RX:COMPLETE,
    INCOMPLETE, DROPPED, LOST, DUPLICATE, MALFORMED, FOREIGN, LATE, BACKWARDS,
    IMPLAUSIBLE, INCONSISTENT, PACKETS, RCVBUF, ALIVE, LOCAL."""

    frame_rate = pvproperty(name=PV.FRAME_RATE, value=0.0, read_only=True, units="Hz", precision=2,
                            doc="Frames received per second")
    frame_count = pvproperty(name=PV.FRAME_COUNT, value=0, read_only=True, doc="Total frames acquired")
    last_train_id = pvproperty(name=PV.LAST_TRAIN_ID, value=0.0, read_only=True, precision=0,
                               doc="Train ID in the newest frame's header (exact below 2**53)")
    last_frame_number = pvproperty(name=PV.LAST_FRAME_NUMBER, value=0.0, read_only=True, precision=0,
                                   doc="Frame number of the newest frame")
    last_complete = pvproperty(name=PV.LAST_COMPLETE, value=0, read_only=True,
                               doc="Newest frame had every packet")

    complete = counter_pv(PV.RX_COMPLETE, "Frames with every packet")
    incomplete = counter_pv(PV.RX_INCOMPLETE, "Frames with missing packets (padded 0xFFFF)")
    dropped = counter_pv(PV.RX_DROPPED, "Frames never seen (frame-number gaps)")
    lost = counter_pv(PV.RX_LOST, "Packets missing from published frames")
    duplicate = counter_pv(PV.RX_DUPLICATE, "Duplicate packets")
    malformed = counter_pv(PV.RX_MALFORMED, "Truncated/oversized/bad magic/bad index packets")
    foreign = counter_pv(PV.RX_FOREIGN, "Packets from an address other than the detector's")
    late = counter_pv(PV.RX_LATE, "Packets for frames already published")
    backwards = counter_pv(PV.RX_BACKWARDS, "Frame number jumped backwards (re-anchored)")
    implausible = counter_pv(PV.RX_IMPLAUSIBLE, "Packets whose frame number is far from the sequence")
    inconsistent = counter_pv(PV.RX_INCONSISTENT, "Packets whose train ID/timestamp differs from their frame's")
    packets = counter_pv(PV.RX_PACKETS, "Good packets")
    rcvbuf = pvproperty(name=PV.RX_RCVBUF, value=0, read_only=True, units="B", doc="SO_RCVBUF the OS granted")
    alive = pvproperty(name=PV.RX_ALIVE, value=0, read_only=True, doc="Receiver process running")
    local = text_pv(name=PV.RX_LOCAL, length=64, read_only=True, doc="host:port the data socket binds")

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._last = None  # (monotonic time, receiver head) of the previous poll

    async def show_socket(self) -> None:
        """RX:RCVBUF and RX:LOCAL, once the receiver has bound its socket."""
        rx = self.server.rx
        await self.rcvbuf.write(rx.rcvbuf_granted)
        await self.local.write(f"{rx.local_address}:{rx.local_port}")

    @frame_rate.scan(period=COUNTERS_POLL_S)
    @polled("receiver counters")
    async def frame_rate(self, instance, async_lib):
        """Counters, frame rate and the newest frame's header."""
        rx = self.server.rx
        counts = rx.counters()
        for suffix, key in PV.RX_COUNTERS.items():
            pv = self.pvdb[self.prefix + suffix]
            if pv.value != counts[key]:
                await pv.write(float(counts[key]))
        head = counts["head"]
        now = time.monotonic()
        then, head_then = self._last or (now, head)
        self._last = now, head
        await self.frame_rate.write((head - head_then) / max(now - then, 1e-3))
        if head != self.frame_count.value:
            await self.frame_count.write(head)
            fn, train_id, _, complete = rx.frame_info(head)
            await self.last_train_id.write(float(train_id))
            await self.last_frame_number.write(float(fn))
            await self.last_complete.write(int(complete))
        await self.alive.write(int(rx.alive))


class RegisterLink(DetectorGroup):
    """REG:LOCAL, TIMEOUTS, RETRIES, ERRORS, STRAY, RESTORES."""

    local = text_pv(name=PV.REG_LOCAL, length=64, read_only=True, doc="host:port the register client binds")
    timeouts = counter_pv(PV.REG_TIMEOUTS, "Register requests that got no reply")
    retries = counter_pv(PV.REG_RETRIES, "Register requests resent")
    errors = counter_pv(PV.REG_ERRORS, "Register error replies")
    stray = counter_pv(PV.REG_STRAY, "Register replies with a wrong sequence number")
    restores = counter_pv(PV.REG_RESTORES, "Times the configuration was re-applied to a restarted FPGA")

    async def show_socket(self) -> None:
        """REG:LOCAL: where the register client is bound."""
        host, port = self.server.regs.local_address
        await self.local.write(f"{host}:{port}")

    @timeouts.scan(period=COUNTERS_POLL_S)
    @polled("register link counters")
    async def timeouts(self, instance, async_lib):
        """The register client's counters."""
        s = self.server.regs.stats
        for pv, v in ((self.timeouts, s.timeouts), (self.retries, s.retries),
                      (self.errors, s.errors), (self.stray, s.stray_replies)):
            if pv.value != v:
                await pv.write(float(v))
