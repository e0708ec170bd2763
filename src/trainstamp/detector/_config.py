"""The detector's configuration as the IOC wants it, and keeping the FPGA on it.

An FPGA forgets its registers when it restarts or is reset: trigger mode falls back to
INTERNAL and frames silently stop carrying train IDs. :class:`DetectorConfig` holds
the settings the IOC has set (adopted from the device at connect, then every accepted
put and parameter file), so that

- :meth:`DetectorConfig.apply` writes them all back after a reset or a restart;
- :meth:`DetectorConfig.mismatches` reads the registers back and names every setting
  the FPGA no longer holds (the sign of a restarted FPGA).

All methods block on register I/O and hold one lock, so a check never interleaves
with a put that changes a setting.
"""

from __future__ import annotations

import threading

from trainstamp.detector._regclient import DetectorCommands
from trainstamp.detector._registers import Reg, TriggerModes

#: Settings in the order they are applied; clock last (it takes a dozen transfers).
KEYS = ("exposure_mode", "trigger_mode", "integration_time", "frame_period", "adc_data_delay",
        "test_mode", "adc_clock_freq")
#: Settings compared against the registers at each check (the clock is not: reading
#: the Si570 back costs 30 register transfers; it is re-applied with the rest).
CHECKED = KEYS[:-1]


def _setter(cmd: DetectorCommands, key: str):
    return {"exposure_mode": cmd.set_exposure_mode, "trigger_mode": cmd.set_trigger_mode,
            "integration_time": cmd.set_integration_time, "frame_period": cmd.set_frame_period,
            "adc_data_delay": cmd.set_adc_data_delay, "test_mode": lambda v: cmd.set_test_mode(bool(v)),
            "adc_clock_freq": cmd.set_adc_clock_freq}[key]


def _getter(cmd: DetectorCommands, key: str):
    return {"exposure_mode": cmd.get_exposure_mode, "trigger_mode": cmd.get_trigger_mode,
            "integration_time": cmd.get_integration_time, "frame_period": cmd.get_frame_period,
            "adc_data_delay": cmd.get_adc_data_delay, "test_mode": lambda: int(cmd.get_test_mode()),
            "adc_clock_freq": cmd.get_adc_clock_freq}[key]


class DetectorConfig:
    """The configured settings of one detector, and the register I/O that keeps them."""

    def __init__(self, cmd: DetectorCommands) -> None:
        self.cmd = cmd
        self.values: dict[str, float | int] = {}
        self.registers: dict[int, int] = {}  # raw writes from parameter files
        self.lock = threading.RLock()

    @property
    def expects_train_ids(self) -> bool:
        """External trigger is configured: every frame must carry a train ID."""
        return self.values.get("trigger_mode") == TriggerModes.EXTERNAL

    def adopt(self) -> dict[str, float | int]:
        """Take the device's current settings as the configuration (at connect)."""
        with self.lock:
            self.values = {k: _getter(self.cmd, k)() for k in KEYS}
            return dict(self.values)

    def set(self, key: str, value: float | int) -> None:
        """Apply one setting and keep it (only once the FPGA accepted it)."""
        with self.lock:
            _setter(self.cmd, key)(value)
            self.values[key] = value

    def set_register(self, address: int, value: int) -> None:
        with self.lock:
            self.cmd.regs.write(address, value)
            self.registers[int(address)] = int(value)

    def apply(self) -> None:
        """Write every configured setting to the FPGA (after a reset or a restart)."""
        with self.lock:
            for key in KEYS:
                if key in self.values:
                    _setter(self.cmd, key)(self.values[key])
            for address, value in self.registers.items():
                self.cmd.regs.write(address, value)

    def mismatches(self) -> list[str]:
        """The settings the FPGA no longer holds, read back from its registers."""
        with self.lock:
            out = []
            for key in CHECKED:
                if key in self.values and not _same(key, _getter(self.cmd, key)(), self.values[key]):
                    out.append(key)
            for address, value in self.registers.items():
                if self.cmd.regs.read(address) != value:
                    out.append(f"register 0x{address:04x} ({Reg(address).name})")
            return out


def _same(key: str, got: float | int, want: float | int) -> bool:
    if key in ("integration_time", "frame_period"):
        return round(float(got) * 1000) == round(float(want) * 1000)  # whole µs on the wire
    return int(got) == int(want)
