"""Frame contents and frame assembly: pure functions over arrays, no I/O.

- :func:`test_pattern` / :func:`check_test_pattern`: the FPGA's deterministic test data.
  Every pixel is known; the first four pixels of each row hold the frame number (four
  little-endian 16-bit words), so a pixel from the wrong frame is caught anywhere.
- :class:`SimulatedImage`: dark offset + fixed-pattern offset + read noise + Poisson
  signal; correlated-double-sampling modes have less read noise.
- :func:`assemble_packet`: the receiver's packet -> frame-slot kernel (numba). It keeps
  a per-frame packet mask, pads missing packets with 0xFFFF, flags incomplete frames and
  counts every kind of loss and bad packet, all in preallocated arrays. Frame numbers
  must be plausible against the expected sequence (see :func:`plausible`), and every
  packet of a frame must carry the frame's train ID and timestamp: a packet that does not
  is dropped and counted, and the frame is published flagged (``M_SUSPECT``, not
  complete), so one spoofed packet cannot pass as part of a good frame.
"""

from __future__ import annotations

import numba
import numpy as np

from trainstamp.detector import _protocol as P
from trainstamp.detector._registers import CDS_MODES

ROWS, COLS = P.FRAME_ROWS, P.FRAME_COLS
_BASE = ((np.arange(ROWS, dtype=np.int64)[:, None] * 31 + np.arange(COLS)[None, :]) % 65521).astype(np.uint16)


def encode_frame_number(frame_number: int) -> np.ndarray:
    """The four uint16 words that carry ``frame_number`` in a test-pattern row."""
    return np.array([(frame_number >> (16 * k)) & 0xFFFF for k in range(4)], dtype=np.uint16)


def test_pattern(frame_number: int, out: np.ndarray | None = None) -> np.ndarray:
    """The test-pattern frame for ``frame_number``: (r*31 + c) mod 65521, with each row's
    first four pixels replaced by the frame number. Never contains 0xFFFF elsewhere."""
    if out is None:
        out = _BASE.copy()
    out[:, :4] = encode_frame_number(frame_number)
    return out


test_pattern.__test__ = False  # not a pytest test


def check_test_pattern(frame: np.ndarray, frame_number: int) -> int:
    """Number of pixels of ``frame`` that differ from the test pattern of ``frame_number``."""
    return int(np.count_nonzero(frame != test_pattern(frame_number)))


def decode_frame_numbers(frame: np.ndarray) -> np.ndarray:
    """The frame number each row of a test-pattern frame claims (one per row)."""
    words = frame[:, :4].astype(np.uint64)
    return words[:, 0] | (words[:, 1] << 16) | (words[:, 2] << 32) | (words[:, 3] << 48)


class SimulatedImage:
    """A bank of simulated frames for one exposure mode and integration time.

    Frames = dark level + per-pixel fixed offset + Gaussian read noise + Poisson signal of
    a beam-like spot and ring. Read noise is 24 ADU in plain modes, 6 ADU in CDS modes.
    A bank of ``n_bank`` frames is drawn once, so streaming costs no random numbers.
    """

    DARK = 1000.0
    READ_NOISE = 24.0
    CDS_READ_NOISE = 6.0

    def __init__(self, mode: int, integration_us: int, n_bank: int = 4, seed: int = 1) -> None:
        rng = np.random.default_rng(seed)
        self.mode = int(mode)
        self.integration_us = int(integration_us)
        self.read_noise = self.CDS_READ_NOISE if mode in CDS_MODES else self.READ_NOISE
        fixed = np.random.default_rng(12345).normal(0.0, 15.0, (ROWS, COLS)).astype(np.float32)
        y, x = np.mgrid[0:ROWS, 0:COLS].astype(np.float32)
        r = np.hypot(x - 512.0, y - 512.0)
        flux_per_ms = 40.0 * np.exp(-(r / 60.0) ** 2) + 8.0 * np.exp(-(((r - 300.0) / 12.0) ** 2))
        mean = flux_per_ms * (integration_us / 1000.0)
        self.frames = []
        for _ in range(n_bank):
            img = self.DARK + fixed + rng.normal(0.0, self.read_noise, (ROWS, COLS)) + rng.poisson(mean)
            self.frames.append(np.clip(img, 0, 65534).astype(np.uint16))

    def frame(self, frame_number: int) -> np.ndarray:
        return self.frames[frame_number % len(self.frames)]


