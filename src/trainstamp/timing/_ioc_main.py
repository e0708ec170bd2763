"""The TimeServer IOC's command line: ``trainstamp ioc timeserver [options]``.

Parses and checks the options (caproto's, and the TimeServer's own), then runs
:class:`~trainstamp.timing._ioc.TimeServerIOC`, with its PV Access mirror unless
``--no-pva``. Kept apart from the IOC so the PV group reads as one concern.
"""

from __future__ import annotations

import argparse
import logging
import socket
from collections.abc import Sequence
from textwrap import dedent

from caproto.server import run, template_arg_parser

from trainstamp._cli_types import period_ms, port_or_zero
from trainstamp.timing._core import parse_source
from trainstamp.timing._ioc import TimeServerIOC
from trainstamp.timing._model import DEFAULT_MISSED_PERIODS, check_missed_periods
from trainstamp.timing._pvnames import DEFAULT_BROADCAST_PORT, DEFAULT_PREFIX
from trainstamp.timing._realtime import DEFAULT_RT_PRIORITY, rt_priority_arg


def check_port_free(host: str, port: int) -> None:
    """Raise ``OSError`` if ``host:port`` cannot be listened on (clear error at start-up)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))


def main(argv: Sequence[str]) -> int:
    """``trainstamp ioc timeserver [caproto options] --source URI --period MS ...``."""
    parser, split_args = template_arg_parser(
        default_prefix=DEFAULT_PREFIX, desc=dedent(TimeServerIOC.__doc__ or ""),
        supported_async_libs=["asyncio"])
    parser.prog = "trainstamp ioc timeserver"

    def source_uri(text: str) -> str:
        try:
            return parse_source(text).uri
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    def missed(text: str) -> int:
        try:
            return check_missed_periods(int(text) if text.strip().isdigit() else text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    parser.add_argument("--source", type=source_uri, default="local:internal",
                        help="local:internal (default), local:x2timer, tcp://host:port "
                             "or ca://PVNAME")
    parser.add_argument("--period", type=period_ms, default=100.0,
                        help="period setpoint in ms (default 100); for tcp:// and ca:// "
                             "the source's expected period")
    parser.add_argument("--missed-periods", type=missed, default=DEFAULT_MISSED_PERIODS,
                        help="expected periods without a new train ID before the source "
                             f"counts as dead (default {DEFAULT_MISSED_PERIODS}; also the "
                             "PV MISSED_PERIODS)")
    parser.add_argument("--broadcast-port", type=port_or_zero, default=DEFAULT_BROADCAST_PORT,
                        help=f"TCP port re-broadcasting every tick (default "
                             f"{DEFAULT_BROADCAST_PORT}; 0 disables it)")
    parser.add_argument("--broadcast-bind", default="127.0.0.1",
                        help="address the broadcaster listens on (default 127.0.0.1; "
                             "0.0.0.0 for all interfaces)")
    parser.add_argument("--no-auto-reset", action="store_true",
                        help="stay UNKNOWN after a source failure until RESET is written")
    parser.add_argument("--pva", action=argparse.BooleanOptionalAction, default=True,
                        help="also serve every PV over PV Access (p4p; EPICS_PVA* variables "
                             "apply), ID as an exact uint64 (default: on)")
    parser.add_argument("--realtime", type=rt_priority_arg, nargs="?", const=DEFAULT_RT_PRIORITY,
                        default=None, metavar="PRIORITY",
                        help="local:internal ticks from a thread of its own, SCHED_FIFO at "
                             f"PRIORITY (1..99, default {DEFAULT_RT_PRIORITY}) where permitted "
                             "(the log says what was granted)")
    args = parser.parse_args(list(argv))
    ioc_options, run_options = split_args(args)
    # trainstamp's own INFO lines (ON from, real-time ticks) beside caproto's log
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("[%(levelname).1s %(asctime)s %(name)s] %(message)s"))
    logging.getLogger("trainstamp").addHandler(handler)
    logging.getLogger("trainstamp").setLevel(logging.INFO)
    if args.broadcast_port:
        try:
            check_port_free(args.broadcast_bind, args.broadcast_port)
        except OSError as exc:
            parser.exit(1, f"{parser.prog}: cannot broadcast on "
                           f"{args.broadcast_bind}:{args.broadcast_port}: {exc}\n")
    ioc = TimeServerIOC(source=args.source, period_ms=args.period,
                        broadcast_port=args.broadcast_port, broadcast_bind=args.broadcast_bind,
                        auto_reset=not args.no_auto_reset, missed_periods=args.missed_periods,
                        realtime_priority=args.realtime, **ioc_options)
    run_options.pop("module_name", None)
    if args.pva:
        run_options["startup_hook"] = ioc.pva_mirror().start
    try:
        run(ioc.pvdb, **run_options)
    finally:
        if ioc.pva is not None:
            ioc.pva.stop()
    return 0
