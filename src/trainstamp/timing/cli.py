"""Command-line entry points of the timing subsystem.

- ``trainstamp emulate trains``: a standalone train-ID TCP server (the internal source
  plus the broadcaster), what a facility's train-ID server would be.
- ``trainstamp ioc timeserver``: the TimeServer IOC.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
import time
from collections.abc import Sequence

from trainstamp._cli_types import period_ms, port_or_zero, positive_int, train_id
from trainstamp.timing._broadcast import DEFAULT_MAX_BUFFER, Broadcaster
from trainstamp.timing._core import PeriodLoop, first_internal_id
from trainstamp.timing._pvnames import DEFAULT_BROADCAST_PORT
from trainstamp.timing._sources import InternalSource


class _BroadcastSink:
    """Sink of the standalone server: every ID goes straight to the broadcaster."""

    def __init__(self, broadcaster: Broadcaster) -> None:
        self.broadcaster = broadcaster

    def on_id(self, train_id: int, t_ns: int) -> None:
        self.broadcaster.broadcast(train_id)

    def on_bad_message(self, reason: str) -> None:  # pragma: no cover - internal source
        pass

    def on_status(self, text: str) -> None:
        print(text, flush=True)


async def _run_until_signalled(main: asyncio.Future) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, main.cancel)
    with contextlib.suppress(asyncio.CancelledError):
        await main


async def _emulate(args: argparse.Namespace) -> None:
    broadcaster = await Broadcaster(args.bind, args.port, max_buffer=args.client_buffer).start()
    start = first_internal_id(time.time_ns()) if args.start is None else args.start
    source = InternalSource(_BroadcastSink(broadcaster), PeriodLoop(args.period), start_id=start)
    print(f"serving train IDs on tcp://{args.bind}:{broadcaster.port} every {args.period:g} ms "
          f"from {start}", flush=True)
    try:
        await _run_until_signalled(asyncio.ensure_future(source.run()))
    finally:
        await broadcaster.stop()


def emulate(argv: Sequence[str]) -> int:
    """``trainstamp emulate trains``: serve train IDs over TCP like a facility server."""
    parser = argparse.ArgumentParser(
        prog="trainstamp emulate trains",
        description="A train-ID TCP server: counts at the set period on absolute deadlines "
                    "and sends each ID as decimal ASCII plus newline to every client.")
    parser.add_argument("--port", type=port_or_zero, default=DEFAULT_BROADCAST_PORT,
                        help=f"TCP port to serve on (default {DEFAULT_BROADCAST_PORT}; 0 picks one)")
    parser.add_argument("--period", type=period_ms, default=100.0,
                        help="period in ms (default 100, i.e. 10 Hz)")
    parser.add_argument("--start", type=train_id, default=None,
                        help="first train ID (default: derived from the wall clock, so a "
                             "restart never reuses an ID)")
    parser.add_argument("--bind", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1; 0.0.0.0 for all)")
    parser.add_argument("--client-buffer", type=positive_int, default=DEFAULT_MAX_BUFFER,
                        help="bytes queued per client before it is dropped "
                             f"(default {DEFAULT_MAX_BUFFER})")
    args = parser.parse_args(list(argv))
    try:
        asyncio.run(_emulate(args))
    except OSError as exc:
        print(f"trainstamp emulate trains: {exc}", file=sys.stderr)
        return 1
    return 0


def ioc(argv: Sequence[str]) -> int:
    """``trainstamp ioc timeserver``: the TimeServer IOC (see :mod:`._ioc`)."""
    from trainstamp.timing._ioc_main import main

    return main(argv)
