"""The wire protocol over real loopback sockets: register port, data port, faults.

One emulated FPGA and one receiver process serve the whole module; each test changes the
emulator's fault settings and checks the change in the receiver's counters.
"""

import re
import socket
import threading

import pytest

from trainstamp.detector import _frames as F
from trainstamp.detector._emulator import Faults, FpgaEmulator
from trainstamp.detector._receiver import Receiver, ReceiverConfig
from trainstamp.detector._regclient import (
    DetectorCommands,
    RegisterClient,
    RegisterError,
    RegisterTimeout,
)
from trainstamp.detector._registers import Reg, TriggerModes
from trainstamp.testing import free_port, wait_until
from trainstamp.timing._protocol import encode_train_id

pytestmark = pytest.mark.system


@pytest.fixture(scope="module")
def emu():
    e = FpgaEmulator("127.0.0.1", free_port("udp"), free_port("udp"), seed=7).start()
    e.regs[Reg.TEST_MODE] = 1
    yield e
    e.stop()


@pytest.fixture(scope="module")
def cmd(emu):
    regs = RegisterClient("127.0.0.1", emu.register_port, timeout=0.1, retries=3)
    yield DetectorCommands(regs)
    regs.close()


@pytest.fixture(scope="module")
def rx(emu):
    r = Receiver(ReceiverConfig(detector_ip="127.0.0.1", data_port=emu.data_port, bind_host="127.0.0.1",
                                n_slots=16, frame_timeout_s=0.1)).start()
    r.register()
    wait_until(lambda: emu.destination is not None, timeout=5, message="registration")
    yield r
    r.stop()


def run_frames(emu, cmd, rx, n, faults=None):
    """Send ``n`` frames at 50 fps with ``faults``; return the counter deltas and new seqs."""
    emu.faults = faults or Faults()
    before, head0 = rx.counters(), rx.head
    emu.regs[Reg.NUM_FRAMES] = n
    emu.regs[Reg.FRAME_PERIOD_US] = 20_000
    sent0 = emu.stats.frames_sent
    cmd.start_daq()
    wait_until(lambda: emu.stats.frames_sent >= sent0 + n and not cmd.is_running(), timeout=20,
               message="emulator to send its frames")
    # every frame the emulator sent is published (a partial last one after frame_timeout_s),
    # or counted dropped. Dropped frames of an earlier test are counted only now (the gap
    # shows when the next frame comes), so the last frame sent must also be published.
    last_sent = emu.frame_number

    def settled() -> bool:
        done = rx.head + rx.counters()["dropped"] - before["dropped"] >= head0 + n
        return done and rx.head > head0 and rx.frame_info(rx.head)[0] >= last_sent

    wait_until(settled, timeout=5, message=lambda: f"frames published: {rx.counters()}")
    after = rx.counters()
    emu.faults = Faults()
    return {k: after[k] - before[k] for k in after}, range(head0 + 1, rx.head + 1)


# ---------------------------------------------------------------- register port
def test_register_read_write_and_si570(cmd):
    assert cmd.firmware_version() == 0x0001_0000
    cmd.set_adc_data_delay(0x123)
    assert cmd.get_adc_data_delay() == 0x123
    cmd.set_adc_clock_freq(60.0)
    assert cmd.get_adc_clock_freq() == pytest.approx(60.0, rel=1e-8)
    cmd.set_adc_clock_freq(100.0)


def test_register_error_replies(cmd):
    errors = cmd.regs.stats.errors
    with pytest.raises(RegisterError, match=re.escape("register read at 0x9999 refused: UNKNOWN_ADDRESS")):
        cmd.regs.read(0x9999)
    with pytest.raises(RegisterError, match="READ_ONLY"):
        cmd.regs.write(Reg.STATUS, 1)
    with pytest.raises(RegisterError, match="BAD_VALUE"):
        cmd.regs.write(Reg.EXPOSURE_MODE, 4)
    assert cmd.regs.stats.errors == errors + 3
    with pytest.raises(OSError, match="no I2C acknowledge from device 0x11"):
        cmd.i2c_read(0x11, 7)


def test_register_timeout_when_nothing_answers():
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.1", 0))
    client = RegisterClient("127.0.0.1", silent.getsockname()[1], timeout=0.05, retries=2)
    with pytest.raises(RegisterTimeout, match="after 3 tries of 0.05 s"):
        client.read(Reg.STATUS)
    assert (client.stats.timeouts, client.stats.retries) == (1, 2)
    assert len(silent.recv(100)) == 16  # it did ask
    client.close()
    silent.close()


def test_dropped_and_wrong_sequence_replies_are_retried(emu):
    emu.faults = Faults(reply_drop=0.2, reply_wrong_seq=0.2)
    regs = RegisterClient("127.0.0.1", emu.register_port, timeout=0.05, retries=10)
    cmd = DetectorCommands(regs)
    try:
        for v in range(40):
            cmd.set_adc_data_delay(v)
            assert cmd.get_adc_data_delay() == v
        assert regs.stats.retries > 0 and regs.stats.stray_replies > 0
    finally:
        emu.faults = Faults()
        regs.close()


