"""The async Timer: runs a source and drives the pure :class:`TimerModel`.

After the seed's Timer/Model split: :class:`~trainstamp.timing.TimerModel` holds the
logic (state, counters, ticks), and :class:`Timer` only does what needs an event loop:
it opens the source (INIT), runs it (ON), catches its failure (UNKNOWN), and resets,
optionally by itself with capped exponential backoff. Ticks go to the ``listeners``
(the IOC, the broadcaster), which play the part of the seed's ``ITimer`` interface.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from trainstamp.timing._core import PeriodLoop, Source, State, Tick, TimerModel
from trainstamp.timing._sources import Sink, SourceUnavailable, TrainSource, make_source

log = logging.getLogger(__name__)

SourceFactory = Callable[[Source, Sink, PeriodLoop], TrainSource]


class Timer:
    """Run ``model``'s source; call every listener with each new :class:`Tick`.

    ``on_change()`` is called whenever state, status or a counter changed. With
    ``auto_reset`` a failed source is reset after ``backoff_initial`` seconds, doubling
    up to ``backoff_max``; the backoff starts over once the source has stayed ON for
    ``backoff_max`` seconds.
    """

    def __init__(self, model: TimerModel, *, auto_reset: bool = True,
                 backoff_initial: float = 1.0, backoff_max: float = 30.0,
                 on_change: Callable[[], None] | None = None,
                 source_factory: SourceFactory = make_source) -> None:
        self.model = model
        self.auto_reset = auto_reset
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.listeners: list[Callable[[Tick], None]] = []
        self.on_change = on_change or (lambda: None)
        self.source_factory = source_factory
        self.source: TrainSource | None = None
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
            self.model.status = f"{self.model.status} (auto reset in {delay:g} s)"
            self.on_change()
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.backoff_max)
            self.model.reset()
            self.on_change()

    async def _run_once(self) -> float:
        """INIT -> ON -> (failure) UNKNOWN; return how long it stayed ON, in s."""
        model = self.model
        source = self.source = self.source_factory(model.source, self, model.period)
        on_since: float | None = None
        try:
            await source.open()
            model.initialized()
            on_since = time.monotonic()
            self.on_change()
            log.info("timeserver ON from %s", model.source.uri)
            await source.run()
            raise SourceUnavailable(f"{model.source.uri}: source stopped")
        except asyncio.CancelledError:
            raise
        except SourceUnavailable as exc:
            model.error(str(exc))
        except Exception as exc:  # any source failure -> UNKNOWN, never a dead IOC
            log.exception("timeserver source %s failed", model.source.uri)
            model.error(f"{model.source.uri}: {exc.__class__.__name__}: {exc}")
        finally:
            with contextlib.suppress(Exception):
                await source.close()
        log.warning("timeserver UNKNOWN: %s", model.status)
        self.on_change()
        return 0.0 if on_since is None else time.monotonic() - on_since

    # Sink: called by the source
    def on_id(self, train_id: int, t_ns: int) -> None:
        discontinuities = self.model.discontinuities
        tick = self.model.on_id(train_id, t_ns)
        if tick is None:
            return
        for listener in self.listeners:
            try:
                listener(tick)
            except Exception:  # one broken consumer must not stop the ticks
                log.exception("tick listener %r failed", listener)
        if self.model.discontinuities != discontinuities:
            self.on_change()

    def on_bad_message(self, reason: str) -> None:
        self.model.on_bad_message(reason)
        log.warning("timeserver bad message: %s", reason)
        self.on_change()

    def on_status(self, text: str) -> None:
        if self.model.state != State.UNKNOWN:
            self.model.status = text
            self.on_change()
