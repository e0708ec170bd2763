"""The running beamline's file: what ``trainstamp up`` publishes and a session reads."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from trainstamp._runtime import (
    RUNNING_FILE,
    publish_running,
    read_running,
    session_config,
    withdraw_running,
)
from trainstamp.config import BeamlineConfig


def test_published_ports_come_back_and_win_over_the_file(tmp_path):
    config = BeamlineConfig().with_free_ports()
    path = publish_running(config, tmp_path)
    running, note = read_running(tmp_path)
    assert note == "" and running.pid == os.getpid() and running.path == path
    assert running.config == config
    said: list[str] = []
    env = {"TRAINSTAMP_DATA_DIR": str(tmp_path)}
    assert session_config(environ=env, out=said.append) == config
    assert f"(pid {os.getpid()}" in said[0]
    assert withdraw_running(tmp_path) and not path.exists()
    assert session_config(environ=env, out=said.append) == BeamlineConfig()  # the file's


def test_a_file_left_by_a_dead_up_is_ignored_and_said(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    publish_running(BeamlineConfig().with_free_ports(), tmp_path, pid=int(dead.stdout))
    running, note = read_running(tmp_path)
    assert running is None and "no longer running; ignored" in note


def test_only_its_writer_withdraws_it(tmp_path):
    publish_running(BeamlineConfig(), tmp_path, pid=1)
    assert not withdraw_running(tmp_path)
    assert (tmp_path / RUNNING_FILE).exists()


def test_a_damaged_file_is_refused_with_the_reason(tmp_path):
    path = tmp_path / RUNNING_FILE
    for body, reason in [("{not json", "unreadable"),
                         ("[]", "holds no beamline configuration"),
                         (json.dumps({"pid": "x", "config": {}}), "names no process"),
                         (json.dumps({"pid": os.getpid(),
                                      "config": {"timeserver": {"ca_port": 70000}}}),
                          "ca_port = 70000")]:
        path.write_text(body)
        running, note = read_running(tmp_path)
        assert running is None and reason in note and note.endswith("ignored"), note
    assert read_running(tmp_path / "nowhere") == (None, "")