# ------------------------------------------------------------------ assembly kernel
#: columns of the per-slot metadata array (int64)
M_SEQ = 0  # publication sequence number (1-based); 0 while the slot is being written
M_FRAME_NUMBER = 1
M_TRAIN_ID = 2  # u64 bits stored in int64
M_TIMESTAMP = 3
M_PACKETS = 4  # packets received
M_COMPLETE = 5
M_FLAGS = 6
M_SUSPECT = 7  # 1: packets of this frame disagreed on train ID or timestamp
META_FIELDS = 8

#: indices of the counters array (int64)
C_COMPLETE = 0  # frames published with every packet
C_INCOMPLETE = 1  # frames published with missing packets (padded 0xFFFF)
C_DROPPED = 2  # frames never seen at all (gaps in frame numbers)
C_LOST = 3  # packets missing from published frames
C_DUPLICATE = 4
C_MALFORMED = 5  # truncated, oversized, wrong magic/version/geometry, index out of range
C_FOREIGN = 6  # from an address other than the detector's
C_LATE = 7  # for a frame already published (reordered past a frame boundary, stalled)
C_BACKWARDS = 8  # frame number jumped back beyond the late window: re-anchored
C_PACKETS = 9  # good packets
C_HEAD = 10  # frames published (the sequence number of the newest)
C_RCVBUF = 11  # SO_RCVBUF the OS granted
C_READY = 12
C_LOCAL_PORT = 13
C_IMPLAUSIBLE = 14  # frame number far from the expected sequence (dropped)
C_INCONSISTENT = 15  # train ID / timestamp differs from the rest of its frame (dropped)
N_COUNTERS = 16
COUNTER_NAMES = {
    "complete": C_COMPLETE, "incomplete": C_INCOMPLETE, "dropped": C_DROPPED,
    "lost": C_LOST, "duplicate": C_DUPLICATE, "malformed": C_MALFORMED,
    "foreign": C_FOREIGN, "late": C_LATE, "backwards": C_BACKWARDS, "packets": C_PACKETS,
    "head": C_HEAD, "rcvbuf": C_RCVBUF, "implausible": C_IMPLAUSIBLE,
    "inconsistent": C_INCONSISTENT,
}

#: indices of the assembler's own state array (int64)
S_OPEN = 0
S_OPEN_FN = 1
S_WRITE = 2  # frames published so far; the open frame goes in slot S_WRITE % n_slots
S_COUNT = 3
S_HAVE_LAST = 4
S_LAST_FN = 5
S_LAST_COMPLETE = 6
S_SUSPECT = 7  # the open frame had an inconsistent packet
S_CAND_FN = 8  # implausible frame number seen last (a possible new sequence)
S_CAND_RUN = 9  # consecutive implausible packets that continue S_CAND_FN
N_STATE = 12

#: A packet up to this many frames older than the open one is "late"; further back, the
#: detector restarted its frame counter and the assembler re-anchors.
LATE_WINDOW = 16
#: A frame number may run at most this far ahead of the newest one: frames in between
#: were lost. Further ahead is implausible (a spoofed or corrupt header) and dropped.
MAX_AHEAD = 8
#: ...unless this many packets in a row continue the implausible sequence: then the
#: detector really jumped (it restarted, or frames were lost for long) and the
#: assembler re-anchors on it. A detector restart counts from frame 1, which is taken
#: at once.
REANCHOR_RUN = 64
_MAX_GAP = 1 << 20


@numba.njit(inline="always")
def _le(buf, off, nbytes):
    v = np.int64(0)
    for k in range(nbytes):
        v |= np.int64(buf[off + k]) << np.int64(8 * k)
    return v


@numba.njit(nogil=True, cache=True)
def _open_frame(pkt, fn, ppf, meta, masks, state):
    slot = state[S_WRITE] % meta.shape[0]
    meta[slot, M_SEQ] = 0
    masks[slot, :ppf] = 0
    meta[slot, M_FRAME_NUMBER] = fn
    meta[slot, M_TRAIN_ID] = _le(pkt, P.OFF_TRAIN_ID, 8)
    meta[slot, M_TIMESTAMP] = _le(pkt, P.OFF_TIMESTAMP, 8)
    meta[slot, M_FLAGS] = _le(pkt, P.OFF_FLAGS, 2)
    meta[slot, M_SUSPECT] = 0
    state[S_OPEN] = 1
    state[S_OPEN_FN] = fn
    state[S_COUNT] = 0
    state[S_SUSPECT] = 0


