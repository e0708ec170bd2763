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
