"""``trainstamp bridge --port P``: a karabo-bridge server attached to a running beamline.

It reads the beamline configuration (``--config``, or the default one) for the
prefixes and names of the TimeServer, the detector and the tagger, and the CA client
environment (``TRAINSTAMP_KEEP_EPICS_ENV=1`` keeps one already set), takes the ticks
from the broadcaster the TimeServer IOC publishes, the frames from the detector's
capture file and the counts per train from the tagger server the tagger IOC publishes
(``--no-tagger``: none), and serves one message per train on ``tcp://BIND:P`` (REP, protocol 2.2) until
interrupted. A status line with the counters goes to the log every ``--stats-period``
seconds.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Sequence

from trainstamp._cli_types import port, positive_float, positive_int

log = logging.getLogger("trainstamp.bridge")


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="trainstamp bridge", description=(
        "Serve one karabo-bridge message per train (protocol 2.2, REQ/REP): the "
        "TimeServer tick and the detector frame of each train, with its train ID."))
    ap.add_argument("--port", type=port, required=True, help="TCP port to serve on")
    ap.add_argument("--bind", default="127.0.0.1",
                    help="interface to bind (default 127.0.0.1; 0.0.0.0 for every one)")
    ap.add_argument("--queue", type=positive_int, default=1, metavar="N",
                    help="trains kept for a slow client (default 1: always the newest)")
    ap.add_argument("--config", default=None, help="beamline configuration (TOML)")
    ap.add_argument("--timeserver", default=None, metavar="PREFIX",
                    help="TimeServer IOC prefix (default: the configuration's)")
    ap.add_argument("--detector", default=None, metavar="PREFIX",
                    help="detector IOC prefix (default: the configuration's)")
    ap.add_argument("--tagger", default=None, metavar="PREFIX",
                    help="tagger IOC prefix (default: the configuration's)")
    ap.add_argument("--no-tagger", action="store_true", help="no tagger counts")
    ap.add_argument("--click-channel", type=positive_int, default=1, metavar="N",
                    help="tagger channel counted per train (default 1)")
    ap.add_argument("--max-wait", type=positive_float, default=1.0, metavar="S",
                    help="seconds a train with its tick and frame waits for its counts "
                         "(default 1)")
    ap.add_argument("--poll-period", type=positive_float, default=0.1, metavar="S",
                    help="seconds between reads of the capture file (default 0.1)")
    ap.add_argument("--stats-period", type=positive_float, default=10.0, metavar="S",
                    help="seconds between status lines (default 10)")
    ap.add_argument("--timeout", type=positive_float, default=20.0, metavar="S",
                    help="seconds to wait for the IOCs at start (default 20)")
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    from trainstamp.config import load_config
    from trainstamp.session import apply_client_env

    config = load_config(args.config)
    apply_client_env(config)

    from ophyd import EpicsSignalRO

    from trainstamp.bridge._attach import Attachment
    from trainstamp.bridge._server import Bridge, BridgeServer
    from trainstamp.detector._pvnames import CAPTURE_FULL_PATH
    from trainstamp.timing._pvnames import PV

    ts_prefix = args.timeserver or config.timeserver.prefix
    det_prefix = args.detector or config.detector.prefix
    tt_prefix = args.tagger or config.tagger.prefix
    uri_pv = EpicsSignalRO(ts_prefix + PV.BROADCAST_URI, string=True, name="broadcast_uri")
    path_pv = EpicsSignalRO(det_prefix + CAPTURE_FULL_PATH, string=True, auto_monitor=True,
                            name="capture_full_path")
    for sig in (uri_pv, path_pv):
        sig.wait_for_connection(timeout=args.timeout)
    tagger_uri = None
    if not args.no_tagger:
        pyro_pv = EpicsSignalRO(tt_prefix + "PYRO_URI", string=True, name="pyro_uri")
        pyro_pv.wait_for_connection(timeout=args.timeout)
        tagger_uri = pyro_pv.get() or None
        if tagger_uri is None:
            print(f"trainstamp bridge: the tagger {tt_prefix} publishes no Pyro5 server "
                  "(PYRO_URI is empty); --no-tagger to go without", file=sys.stderr)
            return 1
    uri = uri_pv.get()
    if not uri:
        print(f"trainstamp bridge: the TimeServer {ts_prefix} publishes no broadcaster "
              "(BROADCAST_URI is empty)", file=sys.stderr)
        return 1

    try:
        server = BridgeServer(args.bind, args.port, queue_depth=args.queue).start()
    except OSError as exc:
        print(f"trainstamp bridge: {exc}", file=sys.stderr)
        return 1
    bridge = Bridge(server, max_wait_s=args.max_wait)
    attachment = Attachment(bridge, uri, path_pv.get, timeserver_name=config.timeserver.name,
                            detector_name=config.detector.name, tagger_uri=tagger_uri,
                            tagger_name=config.tagger.name, click_channel=args.click_channel,
                            poll_period_s=args.poll_period).start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    print(f"bridge ready on {server.endpoint}: sources {sorted(bridge.sources)}; ticks from "
          f"{uri}", flush=True)
    try:
        while not stop.wait(args.stats_period):
            log.info("%s", bridge.stats())
    except KeyboardInterrupt:
        pass
    finally:
        attachment.stop()
        server.stop()
        log.info("stopped: %s", bridge.stats())
    return 0