@numba.njit(nogil=True, cache=True)
def publish_open_frame(payload, ppf, ring, meta, masks, counters, state):
    """Close the open frame: pad what is missing, set its flags, make it visible."""
    if state[S_OPEN] == 0:
        return 0
    slot = state[S_WRITE] % meta.shape[0]
    count = state[S_COUNT]
    if count < ppf or state[S_SUSPECT]:
        for i in range(ppf):
            if masks[slot, i] == 0:
                ring[slot, i * payload:(i + 1) * payload] = 0xFF
        counters[C_LOST] += ppf - count
        counters[C_INCOMPLETE] += 1
        meta[slot, M_COMPLETE] = 0
    else:
        counters[C_COMPLETE] += 1
        meta[slot, M_COMPLETE] = 1
    meta[slot, M_PACKETS] = count
    w = state[S_WRITE] + 1
    state[S_WRITE] = w
    state[S_OPEN] = 0
    state[S_HAVE_LAST] = 1
    state[S_LAST_FN] = state[S_OPEN_FN]
    state[S_LAST_COMPLETE] = 1 if count == ppf and not state[S_SUSPECT] else 0
    meta[slot, M_SUSPECT] = state[S_SUSPECT]
    meta[slot, M_SEQ] = w
    counters[C_HEAD] = w
    return 1


@numba.njit(nogil=True, cache=True)
def assemble_packet(pkt, n, payload, ppf, ring, meta, masks, counters, state):
    """Check one received packet (``pkt[:n]``) and place it in its frame slot.

    Returns the number of frames published by this packet (0, 1 or 2).
    """
    if n < P.HEADER_SIZE or _le(pkt, P.OFF_MAGIC, 4) != P.DATA_MAGIC or pkt[P.OFF_VERSION] != P.DATA_VERSION:
        counters[C_MALFORMED] += 1
        return 0
    if _le(pkt, P.OFF_PAYLOAD_SIZE, 4) != payload or n != P.HEADER_SIZE + payload:
        counters[C_MALFORMED] += 1
        return 0
    idx = _le(pkt, P.OFF_PACKET_INDEX, 4)
    if _le(pkt, P.OFF_PACKETS_PER_FRAME, 2) != ppf or idx >= ppf:
        counters[C_MALFORMED] += 1
        return 0
    fn = _le(pkt, P.OFF_FRAME_NUMBER, 8)
    if not plausible(fn, state):
        counters[C_IMPLAUSIBLE] += 1
        if state[S_CAND_RUN] > 0 and 0 <= fn - state[S_CAND_FN] <= 1:
            state[S_CAND_RUN] += 1
        else:
            state[S_CAND_RUN] = 1
        state[S_CAND_FN] = fn
        if state[S_CAND_RUN] < REANCHOR_RUN:
            return 0
        # a sequence of its own: the detector jumped; start over from this frame
        counters[C_IMPLAUSIBLE] -= 1
        counters[C_BACKWARDS] += 1
        published = publish_open_frame(payload, ppf, ring, meta, masks, counters, state)
        state[S_HAVE_LAST] = 0
        state[S_CAND_RUN] = 0
        _open_frame(pkt, fn, ppf, meta, masks, state)
        return published + _place(pkt, idx, payload, ppf, ring, meta, masks, counters, state)
    state[S_CAND_RUN] = 0
    published = 0
    if state[S_OPEN] == 1:
        cur = state[S_OPEN_FN]
        if fn < cur:
            if cur - fn <= LATE_WINDOW:
                counters[C_LATE] += 1
                return 0
            published += publish_open_frame(payload, ppf, ring, meta, masks, counters, state)
            counters[C_BACKWARDS] += 1
            _open_frame(pkt, fn, ppf, meta, masks, state)
        elif fn > cur:
            published += publish_open_frame(payload, ppf, ring, meta, masks, counters, state)
            gap = fn - cur - 1
            if gap < _MAX_GAP:
                counters[C_DROPPED] += gap
            _open_frame(pkt, fn, ppf, meta, masks, state)
    else:
        if state[S_HAVE_LAST] == 1:
            last = state[S_LAST_FN]
            if fn <= last:
                if last - fn <= LATE_WINDOW:
                    if fn == last and state[S_LAST_COMPLETE] == 1:
                        counters[C_DUPLICATE] += 1
                    else:
                        counters[C_LATE] += 1
                    return 0
                counters[C_BACKWARDS] += 1
            elif fn - last - 1 < _MAX_GAP:
                counters[C_DROPPED] += fn - last - 1
        _open_frame(pkt, fn, ppf, meta, masks, state)
    return published + _place(pkt, idx, payload, ppf, ring, meta, masks, counters, state)


