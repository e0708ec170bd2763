"""The async Timer driving the model: INIT -> ON, failure -> UNKNOWN, (auto) reset.

The sources here are small in-process stand-ins that only call the sink interface, so
the lifecycle runs without sockets; the real sources are exercised in tests/system.
"""

import asyncio

from trainstamp.timing import State, TimerModel
from trainstamp.timing._sources import SourceUnavailable, TrainSource
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
