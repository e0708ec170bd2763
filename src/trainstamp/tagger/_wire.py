"""The tag-stream wire protocol between a time tagger (or its emulator) and the server.

One TCP connection carries everything. The tagger listens (port 41101 by default, as
Swabian's network time tagger does) and the server connects. Both directions carry
*frames*: a fixed 48-byte little-endian header followed by a payload.

=======  ======  ==========================================================
offset   type    field
=======  ======  ==========================================================
0        4s      magic ``b"TTSB"``
4        u16     version (1)
6        u16     kind: 1 tags, 2 control request, 3 control reply, 4 hello
8        u64     sequence number (tags: per block, starting at 0)
16       u32     count: tags in a TAGS frame, payload bytes otherwise
20       u32     flags (TAGS: bit 0 = the tagger was overflowing in this block)
24       u32     payload length in bytes
28       u32     CRC-32 of the payload (``zlib.crc32``)
32       i64     TAGS: stream time (ps) the block is complete up to; the next
                 block holds no tag before it. 0 for the JSON kinds.
40       u32     CRC-32 of header bytes 0..39
44       u32     reserved, 0
=======  ======  ==========================================================

A TAGS block may be empty: it then only advances stream time. A TAGS payload is
``count`` records of :data:`TAG_DTYPE` (16 bytes each: type u1,
reserved u1, missed_events u2, channel i4, time i8 ps), sorted by time. Control,
reply and hello payloads are UTF-8 JSON objects.

Reading is defensive (:class:`FrameReader`): a header that fails its magic, version,
kind, size limits or CRC makes the reader skip to the next good header, counting one
bad header per run of bytes skipped (however the stream was chunked) and the bytes; a payload that fails its CRC or shape is dropped whole and counted, so a
corrupted block never reaches the engine. Sequence gaps count lost blocks.

Plausibility, so that one bad input costs that input and nothing after it:

- a TAGS block's end time may lie at most :data:`MAX_END_AHEAD_PS` (60 s) past its last
  tag, and, when the caller passes arrival times (``feed(data, now_ns)``), stream time
  may run at most :data:`STREAM_SLACK_PS` (10 s) ahead of the wall clock since the
  tightest block so far (stream time cannot outrun real time). A block that breaks
  either is dropped and counted, and does not move the stream's end: otherwise one
  block ending at 2**62 ps would make every later block "start before the previous
  end" and be refused;
- a HELLO must describe a tagger (:func:`check_hello`: ``channels`` a list of whole
  channel numbers, ``marker_channel`` one of them, ``serial`` text, ``settings`` an
  object per channel); anything else is a bad payload, counted, and the link stays.

Pure code: no sockets, no clocks.
"""

from __future__ import annotations

import json
import struct
import zlib
from dataclasses import dataclass, field
from enum import IntEnum

import numpy as np

MAGIC = b"TTSB"
VERSION = 1
HEADER = struct.Struct("<4sHHQIIIIqII")
HEADER_SIZE = HEADER.size  # pinned to 48 by a test
#: Largest TAGS block accepted (tags); 4 Mi tags = 64 MiB.
MAX_TAGS_PER_BLOCK = 1 << 22
#: Longest stream latency a hello may announce (10 s, in ps).
MAX_STREAM_LATENCY_PS = 10 * 10**12
#: Largest control/hello payload accepted (bytes).
MAX_CONTROL_BYTES = 1 << 16
FLAG_OVERFLOW = 1
#: Furthest a block's end time may lie past its last tag (ps).
MAX_END_AHEAD_PS = 60 * 10**12
#: Furthest stream time may run ahead of the wall clock, from the tightest block (ps).
STREAM_SLACK_PS = 10 * 10**12
#: Highest physical channel number a hello may announce, and most channels.
MAX_HELLO_CHANNEL = 999
MAX_HELLO_CHANNELS = 128

#: Swabian's Tag layout (16 bytes).
TAG_DTYPE = np.dtype(
    [("type", "u1"), ("reserved", "u1"), ("missed_events", "<u2"),
     ("channel", "<i4"), ("time", "<i8")]
)
assert TAG_DTYPE.itemsize == 16


class Kind(IntEnum):
    TAGS = 1
    CONTROL = 2
    REPLY = 3
    HELLO = 4


class TagType(IntEnum):
    """Swabian's tag types."""

    TimeTag = 0
    Error = 1
    OverflowBegin = 2
    OverflowEnd = 3
    MissedEvents = 4


