"""Fuzz a real detector IOC (against the emulator): CA puts to every writable PV, and
hostile UDP datagrams from foreign addresses into its data and register sockets.

Sized by ``fuzz_cases()`` (puts made, datagrams sent) and bounded in time. Checks: 0
crashes and 0 hangs (every put answered, the IOC alive and OK at the end), the
counters account for every bad input (ERR:BAD_PUTS for refused puts, RX:FOREIGN and
REG:STRAY for foreign datagrams), bounded memory (RSS), and a capture taken at the end
of the same run is exact (test pattern, frame numbers).
"""

from __future__ import annotations

import contextlib
import random
import socket
import time
from pathlib import Path

import pytest
from caproto import ChannelType
from caproto.threading.client import Context
from test_detector_ioc import start_emulator, start_ioc

from trainstamp.detector import _frames as F
from trainstamp.detector import _protocol as P
from trainstamp.detector import _pvnames as PV
from trainstamp.detector._capture import read_capture
from trainstamp.detector._ioc import Team1kIOC
from trainstamp.detector.client import Client
from trainstamp.signals import PutRefused  # importing it routes refusals to the put
from trainstamp.testing import fuzz_cases, report_cases, wait_until

pytestmark = [pytest.mark.system, pytest.mark.fuzz]
CASES = fuzz_cases()


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def writable():
    """(suffix, dtype) of every writable PV of the IOC."""
    out = []
    prefix = "W:"
    for name, pv in Team1kIOC(prefix=prefix, server=None).pvdb.items():  # every part's PVs
        spec = pv.pvspec
        if not spec.read_only:
            dtype = spec.dtype if isinstance(spec.dtype, ChannelType) else None
            out.append((name[len(prefix):], dtype, type(spec.value)))
    return sorted(out, key=lambda t: t[0])


def value_for(rng: random.Random, suffix: str, kind: type):
    """A hostile (sometimes valid) value, and the wire type to send it as."""
    pick = rng.random()
    numbers = [float("nan"), float("inf"), float("-inf"), 1.5, -0.5, 1e300, -1e300, 5e-324, 2.0**31,
               -(2.0**31) - 1, 0.0, 1.0, -1.0, 3.0, 7.0, 1e6]
    texts = ["", " ", "abc", "1", "0x10", "1e3", "nan", "../../etc/passwd", "/etc/passwd", "/dev/zero",
             "a" * 250, "b" * 2000, "\u00e9\u4e2d", "..", ".", "x/y", "\x01\x02"]
    if suffix == PV.CMD_CAPTURE:  # never a capture that could fill the disk
        numbers = [n for n in numbers if not (1 <= n <= 1e6 and float(n).is_integer())] + [2.0]
    if kind is str:
        if pick < 0.8:
            return rng.choice(texts + [rng.randbytes(rng.randrange(1, 40)).decode("latin-1")]), ChannelType.CHAR
        return [rng.choice(numbers)], ChannelType.DOUBLE
    if pick < 0.55:
        return [rng.choice(numbers)], ChannelType.DOUBLE
    if pick < 0.75:
        return [rng.choice([-1, 0, 1, 2, 4, 8, 99999, 100000, 2**31 - 1, -(2**31), 0x1A7, 0x400])], ChannelType.LONG
    if pick < 0.9:
        return [rng.choice(texts[:8]).encode()[:39]], ChannelType.STRING
    return [rng.choice(numbers)] * rng.randrange(2, 5), ChannelType.DOUBLE


@pytest.fixture
def rig(ca_ports, tmp_path):
    emu, rp, dp = start_emulator(["--rate", "20"])
    ioc = None
    try:
        ioc, prefix = start_ioc(ca_ports, rp, dp, tmp_path / "data", ["--param-dir", str(tmp_path)])
        client = Client(prefix, timeout=20)
        wait_until(lambda: client.get_status() == "OK", timeout=20)
        yield ioc, prefix, client, rp, dp
        client.close()
    finally:
        if ioc is not None:
            ioc.stop()
        emu.stop()


def _encode(value, data_type):
    if data_type == ChannelType.CHAR:
        raw = value.encode("utf-8", "surrogateescape")[:4000] + b"\0"
        return list(raw)
    return value


