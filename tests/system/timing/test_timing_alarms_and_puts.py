"""Alarms and puts of the TimeServer IOC, as CA clients see them.

- Only ID and the tick PVs carry the no-tick alarm; no monitor ever sees ID = 0
  without INVALID severity, from the very first update a client gets.
- Every refused put is answered at once: caproto's sync client (ErrorResponse),
  caproto's threading client (the one ophyd's caproto layer uses: WRITE_NOTIFY with
  ECA_PUTFAIL), and a put without callback (ErrorResponse on the circuit).
- STATUS says the current truth after a refusal and a later good put.
"""

from __future__ import annotations

import math
import threading
import time

import pytest
from caproto import (
    AlarmSeverity,
    AlarmStatus,
    CaprotoTimeoutError,
    ChannelType,
    ErrorResponseReceived,
)
from caproto import ErrorResponse as CAErrorResponse
from caproto.sync.client import make_channel, read, write
from caproto.sync.client import recv as sync_recv
from caproto.sync.client import send as sync_send
from caproto.sync.client import sockets as sync_sockets
from caproto.threading.client import Context
from timing_servers import TrainServer

from trainstamp.signals import PutRefused  # importing it routes refusals to the put
from trainstamp.testing import random_prefix, wait_until
from trainstamp.timing import PV
from trainstamp.timing.feed import TrainFeed

pytestmark = pytest.mark.system

TICK_PVS = (PV.ID, PV.SEC, PV.FRAC, PV.PERIOD, PV.PERIOD_ACTUAL)
OTHER_PVS = (PV.PERIOD_SET, PV.SOURCE, PV.STATE, PV.RESET, PV.MISSED_PERIODS, PV.STATUS,
             PV.BAD_MESSAGES, PV.DISCONTINUITIES)

#: (PV, value, data type) for puts the IOC must refuse.
REFUSED = [
    (PV.PERIOD_SET, -1.0, None), (PV.PERIOD_SET, 0.0, None), (PV.PERIOD_SET, math.nan, None),
    (PV.PERIOD_SET, math.inf, None), (PV.PERIOD_SET, -math.inf, None),
    (PV.PERIOD_SET, 1e300, None), (PV.PERIOD_SET, "fast", ChannelType.STRING),
    (PV.SOURCE, "", ChannelType.STRING), (PV.SOURCE, "foo://bar", ChannelType.STRING),
    (PV.SOURCE, "tcp://127.0.0.1:1", ChannelType.STRING),  # refused while ON
    (PV.RESET, math.nan, ChannelType.DOUBLE), (PV.RESET, 1.5, ChannelType.DOUBLE),
    (PV.RESET, math.inf, ChannelType.DOUBLE), (PV.RESET, 2, None), (PV.RESET, -1, None),
    (PV.RESET, "once", ChannelType.STRING),
    (PV.MISSED_PERIODS, 0, None), (PV.MISSED_PERIODS, 1001, None),
    (PV.MISSED_PERIODS, 2.5, ChannelType.DOUBLE), (PV.MISSED_PERIODS, math.nan, ChannelType.DOUBLE),
    *[(suffix, 5.0, ChannelType.DOUBLE) for suffix in (*TICK_PVS, PV.BAD_MESSAGES,
                                                        PV.DISCONTINUITIES, PV.STATE)],
    (PV.STATUS, "all good", ChannelType.STRING),
]


def _alarm(ts, suffix):
    md = read(ts.pv(suffix), data_type="time", timeout=2.0).metadata
    return AlarmStatus(md.status), AlarmSeverity(md.severity)


@pytest.fixture
def silent_ioc(timeserver):
    """An IOC ON from a TCP server that has sent nothing yet (no tick)."""
    server = TrainServer()
    ts = timeserver("--source", f"tcp://127.0.0.1:{server.port}", "--period", "60000")
    server.next_connection()
    ts.wait(PV.STATE, lambda s: s == "ON")
    yield ts, server
    server.close()


