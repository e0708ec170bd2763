"""The server switch: TRAINSTAMP_TILED_URI points storage at a Tiled server over HTTP."""

from __future__ import annotations

import pytest
from bluesky import RunEngine
from bluesky.plans import count
from ophyd.sim import det1

from trainstamp.storage import close_catalog, open_catalog, pending_spools, subscribe

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
    # Nothing embedded was created: only the run's spool file came and went (runs are
    # spooled in the data directory for a server too, until the server has them).
    unused = tmp_path / "unused"
    assert not (unused / "catalog.db").exists() and not (unused / "storage.duckdb").exists()
    assert [p.name for p in unused.iterdir()] == ["spool"]
    assert pending_spools(unused / "spool") == []
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


def test_a_server_that_goes_away_mid_run_loses_nothing(tmp_path, capfd, monkeypatch):
    """The Tiled server stops during a run: the run goes on into the spool of the data
    directory, and a replay into the server (back, on the same database) stores it."""
    import bluesky.plan_stubs as bps

    # Tiled's client retries a server that does not answer for up to 45 s (its
    # TILED_RETRY_TIMEOUT); a short bound keeps the test short.
    monkeypatch.setattr("tiled.client.utils.TILED_RETRY_TIMEOUT", 1.0)
    from tiled.server import SimpleTiledServer

    from trainstamp.storage import StorageConfig, replay

    directory, key = tmp_path / "server", "secret"
    first = SimpleTiledServer(directory, api_key=key)
    cfg = StorageConfig.resolve(tmp_path / "data", tiled_uri=f"http://127.0.0.1:{first.port}/api/v1",
                                api_key=key, environ={})
    client = open_catalog(config=cfg)
    RE = RunEngine(context_managers=[])
    subscribe(RE, client)

    def plan():
        yield from bps.open_run()
        yield from bps.trigger_and_read([det1])
        first.close()  # the server goes away mid-run
        for _ in range(3):
            yield from bps.trigger_and_read([det1])
        yield from bps.close_run()

    try:
        (uid,) = RE(plan())
    finally:
        close_catalog(client)
    err = capfd.readouterr().err
    spool = cfg.spool_dir / f"{uid}.jsonl"
    assert f"documents go on into {spool}" in err and f"--tiled-uri {cfg.tiled_uri}" in err
    with SimpleTiledServer(directory, api_key=key) as second:
        client = open_catalog(tiled_uri=f"http://127.0.0.1:{second.port}/api/v1", api_key=key)
        try:
            result = replay(spool, client)
            assert result.events == {"primary": 4}
            assert client[uid]["primary"].read()["det1"].values.tolist() == [5.0] * 4
        finally:
            close_catalog(client)
