"""A stamped run end to end: TimeServer IOC subprocess -> ophyd device over CA ->
train_count -> TiledWriter -> embedded Tiled catalog -> read back."""

from __future__ import annotations

import pytest
from bluesky import RunEngine

from trainstamp.plans import train_count
from trainstamp.storage import catalog, read_train_ids, subscribe, train_id_problems
from trainstamp.testing import SubprocessIOC, free_port, random_prefix, wait_until
from trainstamp.timing import StampStatus
from trainstamp.timing.device import TimeServer

pytestmark = pytest.mark.system

PERIOD_MS = 50


@pytest.fixture
def ioc(ca_ports):
    prefix = random_prefix("TSP")
    args = ["ioc", "timeserver", "--prefix", prefix, "--period", str(PERIOD_MS),
            "--broadcast-port", str(free_port()), "--interfaces", "127.0.0.1"]
    with SubprocessIOC(args, ca_ports, ready_pv=prefix + "ID") as proc:
        proc.prefix = prefix
        yield proc


@pytest.fixture
def timeserver(ioc):
    ts = TimeServer(ioc.prefix, name="timeserver")
    ts.wait_for_connection(timeout=10)
    wait_until(lambda: ts.last_tick is not None, timeout=10, message="first tick")
    yield ts
    ts.destroy()


def test_device_follows_the_ioc(timeserver):
    ts = timeserver
    assert ts.state.get() == "ON"
    assert ts.source.get() == "local:internal"
    assert ts.period_set.get() == PERIOD_MS
    first = ts.last_tick.train_id
    status = ts.trigger()
    status.wait(5)
    assert ts.last_tick.train_id > first
    # The tick from the ID monitor agrees with the IOC's exact SEC to the second.
    wait_until(lambda: ts.train_id.get() == ts.last_tick.train_id, timeout=5)
    assert ts.train_id_at().status is StampStatus.OK
    assert ts.train_id_at().train_id >= ts.last_tick.train_id
    assert ts.period.get() == pytest.approx(PERIOD_MS * 1000, rel=0.1)


def test_stamped_run_is_stored_and_reads_back(timeserver, tmp_path):
    ts = timeserver
    with catalog(tmp_path / "data") as client:
        RE = RunEngine(context_managers=[])
        subscribe(RE, client, timeserver=ts)
        (uid,) = RE(train_count([ts], 15, timeserver=ts, md={"sample": "none"}))
        run = client[uid]
        data = run["primary"].read()
        ids = read_train_ids(run)
        assert len(ids) == 15
        assert train_id_problems(ids, data["train_id_status"].values) == []
        # Each event was read right after its tick: the stamp equals the tick it waited for.
        assert ids.tolist() == data["timeserver_train_id"].values.astype("int64").tolist()
        start, stop = run.metadata["start"], run.metadata["stop"]
        assert start["train_id_start_status"] == "OK"
        assert start["train_id_start"] < ids[0]
        assert start["sample"] == "none"
        assert stop["train_id_end_status"] == "OK" and stop["train_id_end"] >= ids[-1]
        config = run["primary"].metadata["configuration"]
        assert config["timeserver_stamp"]["data"]["timeserver_source"] == "local:internal"
        assert config["timeserver_stamp"]["data"]["timeserver_period_set"] == PERIOD_MS


def test_stamps_go_stale_when_the_ioc_stops_ticking(ioc, timeserver):
    ts = timeserver
    assert ts.train_id_at().status is StampStatus.OK
    ioc.kill()
    # STALE at once (ID disconnected), and later still an honest extrapolation from the
    # last tick, flagged, never 0.
    wait_until(lambda: ts.train_id_at().status is StampStatus.STALE, timeout=5,
               message="a STALE stamp after the IOC died")
    stamp = wait_until(lambda: (s := ts.train_id_at()).train_id > ts.last_tick.train_id and s,
                       timeout=5, message="an extrapolated stamp")
    assert stamp.status is StampStatus.STALE
    status = ts.trigger()
    with pytest.raises(Exception, match="[Tt]imeout|timed out"):
        status.wait(10)