class BadFrame(ValueError):
    """A frame that cannot be trusted; the text says why."""


@dataclass
class Frame:
    """One decoded frame. ``tags`` is set for TAGS, ``message`` for the JSON kinds."""

    kind: Kind
    seq: int
    flags: int = 0
    tags: np.ndarray | None = None
    message: dict | None = None
    end_time: int = 0


def _header(kind: Kind, seq: int, count: int, flags: int, payload: bytes | memoryview,
            end_time: int = 0) -> bytes:
    crc = zlib.crc32(payload)
    head = HEADER.pack(MAGIC, VERSION, int(kind), seq, count, flags, len(payload), crc,
                       end_time, 0, 0)
    return head[:40] + struct.pack("<II", zlib.crc32(head[:40]), 0)


def encode_tags(tags: np.ndarray, seq: int, flags: int = 0,
                end_time: int | None = None) -> list[bytes | memoryview]:
    """Header and payload for one TAGS block (two buffers, so the tags are not copied).

    ``end_time`` defaults to the last tag's time (or 0 for an empty block).
    """
    tags = np.ascontiguousarray(tags, dtype=TAG_DTYPE)
    if len(tags) > MAX_TAGS_PER_BLOCK:
        raise ValueError(f"block of {len(tags)} tags exceeds {MAX_TAGS_PER_BLOCK}")
    last = int(tags["time"][-1]) if len(tags) else 0
    end = last if end_time is None else int(end_time)
    if len(tags) and end < last:
        raise ValueError(f"end_time {end} ps is before the last tag at {last} ps")
    payload = memoryview(tags.view(np.uint8))
    return [_header(Kind.TAGS, seq, len(tags), flags, payload, end), payload]


def encode_message(kind: Kind, message: dict, seq: int = 0) -> bytes:
    """One JSON frame (control request, reply or hello)."""
    if kind == Kind.TAGS:
        raise ValueError("TAGS frames carry tags, not JSON")
    payload = json.dumps(message, separators=(",", ":"), default=_jsonable).encode()
    if len(payload) > MAX_CONTROL_BYTES:
        raise ValueError(f"control message of {len(payload)} bytes exceeds {MAX_CONTROL_BYTES}")
    return _header(kind, seq, len(payload), 0, payload) + payload


def _jsonable(value: object) -> object:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def check_header(head: bytes | memoryview) -> tuple[Kind, int, int, int, int, int, int]:
    """Validate a header; return (kind, seq, count, flags, length, crc, end_time)."""
    magic, version, kind, seq, count, flags, length, crc, end, hcrc, _ = HEADER.unpack(head)
    if magic != MAGIC:
        raise BadFrame(f"bad magic {magic!r}, expected {MAGIC!r}")
    if zlib.crc32(bytes(head[:40])) != hcrc:
        raise BadFrame("header CRC mismatch")
    if version != VERSION:
        raise BadFrame(f"unsupported version {version}, expected {VERSION}")
    try:
        kind = Kind(kind)
    except ValueError:
        raise BadFrame(f"unknown frame kind {kind}") from None
    if kind == Kind.TAGS:
        if count > MAX_TAGS_PER_BLOCK:
            raise BadFrame(f"block of {count} tags exceeds {MAX_TAGS_PER_BLOCK}")
        if length != count * TAG_DTYPE.itemsize:
            raise BadFrame(f"payload of {length} bytes does not hold {count} tags")
    elif length > MAX_CONTROL_BYTES or length != count:
        raise BadFrame(f"control payload of {length} bytes (limit {MAX_CONTROL_BYTES})")
    return kind, seq, count, flags, length, crc, end


