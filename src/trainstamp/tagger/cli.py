"""``trainstamp emulate tagger`` and ``trainstamp ioc tagger``.

- ``emulate``: the tagger emulator (:mod:`trainstamp.tagger._emulator`) on port 41101.
- ``ioc``: one process with the tag-link client, the Pyro5 server (port 23000) and the
  caproto IOC (prefix ``TT:``), all on the same tag stream.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from trainstamp import _cli_types as types

DEFAULT_TAGGER = "tcp://127.0.0.1:41101"
DEFAULT_PYRO_PORT = 23000


def _floats(text: str, n: int, what: str) -> list[float]:
    parts = text.split(":")
    if len(parts) != n:
        raise argparse.ArgumentTypeError(f"{what} needs {n} ':'-separated values, got {text!r}")
    try:
        return [float(p) for p in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{what}: not numbers in {text!r}") from None


def emulate(argv: Sequence[str] | None = None) -> int:
    """Run the tagger emulator until interrupted."""
    from trainstamp.tagger._emulator import DEFAULT_PORT, MAX_LAG_S, TaggerEmulator
    from trainstamp.tagger._settings import TaggerSettings

    p = argparse.ArgumentParser(prog="trainstamp emulate tagger",
                                description="Time-tagger emulator streaming tag blocks over TCP.")
    p.add_argument("--bind", default="127.0.0.1", help="address to listen on")
    p.add_argument("--port", type=types.port, default=DEFAULT_PORT, help="TCP port (41101)")
    p.add_argument("--trains", default=None,
                   help="tcp://host:port of the train-ID feed; one marker tag per train")
    p.add_argument("--channels", type=types.positive_int, default=8, help="number of input channels (8)")
    p.add_argument("--marker-channel", type=int, default=None,
                   help="channel of the marker tags (default: channels + 1)")
    p.add_argument("--serial", default="EMU-TT-0001")
    p.add_argument("--seed", type=int, default=None, help="random seed")
    p.add_argument("--test-signal", type=int, action="append", default=[], metavar="CH",
                   help="enable the 0.8 MHz test signal on CH (repeatable)")
    p.add_argument("--poisson", action="append", default=[], metavar="CH:RATE_HZ",
                   type=lambda t: _floats(t, 2, "--poisson"))
    p.add_argument("--pair", action="append", default=[],
                   metavar="A:B:RATE_HZ:DELAY_PS:JITTER_PS",
                   type=lambda t: _floats(t, 5, "--pair"))
    p.add_argument("--antibunched", action="append", default=[],
                   metavar="A:B:RATE_HZ:LIFETIME_PS",
                   type=lambda t: _floats(t, 4, "--antibunched"))
    p.add_argument("--block-ms", type=types.positive_float, default=5.0, help="block period (5 ms)")
    p.add_argument("--backlog-mb", type=types.positive_float, default=64.0,
                   help="send queue size before overflow (64 MB)")
    p.add_argument("--max-lag-s", type=types.positive_float, default=MAX_LAG_S,
                   help="how far generation may fall behind real time (a starved CPU) "
                        f"before the gap is skipped as an overflow ({MAX_LAG_S:g} s)")
    p.add_argument("--replay-s", type=types.finite_float, default=0.0,
                   help="benchmark mode: generate this many seconds once and replay them")
    p.add_argument("-v", "--verbose", action="store_true")
    args = p.parse_args(list(sys.argv[1:] if argv is None else argv))
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING)
    try:
        settings = TaggerSettings(args.channels, args.marker_channel, args.serial)
        for ch in args.test_signal:
            settings.set_test_signal(ch, True)
        for ch, rate in args.poisson:
            settings.set_source(int(ch), {"kind": "poisson", "rate": rate})
        for a, b, rate, delay, jitter in args.pair:
            settings.set_source(int(a), {"kind": "pair", "partner": int(b), "rate": rate,
                                         "delay_ps": delay, "jitter_ps": jitter})
        for a, b, rate, life in args.antibunched:
            settings.set_source(int(a), {"kind": "antibunched", "partner": int(b),
                                         "rate": rate, "lifetime_ps": life})
        emu = TaggerEmulator(args.bind, args.port, settings=settings, trains=args.trains,
                             block_s=args.block_ms / 1000.0,
                             backlog_bytes=int(args.backlog_mb * (1 << 20)), seed=args.seed,
                             replay_s=args.replay_s, max_lag_s=args.max_lag_s)
        host, port = emu.bind()
    except (ValueError, OSError) as exc:
        print(f"trainstamp emulate tagger: {exc}", file=sys.stderr)
        return 2
    print(f"tagger emulator {settings.serial} listening on tcp://{host}:{port} "
          f"(channels 1..{settings.n_channels}, marker channel {settings.marker_channel})",
          flush=True)
    try:
        emu.serve()
    except KeyboardInterrupt:
        pass
    finally:
        emu.stop()
    return 0


def ioc(argv: Sequence[str] | None = None) -> int:
    """Run the tagger server: tag link + Pyro5 + caproto IOC in one process."""
    from caproto.server import run, template_arg_parser

    from trainstamp.tagger._instrument import Instrument
    from trainstamp.tagger._ioc import ioc_doc, make_ioc_class, pva_mirror
    from trainstamp.tagger._pyro import TaggerRPC, start_daemon
    from trainstamp.tagger._stream import TagService

    argv = list(sys.argv[1:] if argv is None else argv)
    parser, split_args = template_arg_parser(default_prefix="TT:", desc=ioc_doc(), argv=argv,
                                             supported_async_libs=["asyncio"])
    parser.add_argument("--tagger", default=DEFAULT_TAGGER,
                        help=f"tcp://host:port of the tagger ({DEFAULT_TAGGER})")
    parser.add_argument("--trains", default=None, help="tcp://host:port of the train-ID feed")
    parser.add_argument("--marker-channel", type=int, default=None,
                        help="override the marker channel the tagger announces")
    parser.add_argument("--pyro-host", default="127.0.0.1",
                        help="Pyro5 bind address (127.0.0.1; see docs/tagger.md on exposure)")
    parser.add_argument("--pyro-port", type=types.port_or_zero, default=DEFAULT_PYRO_PORT,
                        help="Pyro5 port (23000); 0 disables the Pyro5 server")
    parser.add_argument("--pyro-client-mib", type=types.positive_float, default=256.0,
                        help="measurement memory one Pyro5 client may hold (256 MiB)")
    parser.add_argument("--pyro-total-mib", type=types.positive_float, default=1024.0,
                        help="measurement memory all Pyro5 clients may hold (1024 MiB)")
    parser.add_argument("--channels", type=types.positive_int, default=8, help="channel PV groups (8)")
    parser.add_argument("--pva", action=argparse.BooleanOptionalAction, default=True,
                        help="also serve every PV over PV Access (p4p; EPICS_PVA* variables "
                             "apply), train IDs as uint64 (default: on)")
    args = parser.parse_args(argv)
    ioc_options, run_options = split_args(args)
    try:
        service = TagService(args.tagger, args.trains, marker_channel=args.marker_channel)
    except ValueError as exc:
        print(f"trainstamp ioc tagger: {exc}", file=sys.stderr)
        return 2
    instrument = Instrument(service)
    service.start()
    rpc, daemon, uri = None, None, ""
    if args.pyro_port:
        rpc = TaggerRPC(service, instrument)
        rpc.max_client_bytes = int(args.pyro_client_mib * 2**20)
        rpc.max_total_bytes = int(args.pyro_total_mib * 2**20)
        try:
            daemon, uri, _ = start_daemon(rpc, args.pyro_host, args.pyro_port)
        except OSError as exc:
            print(f"trainstamp ioc tagger: Pyro5 on {args.pyro_host}:{args.pyro_port}: {exc}",
                  file=sys.stderr)
            service.stop()
            return 2
        print(f"Pyro5 server: {uri} (timetaggerrpc clients: "
              f"{uri.replace('PYRO:TimeTagger@', 'PYRO:TimeTaggerRPC@', 1)})", flush=True)
    ioc_cls = make_ioc_class(args.channels)
    server = ioc_cls(service=service, instrument=instrument, rpc=rpc, pyro_uri=uri,
                     **ioc_options)
    mirror = pva_mirror(server) if args.pva else None
    if mirror is not None:
        run_options["startup_hook"] = mirror.start
    try:
        run(server.pvdb, **run_options)
    except KeyboardInterrupt:
        pass
    finally:
        if mirror is not None:
            mirror.stop()
        if daemon is not None:
            daemon.shutdown()
        service.stop()
    return 0


if __name__ == "__main__":
    sys.exit(ioc())
