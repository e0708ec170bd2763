"""The server switch: TRAINSTAMP_TILED_URI points storage at a Tiled server over HTTP."""

from __future__ import annotations

import pytest
from bluesky import RunEngine
from bluesky.plans import count
from ophyd.sim import det1

from trainstamp.storage import close_catalog, open_catalog, subscribe

pytestmark = pytest.mark.system


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from tiled.server import SimpleTiledServer

    with SimpleTiledServer(tmp_path_factory.mktemp("tiled-server")) as srv:
        yield srv


def test_env_switch_writes_to_the_server(server, monkeypatch, tmp_path):
    base = f"http://127.0.0.1:{server.port}/api/v1"
    monkeypatch.setenv("TRAINSTAMP_TILED_URI", base)
    monkeypatch.setenv("TRAINSTAMP_TILED_API_KEY", server.api_key)
    monkeypatch.setenv("TRAINSTAMP_DATA_DIR", str(tmp_path / "unused"))
    client = open_catalog()
    try:
        RE = RunEngine(context_managers=[])
        subscribe(RE, client)
        (uid,) = RE(count([det1], 3))
    finally:
        close_catalog(client)
    assert not (tmp_path / "unused").exists()  # nothing embedded was created
    # A fresh client, given the URI as an argument this time, sees the run.
    monkeypatch.delenv("TRAINSTAMP_TILED_URI")
    client = open_catalog(tiled_uri=base, api_key=server.api_key)
    try:
        assert client[uid]["primary"].read()["det1"].values.tolist() == [5.0, 5.0, 5.0]
    finally:
        close_catalog(client)


def test_wrong_api_key_is_refused(server):
    from tiled.client.utils import ClientError

    with pytest.raises(ClientError, match="401"):
        client = open_catalog(tiled_uri=f"http://127.0.0.1:{server.port}/api/v1",
                              api_key="wrong")
        close_catalog(client)