def check_hello(message: dict) -> dict:
    """Validate a HELLO object (the tagger's identity); BadFrame says what is wrong."""
    chans = message.get("channels")
    if (not isinstance(chans, list) or not chans or len(chans) > MAX_HELLO_CHANNELS
            or not all(type(c) is int and 1 <= c <= MAX_HELLO_CHANNEL for c in chans)
            or len(set(chans)) != len(chans)):
        raise BadFrame(f"hello: channels must be a list of 1..{MAX_HELLO_CHANNELS} distinct "
                       f"whole numbers in 1..{MAX_HELLO_CHANNEL}, got {str(chans)[:60]}")
    marker = message.get("marker_channel")
    if marker is not None and (type(marker) is not int or marker not in chans):
        raise BadFrame(f"hello: marker_channel {str(marker)[:20]} is not one of the channels")
    latency = message.get("stream_latency_ps", 0)
    if type(latency) is not int or not 0 <= latency <= MAX_STREAM_LATENCY_PS:
        raise BadFrame(f"hello: stream_latency_ps must be a whole number in "
                       f"0..{MAX_STREAM_LATENCY_PS}, got {str(latency)[:30]}")
    serial = message.get("serial", "")
    if not isinstance(serial, str) or len(serial) > 64:
        raise BadFrame(f"hello: serial must be text of at most 64 characters, got "
                       f"{str(serial)[:40]!r}")
    settings = message.get("settings", {})
    if not isinstance(settings, dict) or not all(
            isinstance(k, str) and k.isdigit() and int(k) in chans and isinstance(v, dict)
            for k, v in settings.items()):
        raise BadFrame("hello: settings must map channel numbers to objects")
    return message


@dataclass
class ReaderStats:
    """What a :class:`FrameReader` has refused or noticed, for PVs and logs."""

    frames: int = 0
    tag_blocks: int = 0
    tags: int = 0
    bad_headers: int = 0
    bad_payloads: int = 0
    skipped_bytes: int = 0
    lost_blocks: int = 0
    overflow_blocks: int = 0
    last_error: str = ""
    errors: list[str] = field(default_factory=list)

    def note(self, text: str) -> None:
        self.last_error = text
        self.errors.append(text)
        del self.errors[:-20]


