"""A TimeServer never says ON when it is not: dead, hung and restarted sources.

Each test runs a real IOC against a real train-ID server (or an upstream IOC over CA),
breaks the source, and checks STATE, the alarm of ID, STATUS and the counters, then
that the auto reset brings it back when IDs flow again.
"""

import re
import socket

import pytest
from caproto import AlarmSeverity, AlarmStatus
from caproto.sync.client import read
from timing_servers import Ticker, TrainServer

from trainstamp.testing import SubprocessIOC, random_prefix, wait_until
from trainstamp.timing import PV
from trainstamp.timing.feed import TrainFeed

pytestmark = pytest.mark.system

PERIOD_MS = 50


def alarm(ts, suffix=PV.ID):
    md = read(ts.pv(suffix), data_type="time", timeout=2.0).metadata
    return AlarmStatus(md.status), AlarmSeverity(md.severity)


@pytest.fixture
def ticker():
    t = Ticker(start=5000, period_s=PERIOD_MS / 1000)
    yield t
    t.close()


def test_killed_tcp_server_goes_unknown_at_once_and_comes_back(timeserver, ticker):
    ts = timeserver("--source", f"tcp://127.0.0.1:{ticker.port}", "--period", str(PERIOD_MS))
    ts.wait(PV.STATE, lambda s: s == "ON")
    before = ts.wait(PV.ID, lambda v: v > 5002)
    assert alarm(ts) == (AlarmStatus.NO_ALARM, AlarmSeverity.NO_ALARM)

    ticker.kill()  # the facility server crashes
    ts.wait(PV.STATE, lambda s: s == "UNKNOWN")
    assert alarm(ts) == (AlarmStatus.COMM, AlarmSeverity.INVALID_ALARM)
    for suffix in (PV.SEC, PV.FRAC, PV.PERIOD, PV.PERIOD_ACTUAL):
        assert alarm(ts, suffix)[1] == AlarmSeverity.INVALID_ALARM, suffix
    for suffix in (PV.STATE, PV.STATUS, PV.PERIOD_SET, PV.SOURCE, PV.BAD_MESSAGES):
        assert alarm(ts, suffix)[1] == AlarmSeverity.NO_ALARM, suffix
    # The auto reset tries again and says why it cannot connect; never "retry" while ON.
    status = ts.wait(PV.STATUS, lambda s: "Connection refused" in s, timeout=15)
    assert re.search(rf"cannot connect to tcp://127\.0\.0\.1:{ticker.port}: Connection "
                     r"refused \(auto reset in \d+ s\)", status), status
    assert ts.get(PV.STATE) == "UNKNOWN"

    ticker.restart()  # the server is back; the trains went on meanwhile
    ts.wait(PV.STATE, lambda s: s == "ON", timeout=20)
    after = ts.wait(PV.ID, lambda v: v > before + 2)
    assert alarm(ts) == (AlarmStatus.NO_ALARM, AlarmSeverity.NO_ALARM)
    assert ts.get(PV.DISCONTINUITIES) == 1  # the trains missed during the outage
    assert ts.get(PV.STATUS) == f"ON from tcp://127.0.0.1:{ticker.port}"
    assert after in ticker.sent


def test_hung_tcp_server_goes_unknown_after_the_missed_periods(timeserver, ticker):
    ts = timeserver("--source", f"tcp://127.0.0.1:{ticker.port}", "--period", str(PERIOD_MS),
                    "--missed-periods", "4")
    assert ts.get(PV.MISSED_PERIODS) == 4
    first = ts.wait(PV.ID, lambda v: v > 0)
    ts.wait(PV.ID, lambda v: v >= first + 2)  # the period has been measured
    ticker.silence()  # connected, but nothing comes any more
    ts.wait(PV.STATE, lambda s: s == "UNKNOWN")
    assert alarm(ts) == (AlarmStatus.TIMEOUT, AlarmSeverity.INVALID_ALARM)
    status = ts.get(PV.STATUS)
    match = re.search(r"no train ID for ([\d.e+-]+) s since the last one \(4 missed periods "
                      r"of ([\d.]+) ms, measured\)", status)
    assert match, status
    # Never before the missed periods: 4 periods of the expected period at least (the
    # silence is printed to 3 significant digits: 0.20305 s shows as 0.203).
    printed = match[1]
    half_digit = 0.5 * 10.0 ** -len(printed.partition(".")[2])
    assert (float(printed) + half_digit) * 1000 >= 4 * float(match[2]) >= 4 * PERIOD_MS
    resumed_at = len(ticker.sent)
    ticker.resume()
    ts.wait(PV.STATE, lambda s: s == "ON", timeout=20)
    ts.wait(PV.ID, lambda v: v in ticker.sent[resumed_at:])  # a tick from after the outage
    assert alarm(ts)[1] == AlarmSeverity.NO_ALARM
    assert ts.get(PV.DISCONTINUITIES) == 1


