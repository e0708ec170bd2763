"""The data-transfer port's pure core: requests checked, replies encoded and decoded."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trainstamp.detector._transfer import (
    CHUNK_FRAMES,
    MAX_REQUEST_BYTES,
    BadRequest,
    decode_reply,
    error_reply,
    frames_reply,
    parse_request,
    ping_reply,
)


@pytest.fixture
def data_dir(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "cap_00001.h5").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("x")
    return tmp_path


def req(**body) -> bytes:
    return json.dumps(body).encode()


def test_a_good_request_names_a_capture_file_inside_the_data_dir(data_dir):
    r = parse_request(req(op="frames", path=str(data_dir / "run/cap_00001.h5"), first=3,
                          count=CHUNK_FRAMES), data_dir)
    assert r.path == (data_dir / "run/cap_00001.h5").resolve() and (r.first, r.count) == (3, 8)
    assert parse_request(req(op="frames", path="run/cap_00001.h5", first=0, count=1),
                         data_dir).count == 1  # relative to the data directory
    assert parse_request(req(op="ping"), data_dir) is None


@pytest.mark.parametrize("body, reason", [
    ({"op": "frames", "path": "/etc/passwd", "first": 0, "count": 1}, "inside the IOC's data"),
    ({"op": "frames", "path": "../../etc/x.h5", "first": 0, "count": 1}, "inside the IOC's data"),
    ({"op": "frames", "path": "notes.txt", "first": 0, "count": 1}, "capture file (.h5)"),
    ({"op": "frames", "path": "run/none.h5", "first": 0, "count": 1}, "no such capture file"),
    ({"op": "frames", "path": "run/cap_00001.h5", "first": -1, "count": 1}, "'first'"),
    ({"op": "frames", "path": "run/cap_00001.h5", "first": 0, "count": 9}, "'count'"),
    ({"op": "frames", "path": "run/cap_00001.h5", "first": 0, "count": True}, "'count'"),
    ({"op": "frames", "path": "run/cap_00001.h5", "first": 0.5, "count": 1}, "'first'"),
    ({"op": "frames", "path": 7, "first": 0, "count": 1}, "'path'"),
    ({"op": "delete"}, "unknown op"),
])
def test_bad_requests_are_refused_with_the_reason(data_dir, body, reason):
    with pytest.raises(BadRequest, match=reason.replace("(", r"\(").replace(")", r"\)")):
        parse_request(json.dumps(body).encode(), data_dir)


def test_not_json_and_too_long_are_refused(data_dir):
    for raw in (b"\xff\xfe", b"[1, 2]", b"{", b"x" * (MAX_REQUEST_BYTES + 1)):
        with pytest.raises(BadRequest):
            parse_request(raw, data_dir)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600) | st.text(max_size=300).map(str.encode)
       | st.dictionaries(st.sampled_from(["op", "path", "first", "count"]),
                         st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
                         ).map(lambda d: json.dumps(d).encode()))
def test_any_bytes_give_a_request_or_a_refusal_never_a_crash(raw):
    try:
        parse_request(raw, "/nonexistent-data-dir")
    except BadRequest as exc:
        assert str(exc)


def test_replies_round_trip():
    data = np.arange(2 * 1024 * 1024, dtype=np.uint16).reshape(2, 1024, 1024)
    meta = {"train_id": np.array([10, 11], np.uint64), "frame_number": np.array([5, 6], np.uint64)}
    header, frames = decode_reply(frames_reply(4, 9, data, meta))
    assert (header["first"], header["total"], header["count"]) == (4, 9, 2)
    assert header["train_id"] == [10, 11] and header["frame_number"] == [5, 6]
    assert np.array_equal(frames, data)
    assert decode_reply(ping_reply())[0]["version"] == 1
    with pytest.raises(RuntimeError, match="refused: no such"):
        decode_reply(error_reply("no such capture file"))
    with pytest.raises(RuntimeError, match="carries"):
        decode_reply(frames_reply(0, 1, data[:1], meta)[:1] + [b"short"])
    with pytest.raises(RuntimeError, match="malformed"):
        decode_reply([b"\xff"])


@pytest.mark.parametrize(("uri", "host", "port", "expected"), [
    ("tcp://10.0.0.5:42005", None, None, "tcp://10.0.0.5:42005"),
    ("tcp://0.0.0.0:42005", None, None, "tcp://localhost:42005"),
    ("tcp://0.0.0.0:42005", "detector-machine", None, "tcp://detector-machine:42005"),
    ("tcp://10.0.0.5:42005", "gateway", 43000, "tcp://gateway:43000"),
    ("", "detector-machine", 42005, "tcp://detector-machine:42005"),
    ("", "detector-machine", None, None),  # no port anywhere: get_frames refuses
    ("", None, None, None),                # no port: the local file is read
])
def test_the_client_finds_the_data_port_from_data_uri_and_its_own_arguments(uri, host, port, expected):
    from trainstamp.detector.client import data_endpoint

    assert data_endpoint(uri, host, port) == expected
