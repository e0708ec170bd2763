"""The pieces of the session profile, without IOCs or IPython."""

from __future__ import annotations

import pytest
from ophyd import Component as Cpt
from ophyd import Device, Signal

from trainstamp.config import BeamlineConfig
from trainstamp.session import (
    apply_client_env,
    choose_matplotlib_backend,
    default_profile_dir,
    has_display,
    install_progress_bars,
    make_best_effort_callback,
    report_connections,
    startup_files,
)


def test_client_env_from_the_config_and_keep_switch():
    config = BeamlineConfig()
    env = {"EPICS_CA_ADDR_LIST": "10.0.0.1"}
    applied = apply_client_env(config, env)
    assert env["EPICS_CA_ADDR_LIST"] == "127.0.0.1:5164 127.0.0.1:5165 127.0.0.1:5166"
    assert env["EPICS_CA_AUTO_ADDR_LIST"] == "NO" and applied["OPHYD_CONTROL_LAYER"] == "caproto"
    env = {"EPICS_CA_ADDR_LIST": "10.0.0.1", "TRAINSTAMP_KEEP_EPICS_ENV": "1"}
    apply_client_env(config, env)
    assert env["EPICS_CA_ADDR_LIST"] == "10.0.0.1"
    assert env["OPHYD_CONTROL_LAYER"] == "caproto"


def test_a_control_layer_already_chosen_is_kept():
    env = {"OPHYD_CONTROL_LAYER": "pyepics"}
    applied = apply_client_env(BeamlineConfig(), env)
    assert env["OPHYD_CONTROL_LAYER"] == "pyepics" and "OPHYD_CONTROL_LAYER" not in applied
    assert env["EPICS_CA_AUTO_ADDR_LIST"] == "NO"


def test_headless_backend_and_plots():
    assert not has_display({}) and has_display({"DISPLAY": ":0"})
    env: dict[str, str] = {}
    assert choose_matplotlib_backend(env) == "Agg"
    env = {"MPLBACKEND": "QtAgg"}
    assert choose_matplotlib_backend(env) == "QtAgg"  # the user's choice is kept
    assert make_best_effort_callback(plots=False)._plots_enabled is False
    assert make_best_effort_callback(plots=True)._plots_enabled is True


def test_progress_bars_only_when_interactive():
    from bluesky import RunEngine
    from bluesky.utils import ProgressBarManager

    RE = RunEngine(context_managers=[])
    assert install_progress_bars(RE) is False  # not in IPython
    assert install_progress_bars(RE, force=True) is True
    assert isinstance(RE.waiting_hook, ProgressBarManager)


class WithConnectedComponent(Device):
    """Like the tagger device: a component named ``connected`` shadows the property."""

    value = Cpt(Signal, value=1)
    connected = Cpt(Signal, value=0)


def test_report_connections_never_raises_and_says_why():
    lines: list[str] = []
    dev = WithConnectedComponent(name="tagger")
    state = report_connections({"tagger": dev, "other": object()}, BeamlineConfig(),
                               timeout=0.1, out=lines.append)
    assert state == {"tagger": True, "other": False}
    assert "tagger       connected" in lines[0]
    assert "other        NOT connected" in lines[1]


def test_profile_files_in_order():
    names = [p.name for p in startup_files(default_profile_dir())]
    assert names == sorted(names) and names[0] == "00-env.py" and names[-1] == "99-banner.py"
    with pytest.raises(ValueError, match="has no startup/ folder"):
        startup_files("/nonexistent")
