"""Parameter-file parsing: the documented format, and bad lines named by number."""

import re

import pytest

from trainstamp.detector._params import parse_parameter_file, parse_parameters
from trainstamp.detector._registers import Reg

GOOD = """\
# TEAM1k settings
exposure_mode     GLOBAL_SHUTTER_CDS
trigger_mode = external      # one frame per train
integration_time  6.5
frame_period      0
adc_clock_freq    60
adc_data_delay    0x1A7
test_mode         on
register          0x0015 0x1A0
"""


def test_good_file():
    s = parse_parameters(GOOD)
    assert [(x.key, x.value, x.line) for x in s] == [
        ("exposure_mode", 3, 2), ("trigger_mode", 1, 3), ("integration_time", 6.5, 4),
        ("frame_period", 0.0, 5), ("adc_clock_freq", 60.0, 6), ("adc_data_delay", 0x1A7, 7),
        ("test_mode", 1, 8), ("register", (int(Reg.ADC_DATA_DELAY), 0x1A0), 9),
    ]


@pytest.mark.parametrize(("line", "message"), [
    ("exposure_mode 7", "exposure_mode '7': unknown exposure mode 7; valid: 0..3"),
    ("exposure_mode FAST", "unknown exposure mode 'FAST'"),
    ("integration_time -1", "integration time -1.0 ms outside 0.001..10000 ms"),
    ("adc_clock_freq 500", "ADC clock 500 MHz outside 10..280 MHz"),
    ("adc_data_delay 0x400", "ADC data delay 1024 outside 0..0x3FF"),
    ("test_mode maybe", "expected 0/1, got 'maybe'"),
    ("register 0x0001 5", "register STATUS is read-only"),
    ("register 0x9999 5", "unknown register address 0x9999"),
    ("register 0x0020 1", "DAQ_CONTROL is a command"),
    ("colour blue", "unknown parameter 'colour'"),
    ("trigger_mode", "parameter 'trigger_mode' has no value"),
])
def test_bad_line_is_named(line, message):
    text = GOOD + line + "\n"
    with pytest.raises(ValueError, match=re.escape("params.txt:10: ") + ".*" + re.escape(message)):
        parse_parameters(text, "params.txt")


def test_file_errors(tmp_path):
    with pytest.raises(ValueError, match="cannot read parameter file"):
        parse_parameter_file(tmp_path / "missing.txt")
    big = tmp_path / "big.txt"
    big.write_bytes(b"#" * (2 << 20))
    with pytest.raises(ValueError, match="limit 1048576"):
        parse_parameter_file(big)
    binary = tmp_path / "bin.txt"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ValueError, match="cannot read parameter file"):
        parse_parameter_file(binary)