def test_ca_puts_to_every_writable_pv(rig):
    ioc, prefix, client, *_ = rig
    rng = random.Random(11)
    pvs_spec = writable()
    ctx = Context()
    names = [prefix + s for s, *_ in pvs_spec]
    pvs = dict(zip([s for s, *_ in pvs_spec], ctx.get_pvs(*names, timeout=10), strict=True))
    for pv in pvs.values():
        pv.wait_for_connection(timeout=10)
    bad0 = int(client.get(PV.ERR_BAD_PUTS))
    rss0 = rss_kib(ioc.proc.pid)
    accepted = refused = 0
    t0 = time.perf_counter()
    slowest = 0.0
    for _ in range(CASES):
        suffix, _dtype, kind = rng.choice(pvs_spec)
        value, data_type = value_for(rng, suffix, kind)
        t = time.perf_counter()
        try:
            pvs[suffix].write(_encode(value, data_type), data_type=data_type, wait=True, timeout=20)
            accepted += 1
        except PutRefused:
            refused += 1
        slowest = max(slowest, time.perf_counter() - t)
    elapsed = time.perf_counter() - t0
    counted = int(client.get(PV.ERR_BAD_PUTS)) - bad0
    assert ioc.alive
    wait_until(lambda: client.get_status() in ("OK", "RESTORED: FPGA RESTARTED"), timeout=20)
    rss1 = rss_kib(ioc.proc.pid)
    # the same IOC still takes exact data (first undo what accepted fuzz puts left behind:
    # a capture waiting for frames with a long CAPTURE:TIMEOUT, an open file, a start train)
    client.put(PV.CAPTURE_TIMEOUT, 10.0)
    client.put(PV.CAPTURE_START_TRAIN, 0)
    with contextlib.suppress(ValueError):
        client.put(PV.CAPTURE_CANCEL, 1)  # refused if no capture is in progress
    wait_until(lambda: client.get(PV.CAPTURE_STATUS) != "CAPTURING", timeout=20)
    client.put(PV.CAPTURE_OPEN, 0)
    client.put(PV.CAPTURE_DIR, ".")
    client.put(PV.CAPTURE_NAME, "after_fuzz")
    client.put(PV.CMD_TEST_MODE, 1)
    client.put(PV.CMD_TRIGGER_MODE, 0)
    frames = client.acquire_frames(2)
    numbers = [int(F.decode_frame_numbers(f)[0]) for f in frames]
    assert all(F.check_test_pattern(f, n) == 0 for f, n in zip(frames, numbers, strict=True))
    ctx.disconnect()
    report_cases("detector CA puts", CASES, accepted=accepted, refused=refused, counted_bad_puts=counted,
                 slowest_s=round(slowest, 3), seconds=round(elapsed, 1), rss_growth_kib=rss1 - rss0)
    assert counted == refused  # every refusal came from the IOC's checks, and was counted
    assert rss1 - rss0 < 50_000


def test_foreign_datagrams_are_counted_and_good_frames_survive(rig):
    """Datagrams from 127.0.0.2..127.0.0.9 (any address but the detector's: spoofed
    sources) into the receiver's data socket and the register client's socket, in
    bursts the socket buffers hold (about 100 register datagrams each); each burst must
    be counted exactly before the next."""
    ioc, prefix, client, rp, dp = rig
    rng = random.Random(12)
    data_host, _, data_port = client.get(PV.RX_LOCAL).rpartition(":")
    reg_host, _, reg_port = client.get(PV.REG_LOCAL).rpartition(":")
    assert data_host == reg_host == "127.0.0.1"  # the detector link, not every interface
    data_port, reg_port = int(data_port), int(reg_port)
    socks = []
    for k in range(2, 10):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind((f"127.0.0.{k}", 0))
        socks.append(s)
    good = F.packetize(F.test_pattern(5), 5)[0]
    foreign0, stray0 = client.get("RX:FOREIGN"), client.get(PV.REG_STRAY)
    sent_data = sent_reg = 0
    t0 = time.perf_counter()
    try:
        client.start_daq()  # good frames flow the whole time
        while sent_data + sent_reg < CASES:
            for _ in range(min(1000, CASES - sent_data - sent_reg)):
                how = rng.randrange(10)
                if how == 0:  # a register reply, valid or mangled, to the register client
                    data = P.encode_register(P.Opcode.READ_REPLY, rng.randrange(2**32), 0, 0)
                    if rng.random() < 0.5:
                        data = rng.randbytes(rng.randrange(0, 40))
                    rng.choice(socks).sendto(data, ("127.0.0.1", reg_port))
                    sent_reg += 1
                    continue
                data = good if how < 4 else rng.randbytes(rng.randrange(0, 2000))
                rng.choice(socks).sendto(data, ("127.0.0.1", data_port))
                sent_data += 1
            wait_until(lambda n=sent_data: client.get("RX:FOREIGN") - foreign0 == n, timeout=20,
                       message=lambda n=sent_data: f"RX:FOREIGN {client.get('RX:FOREIGN') - foreign0} of {n}")
            # the register client reads its socket at its next request (the 2 s poll)
            wait_until(lambda n=sent_reg: client.get(PV.REG_STRAY) - stray0 == n, timeout=20,
                       message=lambda n=sent_reg: f"REG:STRAY {client.get(PV.REG_STRAY) - stray0} of {n}")
        frames = client.acquire_frames(3)
        for f in frames:
            assert F.check_test_pattern(f, int(F.decode_frame_numbers(f)[0])) == 0
        got = read_capture(client.get(PV.CAPTURE_FULL_PATH))
        assert got["complete"].all()
    finally:
        client.stop_daq()
        for s in socks:
            s.close()
    report_cases("detector foreign datagrams (data + register sockets)", sent_data + sent_reg,
                 rx_foreign=sent_data, reg_stray=sent_reg, seconds=round(time.perf_counter() - t0, 1))
    assert ioc.alive and client.get_status() == "OK"
