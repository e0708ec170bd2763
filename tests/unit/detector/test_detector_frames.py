"""Frame contents and the assembly kernel, fed packets directly (no sockets)."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trainstamp.detector import _frames as F
from trainstamp.detector import _protocol as P
from trainstamp.detector._registers import ExposureModes


def test_test_pattern_is_checkable_and_encodes_the_frame_number():
    fr = F.test_pattern(0x1234_5678_9ABC)
    assert F.check_test_pattern(fr, 0x1234_5678_9ABC) == 0
    assert (F.decode_frame_numbers(fr) == 0x1234_5678_9ABC).all()
    assert F.check_test_pattern(fr, 7) == 3 * 1024  # the top word is 0 in both
    assert not (fr[:, 4:] == 0xFFFF).any()


def test_simulated_image_cds_is_less_noisy():
    plain = F.SimulatedImage(ExposureModes.GLOBAL_SHUTTER, 10, n_bank=2)
    cds = F.SimulatedImage(ExposureModes.GLOBAL_SHUTTER_CDS, 10, n_bank=2)
    # frame-to-frame noise in a dark corner (no signal): read noise only
    def noise(img):
        return np.std(img.frames[0][:100, :100].astype(float) - img.frames[1][:100, :100]) / np.sqrt(2)
    assert noise(plain) == pytest.approx(24, rel=0.1)
    assert noise(cds) == pytest.approx(6, rel=0.15)
    assert plain.frames[0].dtype == np.uint16 and plain.frames[0].shape == (1024, 1024)


def packets(fn, train_id=0):
    return F.packetize(F.test_pattern(fn), fn, train_id=train_id)


def test_complete_frame():
    a = F.Assembler()
    assert sum(a.feed(p) for p in packets(1, train_id=42)) == 1
    assert F.check_test_pattern(a.frame(1), 1) == 0
    assert a.count("complete") == 1 and a.count("lost") == 0
    slot = a.meta[0]
    assert slot[F.M_TRAIN_ID] == 42 and slot[F.M_COMPLETE] == 1 and slot[F.M_PACKETS] == 256


def test_missing_packets_are_padded_and_flagged():
    a = F.Assembler()
    pk = packets(1)
    for i, p in enumerate(pk):
        if i not in (3, 200):
            a.feed(p)
    for p in packets(2):  # the next frame closes frame 1
        a.feed(p)
    fr = a.frame(1).reshape(-1)
    per = P.JUMBO_PAYLOAD // 2
    assert (fr[3 * per:4 * per] == 0xFFFF).all() and (fr[200 * per:201 * per] == 0xFFFF).all()
    good = np.ones(fr.size, bool)
    good[3 * per:4 * per] = good[200 * per:201 * per] = False
    assert (fr[good] == F.test_pattern(1).reshape(-1)[good]).all()
    assert a.meta[0, F.M_COMPLETE] == 0
    assert (a.count("incomplete"), a.count("lost"), a.count("complete")) == (1, 2, 1)


def test_duplicates_reorder_late_and_gaps():
    a = F.Assembler()
    pk = packets(1)
    order = list(reversed(pk))
    order.insert(5, pk[10])  # duplicate in the open frame
    for p in order:
        a.feed(p)
    assert a.count("complete") == 1 and a.count("duplicate") == 1
    a.feed(pk[0])  # duplicate of a frame already complete
    assert a.count("duplicate") == 2
    for p in packets(4):  # frames 2 and 3 never came
        a.feed(p)
    assert a.count("dropped") == 2
    a.feed(packets(3)[0])  # a packet older than the newest frame: late, not mixed in
    assert a.count("late") == 1
    assert F.check_test_pattern(a.frame(2), 4) == 0


def test_frame_number_going_far_backwards_re_anchors():
    a = F.Assembler()
    for p in packets(1000):
        a.feed(p)
    for p in packets(1):  # detector restarted its counter
        a.feed(p)
    assert a.count("backwards") == 1 and a.count("complete") == 2
    assert F.check_test_pattern(a.frame(2), 1) == 0


@pytest.mark.parametrize("mutate", ["truncate", "oversize", "magic", "version", "index", "payload", "ppf", "tiny"])
def test_malformed_packets_are_counted_and_ignored(mutate):
    a = F.Assembler()
    pk = packets(1)
    bad = bytearray(pk[7])
    if mutate == "truncate":
        bad = bad[:-100]
    elif mutate == "oversize":
        bad += b"\0" * 10
    elif mutate == "magic":
        bad[P.OFF_MAGIC] ^= 0x55
    elif mutate == "version":
        bad[P.OFF_VERSION] = 99
    elif mutate == "index":
        bad[P.OFF_PACKET_INDEX:P.OFF_PACKET_INDEX + 4] = (256).to_bytes(4, "little")
    elif mutate == "payload":
        bad[P.OFF_PAYLOAD_SIZE:P.OFF_PAYLOAD_SIZE + 4] = (1024).to_bytes(4, "little")
    elif mutate == "ppf":
        bad[P.OFF_PACKETS_PER_FRAME:P.OFF_PACKETS_PER_FRAME + 2] = (255).to_bytes(2, "little")
    elif mutate == "tiny":
        bad = bad[:10]
    a.feed(bytes(bad))
    for p in pk:
        a.feed(p)
    assert a.count("malformed") == 1
    assert a.count("complete") == 1
    assert F.check_test_pattern(a.frame(1), 1) == 0


@settings(max_examples=25, deadline=None)
@given(st.data())
def test_any_loss_and_order_is_accounted_for(data):
    """Whatever subset of packets of 3 frames arrives, in whatever order within a frame,
    every received pixel is right, every missing one is 0xFFFF, and the counters add up."""
    a = F.Assembler(n_slots=4)
    kept_per_frame = []
    for fn in (1, 2, 3):
        pk = packets(fn)
        keep = data.draw(st.sets(st.integers(0, 255), min_size=1), label=f"kept {fn}")
        order = data.draw(st.permutations(sorted(keep)), label=f"order {fn}")
        for i in order:
            a.feed(pk[i])
        kept_per_frame.append(keep)
    a.flush()
    lost = 0
    for seq, (fn, keep) in enumerate(zip((1, 2, 3), kept_per_frame, strict=True), start=1):
        fr = a.frame(seq).reshape(-1, P.JUMBO_PAYLOAD // 2)
        ref = F.test_pattern(fn).reshape(-1, P.JUMBO_PAYLOAD // 2)
        for i in range(256):
            assert (fr[i] == ref[i]).all() if i in keep else (fr[i] == 0xFFFF).all()
        lost += 256 - len(keep)
    assert a.count("lost") == lost
    assert a.count("complete") + a.count("incomplete") == 3
    assert a.count("packets") == sum(len(k) for k in kept_per_frame)


def test_internal_trigger_frame_time():
    from trainstamp.detector._registers import frame_time_us, readout_time_us

    assert readout_time_us(60e6) == pytest.approx(546.133, rel=1e-4)
    # CDS reads twice; a longer period wins; integration adds
    assert frame_time_us(ExposureModes.GLOBAL_SHUTTER, 6000, 0, 60e6) == pytest.approx(6546.133, rel=1e-6)
    assert frame_time_us(ExposureModes.GLOBAL_SHUTTER_CDS, 6000, 0, 60e6) == pytest.approx(7092.267, rel=1e-6)
    assert frame_time_us(ExposureModes.GLOBAL_SHUTTER_CDS, 6000, 50_000, 60e6) == 50_000


def test_a_spoofed_packet_cannot_pass_as_part_of_a_good_frame():
    """One packet from the detector's address with the next frame's number and another
    train ID arrives first: the frame is published flagged (not complete), the odd
    packets counted, and no frame is dropped."""
    a = F.Assembler()
    for p in packets(1, train_id=100):
        a.feed(p)
    spoof = bytearray(packets(2, train_id=4242)[5])
    spoof[P.HEADER_SIZE:] = b"\x11" * (len(spoof) - P.HEADER_SIZE)
    a.feed(bytes(spoof))
    for p in packets(2, train_id=101):
        a.feed(p)
    for p in packets(3, train_id=102):
        a.feed(p)
    assert a.count("dropped") == 0
    assert a.count("inconsistent") == 256  # every real packet disagrees with the spoofed first
    assert a.meta[1, F.M_COMPLETE] == 0 and a.meta[1, F.M_SUSPECT] == 1
    assert a.meta[2, F.M_COMPLETE] == 1 and a.meta[2, F.M_TRAIN_ID] == 102


def test_a_spoofed_packet_arriving_later_is_dropped_and_flags_the_frame():
    a = F.Assembler()
    pk = packets(1, train_id=100)
    for p in pk[:10]:
        a.feed(p)
    spoof = packets(1, train_id=4242)[20]
    a.feed(spoof)
    for p in pk[10:]:
        a.feed(p)
    a.flush()
    assert a.count("inconsistent") == 1
    assert a.meta[0, F.M_TRAIN_ID] == 100 and a.meta[0, F.M_COMPLETE] == 0
    assert F.check_test_pattern(a.frame(1), 1) == 0  # the spoofed payload never went in


@pytest.mark.parametrize("fn", [2**62, 2**63 + 5, 1000, 13])
def test_an_implausible_frame_number_is_dropped_and_counted(fn):
    a = F.Assembler()
    for p in packets(1, train_id=100):
        a.feed(p)
    a.feed(packets(fn, train_id=7)[0])
    for p in packets(2, train_id=101):
        a.feed(p)
    assert a.count("implausible") == 1 and a.count("dropped") == 0
    assert a.count("complete") == 2 and a.counters[F.C_HEAD] == 2
    assert [int(a.meta[s, F.M_FRAME_NUMBER]) for s in (0, 1)] == [1, 2]


def test_a_lasting_jump_re_anchors_after_a_run_of_packets():
    a = F.Assembler()
    for p in packets(1):
        a.feed(p)
    for p in packets(5000):
        a.feed(p)
    for p in packets(5001):
        a.feed(p)
    assert a.count("implausible") == F.REANCHOR_RUN - 1
    assert a.count("backwards") == 1
    assert int(a.meta[2, F.M_FRAME_NUMBER]) == 5001 and a.meta[2, F.M_COMPLETE] == 1
    assert a.meta[1, F.M_COMPLETE] == 0  # 5000 lost the packets of the run


def test_small_gaps_are_lost_frames_not_implausible():
    a = F.Assembler()
    for fn in (1, 2, 2 + F.MAX_AHEAD):
        for p in packets(fn):
            a.feed(p)
    assert a.count("implausible") == 0 and a.count("dropped") == F.MAX_AHEAD - 1