def test_silent_from_the_start_uses_period_set(timeserver, train_server):
    ts = timeserver("--source", f"tcp://127.0.0.1:{train_server.port}", "--period", "100",
                    "--no-auto-reset")
    train_server.next_connection()
    ts.wait(PV.STATE, lambda s: s == "UNKNOWN")
    assert ("no train ID for" in ts.get(PV.STATUS)
            and "since it went ON (3 missed periods of 100 ms, PERIOD_SET, nothing "
                "measured yet)" in ts.get(PV.STATUS))
    assert alarm(ts) == (AlarmStatus.TIMEOUT, AlarmSeverity.INVALID_ALARM)


def test_missed_periods_is_a_writable_pv(timeserver, ticker):
    ts = timeserver("--source", f"tcp://127.0.0.1:{ticker.port}", "--period", str(PERIOD_MS),
                    "--missed-periods", "1000")
    ts.wait(PV.ID, lambda v: v > 5001)
    ticker.silence()
    ts.put(PV.MISSED_PERIODS, 2)  # the watchdog takes the new limit at once
    assert ts.get(PV.MISSED_PERIODS) == 2
    ts.wait(PV.STATE, lambda s: s == "UNKNOWN")
    assert "2 missed periods" in ts.get(PV.STATUS)


@pytest.fixture
def train_server():
    server = TrainServer()
    yield server
    server.close()


def _broadcast_feed(ts, got):
    feed = TrainFeed(f"tcp://127.0.0.1:{ts.broadcast_port}", lambda i, t: got.append(i))
    feed.start()
    assert feed.wait_connected(10)
    return feed


def _prime(ts, server, got, first: int, end: bytes) -> int:
    """Send IDs from ``first`` until the broadcast feed has one: a client is served
    from the first tick after the broadcaster registered it, a little after connect."""
    for train_id in range(first, first + 20):
        server.send(b"%d%s" % (train_id, end))
        ts.wait(PV.ID, lambda v, i=train_id: v == i)
        try:
            wait_until(lambda: got, timeout=1.0, message="a first broadcast ID")
        except TimeoutError:
            continue
        del got[:]
        return train_id
    raise AssertionError("the broadcast feed never got an ID")


def test_unterminated_ids_are_never_glued_together(timeserver, train_server):
    # PERIOD_SET 200 ms: a message without terminator ends after a 50 ms pause.
    ts = timeserver("--source", f"tcp://127.0.0.1:{train_server.port}", "--period", "200",
                    "--missed-periods", "1000")
    train_server.next_connection()
    ts.wait(PV.STATE, lambda s: s == "ON")
    got: list[int] = []
    feed = _broadcast_feed(ts, got)
    try:
        assert _prime(ts, train_server, got, 1000, b"") < 1012
        for train_id in (1013, 1014, 1015):
            train_server.send(b"%d" % train_id)  # one ID per write, no terminator
            ts.wait(PV.ID, lambda v, i=train_id: v == i)  # the pause ended it
        train_server.send(b"\n")  # a late terminator ends nothing new
        train_server.send(b"1016\n")  # from now on the stream is terminated
        ts.wait(PV.ID, lambda v: v == 1016)
        wait_until(lambda: len(got) >= 4, timeout=10, message="4 broadcast IDs")
    finally:
        feed.stop()
    assert got == [1013, 1014, 1015, 1016]  # never 101310141015
    assert ts.get(PV.BAD_MESSAGES) == 0
    assert ts.get(PV.DISCONTINUITIES) == 1  # from the last primer to 1013


def test_zero_is_never_published_as_a_train(timeserver, train_server):
    ts = timeserver("--source", f"tcp://127.0.0.1:{train_server.port}", "--period", "60000")
    train_server.next_connection()
    ts.wait(PV.STATE, lambda s: s == "ON")
    got: list[int] = []
    feed = _broadcast_feed(ts, got)
    try:
        assert _prime(ts, train_server, got, 60, b"\n") < 76
        train_server.send(b"77\n0\n78\n")
        ts.wait(PV.ID, lambda v: v == 78)
        wait_until(lambda: len(got) >= 2, timeout=10, message="2 broadcast IDs")
    finally:
        feed.stop()
    assert got == [77, 78]
    assert ts.get(PV.BAD_MESSAGES) == 1
    assert "train ID 0: 0 means 'no train'" in ts.get(PV.STATUS)
    assert ts.get(PV.DISCONTINUITIES) == 1  # from the last primer to 77


