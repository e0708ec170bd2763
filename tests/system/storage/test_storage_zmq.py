"""Runs that reach the catalog through a document stream keep their train stamp.

A TimeServer IOC subprocess ticks; a RunEngine in this process runs a stamped plan and
publishes its documents with ``bluesky.callbacks.zmq.Publisher`` to
``bluesky-0MQ-proxy`` (a subprocess on free loopback ports); a writer process
(``zmq_writer.py``: ``RemoteDispatcher`` -> ``make_writer``, no TimeServer) stores them
in an embedded catalog. The stop document carries ``train_id_end`` because the
RunEngine stamps it before it is dispatched, so ``find_runs`` finds the run by a train
inside it.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest
from bluesky import RunEngine
from bluesky.callbacks.zmq import Publisher

from trainstamp._readiness import free_ports, tcp_ready
from trainstamp.plans import train_count
from trainstamp.storage import catalog, find_runs, read_train_ids
from trainstamp.testing import (
    Subprocess,
    SubprocessIOC,
    free_port,
    random_prefix,
    wait_until,
)
from trainstamp.timing.device import TimeServer
from trainstamp.trainid import stamp_stop_documents

pytestmark = [pytest.mark.system, pytest.mark.slow]

HERE = Path(__file__).resolve().parent
PERIOD_MS = 50


@pytest.fixture
def timeserver(ca_ports):
    prefix = random_prefix("TSZ")
    args = ["ioc", "timeserver", "--prefix", prefix, "--period", str(PERIOD_MS),
            "--broadcast-port", str(free_port()), "--interfaces", "127.0.0.1"]
    with SubprocessIOC(args, ca_ports, ready_pv=prefix + "ID"):
        ts = TimeServer(prefix, name="timeserver")
        ts.wait_for_connection(timeout=10)
        wait_until(lambda: ts.last_tick is not None, timeout=10, message="first tick")
        yield ts
        ts.destroy()


@pytest.fixture
def proxy():
    """``bluesky-0MQ-proxy`` on two free loopback ports: (in address, out address)."""
    in_port, out_port = free_ports(2, "127.0.0.1", "tcp")
    exe = Path(sys.executable).with_name("bluesky-0MQ-proxy")
    addresses = (f"127.0.0.1:{in_port}", f"127.0.0.1:{out_port}")
    args = [str(exe), "--in-address", addresses[0], "--out-address", addresses[1]]
    with Subprocess(args, python_module=False,
                    ready=tcp_ready("127.0.0.1", out_port)) as proc:
        proc.addresses = addresses
        yield proc


def test_a_run_through_the_0mq_proxy_is_found_by_a_train_inside_it(timeserver, proxy,
                                                                    tmp_path):
    ts = timeserver
    in_address, out_address = proxy.addresses
    data, ready = tmp_path / "data", tmp_path / "writer-ready"
    publisher = Publisher(in_address)
    writer = Subprocess([sys.executable, str(HERE / "zmq_writer.py"), out_address,
                         str(data), str(ready)], python_module=False, timeout=60)
    try:
        with writer:
            # 0MQ drops what is published before the writer has joined: probe until the
            # writer says it got one (its probes are not stored).
            def probe() -> bool:
                publisher("start", {"uid": f"probe-{time.monotonic_ns()}", "probe": True,
                                    "time": time.time()})
                return ready.exists()

            wait_until(probe, timeout=60, interval=0.1,
                       message=lambda: f"the writer to subscribe:\n{writer.output()}")
            RE = RunEngine(context_managers=[])
            stamp_stop_documents(RE, ts)  # what subscribe(RE, client, timeserver=ts) does
            RE.subscribe(publisher)
            (uid,) = RE(train_count([ts], 6, timeserver=ts))
            wait_until(lambda: not writer.alive, timeout=60,
                       message=lambda: f"the writer to store the run:\n{writer.output()}")
            assert writer.proc.returncode == 0, writer.output()
            assert f"stored run {uid}" in writer.output()
    finally:
        publisher.close()
    with catalog(data) as client:
        run = client[uid]
        stop = run.metadata["stop"]
        assert stop["train_id_end_status"] == "OK"
        ids = read_train_ids(run)
        assert len(ids) == 6 and stop["train_id_end"] >= ids[-1]
        middle = int(ids[len(ids) // 2])
        assert list(find_runs(client, middle)) == [uid]