def test_concurrent_callers_get_their_own_replies(emu):
    regs = RegisterClient("127.0.0.1", emu.register_port, timeout=0.05, retries=10)
    cmd = DetectorCommands(regs)
    cmd.set_adc_data_delay(0x2AA)
    emu.faults = Faults(reply_drop=0.1, reply_wrong_seq=0.1)
    wrong = []

    def reader(reg, expected):
        for _ in range(50):
            v = cmd.regs.read(reg)
            if v != expected:
                wrong.append((reg, v))

    threads = [threading.Thread(target=reader, args=a) for a in
               ((Reg.FIRMWARE_VERSION, 0x0001_0000), (Reg.ADC_DATA_DELAY, 0x2AA), (Reg.PAYLOAD_SIZE, 8192))]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
    finally:
        emu.faults = Faults()
        regs.close()
    assert wrong == []


# ---------------------------------------------------------------- data port
def test_rcvbuf_granted_is_reported(rx):
    assert rx.rcvbuf_granted >= 4 * 1024 * 1024


def test_internal_trigger_frames_are_exact(emu, cmd, rx):
    d, seqs = run_frames(emu, cmd, rx, 5)
    assert d["complete"] == 5 and d["lost"] == d["malformed"] == d["foreign"] == 0
    for seq in seqs:
        fn, train_id, _, complete = rx.frame_info(seq)
        assert complete and train_id == 0
        assert F.check_test_pattern(rx.frame_view(seq), fn) == 0


@pytest.mark.parametrize(("faults", "counter"), [
    (Faults(drop=0.02), "lost"),
    (Faults(duplicate=0.05), "duplicate"),
    (Faults(corrupt=0.02), "malformed"),
    (Faults(truncate=0.02), "malformed"),
    (Faults(oversize=0.02), "malformed"),
    (Faults(bad_index=0.02), "malformed"),
    (Faults(foreign=0.05), "foreign"),
    (Faults(reorder=0.2), None),
], ids=["drop", "duplicate", "corrupt", "truncate", "oversize", "bad_index", "foreign", "reorder"])
def test_packet_faults_are_counted_and_good_data_survives(emu, cmd, rx, faults, counter):
    d, seqs = run_frames(emu, cmd, rx, 4, faults)
    if counter is None:
        assert d["complete"] == 4 and d["lost"] == 0
    else:
        assert d[counter] > 0
    assert d["complete"] + d["incomplete"] == 4
    if counter == "lost":
        assert d["incomplete"] > 0
    elif counter == "malformed":
        # a damaged packet stands in for a good one: that packet is lost, nothing else
        assert d["lost"] == d["malformed"], d
    elif counter is not None:
        assert d["complete"] == 4, d  # extra packets never damage a frame
    for seq in seqs:
        fn, _, _, complete = rx.frame_info(seq)
        frame = rx.frame_view(seq)
        if complete:
            assert F.check_test_pattern(frame, fn) == 0
        else:  # every pixel is either right or padding
            ok = (frame == F.test_pattern(fn)) | (frame == 0xFFFF)
            assert ok.all()


def test_detector_stalling_mid_frame(emu, cmd, rx):
    d, seqs = run_frames(emu, cmd, rx, 2, Faults(stall=1.0, stall_ms=400))
    # each frame stops half-way for longer than the receiver's frame timeout: it is published
    # incomplete, and the rest of it arrives late and is counted, not mixed into a frame
    assert d["incomplete"] == 2 and d["late"] > 0
    wait_until(lambda: not emu._running.is_set(), timeout=5)
    for seq in seqs:
        fn, *_ = rx.frame_info(seq)
        frame = rx.frame_view(seq)
        assert ((frame == F.test_pattern(fn)) | (frame == 0xFFFF)).all()


def test_frame_numbers_going_backwards(emu, cmd, rx):
    d, seqs = run_frames(emu, cmd, rx, 6, Faults(rewind=2))
    assert d["late"] > 0 and d["complete"] == 6
    assert [rx.frame_info(s)[0] for s in seqs] == sorted(rx.frame_info(s)[0] for s in seqs)
    # a reset restarts the frame counter far behind: the receiver re-anchors
    cmd.reset()
    emu.regs[Reg.TEST_MODE] = 1
    d, seqs = run_frames(emu, cmd, rx, 2)
    assert d["backwards"] == 1 and d["complete"] == 2
    assert rx.frame_info(seqs[0])[0] == 1


