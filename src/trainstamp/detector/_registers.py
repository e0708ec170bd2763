"""The TEAM1k FPGA register map, exposure and trigger modes.

Addresses and value ranges used by the emulator and by the IOC's register client. The
register map is trainstamp's own (the real one is not public); see ``docs/detector.md``.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from trainstamp.detector._protocol import PAYLOAD_SIZES


class ExposureModes(IntEnum):
    """Exposure modes 0-3 with team1k's names; team1k's default is GLOBAL_SHUTTER_CDS."""

    ROLLING_SHUTTER = 0
    ROLLING_SHUTTER_CDS = 1
    GLOBAL_SHUTTER = 2
    GLOBAL_SHUTTER_CDS = 3


#: Modes that read every pixel twice (correlated double sampling): less read noise.
CDS_MODES = frozenset({ExposureModes.ROLLING_SHUTTER_CDS, ExposureModes.GLOBAL_SHUTTER_CDS})


class TriggerModes(IntEnum):
    """INTERNAL: frames at the period the timing registers imply. EXTERNAL: one per train."""

    INTERNAL = 0
    EXTERNAL = 1


class Reg(IntEnum):
    """Register addresses."""

    FIRMWARE_VERSION = 0x0000  # RO
    STATUS = 0x0001  # RO: STATUS_* bits
    FRAME_COUNTER_LO = 0x0002  # RO: frames sent since reset, low 32 bits
    FRAME_COUNTER_HI = 0x0003  # RO
    EXPOSURE_MODE = 0x0010  # 0..3
    TRIGGER_MODE = 0x0011  # 0 internal, 1 external
    INTEGRATION_TIME_US = 0x0012  # µs
    FRAME_PERIOD_US = 0x0013  # µs, 0 = as fast as integration + readout allow
    NUM_FRAMES = 0x0014  # frames per DAQ start, 0 = until stopped
    ADC_DATA_DELAY = 0x0015  # 0..0x3FF
    TEST_MODE = 0x0016  # 1 = deterministic test pattern
    PAYLOAD_SIZE = 0x0017  # bytes per data packet payload
    DAQ_CONTROL = 0x0020  # write 1 start, 0 stop; reads 1 while running
    RESET = 0x0021  # write 1: stop DAQ, clear counters, default registers
    I2C_ADDRESS = 0x0030  # 7-bit device address
    I2C_REGISTER = 0x0031  # device register
    I2C_DATA = 0x0032  # byte written / byte read
    I2C_CONTROL = 0x0033  # write I2C_WRITE or I2C_READ to run a transfer
    I2C_STATUS = 0x0034  # RO: I2C_NACK bit after a transfer to no device


STATUS_DAQ_RUNNING = 0x1
STATUS_TRAIN_FEED = 0x2  # external train feed connected
STATUS_DESTINATION = 0x4  # a data destination has been registered
I2C_WRITE = 1
I2C_READ = 2
I2C_NACK = 0x2

FIRMWARE_VERSION = 0x0001_0000
MAX_INTEGRATION_US = 10_000_000
MAX_ADC_DATA_DELAY = 0x3FF


@dataclass(frozen=True)
class RegSpec:
    """Access and range of one register."""

    default: int
    lo: int = 0
    hi: int = 0xFFFFFFFF
    writable: bool = True
    choices: tuple[int, ...] | None = None

    def check(self, reg: Reg, value: int) -> None:
        if not self.writable:
            raise PermissionError(f"register {reg.name} is read-only")
        if self.choices is not None and value not in self.choices:
            raise ValueError(f"{reg.name} value {value} not one of {self.choices}")
        if not self.lo <= value <= self.hi:
            raise ValueError(f"{reg.name} value {value} outside {self.lo}..{self.hi}")


REGISTER_SPECS: dict[Reg, RegSpec] = {
    Reg.FIRMWARE_VERSION: RegSpec(FIRMWARE_VERSION, writable=False),
    Reg.STATUS: RegSpec(0, writable=False),
    Reg.FRAME_COUNTER_LO: RegSpec(0, writable=False),
    Reg.FRAME_COUNTER_HI: RegSpec(0, writable=False),
    Reg.EXPOSURE_MODE: RegSpec(int(ExposureModes.GLOBAL_SHUTTER_CDS), 0, 3),
    Reg.TRIGGER_MODE: RegSpec(int(TriggerModes.INTERNAL), 0, 1),
    Reg.INTEGRATION_TIME_US: RegSpec(6000, 1, MAX_INTEGRATION_US),
    Reg.FRAME_PERIOD_US: RegSpec(0, 0, 100_000_000),
    Reg.NUM_FRAMES: RegSpec(0),
    Reg.ADC_DATA_DELAY: RegSpec(0x1A7, 0, MAX_ADC_DATA_DELAY),
    Reg.TEST_MODE: RegSpec(0, 0, 1),
    Reg.PAYLOAD_SIZE: RegSpec(PAYLOAD_SIZES[0], choices=PAYLOAD_SIZES),
    Reg.DAQ_CONTROL: RegSpec(0, 0, 1),
    Reg.RESET: RegSpec(0, 0, 1),
    Reg.I2C_ADDRESS: RegSpec(0, 0, 0x7F),
    Reg.I2C_REGISTER: RegSpec(0, 0, 0xFF),
    Reg.I2C_DATA: RegSpec(0, 0, 0xFF),
    Reg.I2C_CONTROL: RegSpec(0, choices=(0, I2C_WRITE, I2C_READ)),
    Reg.I2C_STATUS: RegSpec(0, writable=False),
}

#: Pixel readout time per read of the whole array, at the ADC clock (32 parallel ADCs).
ADC_CHANNELS = 32


def readout_time_us(adc_clock_hz: float) -> float:
    """Time to read all 1024x1024 pixels once through 32 ADCs at ``adc_clock_hz``."""
    return 1024 * 1024 / ADC_CHANNELS / adc_clock_hz * 1e6


def frame_time_us(mode: int, integration_us: int, period_us: int, adc_clock_hz: float) -> float:
    """Internal-trigger frame time: integration plus one read (two for CDS), or the period."""
    reads = 2 if mode in CDS_MODES else 1
    minimum = integration_us + reads * readout_time_us(adc_clock_hz)
    return max(float(period_us), minimum)
