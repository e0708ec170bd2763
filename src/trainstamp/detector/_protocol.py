"""Every byte layout of the TEAM1k wire protocol, in one module.

The real FPGA layouts are not public, so trainstamp defines its own (documented in
``docs/detector.md``). Everything that packs or parses bytes on the detector's UDP ports
uses the ``struct.Struct`` objects and offsets defined here, so a real firmware layout
can be swapped in by editing this file alone. All integers are little-endian.

Three packet kinds:

- **Register packet** (UDP register port, default :data:`DEFAULT_REGISTER_PORT` 42000),
  the same 16 bytes in both
  directions: ``magic u16, version u8, opcode u8, seq u32, address u32, value u32``.
- **Data-port registration** (host -> FPGA data port, default :data:`DEFAULT_DATA_PORT`
  41000): 8 bytes,
  ``magic u32, version u16, command u16``. The FPGA streams to the packet's source
  address.
- **Data packet** (FPGA -> host): a 48-byte header modelled on the slsDetector receiver
  header, followed by ``payload_size`` bytes of little-endian uint16 pixels.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum

# ------------------------------------------------------------------ default addresses
# The one definition of these defaults in code: the IOC's and the emulator's command
# lines, the server, the register client and the receiver use them. trainstamp.config
# (which imports nothing of the detector), beamline.toml, iocs/detector/detector.conf and
# the docs repeat the numbers; a unit test pins that they agree.
#: The FPGA's register port (UDP): register requests and their replies.
DEFAULT_REGISTER_PORT = 42000
#: The FPGA's data port (UDP): the host registers there, and frames come from it.
DEFAULT_DATA_PORT = 41000
#: team1k's default address of the detector FPGA.
DEFAULT_DETECTOR_IP = "10.0.0.32"
#: team1k's ZMQ data-transfer port (TCP, on the detector host): captured frames to clients.
DEFAULT_ZMQ_PORT = 42005
#: team1k's serial port of the camera bellow stage.
DEFAULT_BELLOW_PORT = "/dev/CameraBellowStage"

# --------------------------------------------------------------------------- frames
FRAME_ROWS = 1024
FRAME_COLS = 1024
PIXEL_BYTES = 2
FRAME_BYTES = FRAME_ROWS * FRAME_COLS * PIXEL_BYTES  # 2 MiB

#: Default payload: jumbo frames, as Jungfrau's 8192-byte payloads. 256 packets/frame.
JUMBO_PAYLOAD = 8192
#: A payload that fits a standard 1500-byte MTU with the IP, UDP and data headers
#: (20 + 8 + 48 + 1024 = 1100 bytes). 2048 packets/frame.
STANDARD_PAYLOAD = 1024
PAYLOAD_SIZES = (JUMBO_PAYLOAD, STANDARD_PAYLOAD)


def packets_per_frame(payload_size: int) -> int:
    """Packets in one frame for ``payload_size``; ``ValueError`` for unsupported sizes."""
    if payload_size not in PAYLOAD_SIZES:
        raise ValueError(f"payload size {payload_size} is not one of {PAYLOAD_SIZES}")
    return FRAME_BYTES // payload_size


# ------------------------------------------------------------------------ registers
REGISTER_MAGIC = 0x1C7E
REGISTER_VERSION = 1
#: magic u16, version u8, opcode u8, seq u32, address u32, value u32
REGISTER_PACKET = struct.Struct("<HBBIII")


class Opcode(IntEnum):
    """Register packet opcodes. Replies set bit 7; an error reply carries the code in value."""

    READ = 0x01
    WRITE = 0x02
    READ_REPLY = 0x81
    WRITE_REPLY = 0x82
    ERROR = 0xFF


class RegisterErrorCode(IntEnum):
    """The ``value`` of an :attr:`Opcode.ERROR` reply."""

    UNKNOWN_ADDRESS = 1
    READ_ONLY = 2
    BAD_VALUE = 3
    BAD_REQUEST = 4
    BUSY = 5


@dataclass(frozen=True)
class RegisterPacket:
    """One decoded register packet (request or reply)."""

    opcode: int
    seq: int
    address: int
    value: int


def encode_register(opcode: int, seq: int, address: int, value: int = 0) -> bytes:
    """Pack one register packet; ``ValueError`` quoting any field outside u32."""
    for name, v in (("seq", seq), ("address", address), ("value", value)):
        if not 0 <= v <= 0xFFFFFFFF:
            raise ValueError(f"register {name} {v} outside 0..0xFFFFFFFF")
    return REGISTER_PACKET.pack(REGISTER_MAGIC, REGISTER_VERSION, int(opcode), seq, address, value)


def decode_register(data: bytes) -> RegisterPacket:
    """Parse one register packet; ``ValueError`` for a wrong size, magic, version or opcode."""
    if len(data) != REGISTER_PACKET.size:
        raise ValueError(f"register packet is {len(data)} bytes, expected {REGISTER_PACKET.size}")
    magic, version, opcode, seq, address, value = REGISTER_PACKET.unpack(data)
    if magic != REGISTER_MAGIC:
        raise ValueError(f"register packet magic 0x{magic:04x}, expected 0x{REGISTER_MAGIC:04x}")
    if version != REGISTER_VERSION:
        raise ValueError(f"register packet version {version}, expected {REGISTER_VERSION}")
    if opcode not in Opcode._value2member_map_:
        raise ValueError(f"unknown register opcode 0x{opcode:02x}")
    return RegisterPacket(opcode, seq, address, value)


# --------------------------------------------------------------------- registration
DATA_REGISTRATION_MAGIC = 0x5231_4B54  # b"TK1R" little-endian
DATA_REGISTRATION_VERSION = 1
DATA_REGISTRATION_COMMAND = 1
#: magic u32, version u16, command u16
DATA_REGISTRATION = struct.Struct("<IHH")


def encode_registration() -> bytes:
    """The packet the host sends from its receive socket to the FPGA's data port."""
    return DATA_REGISTRATION.pack(
        DATA_REGISTRATION_MAGIC, DATA_REGISTRATION_VERSION, DATA_REGISTRATION_COMMAND
    )


