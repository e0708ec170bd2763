"""The train-ID TCP message parser and splitter (pure, no sockets)."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trainstamp.timing._protocol import (
    MAX_TRAIN_ID,
    BadMessage,
    MessageSplitter,
    encode_train_id,
    parse_train_id,
)


@pytest.mark.parametrize("msg,value", [(b"12", 12), (b"  7 \t", 7), (b"0", 0),
                                       (b"18446744073709551615", MAX_TRAIN_ID), (b"42\r", 42)])
def test_parse_clean_messages(msg, value):
    assert parse_train_id(msg) == value


@pytest.mark.parametrize("msg", [b"", b"   ", b"12abc", b"-5", b"+5", b"1 2", b"0x10",
                                 b"18446744073709551616", b"\xff\xfe", b"\xd9\xa1"])
def test_parse_refuses_bad_messages(msg):
    with pytest.raises(BadMessage):
        parse_train_id(msg)


@given(st.integers(0, MAX_TRAIN_ID))
def test_round_trip(value):
    (msg,) = MessageSplitter().feed(encode_train_id(value))
    assert parse_train_id(msg) == value


@given(st.binary(max_size=80))
def test_parse_never_half_parses(data):
    try:
        value = parse_train_id(data)
    except BadMessage:
        return
    assert data.strip().isdigit() and int(data.strip()) == value


@given(st.lists(st.integers(0, MAX_TRAIN_ID), max_size=20), st.data())
def test_splitting_is_independent_of_chunking(values, data):
    stream = b"".join(b"%d%s" % (v, data.draw(st.sampled_from([b"\n", b"\r\n", b"\0"])))
                      for v in values)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=10)))
    splitter = MessageSplitter()
    got = []
    for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        got += [parse_train_id(m) for m in splitter.feed(stream[a:b])]
    assert got == values


def test_oversize_line_is_one_bad_message_and_bounded():
    splitter = MessageSplitter()
    out = []
    for _ in range(16):  # a 1 MB line with no terminator, in 64 KiB reads
        out += list(splitter.feed(b"9" * 65536))
        assert len(splitter._buf) <= splitter.max_len + 1
    out += list(splitter.feed(b"\n123\n"))
    assert len(out) == 2 and isinstance(out[0], BadMessage) and out[1] == b"123"


@given(st.binary(max_size=3000), st.integers(0, MAX_TRAIN_ID), st.data())
def test_noise_never_swallows_the_next_good_message(noise, value, data):
    # Whatever garbage arrives (binary noise, overlong lines, stray terminators), once a
    # terminator has passed, the next clean message parses, however the stream is cut.
    stream = noise + b"\n" + encode_train_id(value)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=8)))
    splitter = MessageSplitter()
    out = []
    for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        out += list(splitter.feed(stream[a:b]))
    assert out and out[-1] == encode_train_id(value)[:-1]
    assert all(isinstance(m, BadMessage) or len(m) <= splitter.max_len for m in out)
    assert len(splitter._buf) == 0


def test_feed_ids_parses_and_reports_bad_messages_in_order():
    out = list(MessageSplitter().feed_ids(b"5\n12abc\n\n-1\n7\r\n"))
    assert out[0] == 5 and out[-1] == 7
    assert [type(x) for x in out[1:4]] == [BadMessage] * 3


# --- messages without terminator: the pause rule (times passed in, in ns) -------------

PAUSE = 25_000_000  # 25 ms: a quarter of a 100 ms period


def _run(splitter, writes):
    """Feed ``[(t_ns, bytes), ...]``; flush at each write's time first, as a reader
    whose read timed out at the pause deadline would. Returns [(item, t_ns)]."""
    out = []
    for t_ns, data in writes:
        for item in splitter.flush_ids(t_ns):
            out.append((item, splitter.t_ns))
        for item in splitter.feed_ids(data, t_ns):
            out.append((item, splitter.t_ns))
    return out


def test_ids_in_separate_writes_without_terminator_are_never_glued():
    # The case: b"1013", b"1014", b"1015" in separate writes, then b"\n".
    splitter = MessageSplitter(pause_ns=PAUSE)
    t = 10**18
    writes = [(t, b"1013"), (t + 100_000_000, b"1014"), (t + 200_000_000, b"1015"),
              (t + 300_000_000, b"\n")]
    out = _run(splitter, writes)
    assert out == [(1013, t), (1014, t + 100_000_000), (1015, t + 200_000_000)]
    # the late terminator ended nothing new, and from now on only terminators end messages
    assert splitter.terminated and not splitter.pausing


def test_pending_message_ends_at_the_pause_deadline():
    splitter = MessageSplitter(pause_ns=PAUSE)
    assert list(splitter.feed_ids(b"10", 1000)) == []
    assert list(splitter.feed_ids(b"13", 1000 + PAUSE - 1)) == []  # no pause: one message
    assert splitter.deadline_ns == 1000 + 2 * PAUSE - 1
    assert list(splitter.flush_ids(1000 + 2 * PAUSE - 2)) == []
    assert list(splitter.flush_ids(1000 + 2 * PAUSE - 1)) == [1013]
    assert splitter.t_ns == 1000 + PAUSE - 1  # stamped at its last byte, not at the flush
    assert splitter.deadline_ns is None


def test_after_a_terminator_a_pause_cuts_nothing():
    splitter = MessageSplitter(pause_ns=PAUSE)
    assert list(splitter.feed_ids(b"5\n10", 0)) == [5]
    assert splitter.deadline_ns is None
    assert list(splitter.flush_ids(10 * PAUSE)) == []
    assert list(splitter.feed_ids(b"13\n", 10 * PAUSE)) == [1013]


def test_glued_ids_are_a_bad_message_not_a_train():
    # A reader that fell behind finds two unterminated IDs together: they were sent
    # without a pause the reader could see. That is never one train ID.
    splitter = MessageSplitter(pause_ns=PAUSE)
    out = [x for x, _ in _run(splitter, [(0, b"1013"), (PAUSE * 4, b"10141015"),
                                         (PAUSE * 8, b"1016"), (PAUSE * 12, b"")])]
    assert out[0] == 1013 and out[2] == 1016
    assert isinstance(out[1], BadMessage) and "without a pause" in str(out[1])


@pytest.mark.parametrize("digits", [21, 30, 64])
def test_a_digit_run_longer_than_any_64_bit_value_is_bad(digits):
    (item,) = MessageSplitter().feed_ids(b"0" * (digits - 1) + b"1\n")
    assert isinstance(item, BadMessage) and "longer than any 64-bit value" in str(item)
    assert MessageSplitter().feed_ids(b"0" * 19 + b"1\n").__next__() == 1


def test_zero_is_a_bad_message_in_feed_ids_but_a_number_to_parse():
    assert parse_train_id(b"0") == 0
    out = list(MessageSplitter().feed_ids(b"0\n000\n7\n"))
    assert [type(x) for x in out] == [BadMessage, BadMessage, int] and out[2] == 7
    assert "0 means 'no train'" in str(out[0])


def test_end_of_stream_ends_an_unterminated_message_but_cuts_a_terminated_one():
    splitter = MessageSplitter(pause_ns=PAUSE)
    list(splitter.feed_ids(b"42", 7))
    assert list(splitter.finish_ids()) == [42] and splitter.t_ns == 7
    splitter = MessageSplitter(pause_ns=PAUSE)
    list(splitter.feed_ids(b"41\n42", 7))
    (item,) = splitter.finish_ids()
    assert isinstance(item, BadMessage) and "ended inside a message" in str(item)
    assert not splitter.terminated  # a new connection starts afresh


def test_oversize_unterminated_message_ends_at_the_pause():
    splitter = MessageSplitter(pause_ns=PAUSE)
    out = [x for x, _ in _run(splitter, [(0, b"7" * 1000), (PAUSE * 2, b"55"),
                                         (PAUSE * 4, b"")])]
    assert isinstance(out[0], BadMessage) and out[1:] == [55]


def test_without_times_only_terminators_end_messages():
    splitter = MessageSplitter(pause_ns=PAUSE)
    assert list(splitter.feed_ids(b"12")) == [] and splitter.deadline_ns is None
    assert list(splitter.feed_ids(b"34\n")) == [1234]


def test_pause_must_be_positive():
    with pytest.raises(ValueError, match="pause_ns 0 must be positive"):
        MessageSplitter(pause_ns=0)
