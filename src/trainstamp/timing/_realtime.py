"""Real-time ticks: the internal source on a thread of its own, SCHED_FIFO where allowed.

The event loop's ticks (:class:`~trainstamp.timing._sources.InternalSource`) leave late
when the loop is busy serving Channel Access or the machine is loaded: the tick waits
for the loop, and the loop for a CPU. :class:`RealtimeInternalSource` keeps the same
deadlines and IDs, but sleeps to each deadline on a dedicated thread, stamps the tick
there on waking, and only then hands it to the loop. Where the process may (root, or
``CAP_SYS_NICE``, or an ``rtprio`` limit), that thread runs ``SCHED_FIFO``, so it gets
a CPU as soon as its sleep ends; and Python's GIL switch interval is shortened so the
thread also gets the interpreter within a fraction of a millisecond.

The sleep and the time stamp itself are taken without the GIL: a numba function calls
libc's ``clock_nanosleep`` (absolute ``CLOCK_MONOTONIC`` deadline) and reads the wall
clock the moment it returns. A tick's stamp therefore does not wait for the interpreter
(which a thread of normal priority may hold while it is itself waiting for a CPU);
only its delivery to the event loop does.

It is opt-in (``trainstamp ioc timeserver --realtime [PRIORITY]``): without the flag
nothing changes, and where SCHED_FIFO is refused the source runs the thread at normal
priority and says so in the log. :func:`apply_realtime` tells what was granted.
"""

from __future__ import annotations

import asyncio
import ctypes
import functools
import logging
import os
import sys
import threading
import time
from collections.abc import Callable

import numpy as np

from trainstamp.timing._core import MAX_TRAIN_ID, PeriodLoop, first_internal_id
from trainstamp.timing._sources import InternalSource, Sink, SourceUnavailable

log = logging.getLogger(__name__)

__all__ = ["DEFAULT_RT_PRIORITY", "RealtimeInternalSource", "apply_realtime"]

#: The SCHED_FIFO priority asked for by default (1..99; kernel threads use 50 and up).
DEFAULT_RT_PRIORITY = 20
#: The GIL switch interval (s) in real-time mode; Python's default is 5 ms.
RT_SWITCH_INTERVAL_S = 0.0002
#: The last part of each wait is spent spinning rather than sleeping.
RT_SPIN_NS = 150_000


def rt_priority_arg(text: str) -> int:
    """A command-line SCHED_FIFO priority, 1..99."""
    import argparse

    if not text.strip().isdigit() or not 1 <= int(text) <= 99:
        raise argparse.ArgumentTypeError(f"{text!r} is not a SCHED_FIFO priority 1..99")
    return int(text)


def apply_realtime(priority: int) -> str:
    """Ask for SCHED_FIFO at ``priority`` for the calling thread; say what was granted."""
    sys.setswitchinterval(RT_SWITCH_INTERVAL_S)
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))
    except AttributeError:
        return "normal scheduling: this platform has no SCHED_FIFO"
    except OSError as exc:  # PermissionError without CAP_SYS_NICE or an rtprio limit
        return f"normal scheduling: SCHED_FIFO priority {priority} refused ({exc.strerror})"
    return f"SCHED_FIFO priority {priority}"


