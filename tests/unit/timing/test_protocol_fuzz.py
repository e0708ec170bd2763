"""Fuzz suite: the train-ID TCP splitter and parser, pure (times passed in, no sockets).

Each hypothesis example is a batch of messages on one stream; what counts is messages
checked, ``fuzz_cases()`` of them per test (10,000 in ``make test``, 100,000 under
``make fuzz``). For every batch: no exception, the buffer stays bounded, each bad
message is exactly one :class:`BadMessage`, and every good ID comes out once, in order,
stamped with the time of its last byte.
"""

from __future__ import annotations

import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trainstamp.testing import fuzz_cases, report_cases
from trainstamp.timing._protocol import (
    MAX_DIGITS,
    MAX_MESSAGE_LEN,
    MAX_TRAIN_ID,
    BadMessage,
    MessageSplitter,
)

pytestmark = pytest.mark.fuzz

CASES = fuzz_cases()
BATCH = 100
EXAMPLES = max(1, CASES // BATCH)
PAUSE = 25_000_000  # ns
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
_WS = b" \t\r\n\v\f"


def is_good(body: bytes) -> bool:
    """The documented rule for a good message body, written out independently."""
    text = body.strip(_WS)
    return (0 < len(text) <= MAX_DIGITS and text.isdigit()
            and 1 <= int(text) <= MAX_TRAIN_ID)


no_terminator = st.binary(max_size=120).map(lambda b: b.replace(b"\n", b"").replace(b"\0", b""))
bad_bodies = st.one_of(
    st.sampled_from([b"", b"  ", b"\t", b"0", b"000", b"-5", b"+5", b"12abc", b"1 2",
                     b"0x10", b"18446744073709551616", b"\xff\xfe", b"\xd9\xa1"]),
    st.integers(MAX_DIGITS + 1, 300).map(lambda n: b"9" * n),  # hostile lengths
    st.integers(2**64, 10**20 - 1).map(lambda v: b"%d" % v),
    no_terminator,  # binary noise; some of it happens to be good, as is_good says
)
good_bodies = st.integers(1, MAX_TRAIN_ID).map(lambda v: b"%d" % v)
terminated = st.tuples(st.one_of(good_bodies, bad_bodies),
                       st.sampled_from([b"\n", b"\r\n", b"\0"]))


def _expected(body: bytes, end: bytes):
    # The splitter holds what comes before the terminator, including the \r of \r\n.
    if len(body) + (end == b"\r\n") > MAX_MESSAGE_LEN or not is_good(body):
        return BadMessage
    return int(body.strip(_WS))


class Count:
    inputs = 0
    bad = 0


@FUZZ
@given(st.lists(terminated, min_size=BATCH, max_size=BATCH), st.data())
def test_terminated_streams_with_noise_and_random_chunking(messages, data):
    stream = b"".join(body + end for body, end in messages)
    ends, pos = [], 0  # offset of each message's terminator in the stream
    for body, end in messages:
        pos += len(body) + len(end)
        ends.append(pos - 1)
    cuts = sorted(set(data.draw(st.lists(st.integers(0, len(stream)), max_size=40))))
    splitter = MessageSplitter(pause_ns=PAUSE)
    out: list[tuple[object, int | None]] = []
    t_of_byte: list[int] = []
    for k, (a, b) in enumerate(zip([0, *cuts], [*cuts, len(stream)], strict=True)):
        t = 10**18 + k * (PAUSE // 2)  # chunks closer than the pause: nothing is cut
        t_of_byte += [t] * (b - a)
        out += [(item, splitter.t_ns) for item in splitter.feed_ids(stream[a:b], t)]
        assert len(splitter._buf) <= splitter.max_len + 1
    expected = [_expected(body, end) for body, end in messages]
    assert [BadMessage if isinstance(x, BadMessage) else x for x, _ in out] == expected
    for (item, t), end in zip(out, ends, strict=True):
        if not isinstance(item, BadMessage):
            assert t == t_of_byte[end]  # stamped when its terminator arrived
    Count.inputs += len(messages)
    Count.bad += expected.count(BadMessage)


def _unterminated_ids(draw) -> list[int]:
    digits = draw(st.integers(2, MAX_DIGITS - 1))
    train_id = draw(st.integers(10 ** (digits - 1), 10**digits - 1))
    ids = []
    for _ in range(BATCH):
        ids.append(train_id)
        # Mostly the next train; sometimes a jump forward, never to a longer ID than
        # one more digit (a train ID gains at most one digit per train).
        step = draw(st.sampled_from([1] * 8 + [2, 1000]))
        train_id = min(train_id + step, MAX_TRAIN_ID)
        if len(str(train_id)) > len(str(ids[-1])) + 1:
            train_id = ids[-1] + 1
    return ids


@FUZZ
@given(st.data())
def test_unterminated_ids_split_at_pauses_and_glue_is_refused(data):
    ids = _unterminated_ids(data.draw)
    splitter = MessageSplitter(pause_ns=PAUSE)
    t = 10**18
    expected: list[object] = []
    out: list[tuple[object, int | None]] = []
    i = 0
    while i < len(ids):
        # A reader that fell behind reads several writes as one (never the first).
        group = 1 if i == 0 else min(data.draw(st.sampled_from([1] * 9 + [2, 3])), len(ids) - i)
        text = b"".join(b"%d" % v for v in ids[i:i + group])
        last_t = t
        cuts = sorted(set(data.draw(st.lists(st.integers(1, len(text) - 1), max_size=3))))
        for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True):
            out += [(x, splitter.t_ns) for x in splitter.flush_ids(t)]
            out += [(x, splitter.t_ns) for x in splitter.feed_ids(text[a:b], t)]
            last_t = t
            t += data.draw(st.integers(0, PAUSE - 1))  # inside a write: no pause
        expected += [(ids[i], last_t)] if group == 1 else [(BadMessage, last_t)]
        i += group
        t += data.draw(st.integers(PAUSE, 10 * PAUSE))  # between writes: a pause
    out += [(x, splitter.t_ns) for x in splitter.flush_ids(t)]
    got = [(BadMessage if isinstance(x, BadMessage) else x, t) for x, t in out]
    assert got == expected
    good = {v for v, _ in expected if v is not BadMessage}
    assert all(x in good for x, _ in got if x is not BadMessage)  # nothing invented
    Count.inputs += len(ids)
    Count.bad += sum(1 for v, _ in expected if v is BadMessage)


@FUZZ
@given(st.lists(st.tuples(st.binary(max_size=200), st.integers(0, 3 * PAUSE)),
                min_size=BATCH, max_size=BATCH))
def test_hostile_bytes_at_hostile_times_never_crash_or_invent(chunks):
    splitter = MessageSplitter(pause_ns=PAUSE)
    stream = b"".join(c for c, _ in chunks)
    t = 0
    for chunk, gap in chunks:
        t += gap
        for item in [*splitter.flush_ids(t), *splitter.feed_ids(chunk, t)]:
            if not isinstance(item, BadMessage):
                assert 1 <= item <= MAX_TRAIN_ID
                assert b"%d" % item in stream  # its digits, as sent
        assert len(splitter._buf) <= splitter.max_len + 1
    list(splitter.finish_ids())
    Count.inputs += len(chunks)


def test_report():
    report_cases("timing TCP splitter (pure)", Count.inputs, bad_messages=Count.bad,
                 cases_per_test=CASES, seconds=round(time.perf_counter() - _T0, 1))


_T0 = time.perf_counter()
