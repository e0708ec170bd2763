"""Register client for the FPGA's UDP register port, and the detector commands on top.

:class:`RegisterClient` does one request at a time per client (a lock), gives each a
fresh sequence number, and accepts only the reply with that number: a late reply to an
earlier, timed-out request is counted as stray and ignored, so concurrent callers never
get each other's replies. A request is resent after ``timeout`` up to ``retries`` times;
an error reply raises :class:`RegisterError`.

:class:`DetectorCommands` maps team1k's detector commands onto registers, including the
Si570 ADC clock programmed through the FPGA's I2C bridge.
"""

from __future__ import annotations

import itertools
import logging
import socket
import threading
import time
from dataclasses import dataclass

from trainstamp.detector import _protocol as P
from trainstamp.detector import _si570 as S
from trainstamp.detector._registers import (
    I2C_NACK,
    I2C_READ,
    I2C_WRITE,
    MAX_ADC_DATA_DELAY,
    MAX_INTEGRATION_US,
    STATUS_DAQ_RUNNING,
    ExposureModes,
    Reg,
    TriggerModes,
)

log = logging.getLogger(__name__)


class RegisterError(ValueError):
    """The FPGA replied with an error code."""

    def __init__(self, opcode: int, address: int, code: int) -> None:
        try:
            name = P.RegisterErrorCode(code).name
        except ValueError:
            name = f"code {code}"
        op = "read" if opcode == P.Opcode.READ else "write"
        super().__init__(f"register {op} at 0x{address:04x} refused: {name}")
        self.code = code
        self.address = address


class RegisterTimeout(TimeoutError):
    """No matching reply after all retries."""


@dataclass
class RegisterStats:
    requests: int = 0
    retries: int = 0
    timeouts: int = 0
    errors: int = 0
    stray_replies: int = 0  # wrong sequence number, wrong source or malformed


def local_address_for(host: str) -> str:
    """The local interface address the kernel routes ``host`` through (no packet sent).

    The detector's sockets bind this address, not 0.0.0.0: they then receive only on
    the detector link.
    """
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.connect((socket.gethostbyname(host), 9))
        return probe.getsockname()[0]
    except OSError as exc:
        raise ValueError(f"no route to the detector at {host}: {exc.strerror or exc}") from None
    finally:
        probe.close()


class RegisterClient:
    """Read and write FPGA registers at ``(host, port)``.

    The socket binds ``bind_host`` (default: the interface that routes to ``host``,
    see :func:`local_address_for`), and only replies from ``(host, port)`` count; any
    other datagram is counted in ``stats.stray_replies`` and ignored.
    """

    def __init__(self, host: str, port: int = P.DEFAULT_REGISTER_PORT, timeout: float = 0.2, retries: int = 3,
                 bind_host: str | None = None) -> None:
        if timeout <= 0 or retries < 0:
            raise ValueError(f"timeout {timeout} must be > 0 and retries {retries} >= 0")
        self.addr = (socket.gethostbyname(host), port)
        self.timeout = timeout
        self.retries = retries
        self.stats = RegisterStats()
        self.bind_host = bind_host or local_address_for(host)
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind((self.bind_host, 0))
        self._lock = threading.Lock()
        self._seq = itertools.count(int(time.time()) & 0xFFFF)

    @property
    def local_address(self) -> tuple[str, int]:
        """(host, port) this client's socket binds."""
        return self._sock.getsockname()

    def close(self) -> None:
        self._sock.close()

    def read(self, address: int) -> int:
        return self._transact(P.Opcode.READ, address, 0)

    def write(self, address: int, value: int) -> None:
        self._transact(P.Opcode.WRITE, address, int(value))

    def _transact(self, opcode: int, address: int, value: int) -> int:
        with self._lock:
            seq = next(self._seq) & 0xFFFFFFFF
            request = P.encode_register(opcode, seq, address, value)
            self.stats.requests += 1
            for attempt in range(self.retries + 1):
                if attempt:
                    self.stats.retries += 1
                self._sock.sendto(request, self.addr)
                reply = self._await(seq)
                if reply is None:
                    continue
                if reply.opcode == P.Opcode.ERROR:
                    self.stats.errors += 1
                    raise RegisterError(opcode, address, reply.value)
                return reply.value
            self.stats.timeouts += 1
            raise RegisterTimeout(
                f"no reply from {self.addr[0]}:{self.addr[1]} for register 0x{address:04x} "
                f"after {self.retries + 1} tries of {self.timeout} s"
            )

    def _await(self, seq: int) -> P.RegisterPacket | None:
        deadline = time.monotonic() + self.timeout
        while (left := deadline - time.monotonic()) > 0:
            self._sock.settimeout(left)
            try:
                data, src = self._sock.recvfrom(2048)
            except (TimeoutError, BlockingIOError):
                return None
            try:
                reply = P.decode_register(data)
            except ValueError:
                self.stats.stray_replies += 1
                continue
            if src != self.addr or reply.seq != seq:
                self.stats.stray_replies += 1
                log.debug("stray register reply seq %d (waiting for %d)", reply.seq, seq)
                continue
            return reply
        return None


