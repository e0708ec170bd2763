"""Real-time ticks: the internal source on its own thread, with the same IDs and skips."""

from __future__ import annotations

import asyncio
import sys
import threading

import pytest

from trainstamp.timing import PeriodLoop, TimerModel
from trainstamp.timing._core import parse_source
from trainstamp.timing._realtime import RealtimeInternalSource, apply_realtime, sleep_until_blocking
from trainstamp.timing._sources import make_source
from trainstamp.timing._timer import Timer


class Sink:
    def __init__(self) -> None:
        self.ticks: list[tuple[int, int, str]] = []

    def on_id(self, train_id: int, t_ns: int) -> None:
        # delivered on the event loop's thread, never the tick thread
        self.ticks.append((train_id, t_ns, threading.current_thread().name))

    def on_bad_message(self, reason: str) -> None:
        raise AssertionError(reason)

    def on_status(self, text: str) -> None:
        pass


async def _ticks(source: RealtimeInternalSource, sink: Sink, n: int) -> None:
    task = asyncio.create_task(source.run())
    try:
        async with asyncio.timeout(30):
            while len(sink.ticks) < n:
                await asyncio.sleep(0.005)
    finally:
        await source.close()
        async with asyncio.timeout(10):
            await task


def test_consecutive_ids_on_the_loop_thread_and_what_was_granted():
    sink = Sink()
    source = RealtimeInternalSource(sink, PeriodLoop(10.0), start_id=5000)
    before = sys.getswitchinterval()
    try:
        asyncio.run(_ticks(source, sink, 5))
    finally:
        sys.setswitchinterval(before)
    ids = [t[0] for t in sink.ticks]
    assert ids[0] == 5000 and ids == sorted(set(ids))  # consecutive, or skipped forward
    assert all(b[1] > a[1] for a, b in zip(sink.ticks, sink.ticks[1:], strict=False))
    assert {t[2] for t in sink.ticks} == {threading.main_thread().name}
    assert source.granted.startswith(("SCHED_FIFO priority", "normal scheduling"))


def test_a_held_up_ticker_skips_whole_periods_with_their_ids():
    clock = [0]
    source = RealtimeInternalSource(Sink(), PeriodLoop(10.0), mono_ns=lambda: clock[0])
    clock[0] = 35_000_000  # 3.5 periods after the first deadline (0)
    # the next deadline (10 ms) is 25 ms behind: two whole periods skipped, IDs with them
    assert source._advance(0, 100) == (30_000_000, 103)


def test_blocking_sleep_never_wakes_early():
    clock = iter([0, 0, 50, 100, 120])
    assert sleep_until_blocking(100, spin_ns=1000, clock=lambda: next(clock)) == 100


def test_make_source_gives_the_realtime_source_only_when_asked():
    period = PeriodLoop(100.0)
    internal = parse_source("local:internal")
    assert type(make_source(internal, Sink(), period)).__name__ == "InternalSource"
    assert isinstance(make_source(internal, Sink(), period, realtime_priority=10),
                      RealtimeInternalSource)


def test_the_refusal_is_said_not_raised(monkeypatch):
    import os

    def refuse(*args):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "sched_setscheduler", refuse)
    before = sys.getswitchinterval()
    try:
        assert apply_realtime(20) == ("normal scheduling: SCHED_FIFO priority 20 refused "
                                      "(Operation not permitted)")
    finally:
        sys.setswitchinterval(before)


@pytest.mark.parametrize("period_ms", [10.0])
def test_a_timer_on_the_realtime_source_goes_on(period_ms):
    from functools import partial

    async def main():
        model = TimerModel("local:internal", period_ms)
        timer = Timer(model, source_factory=partial(make_source, realtime_priority=10))
        ticks: list = []
        timer.listeners.append(ticks.append)
        timer.start()
        try:
            async with asyncio.timeout(30):
                while len(ticks) < 5:
                    await asyncio.sleep(0.005)
        finally:
            await timer.stop()
        return ticks

    before = sys.getswitchinterval()
    try:
        ticks = asyncio.run(main())
    finally:
        sys.setswitchinterval(before)
    ids = [t.train_id for t in ticks]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)


def test_the_cli_priority_is_checked():
    import argparse

    from trainstamp.timing._realtime import rt_priority_arg

    assert rt_priority_arg("20") == 20
    for bad in ("0", "100", "x", "-1", ""):
        with pytest.raises(argparse.ArgumentTypeError):
            rt_priority_arg(bad)
