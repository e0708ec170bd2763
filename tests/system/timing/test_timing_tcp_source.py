"""The IOC's tcp:// source against a real TCP server in the test, with every bad input."""

import time

import pytest
from caproto import AlarmSeverity, AlarmStatus
from caproto.sync.client import read
from timing_servers import TrainServer

from trainstamp.testing import free_port
from trainstamp.timing import PV

pytestmark = pytest.mark.system


@pytest.fixture
def train_server():
    server = TrainServer()
    yield server
    server.close()


def _alarm(ts, suffix=PV.ID):
    md = read(ts.pv(suffix), data_type="time", timeout=2.0).metadata
    return AlarmStatus(md.status), AlarmSeverity(md.severity)


BAD_INPUTS = [
    ("empty line", b"\n"),
    ("whitespace alone", b"  \t \r\n"),
    ("trailing junk", b"12abc\n"),
    ("a sign", b"-5\n"),
    ("past 2**64", b"18446744073709551616\n"),
    ("huge number", b"9" * 40 + b"\0"),
    ("binary noise", bytes(range(0x80, 0x100)) * 20 + b"\n"),
]


def test_tcp_source_counts_bad_messages_and_keeps_going(timeserver, train_server):
    # The test sends IDs by hand, far apart: a long expected period keeps the
    # missed-period rule out of the way.
    ts = timeserver("--source", f"tcp://127.0.0.1:{train_server.port}", "--period", "60000")
    train_server.next_connection()
    ts.wait(PV.STATE, lambda s: s == "ON")
    train_server.send(b"1000\n")
    ts.wait(PV.ID, lambda v: v == 1000)

    good = 1000
    bad = 0
    for what, data in BAD_INPUTS:
        train_server.send(data)
        bad += 1
        ts.wait(PV.BAD_MESSAGES, lambda n, bad=bad: n == bad)
        good += 1
        sent_ns = time.time_ns()
        train_server.send(b"%d\r\n" % good)
        ts.wait(PV.ID, lambda v, good=good: v == good)
        assert ts.get(PV.STATE) == "ON", what
    # Each ID is stamped at receive time.
    stamp = ts.get(PV.SEC) * 10**9 + ts.get(PV.FRAC) // 10**9
    assert 0 <= stamp - sent_ns < 2e9

    # A 1 MB line with no terminator: one bad message, bounded memory, then recovery.
    for _ in range(16):
        train_server.send(b"7" * 65536)
    bad += 1
    ts.wait(PV.BAD_MESSAGES, lambda n: n == bad)
    train_server.send(b"\n%d\n" % (good + 1))
    good += 1
    ts.wait(PV.ID, lambda v: v == good)
    assert ts.get(PV.DISCONTINUITIES) == 0

    # A connection reset in the middle of a line: one bad message, the source is lost
    # (UNKNOWN, ID invalid), the auto reset reconnects, and it goes on.
    # (Linux delivers bytes already received before it reports the reset.)
    train_server.send(b"10")
    train_server.reset_connection()
    bad += 1
    ts.wait(PV.BAD_MESSAGES, lambda n: n == bad)
    train_server.next_connection()
    ts.wait(PV.STATE, lambda s: s == "ON")
    train_server.send(b"%d\n" % (good + 1))
    ts.wait(PV.ID, lambda v: v == good + 1)
    assert ts.get(PV.DISCONTINUITIES) == 0  # the next ID after the outage: no jump

    # A restarted facility server starts again at 0: 0 is no train (a bad message),
    # then 1 re-anchors the count and the jump is counted.
    train_server.send(b"0\n1\n2\n")
    bad += 1
    ts.wait(PV.ID, lambda v: v == 2)
    assert ts.get(PV.DISCONTINUITIES) == 1
    assert read(ts.pv(PV.ID), data_type="time").metadata.severity == AlarmSeverity.NO_ALARM

    # An ID a DOUBLE cannot hold exactly is published in MAJOR alarm, never as exact.
    train_server.send(b"%d\n" % (2**53 + 1))
    ts.wait(PV.DISCONTINUITIES, lambda n: n == 2)
    ts.wait(PV.STATUS, lambda s: "above 2**53" in s)
    assert read(ts.pv(PV.ID), data_type="time").metadata.severity == AlarmSeverity.MAJOR_ALARM
    assert ts.get(PV.BAD_MESSAGES) == bad
    assert ts.get(PV.STATE) == "ON"


def test_tcp_source_unreachable_goes_unknown_then_auto_resets(timeserver):
    port = free_port()
    ts = timeserver("--source", f"tcp://127.0.0.1:{port}", "--period", "60000")
    ts.wait(PV.STATE, lambda s: s == "UNKNOWN")
    assert f"cannot connect to tcp://127.0.0.1:{port}: Connection refused" in ts.get(PV.STATUS)
    assert _alarm(ts) == (AlarmStatus.COMM, AlarmSeverity.INVALID_ALARM)
    server = TrainServer(port)  # the facility server comes up: auto reset finds it
    try:
        server.next_connection(timeout=15.0)
        ts.wait(PV.STATE, lambda s: s == "ON")
        server.send(b"42\n")
        ts.wait(PV.ID, lambda v: v == 42)
    finally:
        server.close()


def test_ca_source_follows_another_timeserver(timeserver):
    upstream = timeserver("--period", "50")
    first = upstream.wait(PV.ID, lambda v: v > 0)
    follower = timeserver("--source", f"ca://{upstream.pv(PV.ID)}")
    follower.wait(PV.STATE, lambda s: s == "ON")
    assert follower.get(PV.SOURCE) == f"ca://{upstream.pv(PV.ID)}"
    value = follower.wait(PV.ID, lambda v: v > first + 2)
    assert value == pytest.approx(upstream.get(PV.ID), abs=20)
    follower.wait(PV.PERIOD_ACTUAL, lambda p: 40.0 < p < 60.0)
