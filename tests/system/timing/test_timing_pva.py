"""The TimeServer IOC over PV Access: ID (and SEC, FRAC, PERIOD) as exact uint64,
with the tick's timestamp and alarm, read with p4p's client beside CA."""

import pytest
from caproto import AlarmSeverity
from caproto.sync.client import read
from p4p.client.thread import Context
from timing_servers import TrainServer

from trainstamp.testing import PVAPorts, wait_until
from trainstamp.timing import PV

pytestmark = pytest.mark.system


def test_id_is_an_exact_uint64_over_pva(timeserver):
    server = TrainServer()
    ports = PVAPorts()
    try:
        ts = timeserver("--source", f"tcp://127.0.0.1:{server.port}", "--period", "60000",
                        env=ports.server_env())
        with Context("pva", conf=ports.client_conf(), useenv=False, nt=False) as ctx:
            first = ctx.get(ts.pv(PV.ID), timeout=10)
            assert first.type()["value"] == "L"
            assert first["value"] == 0 and first["alarm.severity"] == 3  # INVALID before a tick
            server.next_connection()
            ts.wait(PV.STATE, lambda s: s == "ON")
            for train in (2**53 + 1, 2**64 - 1):  # neither fits a DOUBLE
                server.send(b"%d\n" % train)
                got = wait_until(lambda t=train: (v := ctx.get(ts.pv(PV.ID)))["value"] == t and v,
                                 timeout=10, message=f"ID {train} over PVA")
                assert got["alarm.severity"] == 0  # exact here
                assert ts.get(PV.ID) == float(train)  # CA's DOUBLE: the nearest it holds
                assert read(ts.pv(PV.ID), data_type="time", timeout=2.0).metadata.severity == \
                    AlarmSeverity.MAJOR_ALARM  # and CA says it is inexact
            sec, frac = ctx.get([ts.pv(PV.SEC), ts.pv(PV.FRAC)])
            assert sec.type()["value"] == frac.type()["value"] == "L"
            # the ID's timestamp is the tick's, to the ns
            assert (got["timeStamp.secondsPastEpoch"], got["timeStamp.nanoseconds"]) == \
                (sec["value"], frac["value"] // 10**9)
            assert ctx.get(ts.pv(PV.STATE))["value"] == "ON"
    finally:
        server.close()
