"""The server recipe's files: the Tiled service config of ``trainstamp serve`` and the
client profile of a server, each checked by Tiled's own parser and schema."""

from __future__ import annotations

import pytest

from trainstamp.storage import StorageConfig, tiled_profile, write_tiled_profile
from trainstamp.storage._serve import JSON_SEQ_EXPORTER, main, server_config

pytestmark = pytest.mark.system


def test_written_config_is_valid_for_tiled_and_holds_no_secrets(tmp_path, monkeypatch, capsys):
    from tiled.config import parse_configs

    path = tmp_path / "tiled.yml"
    uri = "postgresql://tiled:pw@db.example:5432/runs"
    assert main(["--write-config", str(path), "--database", uri, "--data-dir",
                 str(tmp_path / "srv"), "--read", "/data/detector", "--port", "8123"]) == 0
    assert f"tiled serve config {path}" in capsys.readouterr().out
    text = path.read_text()
    assert "pw" not in text and "${TRAINSTAMP_TILED_DATABASE}" in text
    assert "${TRAINSTAMP_TILED_API_KEY}" in text
    monkeypatch.setenv("TRAINSTAMP_TILED_DATABASE", uri)
    monkeypatch.setenv("TRAINSTAMP_TILED_API_KEY", "abc123")
    parsed = parse_configs(path)  # what `tiled serve config` reads
    assert parsed.authentication.single_user_api_key == "abc123"
    from bluesky_tiled_plugins.exporters import json_seq_exporter

    assert JSON_SEQ_EXPORTER.endswith(":json_seq_exporter")
    assert parsed.media_types["BlueskyRun"]["application/json-seq"] is json_seq_exporter
    assert parsed.uvicorn["port"] == 8123
    (tree,) = parsed.trees
    assert tree.args["uri"] == uri
    assert tree.args["writable_storage"] == [str(tmp_path / "srv" / "tiled"), uri]
    assert tree.args["readable_storage"] == ["/data/detector"]


def test_a_database_that_is_not_postgresql_keeps_event_tables_in_duckdb(tmp_path):
    cfg = server_config(tmp_path, database="sqlite:///c.db", postgresql=False)
    assert cfg["trees"][0]["args"]["writable_storage"][1] == f"duckdb:///{tmp_path}/storage.duckdb"


def test_serve_without_a_database_says_how_to_give_one(monkeypatch, capsys):
    monkeypatch.delenv("TRAINSTAMP_TILED_DATABASE", raising=False)
    assert main([]) == 2
    assert "--database" in capsys.readouterr().err


@pytest.mark.parametrize("key", [None, "k3y"])
def test_server_profile_passes_tileds_profile_schema(tmp_path, monkeypatch, key):
    import tiled.profiles

    cfg = StorageConfig.resolve(tmp_path, tiled_uri="http://tiled.example:8000/api/v1",
                                api_key=key, environ={})
    path = write_tiled_profile(tmp_path / "profiles", "beamline", cfg)
    monkeypatch.setattr(tiled.profiles, "paths", [tmp_path / "profiles"])
    tiled.profiles.load_profiles.cache_clear()
    try:
        (_, content) = tiled.profiles.load_profiles()["beamline"]  # validates, or raises
    finally:
        tiled.profiles.load_profiles.cache_clear()
    assert content == tiled_profile(cfg)
    if key is None:
        assert content == {"uri": "http://tiled.example:8000/api/v1"}
    else:
        assert content == {"uri": "http://tiled.example:8000/api/v1?api_key=k3y"}
        assert path.stat().st_mode & 0o077 == 0  # the key is not for other users
