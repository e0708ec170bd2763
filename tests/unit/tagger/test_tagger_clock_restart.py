"""A tagger that restarts begins its clock again near 0; the service keeps the stream's
time going forward, so measurements started after the restart finish."""

from __future__ import annotations

import numpy as np

from trainstamp.tagger._stream import TagService
from trainstamp.tagger._wire import TAG_DTYPE
from trainstamp.tagger.engine import TagType


class Sink:
    def __init__(self) -> None:
        self.blocks: list[tuple[np.ndarray, int]] = []

    def process(self, tags, train_ids, end_time):
        self.blocks.append((tags.copy(), int(end_time)))


def block(times, channel=1):
    tags = np.zeros(len(times), TAG_DTYPE)
    tags["time"] = times
    tags["channel"] = channel
    return tags


def run(service: TagService, *items) -> None:
    for item in items:
        service._queue.put(item)
        service._step()


def test_a_restarted_clock_continues_after_the_stream_with_the_gap_marked_lost():
    svc = TagService("tcp://127.0.0.1:9")  # never started: the processor is driven by hand
    sink = Sink()
    svc.add_sink(sink)
    run(svc, ("hello", None, 0), ("block", (block([100, 200]), 10_000), 0),
        ("block", (block([20_000]), 30_000), 0))
    assert svc.stats.last_end_ps == 30_000
    # The tagger restarts: a new hello, then its clock from near 0.
    run(svc, ("hello", None, 0), ("block", (block([50, 70]), 1_000), 0),
        ("block", (block([1_500]), 2_000), 0))
    times = np.concatenate([t["time"] for t, _ in sink.blocks])
    assert np.all(np.diff(times) >= 0), times
    ends = [end for _, end in sink.blocks]
    assert ends == sorted(ends) and ends[-1] == 30_001 + 2_000 - 50
    restart_block = sink.blocks[2][0]
    assert restart_block["type"][0] == TagType.Error  # the stretch across it is lost
    assert svc.stats.clock_restarts == 1


def test_a_reconnect_with_the_clock_still_ahead_shifts_nothing_but_marks_the_gap_lost():
    """What the tagger sent while the link was down never arrived: the first block
    after the reconnect starts with an Error tag, so no bin spans the gap unflagged."""
    svc = TagService("tcp://127.0.0.1:9")
    sink = Sink()
    svc.add_sink(sink)
    run(svc, ("hello", None, 0), ("block", (block([100]), 1_000), 0),
        ("hello", None, 0), ("block", (block([5_000]), 6_000), 0))
    assert [int(t["time"][-1]) for t, _ in sink.blocks] == [100, 5_000]
    assert svc.stats.clock_restarts == 0 and svc.stats.reconnects == 1
    assert sink.blocks[0][0]["type"][0] == TagType.TimeTag  # the first connection: no gap
    after = sink.blocks[1][0]
    assert after["type"][0] == TagType.Error and int(after["time"][0]) == 5_000