def test_no_tick_alarm_only_on_the_tick_pvs(silent_ioc):
    ts, server = silent_ioc
    for suffix in TICK_PVS:
        assert _alarm(ts, suffix) == (AlarmStatus.UDF, AlarmSeverity.INVALID_ALARM), suffix
    for suffix in OTHER_PVS:
        assert _alarm(ts, suffix)[1] == AlarmSeverity.NO_ALARM, suffix
    server.send(b"5\n")
    ts.wait(PV.ID, lambda v: v == 5)
    for suffix in TICK_PVS:
        assert _alarm(ts, suffix) == (AlarmStatus.NO_ALARM, AlarmSeverity.NO_ALARM), suffix


def test_no_monitor_ever_sees_id_zero_without_invalid_severity(ca_ports):
    """Subscribe before the IOC exists, so the first update is the IOC's initial value;
    its source sends nothing until the test says so."""
    from trainstamp.testing import SubprocessIOC, free_port

    prefix = random_prefix("TSA")
    server = TrainServer()
    updates: list[tuple[float, int, int]] = []
    lock = threading.Lock()

    def on_update(sub, response):
        with lock:
            updates.append((float(response.data[0]), int(response.metadata.severity),
                            int(response.metadata.status)))

    def count():
        with lock:
            return len(updates)

    ctx = Context()
    try:
        (pv,) = ctx.get_pvs(prefix + PV.ID)
        pv.subscribe(data_type="time").add_callback(on_update)
        argv = ["ioc", "timeserver", "--prefix", prefix, "--interfaces", "127.0.0.1",
                "--broadcast-port", str(free_port()), "--period", "60000",
                "--source", f"tcp://127.0.0.1:{server.port}"]
        with SubprocessIOC(argv, ca_ports, ready_pv=prefix + PV.STATE) as proc:
            server.next_connection()
            wait_until(count, timeout=15, message="the first monitor update")
            with lock:
                assert updates[0] == (0.0, AlarmSeverity.INVALID_ALARM, AlarmStatus.UDF)
            for train_id in (41, 42, 43):
                server.send(b"%d\n" % train_id)
                wait_until(lambda i=train_id: updates[-1][0] == i, timeout=10,
                           message=f"ID {train_id} over the monitor")
            write(prefix + PV.RESET, 1, notify=True, timeout=2)
            server.next_connection()
            wait_until(lambda: updates[-1][1] == AlarmSeverity.INVALID_ALARM, timeout=10,
                       message="ID invalid after the reset")
            server.send(b"44\n")
            wait_until(lambda: updates[-1][0] == 44, timeout=10, message="ID 44")
            proc.stop()
    finally:
        ctx.disconnect()
        server.close()
    with lock:
        seen = list(updates)
    for value, severity, _ in seen:
        if value == 0.0:
            assert severity == AlarmSeverity.INVALID_ALARM, seen
    # ticks without alarm; the old ID in INVALID/UDF after the reset until the next tick
    assert [(v, s) for v, s, _ in seen if s == AlarmSeverity.NO_ALARM] == [
        (41.0, 0), (42.0, 0), (43.0, 0), (44.0, 0)], seen
    assert (43.0, AlarmSeverity.INVALID_ALARM, AlarmStatus.UDF) in seen


def _threading_put(ctx, name, value, data_type):
    (pv,) = ctx.get_pvs(name)
    pv.wait_for_connection(timeout=5)
    t0 = time.monotonic()
    try:
        response = pv.write([value] if not isinstance(value, list) else value, wait=True,
                            timeout=5, data_type=data_type)
    except CaprotoTimeoutError:
        return None, time.monotonic() - t0
    except PutRefused:  # trainstamp.signals routes the refusal to the waiting put
        return "refused", time.monotonic() - t0
    return response, time.monotonic() - t0


def _plain_put_answer(name, value, data_type, timeout=5.0):
    """A put without callback on a raw circuit; return the ErrorResponse it gets."""

    import caproto as ca

    udp = ca.bcast_socket()
    udp.bind(("", 0))
    udp.settimeout(2.0)
    chan = make_channel(name, udp, 0, 2.0)
    try:
        sync_send(chan.circuit, chan.write(data=[value], notify=False, data_type=data_type))
        sock = sync_sockets[chan.circuit]
        sock.settimeout(timeout)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                for command in sync_recv(chan.circuit):
                    if isinstance(command, CAErrorResponse):
                        return command
            except TimeoutError:
                return None
        return None
    finally:
        sync_sockets[chan.circuit].close()
        del sync_sockets[chan.circuit]
        from caproto.sync.client import global_circuits

        del global_circuits[(chan.circuit.address, chan.circuit.priority)]
        udp.close()


