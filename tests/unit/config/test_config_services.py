"""What ``trainstamp up`` would start for a configuration (no processes started)."""

from __future__ import annotations

from trainstamp.beamline import detector_data_dir, services
from trainstamp.config import default_config


def argv_of(svcs, name):
    return next(s.argv for s in svcs if s.name == name)


def test_the_default_beamline_is_five_services_fed_by_the_broadcaster(tmp_path):
    cfg = default_config()
    svcs = services(cfg, tmp_path / "run", data_dir=tmp_path / "data")
    assert [s.name for s in svcs] == ["timeserver", "det-emulator", "det", "tagger-emulator",
                                      "tagger"]
    feed = "tcp://127.0.0.1:5055"
    for name in ("det-emulator", "tagger-emulator", "tagger"):
        argv = argv_of(svcs, name)
        assert argv[argv.index("--trains") + 1] == feed, name
    ts = argv_of(svcs, "timeserver")
    assert ts[ts.index("--broadcast-port") + 1] == "5055" and ts[ts.index("--prefix") + 1] == "TS:"
    det = argv_of(svcs, "det")
    assert det[det.index("--data-dir") + 1] == str((tmp_path / "data" / "detector").resolve())
    params = (tmp_path / "run" / "detector-startup.cfg").read_text()
    assert "trigger_mode EXTERNAL" in params and "test_mode 0" in params
    tagger = argv_of(svcs, "tagger")
    assert tagger[tagger.index("--pyro-port") + 1] == "23000"
    assert tagger[tagger.index("--tagger") + 1] == "tcp://127.0.0.1:41101"
    assert "--antibunched" in argv_of(svcs, "tagger-emulator")
    ports = {s.name: s.env.get("EPICS_CA_SERVER_PORT") for s in svcs}
    assert ports == {"timeserver": "5164", "det-emulator": None, "det": "5165",
                     "tagger-emulator": None, "tagger": "5166"}


def test_real_hardware_means_no_emulators(tmp_path):
    cfg = (default_config().replace_section("detector", emulate=False, detector_ip="10.0.0.32",
                                            data_dir=str(tmp_path / "captures"))
           .replace_section("tagger", emulate=False, tagger_host="tagger.lab"))
    svcs = services(cfg, tmp_path)
    assert [s.name for s in svcs] == ["timeserver", "det", "tagger"]
    det = argv_of(svcs, "det")
    assert det[det.index("--detector-ip") + 1] == "10.0.0.32"
    assert detector_data_dir(cfg) == (tmp_path / "captures").resolve()
    tagger = argv_of(svcs, "tagger")
    assert tagger[tagger.index("--tagger") + 1] == "tcp://tagger.lab:41101"