def test_connect_timeout_says_timed_out(timeserver):
    # A server whose accept queue is full: the SYN is dropped and connect times out.
    server = socket.create_server(("127.0.0.1", 0), backlog=0)
    port = server.getsockname()[1]
    held = socket.create_connection(("127.0.0.1", port), timeout=2)
    try:
        ts = timeserver("--source", f"tcp://127.0.0.1:{port}", "--no-auto-reset")
        ts.wait(PV.STATE, lambda s: s == "UNKNOWN", timeout=15)
        assert ts.get(PV.STATUS) == (f"cannot connect to tcp://127.0.0.1:{port}: "
                                     "timed out after 2 s")
    finally:
        held.close()
        server.close()


def test_source_put_refused_while_initializing(timeserver):
    # ca:// to a PV nobody serves: INIT lasts the 5 s connection timeout.
    missing = f"ca://{random_prefix('NONE')}ID"
    ts = timeserver("--source", missing, "--no-auto-reset")
    assert ts.get(PV.STATE) == "INIT"
    with pytest.raises(Exception, match="SOURCE refused: .*state is INIT .*being initialized"):
        ts.put(PV.SOURCE, "local:internal")
    assert ts.get(PV.SOURCE) == missing  # always the source in use
    ts.wait(PV.STATE, lambda s: s == "UNKNOWN", timeout=15)
    assert "did not connect within 5 s" in ts.get(PV.STATUS)
    ts.put(PV.SOURCE, "local:internal")  # UNKNOWN: accepted, used at the next reset
    assert ts.get(PV.SOURCE) == "local:internal"
    assert "source set to local:internal: write RESET" in ts.get(PV.STATUS)
    ts.put(PV.RESET, 1)
    ts.wait(PV.STATE, lambda s: s == "ON")
    assert ts.get(PV.STATUS) == "ON from local:internal"


def _upstream(ca_ports, prefix, *args):
    argv = ["ioc", "timeserver", "--prefix", prefix, "--interfaces", "127.0.0.1",
            "--broadcast-port", "0", *args]
    return SubprocessIOC(argv, ca_ports, ready_pv=prefix + PV.STATE)


def test_ca_source_with_a_dead_or_silent_upstream(timeserver, ca_ports, ticker):
    prefix = random_prefix("UP")
    # The upstream follows the ticker and never gives up on it (1000 missed periods).
    args = ("--source", f"tcp://127.0.0.1:{ticker.port}", "--period", str(PERIOD_MS),
            "--missed-periods", "1000")
    with _upstream(ca_ports, prefix, *args) as upstream:
        wait_until(lambda: read(prefix + PV.ID, timeout=1).data[0] > 5001, timeout=10)
        ts = timeserver("--source", f"ca://{prefix}{PV.ID}", "--period", str(PERIOD_MS))
        ts.wait(PV.STATE, lambda s: s == "ON")
        ts.wait(PV.ID, lambda v: v > 5003)

        ticker.silence()  # the upstream stays ON but stops updating
        ts.wait(PV.STATE, lambda s: s == "UNKNOWN")
        assert alarm(ts) == (AlarmStatus.TIMEOUT, AlarmSeverity.INVALID_ALARM)
        assert "missed periods" in ts.get(PV.STATUS)
        resumed_at = len(ticker.sent)
        ticker.resume()
        ts.wait(PV.STATE, lambda s: s == "ON", timeout=20)
        ts.wait(PV.ID, lambda v: v in ticker.sent[resumed_at:])
        assert ts.get(PV.DISCONTINUITIES) == 1
        last = ts.get(PV.ID)

        upstream.kill()  # the upstream IOC dies: its PV disconnects
        ts.wait(PV.STATE, lambda s: s == "UNKNOWN")
        assert alarm(ts)[1] == AlarmSeverity.INVALID_ALARM
        # frozen at the last ID the upstream sent (one may have come between reading
        # `last` and the kill), and in alarm
        last = ts.get(PV.ID)
        assert last >= ticker.sent[resumed_at] and ts.get(PV.STATE) == "UNKNOWN"

    with _upstream(ca_ports, prefix, *args):  # the upstream comes back
        ts.wait(PV.STATE, lambda s: s == "ON", timeout=30)
        ts.wait(PV.ID, lambda v: v > last)
        assert alarm(ts)[1] == AlarmSeverity.NO_ALARM