def _libc_clock_calls():
    """libc's clock_nanosleep and clock_gettime as ctypes functions (None if missing)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        nanosleep, gettime = libc.clock_nanosleep, libc.clock_gettime
    except (OSError, AttributeError):
        return None
    nanosleep.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p]
    nanosleep.restype = ctypes.c_int
    gettime.argtypes = [ctypes.c_int, ctypes.c_void_p]
    gettime.restype = ctypes.c_int
    return nanosleep, gettime


@functools.cache
def nogil_sleep():
    """``sleep(deadline_ns, buf) -> (monotonic_ns, wall_ns)`` at wake-up, run without
    the GIL; None where libc's clock calls are not available.

    Compiled once per process (about a second) on the first call; numba cannot cache
    a function holding ctypes pointers on disk. :class:`RealtimeInternalSource`
    calls it when it is made, so no tick waits for the compiler."""
    calls = _libc_clock_calls()
    if calls is None:
        return None
    import numba

    nanosleep, gettime = calls
    monotonic, realtime, abstime = 1, 0, 1  # CLOCK_MONOTONIC, CLOCK_REALTIME, TIMER_ABSTIME

    @numba.njit("UniTuple(int64, 2)(int64, int64[::1])", nogil=True)
    def sleep(deadline_ns, buf):  # pragma: no cover - compiled
        buf[0] = deadline_ns // 1_000_000_000
        buf[1] = deadline_ns % 1_000_000_000
        while nanosleep(monotonic, abstime, buf.ctypes.data, 0) != 0:
            pass  # EINTR: sleep again to the same absolute deadline
        gettime(monotonic, buf[2:].ctypes.data)
        gettime(realtime, buf[4:].ctypes.data)
        return buf[2] * 1_000_000_000 + buf[3], buf[4] * 1_000_000_000 + buf[5]

    return sleep


def sleep_until_blocking(deadline_ns: int, *, spin_ns: int = RT_SPIN_NS,
                         clock: Callable[[], int] = time.monotonic_ns) -> int:
    """Block until monotonic ``deadline_ns`` (sleep, then spin the last ``spin_ns``);
    return the clock reading at wake-up."""
    remaining = deadline_ns - clock()
    if remaining > spin_ns:
        time.sleep((remaining - spin_ns) / 1e9)
    while (now := clock()) < deadline_ns:
        pass
    return now


class RealtimeInternalSource(InternalSource):
    """``local:internal`` ticked from a dedicated (SCHED_FIFO where allowed) thread.

    Same IDs and deadlines as :class:`~trainstamp.timing._sources.InternalSource`,
    including the skip of whole periods the thread was held up for. ``granted`` says
    what scheduling the thread got, once it runs.
    """

    def __init__(self, sink: Sink, period: PeriodLoop, *,
                 priority: int = DEFAULT_RT_PRIORITY, **kwargs) -> None:
        kwargs.setdefault("spin_ns", RT_SPIN_NS)
        super().__init__(sink, period, **kwargs)
        self.priority = priority
        self.granted = ""
        self._stop = threading.Event()
        self._nogil_sleep = nogil_sleep() if self._real_clocks() else None

    def _real_clocks(self) -> bool:
        # Injected clocks (tests) get the plain Python sleep.
        return self._mono is time.monotonic_ns and self._wall is time.time_ns

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        ended: asyncio.Future[None] = loop.create_future()

        def end(exc: BaseException | None) -> None:
            if not ended.done():
                ended.set_result(None) if exc is None else ended.set_exception(exc)

        def ticker() -> None:
            try:
                self.granted = apply_realtime(self.priority)
                log.info("real-time ticks: %s", self.granted)
                self._tick(lambda tid, t_ns: loop.call_soon_threadsafe(self.sink.on_id, tid, t_ns))
                loop.call_soon_threadsafe(end, None)
            except BaseException as exc:  # a failure of the source, reported by run()
                loop.call_soon_threadsafe(end, exc)

        self._stop.clear()
        thread = threading.Thread(target=ticker, name="timeserver-ticks", daemon=True)
        thread.start()
        try:
            await ended  # the thread ends only on close() or a failure (raised here)
        finally:
            self._stop.set()
            thread.join(1.0)

    def _tick(self, deliver: Callable[[int, int], None]) -> None:
        train_id = first_internal_id(self._wall()) if self.start_id is None else self.start_id
        deadline = self._mono()
        nogil_sleep = self._nogil_sleep
        buf = np.zeros(6, np.int64)
        while not self._stop.is_set():
            if train_id > MAX_TRAIN_ID:
                raise SourceUnavailable("internal source ran past train ID 2**64-1")
            if nogil_sleep is not None:
                woke, stamp = nogil_sleep(deadline, buf)
            else:
                woke = sleep_until_blocking(deadline, spin_ns=self.spin_ns, clock=self._mono)
                stamp = self._wall()
            deliver(train_id, stamp)
            if self.observer is not None:
                self.observer(train_id, deadline, woke)
            deadline, train_id = self._advance(deadline, train_id)

    async def close(self) -> None:
        self._stop.set()
