"""Good and bad tag-stream frames for tests: a fake tagger's vocabulary.

:class:`FrameFaults` writes a stream of good TAGS blocks (consecutive sequence numbers,
stream time rising by ``step_ps`` per block) with bad frames mixed in, and keeps the
books: how many bad inputs of each kind it wrote, which of the reader's counters each
must move (``bad_headers``, ``bad_payloads``, ``lost_blocks``) and how many good tags
must come through. Each bad input is built so that it moves exactly one counter by one
(a sequence gap moves ``lost_blocks`` by its size), which lets a test demand that the
counters account for every bad input, exactly.
"""

from __future__ import annotations

import json
import struct
import zlib
from collections import Counter

import numpy as np

from trainstamp.tagger import _wire as wire

#: bad kinds, and the reader counter each one moves
BAD_KINDS = {
    "truncated": "bad_frames", "payload_crc": "bad_payloads", "header_crc": "bad_headers",
    "unsorted": "bad_payloads", "bad_kind": "bad_headers", "bad_version": "bad_headers",
    "huge_end": "bad_payloads", "end_before_last": "bad_payloads", "garbage": "bad_headers",
    "bad_hello": "bad_payloads", "not_json": "bad_payloads", "oversize": "bad_headers",
    "length_mismatch": "bad_headers", "seq_gap": "lost_blocks",
}


def raw_header(kind: int, seq: int, count: int, flags: int, payload: bytes, end: int = 0,
               *, version: int = wire.VERSION, length: int | None = None) -> bytes:
    """A header with a correct header CRC, whatever the fields say."""
    n = len(payload) if length is None else length
    head = wire.HEADER.pack(wire.MAGIC, version, kind, seq, count, flags, n,
                            zlib.crc32(payload), end, 0, 0)
    return head[:40] + struct.pack("<II", zlib.crc32(head[:40]), 0)


def tags_frame(times: np.ndarray, seq: int, end: int, channel: int = 1) -> bytes:
    tags = np.zeros(len(times), wire.TAG_DTYPE)
    tags["channel"] = channel
    tags["time"] = times
    payload = tags.tobytes()
    return raw_header(int(wire.Kind.TAGS), seq, len(tags), 0, payload, end) + payload


class FrameFaults:
    """A stream of good blocks with counted bad frames in between (see module doc)."""

    def __init__(self, seed: int = 0, t0_ps: int = 0, step_ps: int = 10_000_000,
                 tags_per_block: int = 4, channel: int = 1) -> None:
        self.rng = np.random.default_rng(seed)
        self.t = int(t0_ps)
        self.step = int(step_ps)
        self.per_block = tags_per_block
        self.channel = channel
        self.seq = 0
        self.good_tags = 0
        self.good_blocks = 0
        self.bad = Counter()  # kind -> inputs written
        self.expect = Counter()  # reader counter -> expected increase

    def good(self) -> bytes:
        """One good block, sorted, inside the next ``step_ps`` of stream time."""
        times = np.sort(self.rng.integers(self.t, self.t + self.step,
                                          self.per_block)).astype(np.int64)
        frame = tags_frame(times, self.seq, self.t + self.step, self.channel)
        self.t += self.step
        self.seq += 1
        self.good_tags += len(times)
        self.good_blocks += 1
        return frame

    def bad_frame(self, kind: str | None = None) -> bytes:
        """One bad input of ``kind`` (random if None), booked; a seq gap is a good block."""
        kind = kind or str(self.rng.choice(sorted(BAD_KINDS)))
        data = getattr(self, "_" + kind)()
        self.bad[kind] += 1
        counter = BAD_KINDS[kind]
        if counter != "lost_blocks":
            self.expect["bad_frames"] += 1
        return data

    # -- the kinds (each moves one counter by one; seq_gap moves lost_blocks) --------
    def _block_times(self, n: int | None = None) -> np.ndarray:
        n = self.per_block if n is None else n
        return np.sort(self.rng.integers(self.t, self.t + self.step, n)).astype(np.int64)

    def _truncated(self) -> bytes:
        frame = tags_frame(self._block_times(), 10**9, self.t + self.step, self.channel)
        return frame[:int(self.rng.integers(1, len(frame)))]

    def _payload_crc(self) -> bytes:
        frame = bytearray(tags_frame(self._block_times(), 10**9, self.t + self.step))
        i = int(self.rng.integers(wire.HEADER_SIZE, len(frame)))
        frame[i] ^= int(self.rng.integers(1, 256))
        return bytes(frame)

    def _header_crc(self) -> bytes:
        frame = bytearray(tags_frame(self._block_times(), 10**9, self.t + self.step))
        i = int(self.rng.integers(4, 40))  # a field, not the magic
        frame[i] ^= int(self.rng.integers(1, 256))
        return bytes(frame)

    def _unsorted(self) -> bytes:
        times = self._block_times(max(2, self.per_block))[::-1].copy()
        times[0] += 1  # strictly out of order
        return tags_frame(times, 10**9, int(times.max()) + 1)

    def _bad_kind(self) -> bytes:
        return raw_header(int(self.rng.integers(5, 65536)), 0, 0, 0, b"")

    def _bad_version(self) -> bytes:
        return raw_header(int(wire.Kind.TAGS), 0, 0, 0, b"", version=2)

    def _huge_end(self) -> bytes:
        return tags_frame(self._block_times(), 10**9, 2**62, self.channel)

    def _end_before_last(self) -> bytes:
        times = self._block_times()
        return tags_frame(times, 10**9, int(times[-1]) - 1, self.channel)

    def _garbage(self) -> bytes:
        data = self.rng.integers(0, 256, int(self.rng.integers(1, 200)), np.uint8).tobytes()
        return data.replace(b"TTSB", b"XXXX").replace(b"TTS", b"XXX").replace(b"TT", b"XX")

    def _bad_hello(self) -> bytes:
        msg = {"channels": str(self.rng.integers(0, 10**6)), "serial": "FAKE"}
        payload = json.dumps(msg).encode()
        return raw_header(int(wire.Kind.HELLO), 0, len(payload), 0, payload) + payload

    def _not_json(self) -> bytes:
        payload = b"\xff{not json" + bytes(self.rng.integers(0, 256, 8, np.uint8))
        return raw_header(int(wire.Kind.REPLY), 0, len(payload), 0, payload) + payload

    def _oversize(self) -> bytes:
        n = wire.MAX_TAGS_PER_BLOCK + int(self.rng.integers(1, 1000))
        return raw_header(int(wire.Kind.TAGS), 0, n, 0, b"", length=n * 16)

    def _length_mismatch(self) -> bytes:
        return raw_header(int(wire.Kind.TAGS), 0, 3, 0, b"", length=47)

    def _seq_gap(self) -> bytes:
        gap = int(self.rng.integers(1, 5))
        self.seq += gap
        self.expect["lost_blocks"] += gap
        return self.good()
