"""Byte layouts: sizes pinned, round trips, and every malformed-header case."""

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trainstamp.detector import _protocol as P


def test_sizes_are_pinned():
    assert P.HEADER_SIZE == 48  # the slsDetector header size
    assert P.REGISTER_PACKET.size == 16
    assert P.DATA_REGISTRATION.size == 8
    assert P.FRAME_BYTES == 2 * 1024 * 1024
    assert P.packets_per_frame(P.JUMBO_PAYLOAD) == 256
    assert P.packets_per_frame(P.STANDARD_PAYLOAD) == 2048
    # a standard-MTU packet fits 1500 bytes with IP and UDP headers
    assert 20 + 8 + P.HEADER_SIZE + P.STANDARD_PAYLOAD <= 1500


def test_header_offsets_follow_the_field_table():
    assert P.HEADER_OFFSETS == {
        "frame_number": 0, "payload_size": 8, "packet_index": 12, "train_id": 16,
        "timestamp_ns": 24, "module_id": 32, "row": 34, "column": 36,
        "packets_per_frame": 38, "magic": 40, "flags": 44, "detector_type": 46, "version": 47,
    }


def test_unsupported_payload_size():
    with pytest.raises(ValueError, match=re.escape("payload size 1000 is not one of (8192, 1024)")):
        P.packets_per_frame(1000)


@given(st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1), st.integers(0, 255), st.integers(0, 2**63))
def test_header_round_trip(frame_number, train_id, index, ts):
    hdr = P.DataHeader(frame_number, 8192, index, train_id, ts)
    assert P.decode_header(hdr.pack() + bytes(8192)) == hdr


@given(st.sampled_from(list(P.Opcode)), st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1),
       st.integers(0, 2**32 - 1))
def test_register_round_trip(op, seq, address, value):
    pkt = P.decode_register(P.encode_register(op, seq, address, value))
    assert (pkt.opcode, pkt.seq, pkt.address, pkt.value) == (op, seq, address, value)


def test_register_field_out_of_range():
    with pytest.raises(ValueError, match=re.escape("register value 4294967296 outside 0..0xFFFFFFFF")):
        P.encode_register(P.Opcode.WRITE, 1, 2, 2**32)


def test_bad_register_packets():
    good = P.encode_register(P.Opcode.READ, 1, 2)
    with pytest.raises(ValueError, match="15 bytes"):
        P.decode_register(good[:-1])
    with pytest.raises(ValueError, match="magic"):
        P.decode_register(b"\0\0" + good[2:])
    with pytest.raises(ValueError, match="version"):
        P.decode_register(good[:2] + b"\x09" + good[3:])
    with pytest.raises(ValueError, match="unknown register opcode 0x07"):
        P.decode_register(good[:3] + b"\x07" + good[4:])


def test_bad_data_headers():
    hdr = P.DataHeader(1, 8192, 0, 5, 0)
    good = hdr.pack() + bytes(8192)
    with pytest.raises(ValueError, match="shorter than the 48-byte header"):
        P.decode_header(good[:20])
    with pytest.raises(ValueError, match="header says 48 \\+ 8192"):
        P.decode_header(good[:-1])
    with pytest.raises(ValueError, match="header says 48 \\+ 8192"):
        P.decode_header(good + b"x")
    bad_magic = bytearray(good)
    bad_magic[P.OFF_MAGIC] ^= 0xFF
    with pytest.raises(ValueError, match="magic"):
        P.decode_header(bytes(bad_magic))
    out_of_range = P.DataHeader(1, 8192, 256, 5, 0).pack() + bytes(8192)
    with pytest.raises(ValueError, match=re.escape("packet index 256 out of range 0..255")):
        P.decode_header(out_of_range)


def test_registration():
    assert P.is_registration(P.encode_registration())
    assert not P.is_registration(P.encode_registration()[:-1])
    assert not P.is_registration(b"\0" * 8)


def test_default_ports_are_defined_once_and_the_shipped_files_agree():
    """The defaults live in ``_protocol``; the files that cannot import them (the
    beamline TOML, the IOC's shell configuration, the docs) carry the same numbers."""
    import inspect
    import tomllib
    from importlib import resources
    from pathlib import Path

    from trainstamp.config import DetectorConfig
    from trainstamp.detector._acquisition import Team1kServer
    from trainstamp.detector._emulator import FpgaEmulator
    from trainstamp.detector._receiver import ReceiverConfig
    from trainstamp.detector._regclient import RegisterClient

    assert (P.DEFAULT_REGISTER_PORT, P.DEFAULT_DATA_PORT) == (42000, 41000)
    shipped = tomllib.loads(resources.files("trainstamp").joinpath("beamline.toml").read_text())
    assert shipped["detector"]["register_port"] == P.DEFAULT_REGISTER_PORT
    assert shipped["detector"]["data_port"] == P.DEFAULT_DATA_PORT
    assert DetectorConfig().register_port == P.DEFAULT_REGISTER_PORT
    assert DetectorConfig().data_port == P.DEFAULT_DATA_PORT
    assert DetectorConfig().zmq_port == P.DEFAULT_ZMQ_PORT == shipped["detector"]["zmq_port"]
    assert f"DET_ZMQ_PORT={P.DEFAULT_ZMQ_PORT}\n" in (
        Path(__file__).resolve().parents[3] / "iocs/detector/detector.conf").read_text()
    assert ReceiverConfig().data_port == P.DEFAULT_DATA_PORT
    for cls in (Team1kServer, FpgaEmulator):
        params = inspect.signature(cls).parameters
        assert params["register_port"].default == P.DEFAULT_REGISTER_PORT, cls
        assert params["data_port"].default == P.DEFAULT_DATA_PORT, cls
    assert inspect.signature(RegisterClient).parameters["port"].default == P.DEFAULT_REGISTER_PORT
    root = Path(__file__).resolve().parents[3]
    conf = (root / "iocs/detector/detector.conf").read_text()
    assert f"DET_REGISTER_PORT={P.DEFAULT_REGISTER_PORT}\n" in conf
    assert f"DET_DATA_PORT={P.DEFAULT_DATA_PORT}\n" in conf
    assert f"DET_IP={P.DEFAULT_DETECTOR_IP}\n" in conf
    guide = (root / "docs/detector.md").read_text()
    assert f"register port {P.DEFAULT_REGISTER_PORT}/UDP" in guide
    assert f"data port     {P.DEFAULT_DATA_PORT}/UDP" in guide