def test_standard_mtu_payload(emu, cmd):
    emu.regs[Reg.PAYLOAD_SIZE] = 1024
    try:
        with Receiver(ReceiverConfig(detector_ip="127.0.0.1", data_port=emu.data_port, bind_host="127.0.0.1",
                                     payload_size=1024, n_slots=4)) as r:
            r.register()
            wait_until(lambda: emu.destination == ("127.0.0.1", r.local_port), timeout=5)
            d, seqs = run_frames(emu, cmd, r, 2)
            assert d["complete"] == 2 and d["packets"] == 2 * 2048
            assert F.check_test_pattern(r.frame_view(seqs[-1]), r.frame_info(seqs[-1])[0]) == 0
    finally:
        emu.regs[Reg.PAYLOAD_SIZE] = 8192


class TrainServer:
    """A tiny train-ID TCP server: writes encode_train_id(n) when tick() is called."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.port = self.sock.getsockname()[1]
        self.conns = []
        self.accepted = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(c)
            self.accepted.set()

    def tick(self, train_id):
        for c in self.conns:
            c.sendall(encode_train_id(train_id))

    def close(self):
        self.sock.close()
        for c in self.conns:
            c.close()


def test_external_trigger_one_frame_per_train():
    trains = TrainServer()
    emu = FpgaEmulator("127.0.0.1", free_port("udp"), free_port("udp"), trains=f"tcp://127.0.0.1:{trains.port}")
    emu.regs[Reg.TEST_MODE] = 1
    emu.regs[Reg.TRIGGER_MODE] = TriggerModes.EXTERNAL
    with emu, Receiver(ReceiverConfig(detector_ip="127.0.0.1", data_port=emu.data_port, bind_host="127.0.0.1",
                                      n_slots=8)) as r:
        regs = RegisterClient("127.0.0.1", emu.register_port)
        cmd = DetectorCommands(regs)
        r.register()
        assert trains.accepted.wait(5)
        wait_until(lambda: emu.destination is not None, timeout=5)
        trains.tick(999)  # DAQ not running: no frame
        wait_until(lambda: emu.stats.trains_seen == 1, timeout=5)
        cmd.start_daq()
        ids = [2**40 + k for k in range(5)]
        for k, tid in enumerate(ids):
            trains.tick(tid)
            wait_until(lambda k=k: r.head == k + 1, timeout=5, message="one frame per train")
        cmd.stop_daq()
        got = [r.frame_info(s)[1] for s in range(1, 6)]
        assert got == ids
        assert r.counters()["complete"] == 5
        assert all(F.check_test_pattern(r.frame_view(s), r.frame_info(s)[0]) == 0 for s in range(1, 6))
        regs.close()
    trains.close()


def test_registration_from_another_host_cannot_hijack_the_stream(emu, cmd, rx):
    """One registration datagram from 127.0.0.2 used to redirect the stream to its
    sender. The emulator, like the FPGA, takes registrations only from its DAQ host."""
    from trainstamp.detector import _protocol as P

    rx.register()  # an earlier test registered another receiver
    wait_until(lambda: emu.destination == ("127.0.0.1", rx.local_port), timeout=5, message="registration")
    before = emu.destination
    hijack = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        hijack.bind(("127.0.0.2", 0))
        hijack.sendto(P.encode_registration(), ("127.0.0.1", emu.data_port))
        wait_until(lambda: emu.stats.foreign_registrations == 1, timeout=5, message="refused registration")
    finally:
        hijack.close()
    assert emu.destination == before
    d, _ = run_frames(emu, cmd, rx, 2)
    assert d["complete"] == 2, d


def _udp_local_addresses(port):
    """Local addresses bound to UDP ``port``, from /proc/net/udp."""
    out = []
    with open("/proc/net/udp") as f:
        for row in f.readlines()[1:]:
            local = row.split()[1]
            hexip, hexport = local.split(":")
            if int(hexport, 16) == port:
                out.append(socket.inet_ntoa(bytes.fromhex(hexip)[::-1]))
    return out


def test_sockets_bind_the_detector_link_not_every_interface(emu, cmd, rx):
    assert _udp_local_addresses(rx.local_port) == ["127.0.0.1"]
    assert rx.local_address == "127.0.0.1"
    port = cmd.regs._sock.getsockname()
    assert port[0] == "127.0.0.1" and _udp_local_addresses(port[1]) == ["127.0.0.1"]


def test_register_replies_from_another_address_are_stray(emu, cmd):
    from trainstamp.detector import _protocol as P

    regs = cmd.regs
    spoof = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        spoof.bind(("127.0.0.1", 0))
        before = regs.stats.stray_replies
        # a forged reply with the next sequence number, from the wrong port
        seq = next(regs._seq)
        spoof.sendto(P.encode_register(P.Opcode.READ_REPLY, seq + 1, 0, 0xDEAD), regs._sock.getsockname())
        assert cmd.firmware_version() == 0x0001_0000
        wait_until(lambda: regs.stats.stray_replies > before, timeout=5)
    finally:
        spoof.close()
