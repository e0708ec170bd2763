"""Si570 programmable oscillator: the datasheet arithmetic for the TEAM1k ADC clock.

The ADC clock is an Si570 on the FPGA's I2C bus. Its output frequency is
``f_out = f_xtal * RFREQ / (HS_DIV * N1)``, where the DCO ``f_xtal * RFREQ`` must stay in
4.85-5.67 GHz, ``HS_DIV`` is one of 4, 5, 6, 7, 9, 11, ``N1`` is 1 or an even number up to
128, and ``RFREQ`` is a 38-bit fixed-point number with 28 fractional bits. Registers 7-12
hold them (7-bit addresses; 0x55 is the usual I2C address); register 137 bit 4 freezes
the DCO and register 135 bit 6 (NewFreq) applies new values.

Pure functions only: no I2C, no I/O.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

I2C_ADDRESS = 0x55
FXTAL_HZ = 114.285e6  # nominal; each part's exact value comes from its factory setting
FDCO_MIN_HZ = 4.85e9
FDCO_MAX_HZ = 5.67e9
HS_DIVS = (11, 9, 7, 6, 5, 4)
N1_VALUES = (1, *range(2, 129, 2))
RFREQ_FRAC_BITS = 28
RFREQ_MAX = (1 << 38) - 1
F_OUT_MIN_HZ = 10e6
F_OUT_MAX_HZ = 280e6  # the CMOS option's highest output
REG_FIRST = 7  # registers 7..12
REG_RESET_FREEZE_MEMCTRL = 135
REG_FREEZE_DCO = 137
NEWFREQ = 0x40
RECALL = 0x01
FREEZE_DCO = 0x10


@dataclass(frozen=True)
class Si570Setting:
    """One divider setting: ``HS_DIV``, ``N1`` and the raw 38-bit ``RFREQ``."""

    hs_div: int
    n1: int
    rfreq: int

    def frequency(self, fxtal_hz: float = FXTAL_HZ) -> float:
        """Output frequency in Hz these dividers produce."""
        return fxtal_hz * (self.rfreq / (1 << RFREQ_FRAC_BITS)) / (self.hs_div * self.n1)

    def fdco(self, fxtal_hz: float = FXTAL_HZ) -> float:
        return fxtal_hz * self.rfreq / (1 << RFREQ_FRAC_BITS)

    def to_registers(self) -> bytes:
        """Registers 7..12 (six bytes) for this setting."""
        hs = self.hs_div - 4
        n1 = self.n1 - 1
        return bytes((
            (hs << 5) | (n1 >> 2),
            ((n1 & 0x3) << 6) | (self.rfreq >> 32),
            (self.rfreq >> 24) & 0xFF,
            (self.rfreq >> 16) & 0xFF,
            (self.rfreq >> 8) & 0xFF,
            self.rfreq & 0xFF,
        ))


def from_registers(regs: bytes) -> Si570Setting:
    """Decode registers 7..12; ``ValueError`` for a reserved HS_DIV or an odd N1."""
    if len(regs) != 6:
        raise ValueError(f"need registers 7..12 (6 bytes), got {len(regs)}")
    hs_div = (regs[0] >> 5) + 4
    n1 = (((regs[0] & 0x1F) << 2) | (regs[1] >> 6)) + 1
    rfreq = ((regs[1] & 0x3F) << 32) | int.from_bytes(regs[2:6], "big")
    if hs_div not in HS_DIVS:
        raise ValueError(f"HS_DIV {hs_div} is reserved; valid values are {sorted(HS_DIVS)}")
    if n1 not in N1_VALUES:
        raise ValueError(f"N1 {n1} is not 1 or an even number 2..128")
    return Si570Setting(hs_div, n1, rfreq)


def solve(f_out_hz: float, fxtal_hz: float = FXTAL_HZ) -> Si570Setting:
    """Dividers for ``f_out_hz``: the datasheet search for the lowest DCO frequency.

    ``ValueError`` quoting the frequency and the range if the part cannot make it.
    """
    if not F_OUT_MIN_HZ <= f_out_hz <= F_OUT_MAX_HZ:
        raise ValueError(
            f"ADC clock {f_out_hz / 1e6:g} MHz outside {F_OUT_MIN_HZ / 1e6:g}..{F_OUT_MAX_HZ / 1e6:g} MHz"
        )
    best: Si570Setting | None = None
    best_fdco = math.inf
    for hs_div in HS_DIVS:
        n1 = math.ceil(FDCO_MIN_HZ / (f_out_hz * hs_div))
        if n1 > 1 and n1 % 2:
            n1 += 1
        if n1 > 128:
            continue
        fdco = f_out_hz * hs_div * n1
        if fdco > FDCO_MAX_HZ or fdco >= best_fdco:
            continue
        rfreq = round(fdco / fxtal_hz * (1 << RFREQ_FRAC_BITS))
        if rfreq > RFREQ_MAX:
            continue
        best, best_fdco = Si570Setting(hs_div, n1, rfreq), fdco
    if best is None:
        raise ValueError(f"no Si570 divider setting gives {f_out_hz / 1e6:g} MHz")
    return best


def calibrate_fxtal(factory: Si570Setting, factory_f_out_hz: float) -> float:
    """Exact crystal frequency from the factory registers and the part's startup frequency."""
    return factory_f_out_hz * factory.hs_div * factory.n1 / (factory.rfreq / (1 << RFREQ_FRAC_BITS))