def test_every_refused_put_is_answered_at_once_and_nothing_changes(timeserver):
    ts = timeserver("--period", "50")
    ts.wait(PV.STATE, lambda s: s == "ON")
    got: list[int] = []
    feed = TrainFeed(f"tcp://127.0.0.1:{ts.broadcast_port}", lambda i, t: got.append(i))
    feed.start()
    ctx = Context()
    problems = []
    try:
        assert feed.wait_connected(10)
        for suffix, value, data_type in REFUSED:
            name = ts.pv(suffix)
            # 1. caproto's sync client, put with callback
            try:
                write(name, [value], notify=True, timeout=5, data_type=data_type)
                problems.append((suffix, value, "sync: accepted"))
            except ErrorResponseReceived:
                pass  # answered (before the fix it never was; timing is not asserted)
            # 2. caproto's threading client (ophyd's caproto layer), put with callback
            response, elapsed = _threading_put(ctx, name, value, data_type)
            if response is None:
                problems.append((suffix, value, f"threading: no answer in {elapsed:.1f} s"))
            elif response != "refused" and response.status.success:
                problems.append((suffix, value, "threading: accepted"))
            # 3. a put without callback: the ErrorResponse comes on the circuit
            if _plain_put_answer(name, value, data_type) is None:
                problems.append((suffix, value, "plain put: no ErrorResponse within 5 s"))
        assert problems == []
        # Nothing changed: still ON on the internal source at 50 ms, ticking on.
        assert ts.get(PV.STATE) == "ON"
        assert ts.get(PV.SOURCE) == "local:internal"
        assert ts.get(PV.PERIOD_SET) == 50.0
        assert ts.get(PV.MISSED_PERIODS) == 3
        n = len(got)
        wait_until(lambda: len(got) > n + 3, timeout=10, message="ticks after the puts")
    finally:
        feed.stop()
        ctx.disconnect()
    # No RESET happened: the broadcast IDs never jumped (a reset restarts the count).
    assert all(b - a == 1 for a, b in zip(got, got[1:], strict=False)), got


def test_status_after_a_refused_then_a_good_put(timeserver):
    ts = timeserver("--period", "100")
    ts.wait(PV.STATE, lambda s: s == "ON")
    with pytest.raises(ErrorResponseReceived):
        ts.put(PV.PERIOD_SET, -1.0)
    assert ts.get(PV.STATUS) == ("PERIOD_SET refused: period -1.0 ms outside 1..60000 ms; "
                                 "ON from local:internal")
    assert _alarm(ts, PV.PERIOD_SET) == (AlarmStatus.WRITE, AlarmSeverity.MAJOR_ALARM)
    assert _alarm(ts, PV.STATE)[1] == AlarmSeverity.NO_ALARM  # the refusal stays on its PV
    ts.put(PV.PERIOD_SET, 50.0)
    assert ts.get(PV.STATUS) == "ON from local:internal"  # the current truth
    assert _alarm(ts, PV.PERIOD_SET) == (AlarmStatus.NO_ALARM, AlarmSeverity.NO_ALARM)


def test_reset_refuses_nan_and_fractions_with_a_clear_message(timeserver):
    ts = timeserver("--period", "50")
    ts.wait(PV.STATE, lambda s: s == "ON")
    with pytest.raises(ErrorResponseReceived, match="RESET refused: nan is not a whole number"):
        write(ts.pv(PV.RESET), [math.nan], notify=True, timeout=2, data_type=ChannelType.DOUBLE)
    assert ts.get(PV.STATUS).startswith("RESET refused: nan is not a whole number")
    with pytest.raises(ErrorResponseReceived, match="RESET refused: 1.5 is not a whole number"):
        write(ts.pv(PV.RESET), [1.5], notify=True, timeout=2, data_type=ChannelType.DOUBLE)
    ts.put(PV.RESET, 0)  # 0 is accepted and does nothing
    assert ts.get(PV.STATE) == "ON" and ts.get(PV.STATUS) == "ON from local:internal"
