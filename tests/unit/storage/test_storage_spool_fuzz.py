"""Fuzz: damaged spool files for ``trainstamp replay``.

Each case is a spool file of a real run (start, descriptor, resource, datum, events,
stop) with one mutation: bytes flipped, a line cut, garbage or binary inserted, a line
duplicated or dropped, a document's name or run changed, or the file cut short at any
byte. For every case, :func:`read_spool` either accepts the file (then every document it
gives decodes and belongs to the run) or refuses it with :class:`SpoolError`; nothing
else is raised and nothing hangs. A file only cut short keeps every whole line before
the cut (the good data), and its cut-off tail is reported, not replayed. Any other
changed file that is read holds the same documents (a blank changed for another), or
the same documents in another order that keeps every
reference before its use and the events in sequence (a datum written earlier), or is
the run without its stop document (a writer killed before the stop), which a replay
closes as ``abort``.
"""

from __future__ import annotations

import contextlib
import random
import time
import tracemalloc

import numpy as np
import pytest
from event_model import compose_run
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trainstamp.storage import SpoolError, read_spool
from trainstamp.storage._spool_file import encode_line
from trainstamp.testing import fuzz_cases, report_cases

pytestmark = pytest.mark.fuzz

BATCH = 50
#: one batch in this many runs under tracemalloc: every mutation kind, 1,000 cases of 10,000
TRACE_EVERY = 10


def spool_lines() -> list[bytes]:
    run = compose_run()
    res = run.compose_resource(spec="AD_HDF5", root="/data", resource_path="f.h5",
                               resource_kwargs={"frame_per_point": 1})
    desc = run.compose_descriptor(name="primary", data_keys={
        "img": {"dtype": "array", "shape": [4, 5], "source": "t", "external": "FILESTORE:"},
        "train_id": {"dtype": "integer", "shape": [], "source": "t"},
        "h": {"dtype": "array", "shape": [6], "source": "t", "dtype_numpy": "<i4"}})
    docs = [("start", run.start_doc), ("resource", res.resource_doc),
            ("descriptor", desc.descriptor_doc)]
    for i in range(4):
        datum = res.compose_datum(datum_kwargs={"point_number": i})
        docs.append(("datum", datum))
        docs.append(("event", desc.compose_event(
            data={"img": datum["datum_id"], "train_id": 1000 + i,
                  "h": np.arange(6, dtype=np.int32) * i},
            timestamps={"img": 1.0, "train_id": 1.0, "h": 1.0}, filled={"img": False})))
    docs.append(("stop", run.compose_stop()))
    return [encode_line(*d).encode() for d in docs]


LINES = spool_lines()
GOOD = b"".join(LINES)


