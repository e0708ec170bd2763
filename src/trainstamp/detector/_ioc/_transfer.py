"""The data-transfer port as PVs: where it listens (DATA:URI) and what it served.

Clients take the port from DATA:URI (as they take the tagger's Pyro5 server from
PYRO_URI), so a beamline on free ports needs no configuration on the client side.
"""

from __future__ import annotations

from trainstamp.detector import _pvnames as PV
from trainstamp.detector._caputil import counter_pv, text_pv
from trainstamp.detector._ioc._base import DetectorGroup, polled

#: Seconds between polls of the transfer counters.
TRANSFER_POLL_S = 0.5


class DataTransfer(DetectorGroup):
    """DATA:URI, REQUESTS, BAD_REQUESTS, FRAMES_SENT."""

    uri = text_pv(name=PV.DATA_URI, length=128, read_only=True,
                  doc="tcp://host:port of the ZMQ data-transfer port; empty if there is "
                      "none, or if it died (the IOC log says why)")
    requests = counter_pv(PV.DATA_REQUESTS, "Requests to the data-transfer port")
    bad_requests = counter_pv(PV.DATA_BAD_REQUESTS, "Requests it refused (see the IOC log)")
    frames_sent = counter_pv(PV.DATA_FRAMES_SENT, "Frames it sent")

    @requests.scan(period=TRANSFER_POLL_S)
    @polled("transfer counters")
    async def requests(self, instance, async_lib):
        """The port's endpoint and its counters."""
        transfer = self.server.transfer
        if transfer is None:
            return
        await self.show_uri()
        s = transfer.stats
        for pv, v in ((self.requests, s.requests), (self.bad_requests, s.bad_requests),
                      (self.frames_sent, s.frames_sent)):
            if pv.value != v:
                await pv.write(float(v))

    async def show_uri(self) -> None:
        """DATA:URI says where the port listens, or empty if there is none. The start-up
        calls it as soon as the port is served (clients wait for it while STATUS is STARTING).
        A dead port is not advertised: clients then fail at once with "no data port"
        instead of timing out on a port nobody answers."""
        transfer = self.server.transfer
        uri = transfer.uri if transfer is not None and transfer.alive else ""
        if self.uri.value != uri:
            await self.uri.write(uri)
