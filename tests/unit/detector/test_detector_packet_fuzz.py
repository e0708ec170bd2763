"""Fuzz the pure cores of the detector link: the frame assembler and register packets.

Sized by ``fuzz_cases()`` (bad inputs fed). No sockets: the assembler is fed packets
directly and register datagrams go straight to the decoder and the emulator's handler.

- Data packets: a stream of good test-pattern frames (train ID = frame number + 10**12)
  with one hostile packet between good packets, of a random kind: truncated, oversized,
  tiny, bad magic, version, payload-size or packets-per-frame field, packet index out
  of range, an implausible frame number (2**62, far behind, near 2**63), a late packet
  of an earlier frame, a duplicate, or a packet of the open frame with another train ID
  or timestamp (a spoof). Every bad packet must be counted in exactly the counter of its
  kind; every frame published complete must be exactly its test pattern with its own
  train ID; every frame that took a spoofed packet must be published flagged (not
  complete); no good frame is lost.
- Register datagrams: random bytes and mutated valid packets into ``decode_register``
  (only ``ValueError``) and the emulator's request handler (no exception; a reply only
  to a well-formed-size request).
"""

from __future__ import annotations

import random
import struct

import pytest

from trainstamp.detector import _frames as F
from trainstamp.detector import _protocol as P
from trainstamp.testing import fuzz_cases, report_cases

pytestmark = pytest.mark.fuzz

CASES = fuzz_cases()
TRAIN0 = 10**12
PPF = P.packets_per_frame(P.JUMBO_PAYLOAD)
KINDS = ("truncate", "oversize", "tiny", "magic", "version", "payload", "ppf", "index",
         "implausible", "late", "duplicate", "spoof_train", "spoof_time")
COUNTER_OF = {"truncate": "malformed", "oversize": "malformed", "tiny": "malformed", "magic": "malformed",
              "version": "malformed", "payload": "malformed", "ppf": "malformed", "index": "malformed",
              "implausible": "implausible", "late": "late", "duplicate": "duplicate",
              "spoof_train": "inconsistent", "spoof_time": "inconsistent"}


def frame_packets(fn: int) -> list[bytes]:
    return F.packetize(F.test_pattern(fn), fn, train_id=TRAIN0 + fn, timestamp_ns=fn * 1000)


def _set(pkt: bytearray, off: int, fmt: str, value: int) -> bytearray:
    struct.pack_into(fmt, pkt, off, value)
    return pkt


def hostile(rng: random.Random, kind: str, fn: int, good: list[bytes], pos: int) -> bytes:
    """One bad packet of ``kind`` while frame ``fn`` is open at packet ``pos``."""
    b = bytearray(good[rng.randrange(pos)] if kind == "duplicate" else good[pos])
    if kind == "truncate":
        return bytes(b[:rng.randrange(P.HEADER_SIZE, len(b))])
    if kind == "oversize":
        return bytes(b + rng.randbytes(rng.randrange(1, 200)))
    if kind == "tiny":
        return rng.randbytes(rng.randrange(0, P.HEADER_SIZE))
    if kind == "magic":
        return bytes(_set(b, P.OFF_MAGIC, "<I", rng.choice([0, 0xFFFFFFFF, P.DATA_MAGIC ^ (1 << rng.randrange(32))])))
    if kind == "version":
        b[P.OFF_VERSION] = rng.choice([x for x in range(256) if x != P.DATA_VERSION])
        return bytes(b)
    if kind == "payload":
        return bytes(_set(b, P.OFF_PAYLOAD_SIZE, "<I", rng.choice([0, 1024, 8191, 2**32 - 1])))
    if kind == "ppf":
        return bytes(_set(b, P.OFF_PACKETS_PER_FRAME, "<H", rng.choice([0, 1, PPF - 1, PPF + 1, 65535])))
    if kind == "index":
        return bytes(_set(b, P.OFF_PACKET_INDEX, "<I", rng.randrange(PPF, 2**32)))
    if kind == "implausible":
        far = rng.choice([2**62, 2**63 - 1, fn + F.MAX_AHEAD + 1 + rng.randrange(10**9),
                          rng.randrange(2, max(3, fn - F.LATE_WINDOW - 1)) if fn > F.LATE_WINDOW + 3 else 2**40])
        return bytes(_set(b, P.OFF_FRAME_NUMBER, "<Q", far))
    if kind == "late":
        return bytes(_set(b, P.OFF_FRAME_NUMBER, "<Q", fn - rng.randrange(1, F.LATE_WINDOW + 1)))
    if kind == "duplicate":
        return bytes(b)
    if kind == "spoof_train":
        b = _set(b, P.OFF_TRAIN_ID, "<Q", rng.choice([0, 4242, TRAIN0 + fn + 1]))
        b[P.HEADER_SIZE:P.HEADER_SIZE + 64] = b"\x11" * 64
        return bytes(b)
    if kind == "spoof_time":
        return bytes(_set(b, P.OFF_TIMESTAMP, "<Q", fn * 1000 + rng.randrange(1, 10**6)))
    raise AssertionError(kind)