@numba.njit(nogil=True, cache=True)
def plausible(fn, state):
    """Whether frame number ``fn`` fits the expected sequence.

    Without an anchor (start, re-anchor) anything does. Otherwise: up to
    ``LATE_WINDOW`` behind the newest frame (late, duplicate) or ``MAX_AHEAD`` in front
    of it, or 1 (a detector that restarted counts from 1).
    """
    if state[S_OPEN] == 1:
        ref = state[S_OPEN_FN]
    elif state[S_HAVE_LAST] == 1:
        ref = state[S_LAST_FN]
    else:
        return True
    if fn == 1:
        return True
    return ref - LATE_WINDOW <= fn <= ref + MAX_AHEAD


@numba.njit(nogil=True, cache=True)
def _place(pkt, idx, payload, ppf, ring, meta, masks, counters, state):
    """Copy a packet of the open frame into its slot (or count why not)."""
    slot = state[S_WRITE] % meta.shape[0]
    if (_le(pkt, P.OFF_TRAIN_ID, 8) != meta[slot, M_TRAIN_ID]
            or _le(pkt, P.OFF_TIMESTAMP, 8) != meta[slot, M_TIMESTAMP]):
        counters[C_INCONSISTENT] += 1
        state[S_SUSPECT] = 1
        return 0
    published = 0
    if masks[slot, idx] != 0:
        counters[C_DUPLICATE] += 1
        return published
    masks[slot, idx] = 1
    ring[slot, idx * payload:(idx + 1) * payload] = pkt[P.HEADER_SIZE:P.HEADER_SIZE + payload]
    counters[C_PACKETS] += 1
    state[S_COUNT] += 1
    if state[S_COUNT] == ppf:
        published += publish_open_frame(payload, ppf, ring, meta, masks, counters, state)
    return published


class Assembler:
    """Preallocated arrays plus :func:`assemble_packet`, for tests and in-process use.

    The receiver process builds the same arrays over shared memory.
    """

    def __init__(self, payload_size: int = P.JUMBO_PAYLOAD, n_slots: int = 4) -> None:
        self.payload = payload_size
        self.ppf = P.packets_per_frame(payload_size)
        self.ring = np.zeros((n_slots, P.FRAME_BYTES), np.uint8)
        self.meta = np.zeros((n_slots, META_FIELDS), np.int64)
        self.masks = np.zeros((n_slots, self.ppf), np.uint8)
        self.counters = np.zeros(N_COUNTERS, np.int64)
        self.state = np.zeros(N_STATE, np.int64)

    def feed(self, packet: bytes) -> int:
        buf = np.frombuffer(packet, np.uint8)
        return assemble_packet(buf, len(packet), self.payload, self.ppf, self.ring,
                               self.meta, self.masks, self.counters, self.state)

    def flush(self) -> int:
        return publish_open_frame(self.payload, self.ppf, self.ring, self.meta, self.masks,
                                  self.counters, self.state)

    def frame(self, seq: int) -> np.ndarray:
        """Pixels of published frame ``seq`` (1-based) as (1024, 1024) uint16."""
        slot = (seq - 1) % self.meta.shape[0]
        if self.meta[slot, M_SEQ] != seq:
            raise LookupError(f"frame {seq} is no longer in the ring")
        return self.ring[slot].view("<u2").reshape(ROWS, COLS)

    def count(self, name: str) -> int:
        return int(self.counters[COUNTER_NAMES[name]])


def packetize(frame: np.ndarray, frame_number: int, train_id: int = 0,
              payload_size: int = P.JUMBO_PAYLOAD, timestamp_ns: int = 0, flags: int = 0) -> list[bytes]:
    """Split one frame into data packets (slow reference path for tests and faults)."""
    raw = np.ascontiguousarray(frame, dtype="<u2").view(np.uint8).reshape(-1)
    ppf = P.packets_per_frame(payload_size)
    out = []
    for i in range(ppf):
        hdr = P.DataHeader(frame_number, payload_size, i, train_id, timestamp_ns,
                           packets_per_frame=ppf, flags=flags).pack()
        out.append(hdr + raw[i * payload_size:(i + 1) * payload_size].tobytes())
    return out
