"""The async Timer driving the model: INIT -> ON, failure -> UNKNOWN, (auto) reset.

The sources here are small in-process stand-ins that only call the sink interface, so
the lifecycle runs without sockets; the real sources are exercised in tests/system.
"""

import asyncio
import time

from trainstamp.timing import Fault, PeriodLoop, State, TimerModel
from trainstamp.timing._sources import InternalSource, SourceUnavailable, TrainSource
from trainstamp.timing._timer import Timer

T0 = 1_795_000_000_000_000_000


class ScriptedSource(TrainSource):
    """Fails ``open`` for the first ``failures`` attempts, then sends IDs and dies."""

    attempts = 0

    def __init__(self, sink, failures: int, ids: list[int]) -> None:
        super().__init__(sink)
        self.failures, self.ids = failures, ids

    async def open(self) -> None:
        ScriptedSource.attempts += 1
        if ScriptedSource.attempts <= self.failures:
            raise SourceUnavailable(f"attempt {ScriptedSource.attempts} refused")

    async def run(self) -> None:
        for i, train_id in enumerate(self.ids):
            self.sink.on_id(train_id, T0 + i * 100_000_000)
            await asyncio.sleep(0)
        self.sink.on_bad_message("junk")
        raise RuntimeError("link lost")


async def _until(predicate, timeout: float = 5.0) -> None:
    async def poll() -> None:
        while not predicate():
            await asyncio.sleep(0.001)

    await asyncio.wait_for(poll(), timeout)


def _timer(failures: int, ids: list[int], **kwargs) -> tuple[Timer, list, list]:
    ScriptedSource.attempts = 0
    model = TimerModel("local:internal", 100.0)
    changes: list[State] = []
    timer = Timer(model, backoff_initial=0.01, backoff_max=0.04,
                  on_change=lambda: changes.append(model.state),
                  source_factory=lambda src, sink, period: ScriptedSource(sink, failures, ids),
                  **kwargs)
    ticks: list = []
    timer.listeners.append(ticks.append)
    return timer, ticks, changes


def test_auto_reset_retries_until_the_source_opens():
    async def main():
        timer, ticks, changes = _timer(failures=3, ids=[5, 6, 7], auto_reset=True)
        timer.start()
        await _until(lambda: len(ticks) == 3)
        await timer.stop()
        return timer, ticks, changes

    timer, ticks, changes = asyncio.run(main())
    assert ScriptedSource.attempts >= 4
    states = [s for i, s in enumerate(changes) if i == 0 or changes[i - 1] != s]
    # refused three times, each followed by an auto reset, then ON
    assert states[:7] == [State.UNKNOWN, State.INIT] * 3 + [State.ON]
    assert [t.train_id for t in ticks] == [5, 6, 7]
    assert ticks[-1].period_us == 100_000


def test_without_auto_reset_a_failure_stays_unknown_until_reset():
    async def main():
        timer, ticks, changes = _timer(failures=0, ids=[1, 2], auto_reset=False)
        timer.start()
        await _until(lambda: timer.model.state == State.UNKNOWN)
        assert "RuntimeError: link lost" in timer.model.status
        assert timer.model.bad_messages == 1
        await asyncio.sleep(0.05)
        assert timer.model.state == State.UNKNOWN  # nobody resets it
        await timer.reset()
        await _until(lambda: len(ticks) == 4)
        await timer.stop()
        return ticks

    ticks = asyncio.run(main())
    assert [t.train_id for t in ticks] == [1, 2, 1, 2]


# --- a source that stalls, or goes quiet, is not ON for long ---------------------------



def test_a_stalled_internal_loop_goes_unknown_then_auto_reset_brings_it_back():
    """The internal source's loop stalls (its clock stops, so its next deadline never
    comes); the watchdog sees no ID for 3 periods and sends the TimeServer UNKNOWN."""
    made: list[InternalSource] = []

    def factory(src, sink, period: PeriodLoop):
        frozen = len(made) == 0
        source = InternalSource(sink, period,
                                mono_ns=(lambda: 0) if frozen else time.monotonic_ns)
        made.append(source)
        return source

    async def main():
        model = TimerModel("local:internal", 10.0)
        states: list[tuple[State, Fault]] = []
        timer = Timer(model, backoff_initial=0.01, backoff_max=0.04, source_factory=factory,
                      on_change=lambda: states.append((model.state, model.fault)))
        ticks: list = []
        timer.listeners.append(ticks.append)
        timer.start()
        await _until(lambda: model.state == State.UNKNOWN)
        assert model.fault is Fault.TIMEOUT
        assert "no train ID for" in model.status and "3 missed periods of 10 ms" in model.status
        assert len(ticks) == 1  # the stalled loop's only ID
        await _until(lambda: len(ticks) >= 3)  # the auto reset: a fresh loop ticks again
        assert model.state == State.ON and model.fault is Fault.NONE
        await timer.stop()
        return model

    model = asyncio.run(main())
    assert model.discontinuities == 1  # the IDs skipped while it was stalled


class QuietSource(TrainSource):
    """Sends the given IDs (0 included), then stays connected and quiet."""

    def __init__(self, sink, ids) -> None:
        super().__init__(sink)
        self.ids = ids

    async def run(self) -> None:
        for i, train_id in enumerate(self.ids):
            self.sink.on_id(train_id, T0 + i * 10_000_000)
        await asyncio.Event().wait()


def test_a_quiet_source_goes_unknown_after_the_missed_periods(caplog):
    async def main():
        model = TimerModel("tcp://h:1", 10.0, missed_periods=5)
        timer = Timer(model, auto_reset=False,
                      source_factory=lambda s, sink, p: QuietSource(sink, [5, 0, 6]))
        ticks: list = []
        timer.listeners.append(ticks.append)
        t0 = asyncio.get_running_loop().time()
        timer.start()
        await _until(lambda: model.state == State.UNKNOWN)
        elapsed = asyncio.get_running_loop().time() - t0
        await timer.stop()
        return model, ticks, elapsed

    model, ticks, elapsed = asyncio.run(main())
    assert [t.train_id for t in ticks] == [5, 6]  # 0 is no train
    assert model.bad_messages == 1
    # 5 and 6 came 20 ms apart: the measured period is larger than PERIOD_SET and wins.
    assert model.fault is Fault.TIMEOUT and "5 missed periods of 20 ms" in model.status
    assert elapsed >= 0.1  # never before the missed periods


def test_a_flood_of_bad_messages_is_counted_exactly_and_logged_briefly(caplog):
    class Flood(TrainSource):
        async def run(self) -> None:
            for i in range(10_000):
                self.sink.on_bad_message(f"junk {i}")
            raise SourceUnavailable("done")

    async def main():
        model = TimerModel("tcp://h:1", 100.0)
        timer = Timer(model, auto_reset=False, source_factory=lambda s, sink, p: Flood(sink))
        timer.start()
        await _until(lambda: model.state == State.UNKNOWN)
        await timer.stop()
        return model

    with caplog.at_level("WARNING", logger="trainstamp.timing._timer"):
        model = asyncio.run(main())
    assert model.bad_messages == 10_000
    lines = [r.getMessage() for r in caplog.records if r.name == "trainstamp.timing._timer"]
    bad_lines = [line for line in lines if "bad message" in line]
    assert len(bad_lines) <= 10, bad_lines
    assert any("9995 more bad messages not logged (10000 in total so far)" in line
               for line in bad_lines), bad_lines