def test_hostile_data_packets_cost_only_themselves():
    rng = random.Random(8)
    a = F.Assembler(n_slots=4)
    sent = dict.fromkeys(COUNTER_OF.values(), 0)
    spoofed: set[int] = set()
    per_frame = 60  # bad packets per frame
    n_frames = CASES // per_frame + 1
    bad = 0
    checked = flagged = 0
    first = 100  # well above LATE_WINDOW, never 1 (a restart)

    def check(n_published: int) -> None:
        nonlocal checked, flagged
        for seq in range(int(a.counters[F.C_HEAD]) - n_published + 1, int(a.counters[F.C_HEAD]) + 1):
            slot = (seq - 1) % 4
            fn = int(a.meta[slot, F.M_FRAME_NUMBER])
            if fn in spoofed:
                assert a.meta[slot, F.M_COMPLETE] == 0 and a.meta[slot, F.M_SUSPECT] == 1, fn
                flagged += 1
                continue
            assert a.meta[slot, F.M_COMPLETE] == 1, fn
            assert a.meta[slot, F.M_TRAIN_ID] == TRAIN0 + fn
            assert F.check_test_pattern(a.frame(seq), fn) == 0, fn
            checked += 1

    for k in range(n_frames):
        fn = first + k
        good = frame_packets(fn)
        positions = set(rng.sample(range(1, PPF), min(per_frame, PPF - 1, CASES - bad)))
        kinds = KINDS if rng.random() < 0.25 else KINDS[:-2]  # spoofs in a quarter of the frames
        for pos, pkt in enumerate(good):
            if pos in positions:
                kind = rng.choice(kinds)
                if kind.startswith("spoof"):
                    spoofed.add(fn)
                check(a.feed(hostile(rng, kind, fn, good, pos)))
                sent[COUNTER_OF[kind]] += 1
                bad += 1
            check(a.feed(pkt))
        if bad >= CASES:
            break
    check(a.flush())
    got = {name: a.count(name) for name in sent}
    assert got == sent
    assert a.count("dropped") == 0 and a.count("backwards") == 0
    assert checked + flagged == k + 1 and flagged == len(spoofed)
    report_cases("detector data packets (assembler)", bad, frames=k + 1, intact=checked,
                 flagged=flagged, **{f"counted_{n}": v for n, v in got.items()})
    assert bad >= CASES


def test_register_datagrams_never_raise_anything_but_value_error():
    from trainstamp.detector._emulator import FpgaEmulator

    rng = random.Random(9)
    emu = FpgaEmulator("127.0.0.1", 0, 0)  # sockets bound, never started
    try:
        refused = replied = 0
        valid = P.encode_register(P.Opcode.READ, 1, 0, 0)
        for _ in range(CASES):
            how = rng.randrange(4)
            if how == 0:
                data = rng.randbytes(rng.randrange(0, 64))
            elif how == 1:
                b = bytearray(valid)
                for _ in range(rng.randrange(1, 4)):
                    b[rng.randrange(len(b))] = rng.randrange(256)
                data = bytes(b)
            elif how == 2:
                data = P.REGISTER_PACKET.pack(P.REGISTER_MAGIC, P.REGISTER_VERSION, rng.randrange(256),
                                              rng.randrange(2**32), rng.randrange(2**32), rng.randrange(2**32))
            else:  # a valid request for any address and value
                data = P.encode_register(rng.choice([P.Opcode.READ, P.Opcode.WRITE]), rng.randrange(2**32),
                                         rng.choice([rng.randrange(2**32), rng.randrange(0x40)]),
                                         rng.choice([0, 1, rng.randrange(2**32)]))
            try:
                P.decode_register(data)
            except ValueError:
                refused += 1
            reply = emu._handle_register(data)  # no exception, whatever came in
            if reply is not None:
                replied += 1
                assert len(reply) == P.REGISTER_PACKET.size
                P.decode_register(reply)  # the emulator's replies are always well-formed
            emu._running.clear()  # a fuzzed DAQ start must not matter here
        report_cases("detector register datagrams (decoder + emulator handler)", CASES,
                     refused_by_decoder=refused, replies=replied)
        assert refused > 0 and replied > 0
    finally:
        for sock in (emu.reg_sock, emu.data_sock, emu.foreign_sock):
            sock.close()