def is_registration(data: bytes) -> bool:
    """True if ``data`` is exactly a valid data-port registration packet."""
    if len(data) != DATA_REGISTRATION.size:
        return False
    magic, version, command = DATA_REGISTRATION.unpack(data)
    return (magic, version, command) == (
        DATA_REGISTRATION_MAGIC, DATA_REGISTRATION_VERSION, DATA_REGISTRATION_COMMAND,
    )


# ---------------------------------------------------------------------- data header
DATA_MAGIC = 0x54314B44  # b"DK1T" little-endian
DATA_VERSION = 1
DETECTOR_TYPE = 0x71  # TEAM1k

#: (field, struct code). Field order and widths follow the slsDetector 48-byte header;
#: the detector-specific slots carry TEAM1k meanings (noted per field).
DATA_HEADER_FIELDS: tuple[tuple[str, str], ...] = (
    ("frame_number", "Q"),       # frameNumber
    ("payload_size", "I"),       # expLength slot: payload bytes after the header
    ("packet_index", "I"),       # packetNumber
    ("train_id", "Q"),           # detSpec1: exact train ID of the trigger (0 = none)
    ("timestamp_ns", "Q"),       # timestamp: FPGA clock, ns
    ("module_id", "H"),          # modId
    ("row", "H"),                # row (of the module in a larger detector)
    ("column", "H"),             # column
    ("packets_per_frame", "H"),  # detSpec2
    ("magic", "I"),              # detSpec3: DATA_MAGIC
    ("flags", "H"),              # detSpec4: FLAG_* bits and exposure mode
    ("detector_type", "B"),      # detType
    ("version", "B"),            # version: DATA_VERSION
)
DATA_HEADER = struct.Struct("<" + "".join(code for _, code in DATA_HEADER_FIELDS))
HEADER_SIZE = DATA_HEADER.size


def _offsets() -> dict[str, int]:
    out, pos = {}, 0
    for name, code in DATA_HEADER_FIELDS:
        out[name] = pos
        pos += struct.calcsize("<" + code)
    return out


#: Byte offset of each header field, for kernels that parse headers without ``struct``.
HEADER_OFFSETS = _offsets()
OFF_FRAME_NUMBER = HEADER_OFFSETS["frame_number"]
OFF_PAYLOAD_SIZE = HEADER_OFFSETS["payload_size"]
OFF_PACKET_INDEX = HEADER_OFFSETS["packet_index"]
OFF_TRAIN_ID = HEADER_OFFSETS["train_id"]
OFF_TIMESTAMP = HEADER_OFFSETS["timestamp_ns"]
OFF_PACKETS_PER_FRAME = HEADER_OFFSETS["packets_per_frame"]
OFF_MAGIC = HEADER_OFFSETS["magic"]
OFF_FLAGS = HEADER_OFFSETS["flags"]
OFF_VERSION = HEADER_OFFSETS["version"]

#: flags: bits 0-1 exposure mode, then these.
FLAG_MODE_MASK = 0x0003
FLAG_TEST_PATTERN = 0x0004
FLAG_EXTERNAL_TRIGGER = 0x0008


@dataclass(frozen=True)
class DataHeader:
    """One decoded data-packet header."""

    frame_number: int
    payload_size: int
    packet_index: int
    train_id: int
    timestamp_ns: int
    module_id: int = 0
    row: int = 0
    column: int = 0
    packets_per_frame: int = 256
    magic: int = DATA_MAGIC
    flags: int = 0
    detector_type: int = DETECTOR_TYPE
    version: int = DATA_VERSION

    def pack(self) -> bytes:
        return DATA_HEADER.pack(*(getattr(self, name) for name, _ in DATA_HEADER_FIELDS))


def decode_header(data: bytes | memoryview) -> DataHeader:
    """Parse and check the header at the start of a data packet.

    ``ValueError`` for a packet shorter than the header, a wrong magic or version, a
    payload size that does not match the packet length, or a packet index out of range.
    """
    if len(data) < HEADER_SIZE:
        raise ValueError(f"data packet is {len(data)} bytes, shorter than the {HEADER_SIZE}-byte header")
    hdr = DataHeader(*DATA_HEADER.unpack_from(data))
    if hdr.magic != DATA_MAGIC:
        raise ValueError(f"data packet magic 0x{hdr.magic:08x}, expected 0x{DATA_MAGIC:08x}")
    if hdr.version != DATA_VERSION:
        raise ValueError(f"data packet version {hdr.version}, expected {DATA_VERSION}")
    if len(data) != HEADER_SIZE + hdr.payload_size:
        raise ValueError(
            f"data packet is {len(data)} bytes, header says {HEADER_SIZE} + {hdr.payload_size}"
        )
    if hdr.packet_index >= hdr.packets_per_frame:
        raise ValueError(
            f"packet index {hdr.packet_index} out of range 0..{hdr.packets_per_frame - 1}"
        )
    return hdr
