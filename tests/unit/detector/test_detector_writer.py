"""The capture writer's bookkeeping, against an in-memory ring (no sockets, no process)."""

import types

from trainstamp.detector import _frames as F
from trainstamp.detector._acquisition import CaptureJob, CaptureState, Team1kServer
from trainstamp.detector._capture import CaptureFile, read_capture


class FakeReceiver:
    """The part of :class:`Receiver` the writer uses, over an :class:`Assembler`.

    ``reuse`` names sequence numbers whose slot is overwritten while the writer copies
    them (``valid`` turns false once), as when the writer lags a whole ring behind.
    """

    def __init__(self, n_slots, reuse=()):
        self.asm = F.Assembler(n_slots=n_slots)
        self.reuse = set(reuse)

    def publish(self, fn):
        for p in F.packetize(F.test_pattern(fn), fn, train_id=1000 + fn):
            self.asm.feed(p)

    @property
    def head(self):
        return self.asm.count("head")

    def _slot(self, seq):
        return (seq - 1) % self.asm.meta.shape[0]

    def frame_info(self, seq):
        m = self.asm.meta[self._slot(seq)]
        return int(m[F.M_FRAME_NUMBER]), int(m[F.M_TRAIN_ID]), 0, bool(m[F.M_COMPLETE])

    def frame_raw(self, seq):
        return self.asm.ring[self._slot(seq)]

    def valid(self, seq):
        if seq in self.reuse:
            self.reuse.discard(seq)
            return False
        return self.asm.meta[self._slot(seq), F.M_SEQ] == seq


def writer(rx, n_slots):
    srv = types.SimpleNamespace(rx=rx, rx_cfg=types.SimpleNamespace(n_slots=n_slots), capture_timeout_s=0.5,
                                keep_open=True, close_file=lambda: None)
    return srv


def test_writer_skips_frames_it_lost_and_keeps_the_rest_exact(tmp_path):
    rx = FakeReceiver(n_slots=8, reuse={3})
    for fn in range(1, 6):
        rx.publish(fn)
    f = CaptureFile(tmp_path / "c.h5", flush_interval=0)
    job = CaptureJob(4, f.path)
    Team1kServer._run_capture(writer(rx, 8), job, f, 1)
    f.close()
    assert job.status == CaptureState.READY and job.overruns == 1
    got = read_capture(f.path)
    assert got["frame_number"].tolist() == [1, 2, 4, 5] == job.frame_numbers
    assert got["train_id"].tolist() == [1001, 1002, 1004, 1005]
    for img, fn in zip(got["data"], got["frame_number"], strict=True):
        assert F.check_test_pattern(img, int(fn)) == 0


def test_writer_behind_a_whole_ring_skips_ahead(tmp_path):
    rx = FakeReceiver(n_slots=4)
    for fn in range(1, 11):  # 10 frames into a 4-slot ring before the writer starts
        rx.publish(fn)
    f = CaptureFile(tmp_path / "c.h5", flush_interval=0)
    job = CaptureJob(2, f.path)
    Team1kServer._run_capture(writer(rx, 4), job, f, 1)
    f.close()
    assert job.status == CaptureState.READY
    assert job.overruns == 7  # frames 1..7 were gone; 8 and 9 are written
    assert read_capture(f.path)["frame_number"].tolist() == [8, 9]


def test_writer_times_out_without_frames(tmp_path):
    rx = FakeReceiver(n_slots=4)
    f = CaptureFile(tmp_path / "c.h5", flush_interval=0)
    job = CaptureJob(1, f.path)
    Team1kServer._run_capture(writer(rx, 4), job, f, 1)
    f.close()
    assert job.status == CaptureState.ERROR and "no frame for 0.5 s" in job.message
    assert job.done.is_set()
