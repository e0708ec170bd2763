"""The TEAM1k FPGA emulator: the register port, the data port and nothing else.

It speaks the wire protocol of :mod:`trainstamp.detector._protocol` on real UDP sockets,
so the IOC cannot tell it from hardware:

- register port: read/write with sequence numbers and replies, error replies for unknown
  addresses, read-only registers and bad values; an Si570 behind an I2C bridge;
- data port: learns the host's address from a registration packet and streams frames to
  it, in internal trigger at the period the registers imply, or in external trigger one
  frame per train ID from a TimeServer TCP feed, with the train ID in every header;
- fault injection (:class:`Faults`): drop, reorder, duplicate, corrupt, truncate,
  oversize, bad packet index, foreign source, stalls mid-frame, frame numbers that go
  backwards, and register replies that never come or carry the wrong sequence number.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import random
import socket
import threading
import time
from dataclasses import dataclass, fields

import numpy as np

from trainstamp.detector import _protocol as P
from trainstamp.detector import _si570 as S
from trainstamp.detector._fastio import request_buffer, send_frame_mmsg, sockaddr_in
from trainstamp.detector._frames import SimulatedImage, test_pattern
from trainstamp.detector._registers import (
    I2C_NACK,
    I2C_READ,
    I2C_WRITE,
    REGISTER_SPECS,
    STATUS_DAQ_RUNNING,
    STATUS_DESTINATION,
    STATUS_TRAIN_FEED,
    Reg,
    TriggerModes,
    frame_time_us,
)

log = logging.getLogger(__name__)


@dataclass
class Faults:
    """Fault injection. Fractions are per packet unless noted; 0 disables a fault."""

    drop: float = 0.0
    reorder: float = 0.0  # swap with a packet up to 8 places later (within the frame)
    duplicate: float = 0.0
    corrupt: float = 0.0  # garbage in the header magic
    truncate: float = 0.0
    oversize: float = 0.0
    bad_index: float = 0.0
    foreign: float = 0.0  # a copy from another source port
    stall: float = 0.0  # per frame: pause half-way through for stall_ms
    stall_ms: float = 200.0
    rewind: int = 0  # every N-th frame, also resend an older frame number (N-2)
    reply_drop: float = 0.0  # register replies that never come
    reply_wrong_seq: float = 0.0  # register replies with a wrong sequence number

    @property
    def data_faults(self) -> bool:
        return any(getattr(self, f.name) for f in fields(self)
                   if f.name not in ("stall_ms", "reply_drop", "reply_wrong_seq"))


@dataclass
class EmulatorStats:
    frames_sent: int = 0
    packets_sent: int = 0
    register_requests: int = 0
    bad_register_requests: int = 0
    trains_seen: int = 0
    foreign_registrations: int = 0  # registration datagrams from a host other than ``host``


class FpgaEmulator:
    """An emulated TEAM1k FPGA on ``bind`` (register and data UDP ports).

    ``rate``/``frames`` preset the frame period and frame count registers (pacing for
    benchmarks); ``trains`` is a ``tcp://host:port`` train-ID feed for external trigger.
    Like the FPGA, it streams only to ``host`` (the DAQ host's address): a registration
    from any other address is counted in ``stats.foreign_registrations`` and ignored.
    """

    def __init__(self, bind: str = "127.0.0.1", register_port: int = P.DEFAULT_REGISTER_PORT,
                 data_port: int = P.DEFAULT_DATA_PORT, trains: str | None = None,
                 faults: Faults | None = None, rate: float | None = None,
                 frames: int | None = None, payload_size: int = P.JUMBO_PAYLOAD,
                 seed: int = 0, host: str = "127.0.0.1") -> None:
        self.bind = bind
        self.host = socket.gethostbyname(host)
        self.faults = faults or Faults()
        self.rng = random.Random(seed)
        self.stats = EmulatorStats()
        self.regs: dict[Reg, int] = {r: s.default for r, s in REGISTER_SPECS.items()}
        self.regs[Reg.PAYLOAD_SIZE] = payload_size
        if rate:
            if not 0 < rate <= 10000:
                raise ValueError(f"rate {rate} fps outside (0, 10000]")
            self.regs[Reg.FRAME_PERIOD_US] = round(1e6 / rate)
        if frames:
            self.regs[Reg.NUM_FRAMES] = frames
        self.si570 = S.Si570()
        self.frame_number = 0
        self.destination: tuple[str, int] | None = None
        self._lock = threading.RLock()
        self._running = threading.Event()
        self._run_id = 0  # incremented at each DAQ start
        self._stop = threading.Event()
        self._trains: queue.Queue[tuple[int, int]] = queue.Queue(maxsize=1000)
        self._image: SimulatedImage | None = None
        self._pattern = test_pattern(0)
        self._scratch: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        self._dest_key: tuple[str, int] | None = None
        self._dest = np.zeros(16, np.uint8)
        self.reg_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.reg_sock.bind((bind, register_port))
        self.reg_sock.settimeout(0.2)
        self.data_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.data_sock.bind((bind, data_port))
        self.data_sock.settimeout(0.2)
        request_buffer(self.data_sock, socket.SO_SNDBUF, 8 * 1024 * 1024)
        self.foreign_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.foreign_sock.bind((bind, 0))
        self.register_port = self.reg_sock.getsockname()[1]
        self.data_port = self.data_sock.getsockname()[1]
        self.feed = None
        if trains:
            from trainstamp.timing.feed import TrainFeed

            self.feed = TrainFeed(trains, self._on_train, name="emulator-trains")
        self._threads = [
            threading.Thread(target=self._serve_registers, name="fpga-registers", daemon=True),
            threading.Thread(target=self._serve_data_port, name="fpga-data-port", daemon=True),
            threading.Thread(target=self._stream, name="fpga-stream", daemon=True),
        ]

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> FpgaEmulator:
        # compile the send kernel now, not on the first frame
        self._send_fast(np.zeros(P.HEADER_SIZE, np.uint8), np.zeros(P.FRAME_BYTES, np.uint8),
                        P.JUMBO_PAYLOAD, 0, (self.bind, 9))
        for t in self._threads:
            t.start()
        if self.feed is not None:
            self.feed.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._running.clear()
        if self.feed is not None:
            self.feed.stop()
        for t in self._threads:
            t.join(5)
        for s in (self.reg_sock, self.data_sock, self.foreign_sock):
            s.close()

    def __enter__(self) -> FpgaEmulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ registers
    def read_register(self, address: int) -> int:
        reg = Reg(address)  # ValueError for an unknown address
        with self._lock:
            if reg == Reg.STATUS:
                return ((STATUS_DAQ_RUNNING if self._running.is_set() else 0)
                        | (STATUS_DESTINATION if self.destination else 0)
                        | (STATUS_TRAIN_FEED if self.feed and self.feed._connected.is_set() else 0))
            if reg == Reg.DAQ_CONTROL:
                return 1 if self._running.is_set() else 0
            if reg == Reg.FRAME_COUNTER_LO:
                return self.frame_number & 0xFFFFFFFF
            if reg == Reg.FRAME_COUNTER_HI:
                return (self.frame_number >> 32) & 0xFFFFFFFF
            return self.regs[reg]

    def write_register(self, address: int, value: int) -> None:
        reg = Reg(address)
        REGISTER_SPECS[reg].check(reg, value)
        with self._lock:
            if reg == Reg.DAQ_CONTROL:
                if value:
                    self._drain_trains()
                    if not self._running.is_set():
                        self._run_id += 1
                    self._running.set()
                else:
                    self._running.clear()
                return
            if reg == Reg.RESET:
                if value:
                    self._running.clear()
                    self.frame_number = 0
                    for r, s in REGISTER_SPECS.items():
                        if r not in (Reg.FRAME_PERIOD_US, Reg.NUM_FRAMES, Reg.PAYLOAD_SIZE):
                            self.regs[r] = s.default
                return
            if reg == Reg.I2C_CONTROL:
                self._i2c(value)
                return
            self.regs[reg] = value
            if reg in (Reg.EXPOSURE_MODE, Reg.INTEGRATION_TIME_US):
                self._image = None

    def _i2c(self, op: int) -> None:
        if self.regs[Reg.I2C_ADDRESS] != S.I2C_ADDRESS:
            self.regs[Reg.I2C_STATUS] = I2C_NACK
            return
        self.regs[Reg.I2C_STATUS] = 0
        if op == I2C_WRITE:
            self.si570.write(self.regs[Reg.I2C_REGISTER], self.regs[Reg.I2C_DATA])
        elif op == I2C_READ:
            self.regs[Reg.I2C_DATA] = self.si570.read(self.regs[Reg.I2C_REGISTER])

    def _serve_registers(self) -> None:
        while not self._stop.is_set():
            try:
                data, addr = self.reg_sock.recvfrom(2048)
            except (TimeoutError, OSError):
                continue
            self.stats.register_requests += 1
            reply = self._handle_register(data)
            if reply is None:
                continue
            if self.faults.reply_drop and self.rng.random() < self.faults.reply_drop:
                continue
            if self.faults.reply_wrong_seq and self.rng.random() < self.faults.reply_wrong_seq:
                bad = P.decode_register(reply)
                reply = P.encode_register(bad.opcode, (bad.seq + 7919) & 0xFFFFFFFF, bad.address, bad.value)
            with contextlib.suppress(OSError):
                self.reg_sock.sendto(reply, addr)

    def _handle_register(self, data: bytes) -> bytes | None:
        try:
            req = P.decode_register(data)
        except ValueError:
            self.stats.bad_register_requests += 1
            if len(data) == P.REGISTER_PACKET.size:
                seq = P.REGISTER_PACKET.unpack(data)[3]
                return P.encode_register(P.Opcode.ERROR, seq, 0, P.RegisterErrorCode.BAD_REQUEST)
            return None
        try:
            if req.opcode == P.Opcode.READ:
                value = self.read_register(req.address)
                return P.encode_register(P.Opcode.READ_REPLY, req.seq, req.address, value)
            if req.opcode == P.Opcode.WRITE:
                self.write_register(req.address, req.value)
                return P.encode_register(P.Opcode.WRITE_REPLY, req.seq, req.address, req.value)
            code = P.RegisterErrorCode.BAD_REQUEST
        except PermissionError:
            code = P.RegisterErrorCode.READ_ONLY
        except ValueError:
            code = (P.RegisterErrorCode.UNKNOWN_ADDRESS if req.address not in Reg._value2member_map_
                    else P.RegisterErrorCode.BAD_VALUE)
        self.stats.bad_register_requests += 1
        return P.encode_register(P.Opcode.ERROR, req.seq, req.address, code)

    # ------------------------------------------------------------------ data port
    def _serve_data_port(self) -> None:
        while not self._stop.is_set():
            try:
                data, addr = self.data_sock.recvfrom(2048)
            except (TimeoutError, OSError):
                continue
            if P.is_registration(data):
                if addr[0] != self.host:
                    self.stats.foreign_registrations += 1
                    log.warning("registration from %s:%d refused (DAQ host is %s)", *addr, self.host)
                    continue
                with self._lock:
                    self.destination = addr
                log.info("streaming to %s:%d", *addr)

    def _on_train(self, train_id: int, recv_ns: int) -> None:
        self.stats.trains_seen += 1
        if self._running.is_set() and self.regs[Reg.TRIGGER_MODE] == TriggerModes.EXTERNAL:
            with contextlib.suppress(queue.Full):
                self._trains.put_nowait((train_id, recv_ns))

    def _drain_trains(self) -> None:
        while True:
            try:
                self._trains.get_nowait()
            except queue.Empty:
                return

    def _stream(self) -> None:
        sent_in_run = 0
        next_deadline = 0.0
        run_id = 0
        while not self._stop.is_set():
            if not self._running.wait(0.1):
                continue
            if run_id != self._run_id:
                run_id, sent_in_run, next_deadline = self._run_id, 0, time.monotonic()
            if self.regs[Reg.TRIGGER_MODE] == TriggerModes.EXTERNAL:
                try:
                    train_id, ts = self._trains.get(timeout=0.1)
                except queue.Empty:
                    continue
            else:
                period = frame_time_us(self.regs[Reg.EXPOSURE_MODE], self.regs[Reg.INTEGRATION_TIME_US],
                                       self.regs[Reg.FRAME_PERIOD_US], self.si570.frequency_hz) / 1e6
                now = time.monotonic()
                if now < next_deadline:
                    time.sleep(min(next_deadline - now, 0.1))
                    continue
                next_deadline = max(next_deadline + period, now - period)  # no catch-up bursts
                train_id, ts = 0, time.time_ns()
            with self._lock:
                if not self._running.is_set():
                    continue
                self.frame_number += 1
                fn = self.frame_number
                dest = self.destination
            if dest is not None:
                self._send(fn, train_id, ts, dest)
            sent_in_run += 1
            n = self.regs[Reg.NUM_FRAMES]
            if n and sent_in_run >= n:
                self._running.clear()

    def frame_pixels(self, fn: int) -> np.ndarray:
        if self.regs[Reg.TEST_MODE]:
            return test_pattern(fn, out=self._pattern)
        img = self._image
        if img is None:
            img = self._image = SimulatedImage(self.regs[Reg.EXPOSURE_MODE], self.regs[Reg.INTEGRATION_TIME_US])
        return img.frame(fn)

    def _flags(self) -> int:
        return ((self.regs[Reg.EXPOSURE_MODE] & P.FLAG_MODE_MASK)
                | (P.FLAG_TEST_PATTERN if self.regs[Reg.TEST_MODE] else 0)
                | (P.FLAG_EXTERNAL_TRIGGER if self.regs[Reg.TRIGGER_MODE] else 0))

    def _send(self, fn: int, train_id: int, ts: int, dest: tuple[str, int]) -> None:
        payload = self.regs[Reg.PAYLOAD_SIZE]
        ppf = P.packets_per_frame(payload)
        raw = np.ascontiguousarray(self.frame_pixels(fn)).view(np.uint8).reshape(-1)
        hdr = P.DataHeader(fn, payload, 0, train_id, ts, packets_per_frame=ppf, flags=self._flags())
        if not self.faults.data_faults:
            self.stats.packets_sent += self._send_fast(np.frombuffer(hdr.pack(), np.uint8), raw, payload, ppf, dest)
        else:
            self._send_with_faults(hdr, raw, payload, ppf, dest)
            if self.faults.rewind and fn % self.faults.rewind == 0 and fn > 2:
                old = P.DataHeader(fn - 2, payload, 0, train_id, ts, packets_per_frame=ppf, flags=hdr.flags)
                self._send_with_faults(old, raw, payload, ppf, dest, plain=True)
        self.stats.frames_sent += 1

    def _send_fast(self, header: np.ndarray, raw: np.ndarray, payload: int, ppf: int,
                   dest: tuple[str, int]) -> int:
        n = max(ppf, 1)
        scratch = self._scratch.get(n)
        if scratch is None:
            scratch = self._scratch[n] = (np.zeros((n, P.HEADER_SIZE), np.uint8), np.zeros((n, 4), np.uint64),
                                          np.zeros((n, 8), np.uint64))
        if dest != self._dest_key:
            self._dest_key, self._dest = dest, sockaddr_in(*dest)
        return send_frame_mmsg(self.data_sock.fileno(), self._dest, header, raw, payload, ppf, *scratch)

    def _send_with_faults(self, hdr: P.DataHeader, raw: np.ndarray, payload: int, ppf: int,
                          dest: tuple[str, int], plain: bool = False) -> None:
        f, rng = self.faults, self.rng
        base = bytearray(hdr.pack())
        packets = []
        for i in range(ppf):
            b = bytearray(base)
            P.DATA_HEADER.pack_into(b, 0, *(
                i if name == "packet_index" else getattr(hdr, name) for name, _ in P.DATA_HEADER_FIELDS))
            b += raw[i * payload:(i + 1) * payload].tobytes()
            packets.append(b)
        out: list[tuple[socket.socket, bytes]] = []
        for b in packets:
            if plain:
                out.append((self.data_sock, b))
                continue
            if f.drop and rng.random() < f.drop:
                continue
            if f.corrupt and rng.random() < f.corrupt:
                b = bytearray(b)
                b[P.OFF_MAGIC:P.OFF_MAGIC + 4] = rng.randbytes(4)
            elif f.truncate and rng.random() < f.truncate:
                b = b[:rng.randrange(0, len(b) - 1)]
            elif f.oversize and rng.random() < f.oversize:
                b = b + bytes(rng.randrange(1, 64))
            elif f.bad_index and rng.random() < f.bad_index:
                b = bytearray(b)
                P.DATA_HEADER.pack_into(b, 0, *(
                    ppf + rng.randrange(0, 1000) if name == "packet_index" else getattr(hdr, name)
                    for name, _ in P.DATA_HEADER_FIELDS))
            out.append((self.data_sock, bytes(b)))
            if f.duplicate and rng.random() < f.duplicate:
                out.append((self.data_sock, bytes(b)))
            if f.foreign and rng.random() < f.foreign:
                out.append((self.foreign_sock, bytes(b)))
        if f.reorder:
            for i in range(len(out)):
                if rng.random() < f.reorder:
                    j = min(len(out) - 1, i + rng.randrange(1, 9))
                    out[i], out[j] = out[j], out[i]
        stall_at = len(out) // 2 if (f.stall and not plain and rng.random() < f.stall) else -1
        for k, (sock, b) in enumerate(out):
            if k == stall_at:
                time.sleep(f.stall_ms / 1000.0)
            try:
                sock.sendto(b, dest)
                self.stats.packets_sent += 1
            except OSError:
                pass
            if k % 64 == 63:
                time.sleep(0)  # let a receiver on the same cores keep up