class FrameReader:
    """Split a byte stream into validated frames, resynchronising on garbage.

    ``feed(data)`` returns the complete good frames found so far. Memory stays bounded:
    at most one maximal frame is buffered. ``reset()`` forgets a partial frame after a
    reconnect (the partial frame is counted as a bad payload).
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self._next_seq: int | None = None
        self._last_end: int | None = None
        self._clock_offset: int | None = None  # min(arrival ps - end ps) so far
        self._now_ps: int | None = None
        self._scan_from = 0  # buffer offset up to which a waiting payload was searched
        self._lost_sync = False  # skipping bytes after a bad header
        self.stats = ReaderStats()

    def reset(self) -> None:
        if self._buf:
            self.stats.bad_payloads += 1
            self.stats.note(f"connection lost with {len(self._buf)} bytes of a partial frame")
        self._buf.clear()
        self._scan_from = 0
        self._lost_sync = False
        self._next_seq = None
        self._last_end = None
        self._clock_offset = None

    def feed(self, data: bytes | memoryview, now_ns: int | None = None) -> list[Frame]:
        """Good frames completed by ``data``; ``now_ns``: its arrival (wall clock)."""
        self._now_ps = None if now_ns is None else int(now_ns) * 1000
        self._buf += data
        frames: list[Frame] = []
        buf = self._buf
        pos = 0
        while len(buf) - pos >= HEADER_SIZE:
            try:
                kind, seq, count, flags, length, crc, end_time = check_header(
                    bytes(buf[pos:pos + HEADER_SIZE]))
            except BadFrame as exc:
                if not self._lost_sync:  # one run of bytes up to the next good header
                    self.stats.bad_headers += 1
                    self.stats.note(str(exc))
                    self._lost_sync = True
                nxt = buf.find(MAGIC, pos + 1)
                nxt = len(buf) - len(MAGIC) + 1 if nxt < 0 else nxt
                nxt = max(nxt, pos + 1)
                self.stats.skipped_bytes += nxt - pos
                pos = nxt
                continue
            self._lost_sync = False
            end = pos + HEADER_SIZE + length
            if len(buf) < end:
                # Waiting for the payload. A valid header inside what has come means
                # this frame was cut short: drop it now rather than swallow the frames
                # after it (a cut frame claiming 64 MiB would hold the link for 64 MiB).
                nxt = self._next_header(buf, pos + 1)  # a cut header may be 40+ bytes
                if nxt is None or nxt < 0:
                    break
                self.stats.bad_payloads += 1
                self.stats.note(f"{kind.name} frame {seq} cut short after "
                                f"{nxt - pos - HEADER_SIZE} of {length} payload bytes")
                self.stats.skipped_bytes += nxt - pos
                pos = nxt
                continue
            with memoryview(buf) as view:  # one copy, and no export left when resizing
                payload = bytes(view[pos + HEADER_SIZE:end])
            bad_crc = zlib.crc32(payload) != crc
            nxt = self._next_header(buf, pos + 1, end) if bad_crc else None
            if nxt is not None and nxt < 0:
                break  # a frame may start inside this bad payload: wait for its header
            if bad_crc:
                self.stats.bad_payloads += 1
                self.stats.note(f"payload CRC mismatch in {kind.name} frame {seq}")
                # the header was good, the payload not: a frame that follows a cut one
                # may start inside it, so resume there rather than after the claimed length
                nxt = end if nxt is None else nxt
                self.stats.skipped_bytes += nxt - pos
                pos = nxt
                continue
            pos = end
            self._scan_from = 0
            try:
                frames.append(self._decode(kind, seq, count, flags, payload, end_time))
            except BadFrame as exc:
                self.stats.bad_payloads += 1
                self.stats.note(str(exc))
        self._scan_from = max(0, self._scan_from - pos)
        del buf[:pos]
        return frames

    def _next_header(self, buf: bytearray, lo: int, hi: int | None = None) -> int | None:
        """Offset of the first valid header starting in ``buf[lo:hi]``, else None;
        -1 if a magic there still lacks the rest of its header (wait for more bytes).

        Remembers how far it searched (``_scan_from``), so a large payload arriving in
        many pieces is searched once, not once per piece.
        """
        stop = len(buf) if hi is None else min(len(buf), hi + len(MAGIC) - 1)
        at = max(lo, self._scan_from)
        while True:
            at = buf.find(MAGIC, at, stop)  # a header starting before hi
            if at < 0:
                self._scan_from = max(lo, stop - len(MAGIC) + 1)
                return None
            if len(buf) - at < HEADER_SIZE:  # maybe a header: wait for the rest of it
                self._scan_from = at
                return -1
            try:
                check_header(bytes(buf[at:at + HEADER_SIZE]))
            except BadFrame:
                at += 1
                continue
            self._scan_from = 0
            return at

    def _decode(self, kind: Kind, seq: int, count: int, flags: int, payload: bytes,
                end: int) -> Frame:
        self.stats.frames += 1
        if kind != Kind.TAGS:
            try:
                message = json.loads(payload)
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise BadFrame(f"{kind.name} frame {seq} is not JSON: {exc}") from None
            if not isinstance(message, dict):
                raise BadFrame(f"{kind.name} frame {seq} is not a JSON object")
            if kind == Kind.HELLO:
                check_hello(message)
            return Frame(kind, seq, flags, message=message)
        tags = np.frombuffer(payload, dtype=TAG_DTYPE)
        if len(tags) > 1 and bool(np.any(np.diff(tags["time"]) < 0)):
            raise BadFrame(f"tags of block {seq} are not sorted by time")
        if len(tags) and end < tags["time"][-1]:
            raise BadFrame(f"block {seq} ends at {end} ps, before its last tag")
        if len(tags) and end - int(tags["time"][-1]) > MAX_END_AHEAD_PS:
            raise BadFrame(f"block {seq} ends {(end - int(tags['time'][-1])) / 1e12:.3g} s "
                           f"after its last tag (limit {MAX_END_AHEAD_PS / 1e12:g} s)")
        if self._last_end is not None and len(tags) and tags["time"][0] < self._last_end:
            raise BadFrame(f"block {seq} starts at {int(tags['time'][0])} ps, before the "
                           f"previous block's end {self._last_end} ps")
        if self._now_ps is not None:
            offset = self._now_ps - end
            if self._clock_offset is not None and offset < self._clock_offset - STREAM_SLACK_PS:
                raise BadFrame(f"block {seq} ends at {end} ps, "
                               f"{(self._clock_offset - offset) / 1e12:.3g} s ahead of the "
                               f"wall clock (limit {STREAM_SLACK_PS / 1e12:g} s)")
            self._clock_offset = offset if self._clock_offset is None else min(
                self._clock_offset, offset)
        self._last_end = max(end, self._last_end or end)
        if self._next_seq is not None and seq != self._next_seq:
            if seq > self._next_seq:
                self.stats.lost_blocks += seq - self._next_seq
                self.stats.note(f"blocks {self._next_seq}..{seq - 1} missing")
            else:
                self.stats.note(f"block sequence went back from {self._next_seq} to {seq}")
        self._next_seq = seq + 1
        self.stats.tag_blocks += 1
        self.stats.tags += count
        if flags & FLAG_OVERFLOW:
            self.stats.overflow_blocks += 1
        return Frame(kind, seq, flags, tags=tags, end_time=end)
