"""A karabo-bridge live stream: one message per train, for online analysis.

``karabo_bridge.Client("tcp://127.0.0.1:P")`` gets, per train, the TimeServer tick, the
detector frame and the tagger counts, each source's metadata carrying the train ID
(protocol 2.2, REQ/REP). Two ways to feed it:

- :func:`subscribe_bridge` (or :class:`BridgeCallback`): a RunEngine subscription that
  reads :func:`~trainstamp.plans.train_fly`'s event pages;
- ``trainstamp bridge --port P`` (:mod:`trainstamp.bridge.cli`): attached to a running
  beamline, with the ticks from the TimeServer's broadcaster, the frames from the
  detector's capture file and the counts from the bridge's own counting windows on the
  tagger server (:mod:`trainstamp.bridge._attach`).

The core (:mod:`trainstamp.bridge._core`) assembles trains and holds the bounded,
newest-wins queue; the server (:mod:`trainstamp.bridge._server`) is a ZeroMQ REP thread.
The producer never waits on the client: a slow client gets the newest train, and the
trains it missed are counted (``skipped``).
"""

from __future__ import annotations

from typing import Any

from trainstamp.bridge._callback import BridgeCallback
from trainstamp.bridge._core import (
    Assembler,
    NewestQueue,
    Part,
    Train,
    detector_source,
    encode,
    tagger_source,
    timeserver_source,
)
from trainstamp.bridge._server import DEFAULT_BIND, Bridge, BridgeServer, BridgeStats, CaptureFrames

__all__ = [
    "DEFAULT_BIND",
    "Assembler",
    "Bridge",
    "BridgeCallback",
    "BridgeServer",
    "BridgeStats",
    "CaptureFrames",
    "NewestQueue",
    "Part",
    "Train",
    "detector_source",
    "encode",
    "subscribe_bridge",
    "tagger_source",
    "timeserver_source",
]


def subscribe_bridge(RE: Any, *, port: int = 0, host: str = DEFAULT_BIND,
                     detectors: Any = (), queue_depth: int = 1) -> tuple[Bridge, int]:
    """Start a bridge server and subscribe it to ``RE``.

    Returns the :class:`Bridge` (``bridge.server.endpoint`` is where clients connect;
    ``bridge.stats()`` the counters) and the subscription token; stop with
    ``RE.unsubscribe(token)`` and ``bridge.server.stop()``.
    """
    server = BridgeServer(host, port, queue_depth=queue_depth).start()
    bridge = Bridge(server)
    token = RE.subscribe(BridgeCallback(bridge, detectors=detectors))
    return bridge, token
