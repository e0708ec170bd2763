"""The bridge's pure core: train assembly, the newest-wins queue, the 2.2 message."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from karabo_bridge.serializer import deserialize, serialize

from trainstamp.bridge import Assembler, NewestQueue, Part, encode
from trainstamp.bridge._callback import BridgeCallback, camel, classify
from trainstamp.bridge._core import metadata, resolve

T, D, G = "TRAINSTAMP/TIMESERVER/ts", "TRAINSTAMP/DET/det:daqOutput", "TRAINSTAMP/TAGGER/tt:output"


def part(**data):
    return Part(dict(data), 1_000)


def ids(trains):
    return [t.train_id for t in trains]


def test_a_train_goes_once_it_has_every_source():
    a = Assembler([T, D, G])
    assert a.add(T, 10, part()) == []
    assert a.add(D, 10, part()) == []
    (train,) = a.add(G, 10, part(counts=3))
    assert train.train_id == 10 and set(train.parts) == {T, D, G}
    assert train.parts[G].data == {"counts": 3}
    assert (a.released, a.pending) == (1, 0)


def test_older_incomplete_trains_are_dropped_when_a_later_one_completes():
    a = Assembler([T, D])
    a.add(T, 1, part())  # ticks before the detector started
    a.add(T, 2, part())
    a.add(T, 3, part())
    assert ids(a.add(D, 3, part())) == [3]
    assert a.incomplete == 2 and a.pending == 0
    # a part of a train already passed is late, whatever the source
    assert a.add(D, 2, part()) == [] and a.late == 1


def test_with_fewer_required_sources_a_partial_train_is_released_in_order():
    a = Assembler([T, D, G], required=[T, D])
    a.add(T, 1, part())
    a.add(D, 1, part())  # no tagger part yet
    a.add(T, 2, part())
    a.add(D, 2, part())
    out = a.add(G, 2, part())
    assert ids(out) == [1, 2] and set(out[0].parts) == {T, D}
    assert a.incomplete == 0


def test_the_pending_trains_are_bounded():
    a = Assembler([T, D], max_pending=3)
    out = []
    for tid in range(1, 6):
        out += a.add(T, tid, part())
    assert out == [] and a.pending == 3 and a.incomplete == 2
    assert a.flush() == [] and a.incomplete == 5 and a.pending == 0


def test_a_source_restart_starts_the_order_over():
    a = Assembler([T, D])
    a.add(T, 5000, part())
    a.add(D, 5000, part())
    a.add(T, 5001, part())  # pending when the source restarts
    assert a.add(T, 4500, part()) == [] and a.late == 1  # a small step back is late
    a.add(T, 10, part())
    assert ids(a.add(D, 10, part())) == [10]
    assert (a.restarts, a.incomplete) == (1, 1)


def test_a_train_waits_for_a_source_not_required_only_so_long():
    a = Assembler([T, D, G], required=[T, D], max_wait_ns=1000)
    a.add(T, 1, part(), now_ns=0)  # a tick whose frame never comes
    a.add(T, 2, part(), now_ns=100)
    assert a.add(D, 2, part(), now_ns=500) == []  # no counts yet
    assert a.expire(1099) == []
    (train,) = a.expire(1100)  # train 2 waited 1000 since its first part
    assert train.train_id == 2 and set(train.parts) == {T, D}
    assert a.incomplete == 1 and a.pending == 0
    assert Assembler([T], max_wait_ns=None).expire(10**18) == []


def test_flush_releases_what_has_the_required_sources():
    a = Assembler([T, D], required=[D])
    a.add(D, 4, part())
    a.add(T, 5, part())
    assert ids(a.flush()) == [4] and a.incomplete == 1


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="not among"):
        Assembler([T], required=[D])
    with pytest.raises(ValueError, match="max_pending"):
        Assembler([T], max_pending=0)
    with pytest.raises(ValueError, match="unknown source"):
        Assembler([T]).add(D, 1, part())
    with pytest.raises(ValueError, match="depth"):
        NewestQueue(0)


@given(st.lists(st.tuples(st.sampled_from([T, D, G]), st.integers(1, 40)), max_size=200),
       st.integers(1, 10), st.none() | st.integers(1, 20))
def test_released_ids_only_increase_and_every_train_is_counted_once(adds, max_pending, wait):
    a = Assembler([T, D, G], required=[T, D], max_pending=max_pending, max_wait_ns=wait)
    out = []
    for now, (src, tid) in enumerate(adds):
        out += a.add(src, tid, part(), now_ns=now)
    out += a.flush()
    got = ids(out)
    assert got == sorted(set(got))
    assert all({T, D} <= set(t.parts) for t in out)
    assert a.released == len(out)
    trains = {tid for _, tid in adds}
    # each train seen is released, dropped as incomplete, or (arrived late) neither
    assert a.released + a.incomplete <= len(trains)


def test_the_queue_keeps_the_newest_and_counts_the_skipped():
    q = NewestQueue(1)
    for i in range(5):
        q.put(i)
    assert len(q) == 1 and q.skipped == 4 and q.get(0) == 4 and q.get(0) is None
    q = NewestQueue(3)
    for i in range(5):
        q.put(i)
    assert [q.get(0), q.get(0), q.get(0)] == [2, 3, 4] and q.skipped == 2


def test_put_never_waits_on_a_waiting_get():
    q = NewestQueue(1)
    got = []
    reader = threading.Thread(target=lambda: got.append(q.get(timeout=10)))
    reader.start()
    q.put("train")
    reader.join(10)
    assert got == ["train"]


def test_the_message_is_what_the_karabo_bridge_serializer_writes():
    image = np.arange(12, dtype=np.uint16).reshape(3, 4)
    data = {D: {"data.trainId": 7, "data.image": image, "data.complete": True,
               "data.frameNumber": np.uint64(9)},
            T: {"trainId": 7, "tickTime": 1.5}}
    times = {D: 2_000_000_000, T: 1_500_000_000}
    ours = encode(7, data, times)
    meta = {src: metadata(src, 7, times[src]) for src in data}
    theirs = serialize(data, meta)
    assert [bytes(m) for m in ours] == [bytes(m) for m in theirs]
    got, got_meta = deserialize([bytes(m) for m in ours])
    assert (got[D]["data.image"] == image).all() and got[T]["tickTime"] == 1.5
    assert got_meta[T]["timestamp.tid"] == 7 and got_meta[T]["timestamp.frac"] == "5" + "0" * 17
    assert got_meta[D]["timestamp.sec"] == "2"
    # numpy scalars of any kind go as Python ones (the serializer takes np.number only)
    got, _ = deserialize([bytes(m) for m in encode(7, {D: {"ok": np.bool_(True)}}, {D: 0})])
    assert got[D]["ok"] is True


def test_a_non_contiguous_array_is_sent_in_c_order():
    image = np.arange(12, dtype=np.uint16).reshape(3, 4).T
    got, _ = deserialize([bytes(m) for m in encode(1, {D: {"im": image}}, {D: 0})])
    assert (got[D]["im"] == image).all()


def test_resolve_reads_lazy_values_and_counts_the_missing():
    from trainstamp.bridge import Train
    frame = np.ones((2, 2), np.uint16)
    train = Train(3, {D: Part({"data.trainId": 3}, 0, {"data.image": lambda: frame}),
                      G: Part({}, 0, {"x": lambda: None})})
    sources, times, missing = resolve(train)
    assert sources[D]["data.image"] is frame and "x" not in sources[G] and missing == 1


def test_fly_streams_are_recognised_by_their_keys():
    ts = classify(["train_id", "train_id_status", "timeserver_tick_time"])
    assert ts.source == "TRAINSTAMP/TIMESERVER/timeserver" and ts.time_key == "timeserver_tick_time"
    det = classify(["train_id", "train_id_status", "team1k_frame_number", "team1k_complete"])
    assert det.source == "TRAINSTAMP/DET/team1k:daqOutput" and det.image_of == "team1k"
    assert det.keys == {"train_id": "data.trainId", "team1k_frame_number": "data.frameNumber",
                        "team1k_complete": "data.complete"}
    tt = classify(["train_id", "tagger_counts_counts", "tagger_counts_width",
                   "tagger_counts_first_train_id", "tagger_counts_last_train_id"])
    assert tt.source == "TRAINSTAMP/TAGGER/tagger:output"
    assert tt.keys["tagger_counts_counts"] == "counts.counts"
    assert tt.keys["tagger_counts_first_train_id"] == "counts.firstTrainId"
    assert classify(["train_id", "motor"]) is None
    assert camel("first_train_id") == "firstTrainId"


class _Recorder:
    """Stands in for the Bridge: records what the callback adds (the pure part of it)."""

    def __init__(self):
        self.added, self.resets = [], []

    def add(self, source, train_id, part):
        self.added.append((source, train_id, part))

    def reset(self, sources, required=None, *, restart=False):
        self.resets.append(set(sources))

    def flush(self):
        pass


def test_the_callback_turns_event_pages_into_parts_and_skips_untrusted_rows():
    rec = _Recorder()
    cb = BridgeCallback(rec)
    cb("start", {"uid": "r"})
    cb("descriptor", {"uid": "d1", "data_keys": {"train_id": {}, "train_id_status": {},
                                                 "ts_tick_time": {}}})
    cb("descriptor", {"uid": "d2", "data_keys": {"train_id": {}, "det_frame_number": {},
                                                 "det_complete": {}}})
    assert rec.resets[-1] == {"TRAINSTAMP/TIMESERVER/ts", "TRAINSTAMP/DET/det:daqOutput"}
    cb("event_page", {"descriptor": "d1", "time": [5.0, 5.1],
                      "data": {"train_id": [10, 11], "train_id_status": ["OK", "STALE"],
                               "ts_tick_time": [4.5, 4.6]}})
    cb("event_page", {"descriptor": "d2", "time": [6.0],
                      "data": {"train_id": [10], "train_id_status": ["EXACT"],
                               "det_frame_number": [3], "det_complete": [True]}})
    cb("event", {"descriptor": "d2", "time": 6.1,
                 "data": {"train_id": -1, "train_id_status": "INVALID",
                          "det_frame_number": 4, "det_complete": False}})
    assert [(s.split("/")[1], t) for s, t, _ in rec.added] == [("TIMESERVER", 10), ("DET", 10)]
    tick, frame = rec.added[0][2], rec.added[1][2]
    assert tick.data == {"trainId": 10, "tickTime": 4.5} and tick.time_ns == 4_500_000_000
    assert frame.data == {"data.trainId": 10, "data.frameNumber": 3, "data.complete": True}
    assert frame.lazy["data.image"]() is None  # no detector device given: no file


def test_the_command_binds_loopback_and_keeps_the_newest_train_by_default():
    from trainstamp.bridge.cli import parser
    from trainstamp.cli import resolve as resolve_command

    args = parser().parse_args(["--port", "4545"])
    assert (args.bind, args.queue, args.port, args.no_tagger) == ("127.0.0.1", 1, 4545, False)
    with pytest.raises(SystemExit):
        parser().parse_args([])  # the port is required
    assert resolve_command(["bridge", "--port", "1"]) == ("trainstamp.bridge.cli:main",
                                                          ["--port", "1"])
