"""The scale-out path: ``trainstamp serve`` on a private PostgreSQL cluster, written to by a
stamped plan with the real TimeServer IOC and TEAM1k detector IOC (+ FPGA emulator)
through ``TRAINSTAMP_TILED_URI``, and read back: frames, train IDs, ``train_id_end``,
``run.documents()`` and ``databroker.from_profile``."""

from __future__ import annotations

import contextlib
import socket
import urllib.request

import numpy as np
import pytest
from bluesky import RunEngine

from trainstamp.plans import train_count
from trainstamp.storage import (
    StorageConfig,
    close_catalog,
    open_catalog,
    pending_spools,
    subscribe,
    write_tiled_profile,
)
from trainstamp.testing import (
    Subprocess,
    SubprocessIOC,
    find_postgres_bin,
    free_port,
    postgres_cluster,
    random_prefix,
    wait_until,
)

pytestmark = pytest.mark.system

API_KEY = "serverkey42"


def _tcp_up(port: int):
    def check() -> bool:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    return check


def _http_up(url: str):
    def check() -> bool:
        with urllib.request.urlopen(url, timeout=2) as reply:
            return reply.status == 200
    return check


@pytest.fixture(scope="module")
def postgres():
    bin_dir = find_postgres_bin()
    if bin_dir is None:
        pytest.skip("PostgreSQL binaries (initdb, pg_ctl) not found on PATH or in "
                    "/usr/lib/postgresql/*/bin: install Debian's postgresql (make debs)")
    with postgres_cluster(bin_dir) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def server(postgres, tmp_path_factory):
    root = tmp_path_factory.mktemp("pgserve")
    det_dir = root / "detector"
    det_dir.mkdir()
    port = free_port()
    base = f"http://127.0.0.1:{port}/api/v1"
    srv = Subprocess(["serve", "--database", postgres.uri, "--data-dir", str(root / "server"),
                      "--read", str(det_dir), "--port", str(port), "--api-key", API_KEY],
                     ready=_http_up(base + "/"), timeout=120)
    with srv:
        yield base, det_dir, srv


@pytest.fixture(scope="module")
def devices(server, ca_ports):
    """TimeServer IOC ticking at 10 Hz, broadcasting to the detector emulator
    (external trigger); the detector IOC writes HDF5 into the server's readable dir."""
    from trainstamp.detector import Team1k
    from trainstamp.timing.device import TimeServer

    _, det_dir, _ = server
    bport = free_port()
    ts_prefix, det_prefix = random_prefix("PGTS"), random_prefix("PGDET")
    rp, dp = free_port("udp"), free_port("udp")
    with contextlib.ExitStack() as stack:
        def start(child: Subprocess) -> Subprocess:
            child.start()
            stack.callback(child.stop)
            return child

        start(SubprocessIOC(["ioc", "timeserver", "--prefix", ts_prefix, "--period", "100",
                             "--broadcast-port", str(bport), "--interfaces", "127.0.0.1"],
                            ca_ports, ready_pv=ts_prefix + "ID", timeout=60))
        wait_until(_tcp_up(bport), timeout=20, message="TimeServer broadcaster")
        emu = Subprocess(["emulate", "detector", "--bind", "127.0.0.1", "--register-port", str(rp),
                          "--data-port", str(dp), "--test-mode",
                          "--trains", f"tcp://127.0.0.1:{bport}"])
        emu.ready = lambda: "emulator ready" in emu.output()
        start(emu)
        start(SubprocessIOC(["ioc", "detector", "--prefix", det_prefix, "--detector-ip", "127.0.0.1",
                             "--register-port", str(rp), "--data-port", str(dp),
                             "--data-dir", str(det_dir), "--interfaces", "127.0.0.1",
                             "--ring-slots", "32"],
                            ca_ports, ready_pv=det_prefix + "STATUS", timeout=60))
        ts = TimeServer(ts_prefix, name="timeserver")
        det = Team1k(det_prefix, name="team1k")
        for dev in (ts, det):
            dev.wait_for_connection(timeout=20)
        wait_until(lambda: ts.last_tick is not None, timeout=10, message="first tick")
        wait_until(lambda: det.status.get() == "OK", timeout=30, message="detector status OK")
        det.trigger_mode.set(1).wait(10)
        yield ts, det
        for dev in (ts, det):
            dev.destroy()


def test_a_stamped_plan_writes_through_the_server_and_reads_back(server, devices, monkeypatch,
                                                                  tmp_path):
    base, det_dir, srv = server
    ts, det = devices
    monkeypatch.setenv("TRAINSTAMP_TILED_URI", base)
    monkeypatch.setenv("TRAINSTAMP_TILED_API_KEY", API_KEY)
    monkeypatch.setenv("TRAINSTAMP_DATA_DIR", str(tmp_path / "host"))
    client = open_catalog()
    try:
        RE = RunEngine(context_managers=[])
        subscribe(RE, client, timeserver=ts)
        (uid,) = RE(train_count([det], 5, timeserver=ts))
        assert pending_spools(tmp_path / "host" / "spool") == []  # the server took it all
        run = client[uid]
        data = run["primary"].read()
        ids = data["train_id"].values.astype(np.int64)
        assert len(ids) == 5 and (np.diff(ids) > 0).all()
        assert set(data["train_id_status"].values) == {"EXACT"}
        assert (ids == data["team1k_train_id"].values.astype(np.int64)).all()
        # The frames come from the detector's HDF5 files, read by the server.
        frames = data["team1k_image"].values
        assert frames.shape == (5, 1, 1024, 1024) and frames.dtype == np.uint16
        assert all(frames[i].any() and (frames[i] != frames[i - 1]).any() for i in range(1, 5))
        assert list(det_dir.rglob("*.h5"))
        start, stop = run.metadata["start"], run.metadata["stop"]
        assert start["train_id_start_status"] == "OK" and stop["train_id_end_status"] == "OK"
        assert stop["train_id_end"] >= ids[-1] > ids[0] >= start["train_id_start"]
        # run.documents(): the server's json-seq exporter replays the run.
        docs = list(run.documents())
        names = [name for name, _ in docs]
        assert names[0] == "start" and names[-1] == "stop" and "descriptor" in names
        assert docs[0][1]["uid"] == uid and docs[-1][1]["train_id_end"] == stop["train_id_end"]
        assert "stream_resource" in names and "stream_datum" in names
    finally:
        close_catalog(client)
    assert srv.alive, srv.output()[-3000:]

    # databroker.from_profile on a profile for the server (the API key in its URI).
    import databroker
    import tiled.profiles

    write_tiled_profile(tmp_path / "profiles", "beamline", StorageConfig.resolve())
    monkeypatch.setattr(tiled.profiles, "paths", [tmp_path / "profiles"])
    monkeypatch.delenv("TILED_API_KEY", raising=False)
    tiled.profiles.load_profiles.cache_clear()
    try:
        db = databroker.from_profile("beamline")
        try:
            assert db[uid]["primary"]["train_id"].read().tolist() == ids.tolist()
        finally:
            db.context.close()
    finally:
        tiled.profiles.load_profiles.cache_clear()
