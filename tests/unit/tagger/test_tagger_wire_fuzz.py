"""Fuzz suite: the tag-stream reader, pure (bytes and arrival times passed in).

``fuzz_cases()`` bad inputs (10,000 in ``make test``, 100,000 under ``make fuzz``) of
every kind in :data:`trainstamp.testing.tag_frames.BAD_KINDS` (cut-short frames, bad
CRCs, unsorted tags, huge and backwards end times, bad kinds and versions, garbage,
bad hellos, sequence gaps ...), each followed by a good block, cut into random chunks.
What must hold: no exception, the buffer stays bounded, every good tag comes out once
and in order, and the counters account for every bad input exactly (``bad_headers +
bad_payloads`` = bad frames, ``lost_blocks`` = the gaps).
"""

from __future__ import annotations

import time
import tracemalloc

import numpy as np
import pytest

from trainstamp.tagger import _wire as wire
from trainstamp.testing import fuzz_cases, report_cases
from trainstamp.testing.tag_frames import BAD_KINDS, FrameFaults

pytestmark = pytest.mark.fuzz

CASES = fuzz_cases()


def test_reader_survives_every_bad_frame_and_counts_it():
    faults = FrameFaults(seed=8, t0_ps=10**12, step_ps=1_000_000)
    rng = np.random.default_rng(9)
    reader = wire.FrameReader()
    got, max_buf = [], 0
    now = 10**18
    t_start = time.perf_counter()
    tracemalloc.start()
    batch = bytearray(faults.good())
    for case in range(CASES):
        batch += faults.bad_frame() + faults.good()
        if len(batch) > 4096 or case == CASES - 1:
            view = memoryview(bytes(batch))
            batch.clear()
            while len(view):
                n = int(rng.integers(1, 3000))
                now += 1000  # 1 µs of wall clock per chunk; stream time is far slower
                for frame in reader.feed(view[:n], now):
                    if frame.kind == wire.Kind.TAGS:
                        got.append(frame.tags["time"].copy())
                view = view[n:]
                max_buf = max(max_buf, len(reader._buf))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    elapsed = time.perf_counter() - t_start
    times = np.concatenate(got)
    rs = reader.stats
    report_cases("tag-stream reader", CASES, kinds=len(faults.bad), good_tags=len(times),
                 bad_headers=rs.bad_headers, bad_payloads=rs.bad_payloads,
                 lost_blocks=rs.lost_blocks, max_buffer=max_buf,
                 peak_mib=f"{peak / 2**20:.1f}", seconds=f"{elapsed:.1f}")
    assert set(faults.bad) == set(BAD_KINDS) or CASES < 1000
    assert len(times) == faults.good_tags  # every good tag, none invented
    assert np.all(np.diff(times) >= 0)  # in order
    assert rs.bad_headers + rs.bad_payloads == faults.expect["bad_frames"]
    assert rs.lost_blocks == faults.expect["lost_blocks"]
    assert max_buf < 1 << 16
