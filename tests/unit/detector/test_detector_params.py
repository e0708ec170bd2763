"""Parameter-file parsing: the documented format, and bad lines named by number."""

import os
import re

import pytest

from trainstamp.detector._params import (
    confine_parameter_file,
    parse_parameter_file,
    parse_parameters,
    read_parameter_file,
)
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
    ("exposure_mode 7", "exposure_mode: bad value (expected 0..3 or ROLLING_SHUTTER"),
    ("exposure_mode FAST", "exposure_mode: bad value"),
    ("integration_time -1", "integration_time: bad value (expected 0.001..10000 ms)"),
    ("adc_clock_freq 500", "adc_clock_freq: bad value (expected an Si570 frequency in 10..280 MHz)"),
    ("adc_data_delay 0x400", "adc_data_delay: bad value (expected 0..0x3FF)"),
    ("test_mode maybe", "test_mode: bad value (expected 0/1"),
    ("register 0x0001 5", "register: bad value"),
    ("register 0x9999 5", "register: bad value"),
    ("register 0x0020 1", "register: bad value"),
    ("colour blue", "unknown parameter; known: adc_clock_freq"),
    ("trigger_mode", "parameter trigger_mode has no value"),
])
def test_bad_line_is_named_without_quoting_the_file(line, message):
    text = GOOD + line + "\n"
    with pytest.raises(ValueError, match=re.escape("params.txt:10: ") + ".*" + re.escape(message)) as err:
        parse_parameters(text, "params.txt")
    value = line.split()[-1]
    if len(value) > 1 and line.split()[0] != "trigger_mode":
        assert value not in str(err.value).replace("0x3FF", "")  # the text is never quoted


def test_a_file_of_secrets_is_never_echoed():
    with pytest.raises(ValueError) as err:
        parse_parameters("root:x:0:0:root:/root:/bin/bash\n", "passwd")
    assert "root" not in str(err.value) and "passwd:1: unknown parameter" in str(err.value)


def test_file_errors(tmp_path):
    with pytest.raises(ValueError, match="cannot read parameter file"):
        parse_parameter_file(tmp_path / "missing.txt")
    big = tmp_path / "big.txt"
    big.write_bytes(b"#" * (2 << 20))
    with pytest.raises(ValueError, match="larger than the limit of 1048576 bytes"):
        parse_parameter_file(big)
    binary = tmp_path / "bin.txt"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ValueError, match="not UTF-8 text"):
        parse_parameter_file(binary)


def test_only_regular_files_are_opened(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(ValueError, match="not a regular file"):  # without blocking
        parse_parameter_file(fifo)
    with pytest.raises(ValueError, match="not a regular file"):
        parse_parameter_file(tmp_path)
    with pytest.raises(ValueError, match="not a regular file"):  # st_size 0, endless
        parse_parameter_file("/dev/zero")


def test_the_bytes_read_are_capped_not_the_size_reported(tmp_path, monkeypatch):
    reads = []
    real = os.read

    def counting(fd, n):
        reads.append(n)
        return real(fd, n)

    big = tmp_path / "big.txt"
    big.write_bytes(b"#" * (8 << 20))
    monkeypatch.setattr(os, "read", counting)
    with pytest.raises(ValueError, match="larger than the limit"):
        read_parameter_file(big, limit=1000)
    assert sum(reads) <= 1001


def test_parameter_files_are_confined(tmp_path):
    inside = tmp_path / "params"
    inside.mkdir()
    (inside / "a.txt").write_text("test_mode 1\n")
    (inside / "link").symlink_to("/etc/passwd")
    assert confine_parameter_file([inside], "a.txt") == inside / "a.txt"
    assert confine_parameter_file([tmp_path / "x", inside], str(inside / "a.txt")) == inside / "a.txt"
    for name in ("../../etc/passwd", "/etc/passwd", "link", "../params/../../x", str(tmp_path)):
        with pytest.raises(ValueError, match="outside the parameter directories"):
            confine_parameter_file([inside], name)
    with pytest.raises(ValueError, match="no parameter directory is configured"):
        confine_parameter_file([], "a.txt")
