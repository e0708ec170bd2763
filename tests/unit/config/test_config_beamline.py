"""The beamline configuration: loading, defaults, validation and the client environment."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trainstamp.config import (
    ENV_CONFIG,
    BeamlineConfig,
    client_env,
    default_config,
    load_config,
    parse_config,
)
from trainstamp.session import make_devices


def write(tmp_path, text: str):
    path = tmp_path / "beamline.toml"
    path.write_text(text)
    return path


def test_packaged_default_spells_out_the_dataclass_defaults():
    assert default_config() == BeamlineConfig()
    cfg = default_config()
    assert (cfg.timeserver.name, cfg.detector.name, cfg.tagger.name) == ("timeserver", "det", "tagger")
    assert (cfg.timeserver.prefix, cfg.detector.prefix, cfg.tagger.prefix) == ("TS:", "TEAM1K:", "TT:")
    assert cfg.tagger.pyro_port == 23000 and cfg.tagger.tag_port == 41101
    assert cfg.detector.register_port == 42000 and cfg.detector.data_port == 41000


def test_load_without_path_or_env_is_the_default():
    assert load_config(environ={}) == default_config()


def test_a_file_changes_only_the_keys_it_names(tmp_path):
    path = write(tmp_path, '[detector]\nprefix = "XFEL:DET:"\nca_port = 6000\n'
                           '[tagger]\nemulator_args = ["--poisson", "1:1e5"]\n')
    cfg = load_config(path)
    assert cfg.detector.prefix == "XFEL:DET:" and cfg.detector.ca_port == 6000
    assert cfg.tagger.emulator_args == ("--poisson", "1:1e5")
    assert cfg.timeserver == default_config().timeserver
    assert cfg.origin == str(path)


def test_env_var_names_the_file(tmp_path):
    path = write(tmp_path, '[timeserver]\nperiod_ms = 50\n')
    assert load_config(environ={ENV_CONFIG: str(path)}).timeserver.period_ms == 50.0
    # an explicit path wins over the environment
    other = tmp_path / "other.toml"
    other.write_text('[timeserver]\nperiod_ms = 20\n')
    assert load_config(other, environ={ENV_CONFIG: str(path)}).timeserver.period_ms == 20.0


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[detectr]\nprefix = 'X:'\n", "unknown section(s) or key(s) detectr"),
        ("[detector]\nprefx = 'X:'\n", "unknown key(s) prefx in [detector]; known keys: name, prefix"),
        ("[tagger]\npyro_port = 70000\n", "[tagger].pyro_port = 70000: a port must be an integer in 1..65535"),
        ("[tagger]\npyro_port = 0\n", "pyro_port = 0: a port must be an integer in 1..65535"),
        ("[tagger]\npyro_port = '23000'\n", "pyro_port = '23000': a port must be an integer"),
        ("[timeserver]\nca_port = true\n", "ca_port = True: a port must be an integer"),
        ("[timeserver]\nprefix = 'TS :'\n", "[timeserver].prefix = 'TS :': a PV prefix is 1..60"),
        ("[timeserver]\nprefix = ''\n", "[timeserver].prefix = '': a PV prefix"),
        ("[detector]\nname = 'my det'\n", "[detector].name = 'my det': a device name must be"),
        ("[timeserver]\nname = 'ts'\n", "[timeserver].name = 'ts': reserved; the catalog stores"),
        ("[detector]\nname = 'ts_det'\n", "[detector].name = 'ts_det': reserved"),
        ("[detector]\ntrigger_mode = 'EXT'\n", "trigger_mode = 'EXT': expected one of INTERNAL, EXTERNAL"),
        ("[detector]\nemulate = 1\n", "[detector].emulate = 1: expected true or false"),
        ("[detector]\nintegration_time_ms = 0\n", "integration_time_ms = 0: expected a number in 0.001..10000 ms"),
        ("[timeserver]\nperiod_ms = 0.1\n", "period 0.1 ms outside 1..60000 ms"),
        ("[timeserver]\nsource = 'bogus://x'\n", "[timeserver]: "),
        ("[timeserver]\nhost = 'no host'\n", "host = 'no host': expected a host name"),
        ("[tagger]\nemulator_args = '--poisson 1:1e5'\n", "emulator_args = '--poisson 1:1e5': expected a list of strings"),
        ("[tagger]\nprefix = 'TS:'\n", "[tagger].prefix = 'TS:' is also [timeserver].prefix"),
        ("[tagger]\nname = 'det'\n", "[tagger].name = 'det' is also [detector].name"),
        ("[tagger]\nca_port = 5164\n", "[tagger].ca_port = 5164 on 127.0.0.1 is also [timeserver].ca_port"),
        ("[detector]\ndata_port = 5055\n", "[detector].data_port = 5055 on 127.0.0.1 is also [timeserver].broadcast_port"),
        ("ready_timeout = 0\n", "ready_timeout = 0: expected a number in 1..3600 s"),
        ("detector = 3\n", "[detector] must be a table"),
    ],
)
def test_bad_files_are_refused_with_file_key_value_and_limit(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(ValueError, match=re.escape(message)) as info:
        load_config(path)
    assert str(path) in str(info.value)


def test_same_port_on_different_hosts_is_fine(tmp_path):
    path = write(tmp_path, "[tagger]\nhost = 'tagger-ioc'\nca_port = 5164\n")
    assert load_config(path).tagger.ca_port == 5164


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ValueError, match=re.escape(f"{str(tmp_path / 'nope.toml')!r}")):
        load_config(tmp_path / "nope.toml")
    with pytest.raises(ValueError, match="is not valid TOML"):
        load_config(write(tmp_path, "[detector\n"))
    bad = tmp_path / "bin.toml"
    bad.write_bytes(b"\xff\xfe[detector]")
    with pytest.raises(ValueError, match="is not valid TOML"):
        load_config(bad)


def test_client_env_names_exactly_the_three_iocs():
    env = client_env(default_config())
    assert env == {
        "EPICS_CA_AUTO_ADDR_LIST": "NO",
        "EPICS_CA_ADDR_LIST": "127.0.0.1:5164 127.0.0.1:5165 127.0.0.1:5166",
        "OPHYD_CONTROL_LAYER": "caproto",
    }
    assert default_config().client_env() == env


def test_with_free_ports_moves_every_port_to_loopback():
    cfg = default_config().with_free_ports()
    ports = [p for _, p in cfg.listening_ports().values()]
    assert len(set(ports)) == len(ports)
    assert {h for h, _ in cfg.listening_ports().values()} == {"127.0.0.1"}
    assert cfg.timeserver.prefix == "TS:"  # only the ports change


def test_replace_section_is_validated():
    cfg = default_config().replace_section("detector", prefix="D1:")
    assert cfg.detector.prefix == "D1:"
    with pytest.raises(ValueError, match="a PV prefix"):
        default_config().replace_section("detector", prefix="D 1:")
    with pytest.raises(ValueError, match=re.escape("unknown section [motor]")):
        default_config().replace_section("motor", prefix="M:")
    with pytest.raises(ValueError, match=re.escape("unknown key(s) prefx in [detector]")):
        default_config().replace_section("detector", prefx="M:")
    cfg = default_config().replace_section("tagger", emulator_args=["--poisson", "1:1e5"])
    assert cfg.tagger.emulator_args == ("--poisson", "1:1e5")


def test_make_devices_names_and_prefixes():
    cfg = default_config().replace_section("detector", name="cam", prefix="CAM1:")
    devices = make_devices(cfg)
    assert list(devices) == ["timeserver", "cam", "tagger"]
    assert [d.name for d in devices.values()] == ["timeserver", "cam", "tagger"]
    assert devices["cam"].prefix == "CAM1:"
    assert devices["timeserver"].train_id.pvname == "TS:ID"
    for device in devices.values():
        device.destroy()


@given(st.integers())
def test_ports_accept_exactly_1_to_65535(port):
    data = {"tagger": {"pyro_port": port}}
    if 1 <= port <= 65535 and port not in (5164, 5165, 5166, 5055, 41101, 42000, 41000):
        assert parse_config(data).tagger.pyro_port == port
    else:
        with pytest.raises(ValueError, match=str(port)):
            parse_config(data)


@given(st.text(max_size=80))
def test_any_prefix_is_accepted_or_refused_cleanly(prefix):
    try:
        cfg = parse_config({"detector": {"prefix": prefix}})
    except ValueError as exc:
        assert "prefix" in str(exc)
    else:
        assert cfg.detector.prefix == prefix and " " not in prefix