def mutate(rng: random.Random) -> tuple[bytes, int | None]:
    """A damaged spool, and (for a file only cut short) the number of whole lines kept."""
    lines = list(LINES)
    kind = rng.randrange(9)
    if kind == 0:  # cut short anywhere
        cut = rng.randrange(1, len(GOOD))
        data = GOOD[:cut]
        return data, data.count(b"\n")
    if kind == 1:  # flip bytes
        data = bytearray(GOOD)
        for _ in range(rng.randint(1, 8)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        return bytes(data), None
    if kind == 2:  # a garbage or binary line
        junk = bytes(rng.randrange(256) for _ in range(rng.randint(0, 60))).replace(b"\n", b"")
        lines.insert(rng.randrange(len(lines) + 1), junk + b"\n")
    elif kind == 3:  # duplicate a line
        i = rng.randrange(len(lines))
        lines.insert(rng.randrange(len(lines) + 1), lines[i])
    elif kind == 4:  # drop a line
        del lines[rng.randrange(len(lines))]
    elif kind == 5:  # swap two lines
        i, j = rng.randrange(len(lines)), rng.randrange(len(lines))
        lines[i], lines[j] = lines[j], lines[i]
    elif kind == 6:  # rename a document
        i = rng.randrange(len(lines))
        name = rng.choice([b"bogus", b"start", b"stop", b"", b"event_page", b"\\u0000"])
        lines[i] = lines[i].replace(lines[i].split(b'"')[3], name, 1)
    elif kind == 7:  # the document of another run, or no object at all
        i = rng.randrange(1, len(lines))
        lines[i] = rng.choice([lines[i].replace(b'"run_start": "', b'"run_start": "x', 1),
                               b'{"name": "event", "doc": 5}\n', b"[]\n", b"null\n",
                               b'{"name": "event"}\n'])
    else:  # a huge number, NaN, deep nesting in the first event's train ID
        i = next(n for n, line in enumerate(lines) if b'"train_id": 1000' in line)
        lines[i] = lines[i].replace(b'"train_id": 1000', b'"train_id": ' + rng.choice(
            [b"1" * 5000, b"NaN", b"-Infinity", b"[" * 50 + b"]" * 50, b"[" * 5000]), 1)
    data = b"".join(lines)
    return data, None


@settings(max_examples=max(1, fuzz_cases() // BATCH), deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**32 - 1))
def test_damaged_spools_are_refused_or_read_never_anything_else(seed, tmp_path, figures):
    with traced(figures):
        _batch(seed, tmp_path, figures)


def _batch(seed, tmp_path, figures):
    rng = random.Random(seed)
    path = tmp_path / f"{seed}.jsonl"
    for _ in range(BATCH):
        data, kept = mutate(rng)
        path.write_bytes(data)
        try:
            spool = read_spool(path)
        except SpoolError as exc:
            assert str(path) in str(exc)
            figures["refused"] += 1
            if kept is not None:
                assert kept == 0  # a cut file is refused only if no whole line is left
            continue
        docs = list(spool.documents())
        assert len(docs) == spool.count and docs[0][0] == "start"
        assert all(d.get("run_start", spool.uid) == spool.uid
                   for n, d in docs if n in ("descriptor", "stop"))
        figures["read"] += 1
        got = [encode_line(*d).encode() for d in docs]
        if got == LINES:  # the same documents: the mutation changed nothing a replay
            figures["same_documents"] += 1  # writes (blank for blank, a line for itself)
        elif kept is None and sorted(got) == sorted(LINES):
            figures["reordered"] += 1  # the same documents, every reference still before
        elif kept is None:  # changed, yet read: only the stop document may be gone
            assert got == LINES[:-1] and not spool.stopped
            figures["stop_dropped"] += 1
        if kept is not None:  # cut short: every whole line before the cut is there, intact
            assert got == LINES[:spool.count]
            assert spool.count in (kept, kept + 1)  # +1: the cut fell just before a newline
            assert spool.truncated_tail == (spool.count == kept and not data.endswith(b"\n"))
            figures["cut_kept"] += 1


@pytest.fixture(scope="module")
def figures():
    counts = {"read": 0, "refused": 0, "cut_kept": 0, "same_documents": 0, "reordered": 0,
              "stop_dropped": 0, "batches": 0, "traced_cases": 0, "peak_bytes": 0}
    t0 = time.monotonic()
    yield counts
    cases = counts["read"] + counts["refused"]
    peak = counts.pop("peak_bytes")
    report_cases("spool files", cases, seconds=round(time.monotonic() - t0, 1),
                 peak_mib=round(peak / 2**20, 1), **counts)
    assert cases >= fuzz_cases()
    assert counts["traced_cases"] >= cases // TRACE_EVERY
    assert peak < 64 * 2**20  # bounded: one small file at a time


@contextlib.contextmanager
def traced(figures):
    """Trace the memory of every TRACE_EVERY-th batch (tracing every allocation makes a
    case five times slower); the peak over the traced batches is the figure."""
    figures["batches"] += 1
    if figures["batches"] % TRACE_EVERY:
        yield
        return
    tracemalloc.start()
    try:
        yield
        figures["peak_bytes"] = max(figures["peak_bytes"], tracemalloc.get_traced_memory()[1])
        figures["traced_cases"] += BATCH
    finally:
        tracemalloc.stop()
