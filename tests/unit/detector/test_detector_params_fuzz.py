"""Fuzz parameter files as a CA client can name them: traversal, binary, huge, FIFO.

Sized by ``fuzz_cases()`` (file names tried). Each case names a file (traversal with
``..``, absolute paths, symlinks out, NUL bytes, very long names, FIFOs, devices,
directories) whose contents are random: binary noise, lines of a secret, good and bad
settings, or more than 1 MiB. What must hold: only ``ValueError`` comes out, within the
configured directory only (nothing outside is ever read), no message quotes a byte of
the contents, memory stays bounded, and a FIFO never blocks.
"""

from __future__ import annotations

import os
import random
import resource

import pytest

from trainstamp.detector import _params
from trainstamp.testing import fuzz_cases, report_cases

pytestmark = pytest.mark.fuzz
CASES = fuzz_cases()
SECRET = "s3cr3t-T0KEN"
GOOD_LINES = ["exposure_mode 3", "trigger_mode EXTERNAL", "integration_time 6.5", "adc_data_delay 0x1A7",
              "test_mode 1", "frame_period 0", "# comment", ""]


def contents(rng: random.Random) -> bytes:
    how = rng.randrange(6)
    if how == 0:
        return rng.randbytes(rng.randrange(0, 300))
    if how == 1:  # lines of a secret, as /etc/passwd
        return "\n".join(f"{SECRET}:{k}:x:0:0" for k in range(rng.randrange(1, 5))).encode()
    if how == 2:  # good lines with a secret value or key mixed in
        lines = rng.sample(GOOD_LINES, rng.randrange(1, len(GOOD_LINES)))
        lines.insert(rng.randrange(len(lines) + 1),
                     rng.choice([f"exposure_mode {SECRET}", f"{SECRET} 1", f"register {SECRET} 5",
                                 f"trigger_mode={SECRET}", f"test_mode {SECRET}"]))
        return "\n".join(lines).encode()
    if how == 3:  # valid
        return "\n".join(rng.sample(GOOD_LINES, rng.randrange(1, len(GOOD_LINES)))).encode()
    if how == 4:  # invalid UTF-8 around a secret
        return SECRET.encode() + b"\xff\xfe" + rng.randbytes(20)
    return (f"# {SECRET}\n" * 1000).encode()


def test_hostile_parameter_files(tmp_path):
    rng = random.Random(13)
    params = tmp_path / "params"
    params.mkdir()
    outside = tmp_path / "outside.txt"
    outside.write_text(f"exposure_mode 1\n{SECRET}\n")
    os.mkfifo(params / "fifo")
    (params / "zero").symlink_to("/dev/zero")
    (params / "out").symlink_to(outside)
    (params / "sub").mkdir()
    huge = params / "huge.txt"
    huge.write_bytes(b"#" * (_params.MAX_FILE_BYTES + 1))
    fixed = ["fifo", "zero", "out", "sub", "huge.txt", "../outside.txt", str(outside), "/etc/passwd",
             "../../../../etc/passwd", "sub/../../outside.txt", "/dev/zero", "/proc/self/environ",
             "a\0b", "", ".", "..", "x" * 5000, "/" * 3000, "sub/" * 1000 + "a", str(params)]
    outcomes = {"applied": 0, "refused": 0}
    reasons: dict[str, int] = {}
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for k in range(CASES):
        name = rng.choice(fixed) if rng.random() < 0.4 else f"case{k % 50}.txt"
        if name.startswith("case"):
            (params / name).write_bytes(contents(rng))
        try:
            path = _params.confine_parameter_file([params], name)
            assert path == params or params in path.parents  # never outside
            settings = _params.parse_parameter_file(path)
        except ValueError as exc:
            text = str(exc)
            assert SECRET not in text and "s3cr3t" not in text, text
            key = next((r for r in ("outside", "not a regular", "larger than", "not UTF-8", "unknown parameter",
                                    "bad value", "no value", "cannot read", "NUL") if r in text), text[:30])
            reasons[key] = reasons.get(key, 0) + 1
            outcomes["refused"] += 1
        else:
            assert all(s.key in _params.PARSERS for s in settings)
            outcomes["applied"] += 1
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0  # KiB
    report_cases("detector parameter files", CASES, **outcomes, peak_rss_growth_kib=grown,
                 **{f"refused_{k.replace(' ', '_')}": v for k, v in sorted(reasons.items())})
    assert grown < 64 << 10  # KiB: the 1 MiB cap, never the size a file claims (/dev/zero: endless)
