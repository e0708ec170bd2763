"""The run spool: its line codec, the checks of a spool file, and the writer's rules
(spool always, delete on success, keep and announce on a catalog failure)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from event_model import compose_run
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from trainstamp.storage import SpoolError, SpoolingWriter, pending_spools, read_spool
from trainstamp.storage._spool_file import decode_line, encode_line, iter_documents

DTYPES = st.sampled_from(["<i4", "<i8", "<u2", "<u8", "<f4", "<f8", "|b1"])
ARRAYS = DTYPES.flatmap(lambda dt: hnp.arrays(np.dtype(dt), hnp.array_shapes(min_dims=0, max_dims=3,
                                                                             min_side=0, max_side=4)))
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**63 - 1),
                    st.floats(allow_nan=False), st.text(max_size=20))
VALUES = st.recursive(st.one_of(SCALARS, ARRAYS), lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=12)


def same(a, b) -> bool:
    if isinstance(a, np.ndarray):
        return (isinstance(b, np.ndarray) and a.dtype == b.dtype and a.shape == b.shape
                and np.array_equal(a, b, equal_nan=a.dtype.kind == "f"))
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(map(same, a, b))
    return a == b and type(a) is type(b)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.text(max_size=8), VALUES, max_size=6))
def test_a_document_comes_back_with_the_same_arrays_dtypes_and_shapes(data):
    doc = {"uid": "u", "data": data}
    line = encode_line("event", doc)
    assert line.endswith("\n") and "\n" not in line[:-1]
    name, back = decode_line(line)
    assert name == "event" and same(doc, back)


def test_numpy_scalars_and_non_finite_floats_survive():
    doc = {"a": np.int32(7), "b": np.float64("nan"), "c": float("inf"), "d": np.bool_(True)}
    _, back = decode_line(encode_line("event", doc))
    assert back["a"] == 7 and np.isnan(back["b"]) and back["c"] == float("inf") and back["d"]


def test_byte_strings_and_byte_string_arrays_survive():
    # The beamline's documents hold them (CA string waveforms read as numpy "S" arrays).
    doc = {"raw": b"\x00\xffab", "names": np.array([b"det", b"x\n"], dtype="S4")}
    _, back = decode_line(encode_line("event", doc))
    assert back["raw"] == b"\x00\xffab"
    assert back["names"].dtype == np.dtype("S4") and back["names"].tolist() == [b"det", b"x\n"]


def test_an_object_that_cannot_be_spooled_is_refused():
    with pytest.raises(TypeError, match="a object cannot be spooled"):
        encode_line("event", {"raw": object()})


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=80))
def test_any_bad_line_is_a_clear_value_error(text):
    try:
        name, doc = decode_line(text)
    except ValueError as exc:
        assert str(exc)
    else:
        assert isinstance(doc, dict) and name in ("start", "stop", "event", "descriptor",
                                                  "event_page", "resource", "datum",
                                                  "datum_page", "stream_resource",
                                                  "stream_datum")


def run_documents(n_events: int = 3) -> list[tuple[str, dict]]:
    run = compose_run()
    desc = run.compose_descriptor(name="primary", data_keys={
        "x": {"dtype": "number", "shape": [], "source": "sim"},
        "h": {"dtype": "array", "shape": [4], "source": "sim", "dtype_numpy": "<i4"}})
    docs = [("start", run.start_doc), ("descriptor", desc.descriptor_doc)]
    for i in range(n_events):
        docs.append(("event", desc.compose_event(
            data={"x": float(i), "h": np.arange(4, dtype=np.int32) * i},
            timestamps={"x": 1.0, "h": 1.0})))
    docs.append(("stop", run.compose_stop()))
    return docs


class FlakyWriter:
    """A catalog writer that fails from its ``fail_at``-th document on."""

    def __init__(self, fail_at: int | None = None) -> None:
        self.fail_at = fail_at
        self.got: list[str] = []

    def __call__(self, name, doc):
        if self.fail_at is not None and len(self.got) >= self.fail_at:
            raise OSError("disk full")
        self.got.append(name)


def test_a_run_the_catalog_took_leaves_no_spool(tmp_path):
    primary = FlakyWriter()
    writer = SpoolingWriter(primary, tmp_path)
    for name, doc in run_documents():
        writer(name, doc)
    assert primary.got == ["start", "descriptor", "event", "event", "event", "stop"]
    assert pending_spools(tmp_path) == [] and writer.spooled == {}


def test_a_catalog_failure_keeps_the_whole_run_in_the_spool_and_says_so(tmp_path, capsys):
    primary = FlakyWriter(fail_at=3)
    writer = SpoolingWriter(primary, tmp_path, target="test catalog",
                            replay_args=["--data-dir", "/d"])
    docs = run_documents(5)
    for i, (name, doc) in enumerate(docs):
        writer(name, doc)
        if i == 3:  # told at the failure, before the run is over
            err = capsys.readouterr().err
            assert "writing its event document to the test catalog failed (OSError: disk full)" in err
            assert "trainstamp replay" in err and "--data-dir /d" in err
    assert primary.got == ["start", "descriptor", "event"]  # never called after the failure
    (path,) = pending_spools(tmp_path)
    assert writer.spooled == {docs[0][1]["uid"]: path}
    spool = read_spool(path)
    assert [n for n, _ in spool.documents()] == [n for n, _ in docs]
    for (n1, d1), (n2, d2) in zip(spool.documents(), docs, strict=True):
        assert n1 == n2 and json.dumps(d1, default=repr) == json.dumps(d2, default=repr)
    assert spool.event_counts() == {"primary": 5} and spool.stopped
    assert "(8 documents) is in" in capsys.readouterr().err


def test_without_a_spool_a_catalog_failure_raises(tmp_path):
    writer = SpoolingWriter(FlakyWriter(fail_at=1), None)
    docs = run_documents()
    writer(*docs[0])
    with pytest.raises(RuntimeError, match="cannot be spooled .* its documents are lost"):
        writer(*docs[1])


def test_an_unwritable_spool_is_announced_and_the_catalog_still_gets_the_run(tmp_path, capsys):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    primary = FlakyWriter()
    writer = SpoolingWriter(primary, blocker / "spool")
    for name, doc in run_documents():
        writer(name, doc)
    assert primary.got[-1] == "stop"
    assert "cannot spool it" in capsys.readouterr().err


def write_lines(path, lines):
    path.write_text("".join(lines))
    return path


def test_a_spool_cut_short_by_a_kill_replays_without_its_last_line(tmp_path):
    lines = [encode_line(n, d) for n, d in run_documents()[:-1]]  # no stop: killed
    path = write_lines(tmp_path / "x.jsonl", [*lines, lines[-1][:17]])
    spool = read_spool(path)
    assert spool.truncated_tail and spool.count == len(lines)
    assert len(list(spool.documents())) == len(lines)
    assert "cut short" in spool.notes[0]
    docs = list(iter_documents(spool))
    name, stop = docs[-1]
    assert name == "stop" and stop["exit_status"] == "abort"
    assert stop["num_events"] == {"primary": 3} and stop["run_start"] == spool.uid


@pytest.mark.parametrize(("lines", "message"), [
    ([], "no documents"),
    (['{"name": "event", "doc": {}}\n'], ":1: the first document must be a start document"),
    (["start\n"], ":1: not a JSON document line"),
    (['{"name": "bogus", "doc": {}}\n'], ":1: unknown document name 'bogus'"),
    (['{"name": "start", "doc": []}\n'], ":1: the start document is not an object"),
    (['{"name": "start", "doc": {}, "x": 1}\n'], ':1: expected an object with the keys'),
])
def test_a_damaged_spool_is_refused_naming_the_line(tmp_path, lines, message):
    with pytest.raises(SpoolError, match=message):
        read_spool(write_lines(tmp_path / "x.jsonl", lines))


def test_a_spool_of_two_runs_or_with_documents_after_stop_is_refused(tmp_path):
    one, two = run_documents(), run_documents()
    with pytest.raises(SpoolError, match=":6: a second start document"):
        read_spool(write_lines(tmp_path / "a.jsonl", [encode_line(*d) for d in one[:-1] + two]))
    lines = [encode_line(*d) for d in one] + [encode_line(*one[2])]
    with pytest.raises(SpoolError, match=":7: documents after the stop document"):
        read_spool(write_lines(tmp_path / "b.jsonl", lines))
    lines = [encode_line(*one[0]), encode_line(*two[1])]
    with pytest.raises(SpoolError, match=":2: descriptor of run"):
        read_spool(write_lines(tmp_path / "c.jsonl", lines))
    (tmp_path / "d.jsonl").write_bytes(b"\xff\xfe\n")
    with pytest.raises(SpoolError, match=":1: not UTF-8"):
        read_spool(tmp_path / "d.jsonl")
    with pytest.raises(SpoolError, match="not a regular file"):
        read_spool("/dev/zero")
    with pytest.raises(SpoolError, match="cannot read it"):
        read_spool(tmp_path / "missing.jsonl")


def test_what_a_damaged_or_incomplete_spool_is_refused_for(tmp_path):
    docs = run_documents(3)
    lines = [encode_line(*d) for d in docs]

    def refused(changed, message):
        with pytest.raises(SpoolError, match=message):
            read_spool(write_lines(tmp_path / "x.jsonl", changed))

    refused([*lines[:2], lines[2].replace('"x": 0.0', '"x": 9.0'), *lines[3:]],
            ":3: the event document does not match its checksum")
    refused(lines[:4] + lines[5:], ":5: the stop document counts 3 primary events, the "
                                   "spool holds 2")
    refused(lines[:3] + lines[4:], r":4: primary events numbered \[3\]\.\.\., after 1: a gap")
    refused([lines[0], *lines[2:]], ":2: event of descriptor .* not before it")
    refused([*lines[:3], lines[2], *lines[3:]], ":4: a second event with uid")
    refused([*lines[:2], lines[3], lines[2], *lines[4:]], r":3: primary events numbered \[2\]")


def test_a_backup_without_checksums_reads_with_a_note(tmp_path):
    path = tmp_path / "backup.jsonl"
    path.write_text("".join(json.dumps({"name": n, "doc": d}, default=lambda a: a.tolist())
                            + "\n" for n, d in run_documents(2)))
    spool = read_spool(path)
    assert spool.count == 5 and spool.event_counts() == {"primary": 2}
    assert "5 line(s) carry no checksum" in spool.notes[0]
