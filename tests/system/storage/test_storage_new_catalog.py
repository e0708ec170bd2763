"""A new embedded catalog is a copy of a blank template that tiled made once."""

from __future__ import annotations

import os

import pytest

from trainstamp.storage import catalog
from trainstamp.storage._new_catalog import create_catalog, template

pytestmark = pytest.mark.system


def test_a_new_catalog_is_a_copy_of_the_template_and_stores_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    made = template()
    assert made is not None and made.parent == tmp_path / "cache" / "trainstamp"
    assert template() == made  # made once, then found
    data = tmp_path / "data"
    with catalog(data) as client:
        assert list(client) == []
        client.create_container("probe", metadata={"x": 1})
    with catalog(data) as client:  # reopened: the run is there, the template untouched
        assert client["probe"].metadata["x"] == 1
    with catalog(tmp_path / "other") as client:
        assert list(client) == []


def test_an_existing_catalog_is_never_overwritten(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    db = tmp_path / "catalog.db"
    db.write_bytes(b"not a template")
    assert create_catalog(db) is False
    assert db.read_bytes() == b"not a template"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_without_a_writable_cache_tiled_creates_the_catalog(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    cache.write_text("a file where the cache directory would be")
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    assert template() is None
    with catalog(tmp_path / "data") as client:
        assert list(client) == []
    assert os.path.exists(tmp_path / "data" / "catalog.db")
