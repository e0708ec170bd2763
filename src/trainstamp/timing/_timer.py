"""The async Timer: runs a source and drives the pure :class:`TimerModel`.

After the seed's Timer/Model split: :class:`~trainstamp.timing.TimerModel` holds the
logic (state, counters, ticks, the missed-period rule), and :class:`Timer` only does
what needs an event loop. It opens the source (INIT) and runs it (ON). Next to the
source it runs a watchdog that applies the missed-period rule. It catches the failure
of either one (UNKNOWN) and resets, optionally by itself with capped exponential
backoff. Ticks go to the ``listeners`` (the IOC, the broadcaster), which play the part
of the seed's ``ITimer`` interface.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from trainstamp.timing._core import PeriodLoop, Source, Tick
from trainstamp.timing._model import Fault, RateLimit, State, TimerModel
from trainstamp.timing._sources import (
    Sink,
    SourceSilent,
    SourceUnavailable,
    TrainSource,
    make_source,
)

log = logging.getLogger(__name__)

SourceFactory = Callable[[Source, Sink, PeriodLoop], TrainSource]


class Timer:
    """Run ``model``'s source; call every listener with each new :class:`Tick`.

    ``on_change()`` is called whenever state, status or a counter changed. With
    ``auto_reset`` a failed source is reset after ``backoff_initial`` seconds, doubling
    up to ``backoff_max``; the backoff starts over once the source has stayed ON for
    ``backoff_max`` seconds. Bad messages are logged through a :class:`RateLimit`
    (the first few, then a summary line per interval); the counter stays exact.
    """

    def __init__(self, model: TimerModel, *, auto_reset: bool = True,
                 backoff_initial: float = 1.0, backoff_max: float = 30.0,
                 on_change: Callable[[], None] | None = None,
                 source_factory: SourceFactory = make_source,
                 log_limit: RateLimit | None = None,
                 mono_ns: Callable[[], int] = time.monotonic_ns) -> None:
        self.model = model
        self.auto_reset = auto_reset
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.listeners: list[Callable[[Tick], None]] = []
        self.on_change = on_change or (lambda: None)
        self.source_factory = source_factory
        self.source: TrainSource | None = None
        self.log_limit = log_limit or RateLimit()
        self._mono = mono_ns
        self._alive_ns = 0  # monotonic time of going ON, or of the last tick since
        self._recheck = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    # lifecycle
    def start(self) -> None:
        """Initialize from INIT in the background."""
        if self._task is not None and not self._task.done():
            raise RuntimeError("timer already running")
        self._task = asyncio.get_running_loop().create_task(self._lifecycle(),
                                                            name="timeserver-timer")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._log_held_back(force=True)

    async def reset(self) -> None:
        """The seed's reset event: shut the source down, go to INIT, initialize again."""
        await self.stop()
        self.model.reset()
        self.on_change()
        self.start()

    async def _lifecycle(self) -> None:
        delay = self.backoff_initial
        while True:
            on_for = await self._run_once()
            if not self.auto_reset:
                return
            if on_for >= self.backoff_max:
                delay = self.backoff_initial
            self.model.state_text = f"{self.model.state_text} (auto reset in {delay:g} s)"
            self.on_change()
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.backoff_max)
            self.model.reset(automatic=True)
            self.on_change()

    async def _run_once(self) -> float:
        """INIT -> ON -> (failure) UNKNOWN; return how long it stayed ON, in s."""
        model = self.model
        source_spec = model.opening()  # from here on SOURCE puts are refused
        source = self.source = self.source_factory(source_spec, self, model.period)
        on_since: float | None = None
        fault = Fault.COMM
        try:
            await source.open()
            model.initialized()
            on_since = time.monotonic()
            self._alive_ns = self._mono()
            self.on_change()
            log.info("timeserver ON from %s", source_spec.uri)
            await self._run_and_watch(source, source_spec.uri)
        except asyncio.CancelledError:
            raise
        except SourceSilent as exc:
            fault = Fault.TIMEOUT
            model.error(str(exc), fault)
        except SourceUnavailable as exc:
            model.error(str(exc), fault)
        except Exception as exc:  # any source failure -> UNKNOWN, never a dead IOC
            log.exception("timeserver source %s failed", source_spec.uri)
            model.error(f"{source_spec.uri}: {exc.__class__.__name__}: {exc}", fault)
        finally:
            with contextlib.suppress(Exception):
                await source.close()
        self._log_held_back(force=True)
        log.warning("timeserver UNKNOWN (%s): %s", fault.value, model.status)
        self.on_change()
        return 0.0 if on_since is None else time.monotonic() - on_since

    async def _run_and_watch(self, source: TrainSource, uri: str) -> None:
        """Run the source and the missed-period watchdog until either fails."""
        tasks = [asyncio.ensure_future(source.run()), asyncio.ensure_future(self._watch())]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        for task in tasks:
            if task in done and not task.cancelled() and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]
        raise SourceUnavailable(f"{uri}: source stopped")

    async def _watch(self) -> None:
        """The missed-period rule: raise :class:`SourceSilent` once the source has
        delivered no new ID for ``model.silence_limit_ns()``."""
        while True:
            self._recheck.clear()
            silent = self._mono() - self._alive_ns
            limit = self.model.silence_limit_ns()
            if silent >= limit:
                raise SourceSilent(self.model.silence_message(silent))
            # Wake at the deadline (ticks since then move it: check again), or when
            # the limit itself changes.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout((limit - silent) / 1e9):
                    await self._recheck.wait()

    def limits_changed(self) -> None:
        """PERIOD_SET or MISSED_PERIODS changed: the watchdog recomputes its deadline."""
        self._recheck.set()

    # Sink: called by the source
    def on_id(self, train_id: int, t_ns: int) -> None:
        model = self.model
        discontinuities, bad = model.discontinuities, model.bad_messages
        tick = model.on_id(train_id, t_ns)
        if model.bad_messages != bad:  # ID 0: no train
            self._log_bad(model.status)
            self.on_change()
        if tick is None:
            return
        self._alive_ns = self._mono()
        for listener in self.listeners:
            try:
                listener(tick)
            except Exception:  # one broken consumer must not stop the ticks
                log.exception("tick listener %r failed", listener)
        if model.discontinuities != discontinuities:
            self.on_change()
        self._log_held_back()

    def on_bad_message(self, reason: str) -> None:
        self.model.on_bad_message(reason)
        self._log_bad(reason)
        self.on_change()

    def on_status(self, text: str) -> None:
        if self.model.state != State.UNKNOWN:
            self.model.state_text = text
            self.on_change()

    # rate-limited logging of bad messages
    def _log_bad(self, reason: str) -> None:
        now = self._mono()
        self._log_held_back(now=now)
        if self.log_limit.hit(now):
            log.warning("timeserver bad message #%d: %s", self.model.bad_messages, reason)

    def _log_held_back(self, *, force: bool = False, now: int | None = None) -> None:
        held = self.log_limit.summary(self._mono() if now is None else now, force=force)
        if held:
            log.warning("timeserver: %d more bad messages not logged (%d in total so far)",
                        held, self.model.bad_messages)

