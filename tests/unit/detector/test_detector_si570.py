"""Si570 datasheet arithmetic and the emulated part's register file."""

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trainstamp.detector import _si570 as S


@given(st.floats(10e6, 280e6))
def test_solve_hits_the_frequency_with_a_legal_dco(f):
    s = S.solve(f)
    assert s.hs_div in S.HS_DIVS and s.n1 in S.N1_VALUES
    assert S.FDCO_MIN_HZ <= s.fdco() <= S.FDCO_MAX_HZ
    assert 0 < s.rfreq <= S.RFREQ_MAX
    assert abs(s.frequency() - f) / f < 1e-8  # 28 fractional RFREQ bits


@given(st.floats(10e6, 280e6))
def test_registers_round_trip(f):
    s = S.solve(f)
    assert S.from_registers(s.to_registers()) == s


def test_known_setting_for_100_mhz():
    # fDCO = 100 MHz * HS_DIV * N1 must be the lowest legal value: 5.0 GHz = 100 * 5 * 10
    s = S.solve(100e6)
    assert (s.hs_div, s.n1) == (5, 10)
    assert s.rfreq == round(5e9 / S.FXTAL_HZ * 2**28)
    regs = s.to_registers()
    assert regs[0] >> 5 == 1  # HS_DIV code 5-4
    assert ((regs[0] & 0x1F) << 2 | regs[1] >> 6) == 9  # N1-1


def test_out_of_range():
    with pytest.raises(ValueError, match=re.escape("ADC clock 5 MHz outside 10..280 MHz")):
        S.solve(5e6)


def test_reserved_hs_div_refused():
    with pytest.raises(ValueError, match="HS_DIV 8 is reserved"):
        S.from_registers(bytes([(8 - 4) << 5, 0, 0, 0, 0, 0]))


def test_calibrate_fxtal():
    factory = S.solve(100e6, fxtal_hz=114.3e6)
    assert S.calibrate_fxtal(factory, 100e6) == pytest.approx(114.3e6, rel=1e-9)


def test_emulated_part_applies_only_on_newfreq():
    part = S.Si570()
    assert part.frequency_hz == pytest.approx(100e6)
    seq = S.program_sequence(S.solve(60e6))
    for reg, value in seq[:-1]:
        part.write(reg, value)
    assert part.frequency_hz == pytest.approx(100e6)  # not yet applied
    part.write(*seq[-1])
    assert part.frequency_hz == pytest.approx(60e6)
    assert part.read(S.REG_RESET_FREEZE_MEMCTRL) & S.NEWFREQ == 0  # self-clearing
    part.write(S.REG_RESET_FREEZE_MEMCTRL, S.RECALL)
    assert part.frequency_hz == pytest.approx(100e6)
