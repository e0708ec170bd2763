"""The shared command-line argument types: each returns the value or refuses the text
with ``argparse.ArgumentTypeError`` quoting it and naming the limit."""

from __future__ import annotations

import argparse
import ast
import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trainstamp import _cli_types as t

SRC = Path(t.__file__).parent


def refused(kind, text: str, message: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match=re.escape(message)):
        kind(text)


@given(st.integers(-10, 70000))
def test_port_is_exactly_1_to_65535(n):
    if 1 <= n <= 65535:
        assert t.port(str(n)) == n
    else:
        refused(t.port, str(n), f"port '{n}' outside 1..65535")


@given(st.integers(-10, 70000))
def test_port_or_zero_is_exactly_0_to_65535(n):
    if 0 <= n <= 65535:
        assert t.port_or_zero(str(n)) == n
    else:
        refused(t.port_or_zero, str(n), f"port '{n}' outside 0..65535")


@pytest.mark.parametrize("text", ["", " 80", "80 ", "8o", "1e3", "0x50", "²", "٣", "+80"])
def test_ports_refuse_anything_but_ascii_digits(text):
    refused(t.port, text, f"port {text!r} outside 1..65535")
    refused(t.port_or_zero, text, f"port {text!r} outside 0..65535")


@pytest.mark.parametrize(("text", "value"), [("1", 1.0), ("100", 100.0), ("60000", 60000.0),
                                             ("2.5", 2.5)])
def test_period_ms_accepts_the_timeserver_range(text, value):
    assert t.period_ms(text) == value


@pytest.mark.parametrize(("text", "message"), [
    ("0", "period 0.0 ms outside 1..60000 ms"),
    ("0.1", "period 0.1 ms outside 1..60000 ms"),
    ("60001", "period 60001.0 ms outside"),
    ("nan", "period nan ms outside"),
    ("inf", "period inf ms outside"),
    ("-5", "period -5.0 ms outside"),
    ("fast", "period 'fast' is not a number"),
])
def test_period_ms_refuses_with_the_limit(text, message):
    refused(t.period_ms, text, message)


@given(st.floats(allow_nan=True, allow_infinity=True))
def test_finite_and_positive_floats(x):
    text = repr(x)
    if x != x or x in (float("inf"), float("-inf")):
        refused(t.finite_float, text, "expected a finite number")
        with pytest.raises(argparse.ArgumentTypeError):
            t.positive_float(text)
        return
    assert t.finite_float(text) == x
    if x > 0:
        assert t.positive_float(text) == x
    else:
        refused(t.positive_float, text, f"{text!r}: expected a number > 0")


def test_floats_refuse_words():
    refused(t.finite_float, "ten", "'ten' is not a number")
    refused(t.positive_float, "ten", "'ten' is not a number")


@given(st.integers(-5, 10**6))
def test_counts(n):
    if n >= 0:
        assert t.non_negative_int(str(n)) == n
    else:
        refused(t.non_negative_int, str(n), f"'{n}': expected a whole number >= 0")
    if n >= 1:
        assert t.positive_int(str(n)) == n
    else:
        refused(t.positive_int, str(n), f"'{n}': expected a whole number >= 1")


def test_train_id_is_0_to_2_pow_64_minus_1():
    assert t.train_id("0") == 0 and t.train_id(str(2**64 - 1)) == 2**64 - 1
    for text in (str(2**64), "-5", "1.5", "x"):
        refused(t.train_id, text, f"train ID {text!r} is not an integer in 0..2**64-1")


def test_argparse_turns_a_refusal_into_a_usage_error(capsys):
    parser = argparse.ArgumentParser(prog="p")
    parser.add_argument("--port", type=t.port)
    with pytest.raises(SystemExit) as info:
        parser.parse_args(["--port", "70000"])
    assert info.value.code == 2
    assert "argument --port: port '70000' outside 1..65535" in capsys.readouterr().err


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}


def test_the_timeserver_ioc_does_not_import_the_timing_cli():
    """The IOC and the CLI share argument types through _cli_types, not each other."""
    assert "trainstamp.timing.cli" not in imports_of(SRC / "timing" / "_ioc.py")
    assert imports_of(SRC / "_cli_types.py") <= {"__future__", "trainstamp.timing._core",
                                                  "trainstamp.timing._protocol"}
