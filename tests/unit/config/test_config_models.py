"""The pydantic models behind the beamline configuration: unknown keys and bad types are
refused and named, no value is coerced, and no pydantic text reaches the user."""

from __future__ import annotations

import math
import re
import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trainstamp.config import (
    BeamlineConfig,
    DetectorConfig,
    TaggerConfig,
    TimeServerConfig,
    default_config,
    load_config,
    parse_config,
)

SECTIONS = {"timeserver": TimeServerConfig, "detector": DetectorConfig, "tagger": TaggerConfig}
PORT_KEYS = [(s, k) for s, cls in SECTIONS.items() for k in cls.model_fields if k.endswith("_port")]
keys = st.text(st.characters(codec="ascii", categories=("L", "N", "P")), min_size=1, max_size=20)


@given(st.sampled_from(sorted(SECTIONS)), keys, st.integers() | st.text() | st.booleans())
def test_any_unknown_key_in_a_section_is_refused_and_named(section, key, value):
    if key in SECTIONS[section].model_fields:
        return
    with pytest.raises(ValueError) as info:
        parse_config({section: {key: value}}, origin="lab.toml")
    text = str(info.value)
    assert text.startswith(f"lab.toml: unknown key(s) {key} in [{section}]; known keys: name, ")
    assert "pydantic" not in text and "validation error" not in text


@given(keys)
def test_any_unknown_top_level_key_is_refused_and_named(key):
    if key in ("timeserver", "detector", "tagger", "ready_timeout"):
        return
    with pytest.raises(ValueError, match=re.escape(f"lab.toml: unknown section(s) or key(s) {key};")):
        parse_config({key: 1}, origin="lab.toml")


@given(st.sampled_from(PORT_KEYS),
       st.text(max_size=6) | st.booleans() | st.floats() | st.none() | st.lists(st.integers()))
def test_a_port_of_the_wrong_type_is_refused_not_coerced(where, value):
    section, key = where
    with pytest.raises(ValueError) as info:
        parse_config({section: {key: value}}, origin="lab.toml")
    assert f"lab.toml: [{section}].{key} = {value!r}: a port must be an integer in 1..65535" \
        in str(info.value)


@pytest.mark.parametrize(("section", "key", "value", "reason"), [
    ("detector", "emulate", "yes", "expected true or false"),
    ("detector", "test_mode", 0, "expected true or false"),
    ("detector", "data_dir", 3, "expected a string"),
    ("detector", "integration_time_ms", "6", "expected a number in 0.001..10000 ms"),
    ("detector", "integration_time_ms", math.inf, "expected a number in 0.001..10000 ms"),
    ("detector", "host", 127, "expected a host name or IPv4 address"),
    ("tagger", "emulator_args", ["--poisson", 1], "expected a list of strings"),
    ("tagger", "name", 5, "a device name must be a Python identifier"),
    ("tagger", "prefix", None, "a PV prefix is 1..60 characters"),
])
def test_bad_types_are_named_with_section_key_and_value(section, key, value, reason):
    with pytest.raises(ValueError) as info:
        parse_config({section: {key: value}}, origin="lab.toml")
    assert f"lab.toml: [{section}].{key} = {value!r}: {reason}" in str(info.value)


def test_every_problem_of_a_file_is_listed_one_per_line(tmp_path):
    path = tmp_path / "beamline.toml"
    path.write_text("[detector]\nca_port = 'x'\nemulate = 2\nprefx = 'A:'\n")
    with pytest.raises(ValueError) as info:
        load_config(path)
    lines = str(info.value).splitlines()
    assert len(lines) == 3 and all(line.startswith(f"{path}: ") for line in lines)
    assert "unknown key(s) prefx in [detector]" in lines[0]
    assert {"[detector].ca_port = 'x'", "[detector].emulate = 2"} == {
        line.split(": ")[1] for line in lines[1:]}


def test_the_origin_key_is_not_a_key_of_the_file():
    with pytest.raises(ValueError, match=re.escape("unknown section(s) or key(s) origin")):
        parse_config({"origin": "elsewhere"})


def test_constructing_the_model_directly_gives_the_same_errors():
    with pytest.raises(ValueError, match=re.escape(
            "<defaults>: [tagger].ca_port = 5164 on 127.0.0.1 is also [timeserver].ca_port")):
        BeamlineConfig(tagger={"ca_port": 5164})
    with pytest.raises(ValueError, match=re.escape("mine: [detector] must be a table, got 'x'")):
        BeamlineConfig(detector="x", origin="mine")


def test_models_are_frozen_and_compare_by_keys_not_origin():
    cfg = default_config()
    with pytest.raises(ValueError, match="frozen"):
        cfg.timeserver.prefix = "X:"
    assert cfg == BeamlineConfig() and cfg.origin != BeamlineConfig().origin
    assert hash(cfg) == hash(BeamlineConfig())
    assert cfg != cfg.replace_section("timeserver", period_ms=50)
    assert cfg.replace_section("timeserver", period_ms=50).origin == cfg.origin


def test_a_section_iterates_as_key_value_pairs_in_field_order():
    ts = default_config().timeserver
    assert [k for k, _ in ts] == list(TimeServerConfig.model_fields)
    assert dict(ts)["broadcast_port"] == 5055


def test_replace_section_revalidates_the_cross_section_rules():
    with pytest.raises(ValueError, match=re.escape("[tagger].name = 'det' is also [detector].name")):
        default_config().replace_section("tagger", name="det")
    with pytest.raises(ValueError, match=re.escape("[tagger].tag_port = 'x': a port must be")):
        default_config().replace_section("tagger", tag_port="x")


def test_reading_a_configuration_imports_no_device_classes():
    code = ("import sys, trainstamp.config as c; c.load_config(environ={}); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'ophyd' "
            "or m.startswith(('trainstamp.detector', 'trainstamp.tagger'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True).stdout
    assert out.strip() == "[]"
