"""The IOC's tcp:// source against a real TCP server in the test, with every bad input."""

import queue
import socket
import struct
import threading
import time

import pytest
from caproto import AlarmSeverity
from caproto.sync.client import read

from trainstamp.testing import free_port
from trainstamp.timing import PV

pytestmark = pytest.mark.system


class TrainServer:
    """A minimal facility train-ID server: accepts connections, the test writes bytes."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.sock = socket.create_server(("127.0.0.1", self.port))
        self.sock.settimeout(0.2)
        self.accepted: queue.Queue[socket.socket] = queue.Queue()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()
        self.conn: socket.socket | None = None

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.accepted.put(conn)

    def next_connection(self, timeout: float = 10.0) -> socket.socket:
        self.conn = self.accepted.get(timeout=timeout)
        return self.conn

    def send(self, data: bytes) -> None:
        assert self.conn is not None
        self.conn.sendall(data)

    def reset_connection(self) -> None:
        """Close with RST (SO_LINGER 0): a connection reset, not an orderly close."""
        assert self.conn is not None
        self.conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.conn.close()
        self.conn = None

    def close(self) -> None:
        self._stop.set()
        self.sock.close()
        if self.conn is not None:
            self.conn.close()
        self._thread.join(2)


@pytest.fixture
def train_server():
    server = TrainServer()
    yield server
    server.close()


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
    ts = timeserver("--source", f"tcp://127.0.0.1:{train_server.port}")
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

    # A connection reset in the middle of a line: one bad message, reconnect, go on.
    # (Linux delivers bytes already received before it reports the reset.)
    train_server.send(b"10")
    train_server.reset_connection()
    bad += 1
    ts.wait(PV.BAD_MESSAGES, lambda n: n == bad)
    train_server.next_connection()
    assert ts.get(PV.STATE) == "ON"
    train_server.send(b"%d\n" % (good + 1))
    ts.wait(PV.ID, lambda v: v == good + 1)

    # A restarted facility server starts again at 0: re-anchor and count the jump.
    train_server.send(b"0\n1\n2\n")
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
    ts = timeserver("--source", f"tcp://127.0.0.1:{port}")
    ts.wait(PV.STATE, lambda s: s == "UNKNOWN")
    assert "cannot connect" in ts.get(PV.STATUS)
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