class DetectorCommands:
    """team1k's detector commands as register operations. Units: ms and MHz, as team1k."""

    def __init__(self, regs: RegisterClient) -> None:
        self.regs = regs

    def set_exposure_mode(self, mode: int) -> None:
        self.regs.write(Reg.EXPOSURE_MODE, int(check_exposure_mode(mode)))

    def get_exposure_mode(self) -> int:
        return self.regs.read(Reg.EXPOSURE_MODE)

    def set_trigger_mode(self, mode: int) -> None:
        self.regs.write(Reg.TRIGGER_MODE, int(check_trigger_mode(mode)))

    def get_trigger_mode(self) -> int:
        return self.regs.read(Reg.TRIGGER_MODE)

    def set_integration_time(self, ms: float) -> None:
        self.regs.write(Reg.INTEGRATION_TIME_US, integration_us(ms))

    def get_integration_time(self) -> float:
        return self.regs.read(Reg.INTEGRATION_TIME_US) / 1000.0

    def set_frame_period(self, ms: float) -> None:
        if not 0 <= ms <= 100_000:
            raise ValueError(f"frame period {ms} ms outside 0..100000 ms")
        self.regs.write(Reg.FRAME_PERIOD_US, round(ms * 1000))

    def get_frame_period(self) -> float:
        return self.regs.read(Reg.FRAME_PERIOD_US) / 1000.0

    def set_adc_data_delay(self, delay: int) -> None:
        if not 0 <= int(delay) <= MAX_ADC_DATA_DELAY or int(delay) != delay:
            raise ValueError(f"ADC data delay {delay} outside 0..0x{MAX_ADC_DATA_DELAY:X}")
        self.regs.write(Reg.ADC_DATA_DELAY, int(delay))

    def get_adc_data_delay(self) -> int:
        return self.regs.read(Reg.ADC_DATA_DELAY)

    def set_test_mode(self, on: bool) -> None:
        self.regs.write(Reg.TEST_MODE, 1 if on else 0)

    def get_test_mode(self) -> bool:
        return bool(self.regs.read(Reg.TEST_MODE))

    def start_daq(self) -> None:
        self.regs.write(Reg.DAQ_CONTROL, 1)

    def stop_daq(self) -> None:
        self.regs.write(Reg.DAQ_CONTROL, 0)

    def is_running(self) -> bool:
        return bool(self.regs.read(Reg.STATUS) & STATUS_DAQ_RUNNING)

    def reset(self) -> None:
        self.regs.write(Reg.RESET, 1)

    def frame_counter(self) -> int:
        return self.regs.read(Reg.FRAME_COUNTER_LO) | (self.regs.read(Reg.FRAME_COUNTER_HI) << 32)

    def firmware_version(self) -> int:
        return self.regs.read(Reg.FIRMWARE_VERSION)

    # Si570 over the I2C bridge
    def i2c_write(self, device: int, register: int, value: int) -> None:
        self.regs.write(Reg.I2C_ADDRESS, device)
        self.regs.write(Reg.I2C_REGISTER, register)
        self.regs.write(Reg.I2C_DATA, value)
        self.regs.write(Reg.I2C_CONTROL, I2C_WRITE)
        self._check_ack(device)

    def i2c_read(self, device: int, register: int) -> int:
        self.regs.write(Reg.I2C_ADDRESS, device)
        self.regs.write(Reg.I2C_REGISTER, register)
        self.regs.write(Reg.I2C_CONTROL, I2C_READ)
        self._check_ack(device)
        return self.regs.read(Reg.I2C_DATA)

    def _check_ack(self, device: int) -> None:
        if self.regs.read(Reg.I2C_STATUS) & I2C_NACK:
            raise OSError(f"no I2C acknowledge from device 0x{device:02x}")

    def set_adc_clock_freq(self, mhz: float) -> S.Si570Setting:
        """Program the Si570 for ``mhz``; returns the divider setting written."""
        setting = S.solve(float(mhz) * 1e6)
        for reg, value in S.program_sequence(setting):
            self.i2c_write(S.I2C_ADDRESS, reg, value)
        return setting

    def get_adc_clock_freq(self) -> float:
        """Read registers 7..12 back and compute the output frequency in MHz."""
        regs = bytes(self.i2c_read(S.I2C_ADDRESS, S.REG_FIRST + i) for i in range(6))
        return S.from_registers(regs).frequency() / 1e6


def check_exposure_mode(mode: int | str) -> ExposureModes:
    """An exposure mode from its number or team1k name; ``ValueError`` otherwise."""
    mode = _plain(mode)
    if isinstance(mode, str):
        key = mode.strip().upper()
        if key in ExposureModes.__members__:
            return ExposureModes[key]
        try:
            mode = int(key, 0)
        except ValueError:
            raise ValueError(f"unknown exposure mode {mode!r}; valid: {list(ExposureModes.__members__)}") from None
    if int(mode) != mode or int(mode) not in ExposureModes._value2member_map_:
        raise ValueError(f"unknown exposure mode {mode!r}; valid: 0..3")
    return ExposureModes(int(mode))


def check_trigger_mode(mode: int | str) -> TriggerModes:
    mode = _plain(mode)
    if isinstance(mode, str):
        key = mode.strip().upper()
        if key in TriggerModes.__members__:
            return TriggerModes[key]
        try:
            mode = int(key, 0)
        except ValueError:
            raise ValueError(f"unknown trigger mode {mode!r}; valid: INTERNAL, EXTERNAL") from None
    if int(mode) != mode or int(mode) not in TriggerModes._value2member_map_:
        raise ValueError(f"unknown trigger mode {mode!r}; valid: 0 (INTERNAL), 1 (EXTERNAL)")
    return TriggerModes(int(mode))


def _plain(value):
    """numpy scalars (as caproto hands them to putters) -> Python numbers, for clean messages."""
    return value.item() if hasattr(value, "item") else value


def integration_us(ms: float) -> int:
    """Integration time register value for ``ms``; ``ValueError`` outside 0.001..10000 ms."""
    ms = float(ms)
    if not 0.001 <= ms <= MAX_INTEGRATION_US / 1000:
        raise ValueError(f"integration time {ms} ms outside 0.001..{MAX_INTEGRATION_US / 1000:g} ms")
    return round(ms * 1000)
