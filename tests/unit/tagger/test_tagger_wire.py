"""The tag-stream wire protocol: layout, round trips and hostile input."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trainstamp.tagger import _wire as wire


def _tags(n: int, start: int = 0) -> np.ndarray:
    tags = np.zeros(n, wire.TAG_DTYPE)
    tags["channel"] = np.arange(n) % 8 + 1
    tags["time"] = start + np.arange(n, dtype=np.int64) * 1000
    return tags


def _bytes(parts) -> bytes:
    return b"".join(bytes(p) for p in parts)


def test_header_size_is_pinned():
    assert wire.HEADER_SIZE == 48
    assert wire.TAG_DTYPE.itemsize == 16


def test_tag_dtype_matches_engine():
    from trainstamp.tagger.engine._tags import TAG_DTYPE

    assert TAG_DTYPE == wire.TAG_DTYPE


def test_round_trip_tags_and_messages():
    reader = wire.FrameReader()
    data = (_bytes(wire.encode_tags(_tags(10), 0)) + wire.encode_message(
        wire.Kind.CONTROL, {"id": 1, "op": "describe"}) + _bytes(wire.encode_tags(_tags(3, 10**6), 1)))
    frames = reader.feed(data)
    assert [f.kind for f in frames] == [wire.Kind.TAGS, wire.Kind.CONTROL, wire.Kind.TAGS]
    np.testing.assert_array_equal(frames[0].tags, _tags(10))
    assert frames[1].message == {"id": 1, "op": "describe"}
    assert reader.stats.tags == 13 and reader.stats.lost_blocks == 0


def test_byte_by_byte_feed():
    reader = wire.FrameReader()
    data = _bytes(wire.encode_tags(_tags(5), 0))
    out = []
    for i in range(len(data)):
        out += reader.feed(data[i:i + 1])
    assert len(out) == 1 and len(out[0].tags) == 5


def test_corrupt_payload_is_dropped_and_counted():
    reader = wire.FrameReader()
    bad = bytearray(_bytes(wire.encode_tags(_tags(5), 0)))
    bad[50] ^= 0xFF
    good = _bytes(wire.encode_tags(_tags(5, 10**6), 1))
    frames = reader.feed(bytes(bad) + good)
    assert len(frames) == 1 and frames[0].seq == 1
    assert reader.stats.bad_payloads == 1


def test_garbage_resyncs_and_sequence_gaps_count():
    reader = wire.FrameReader()
    data = (b"\x00junk TTSB more junk" * 3 + _bytes(wire.encode_tags(_tags(2), 0))
            + _bytes(wire.encode_tags(_tags(2, 10**6), 5)))
    frames = reader.feed(data)
    assert [f.seq for f in frames] == [0, 5]
    assert reader.stats.bad_headers > 0 and reader.stats.skipped_bytes > 0
    assert reader.stats.lost_blocks == 4


def test_unsorted_and_oversize_blocks_refused():
    reader = wire.FrameReader()
    tags = _tags(4)[::-1].copy()
    assert reader.feed(_bytes(wire.encode_tags(tags, 0))) == []
    assert "not sorted" in reader.stats.last_error
    with pytest.raises(ValueError, match="exceeds"):
        wire.encode_message(wire.Kind.CONTROL, {"x": "y" * wire.MAX_CONTROL_BYTES})


def test_truncated_frame_counted_on_reset():
    reader = wire.FrameReader()
    data = _bytes(wire.encode_tags(_tags(100), 0))
    assert reader.feed(data[:-7]) == []
    reader.reset()
    assert reader.stats.bad_payloads == 1
    assert len(reader.feed(data)) == 1


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3000), st.integers(0, 255)), max_size=8),
       st.integers(1, 4096))
def test_corruption_never_yields_a_bad_block(flips, chunk):
    """Random byte flips: every block delivered is one that was sent, unchanged."""
    blocks = [_tags(20, 10**6 * k) for k in range(6)]
    data = bytearray(b"".join(_bytes(wire.encode_tags(b, k)) for k, b in enumerate(blocks)))
    for pos, val in flips:
        data[pos % len(data)] ^= val
    reader = wire.FrameReader()
    out = []
    for i in range(0, len(data), chunk):
        out += reader.feed(bytes(data[i:i + chunk]))
    for f in out:
        assert f.kind == wire.Kind.TAGS
        np.testing.assert_array_equal(f.tags, blocks[f.seq])
    if not flips:
        assert len(out) == 6


def _tags_block(n, start_ps, seq, end=None):
    tags = np.zeros(n, wire.TAG_DTYPE)
    tags["channel"] = 1
    tags["time"] = start_ps + np.arange(n, dtype=np.int64) * 1000
    return b"".join(bytes(p) for p in wire.encode_tags(
        tags, seq, end_time=start_ps + n * 1000 if end is None else end))


def test_a_block_ending_at_a_huge_time_costs_only_itself():
    """Once one well-formed block ending at 2**62 ps made every later block 'start
    before the previous end': 5 of the next 200 tags were counted."""
    r = wire.FrameReader()
    now = 10**18
    got = r.feed(_tags_block(10, 0, 0), now)
    got += r.feed(_tags_block(10, 20_000, 1, end=2**62), now)  # 60 s rule
    empty = b"".join(bytes(p) for p in wire.encode_tags(np.zeros(0, wire.TAG_DTYPE), 2,
                                                           end_time=2**61))
    got += r.feed(empty, now)  # the wall-clock rule: stream time cannot outrun real time
    for k in range(20):
        got += r.feed(_tags_block(10, 40_000 + k * 10_000, 3 + k), now + k * 1000)
    assert sum(len(f.tags) for f in got) == 10 + 200
    assert r.stats.bad_payloads == 2


def test_a_cut_frame_does_not_swallow_the_frames_after_it():
    r = wire.FrameReader()
    big = _tags_block(100_000, 0, 0)
    got = r.feed(big[:2000])  # cut short: the rest never comes
    for k in range(5):
        got += r.feed(_tags_block(10, 10**9 + k * 10_000, 1 + k))
    assert [len(f.tags) for f in got] == [10] * 5
    assert r.stats.bad_payloads == 1


@pytest.mark.parametrize("hello", [
    {"channels": "12345678"}, {"channels": [1, 2, "3"]}, {"channels": []},
    {"channels": [1, 2], "marker_channel": 9}, {"channels": [1, 10**9]},
    {"channels": [1, 2], "settings": {"x": {}}}, {"channels": [1], "serial": 5},
])
def test_a_bad_hello_is_a_bad_payload(hello):
    r = wire.FrameReader()
    assert r.feed(wire.encode_message(wire.Kind.HELLO, hello)) == []
    assert r.stats.bad_payloads == 1
    good = {"channels": [1, 2], "marker_channel": 2, "serial": "S", "settings": {"1": {}}}
    assert r.feed(wire.encode_message(wire.Kind.HELLO, good))[0].message == good