class Si570:
    """An emulated Si570's register file: I2C reads and writes, freeze and NewFreq.

    Output frequency changes only when NewFreq is set while the DCO is unfrozen, as on
    the part; a setting whose DCO is out of range leaves the output where it was.
    """

    def __init__(self, startup_hz: float = 100e6, fxtal_hz: float = FXTAL_HZ) -> None:
        self.fxtal_hz = fxtal_hz
        self.factory = solve(startup_hz, fxtal_hz)
        self.regs = bytearray(256)
        self._load(self.factory)
        self.frequency_hz = self.factory.frequency(fxtal_hz)

    def _load(self, s: Si570Setting) -> None:
        self.regs[REG_FIRST:REG_FIRST + 6] = s.to_registers()

    def read(self, reg: int) -> int:
        return self.regs[reg]

    def write(self, reg: int, value: int) -> None:
        self.regs[reg] = value & 0xFF
        if reg == REG_RESET_FREEZE_MEMCTRL:
            if value & RECALL:
                self._load(self.factory)
                self.frequency_hz = self.factory.frequency(self.fxtal_hz)
            if value & NEWFREQ and not self.regs[REG_FREEZE_DCO] & FREEZE_DCO:
                self._apply()
            self.regs[reg] &= ~(NEWFREQ | RECALL) & 0xFF  # self-clearing bits
        elif reg == REG_FREEZE_DCO and not value & FREEZE_DCO:
            pass  # unfreezing alone does not apply; NewFreq does

    def _apply(self) -> None:
        try:
            s = from_registers(bytes(self.regs[REG_FIRST:REG_FIRST + 6]))
        except ValueError:
            return
        if FDCO_MIN_HZ <= s.fdco(self.fxtal_hz) <= FDCO_MAX_HZ:
            self.frequency_hz = s.frequency(self.fxtal_hz)


def program_sequence(setting: Si570Setting) -> list[tuple[int, int]]:
    """The (register, value) writes that program ``setting`` on a running part."""
    writes = [(REG_FREEZE_DCO, FREEZE_DCO)]
    writes += [(REG_FIRST + i, b) for i, b in enumerate(setting.to_registers())]
    writes += [(REG_FREEZE_DCO, 0), (REG_RESET_FREEZE_MEMCTRL, NEWFREQ)]
    return writes
