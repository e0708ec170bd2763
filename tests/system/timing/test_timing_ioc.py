"""The TimeServer IOC over loopback Channel Access, with the internal source."""

import math

import pytest
from caproto import ErrorResponseReceived
from caproto.sync.client import read

from trainstamp.testing import wait_until
from trainstamp.timing import PV, Tick
from trainstamp.timing._sources import EPICS_EPOCH_UNIX_S
from trainstamp.timing.feed import TrainFeed

pytestmark = pytest.mark.system


def _consistent_snapshot(ts):
    """Read ID (with its EPICS time) and the other tick PVs from the same tick."""

    def attempt():
        before = read(ts.pv(PV.ID), data_type="time", timeout=2.0)
        sec, frac, period = ts.get(PV.SEC), ts.get(PV.FRAC), ts.get(PV.PERIOD)
        after = read(ts.pv(PV.ID), data_type="time", timeout=2.0)
        if before.data[0] != after.data[0]:
            return None  # a tick landed between the reads; try again
        return before, sec, frac, period

    return wait_until(attempt, timeout=10.0, message="a consistent tick snapshot")


def test_internal_source_ticks_and_reconstructs_exactly(timeserver):
    ts = timeserver("--source", "internal", "--period", "250")
    assert set(PV.ALL) <= {line.strip().removeprefix(ts.prefix)
                           for line in ts.proc.output().splitlines()}  # --list-pvs
    ts.wait(PV.STATE, lambda s: s == "ON")
    assert ts.get(PV.SOURCE) == "local:internal"
    first = ts.wait(PV.ID, lambda v: v > 0)
    ts.wait(PV.ID, lambda v: v >= first + 2)

    id_resp, sec, frac, period = _consistent_snapshot(ts)
    # Every field is an exact integer in its DOUBLE, so the tick rebuilds exactly ...
    for value in (id_resp.data[0], sec, frac, period):
        assert float(value).is_integer()
    tick = Tick(int(id_resp.data[0]), int(sec), int(frac), int(period))
    assert tick.frac_as % 10**9 == 0
    # ... and the EPICS timestamp of ID is the tick time, to the nanosecond.
    stamp = id_resp.metadata.stamp
    assert (stamp.secondsSinceEpoch + EPICS_EPOCH_UNIX_S) * 10**9 + stamp.nanoSeconds == tick.t_ns
    assert 200_000 <= tick.period_us <= 300_000
    assert 200.0 <= ts.get(PV.PERIOD_ACTUAL) <= 300.0
    assert ts.get(PV.BAD_MESSAGES) == 0


def test_broadcaster_serves_the_ioc_ticks(timeserver):
    ts = timeserver("--period", "20")
    # The IOC says where its broadcaster listens: clients take the endpoint from there.
    assert ts.wait(PV.BROADCAST_URI, bool) == f"tcp://127.0.0.1:{ts.broadcast_port}"
    got = []
    with TrainFeed(f"tcp://127.0.0.1:{ts.broadcast_port}", lambda i, t: got.append(i)) as feed:
        assert feed.wait_connected(5.0)
        wait_until(lambda: len(got) >= 10, timeout=10.0, message="10 broadcast IDs")
    assert got[1:] == list(range(got[0] + 1, got[0] + len(got)))
    assert abs(got[-1] - ts.get(PV.ID)) < 100


@pytest.mark.parametrize("value", [0.0, -5.0, math.nan, math.inf, 1e12])
def test_period_set_refused(timeserver, value):
    ts = timeserver("--period", "100")
    ts.wait(PV.STATE, lambda s: s == "ON")
    with pytest.raises(ErrorResponseReceived, match="PERIOD_SET refused"):
        ts.put(PV.PERIOD_SET, value)
    assert ts.get(PV.PERIOD_SET) == 100.0
    assert ts.get(PV.STATUS).startswith("PERIOD_SET refused: period ")
    assert ts.get(PV.STATE) == "ON"


def test_period_set_accepted_and_p_loop_follows(timeserver):
    ts = timeserver("--period", "100")
    ts.wait(PV.STATE, lambda s: s == "ON")
    ts.put(PV.PERIOD_SET, 20.0)
    assert ts.get(PV.PERIOD_SET) == 20.0
    # The 100-change average moves towards the new period as new intervals come in.
    ts.wait(PV.PERIOD_ACTUAL, lambda p: p < 60.0, timeout=15.0)


@pytest.mark.parametrize("uri,match", [
    ("foo://bar", "unknown source scheme 'foo'"),
    ("local:nonsense", "unknown local source"),
    ("tcp://nohost", "expected tcp://host:port"),
])
def test_source_put_refused_when_malformed(timeserver, uri, match):
    ts = timeserver("--source", "tcp://127.0.0.1:1", "--no-auto-reset")  # stays UNKNOWN
    ts.wait(PV.STATE, lambda s: s == "UNKNOWN")
    with pytest.raises(ErrorResponseReceived, match="SOURCE refused") as err:
        ts.put(PV.SOURCE, uri)
    assert match in err.value.args[0].error_message.decode()
    assert ts.get(PV.SOURCE) == "tcp://127.0.0.1:1"
    assert match in ts.get(PV.STATUS)


def test_source_put_refused_while_on_then_allowed_after_failure(timeserver):
    ts = timeserver()
    ts.wait(PV.STATE, lambda s: s == "ON")
    with pytest.raises(ErrorResponseReceived, match="only be changed before initialization"):
        ts.put(PV.SOURCE, "local:x2timer")
    assert ts.get(PV.SOURCE) == "local:internal"
    assert "only be changed before initialization" in ts.get(PV.STATUS)
    assert ts.get(PV.STATE) == "ON"


def test_reset_goes_back_on_without_reusing_ids(timeserver):
    ts = timeserver("--period", "20")
    before = ts.wait(PV.ID, lambda v: v > 0)
    ts.put(PV.RESET, 1)
    assert ts.get(PV.RESET) == 0
    ts.wait(PV.STATE, lambda s: s == "ON")
    ts.wait(PV.ID, lambda v: v > before + 5)
    assert ts.get(PV.DISCONTINUITIES) == 0  # a reset re-anchors without counting a jump


def test_x2timer_is_unknown_with_a_clear_error(timeserver):
    ts = timeserver("--source", "local:x2timer", "--no-auto-reset")
    ts.wait(PV.STATE, lambda s: s == "UNKNOWN")
    assert "not available on this host" in ts.get(PV.STATUS)
    # The operator can fix the source while not ON, then RESET.
    ts.put(PV.SOURCE, "internal")
    assert ts.get(PV.SOURCE) == "local:internal"
    ts.put(PV.RESET, 1)
    ts.wait(PV.STATE, lambda s: s == "ON")
    ts.wait(PV.ID, lambda v: v > 0)


def test_operator_start_script_with_instance_config(ca_ports, tmp_path):
    from pathlib import Path

    from trainstamp.testing import Subprocess, free_port, random_prefix

    script = Path(__file__).parents[3] / "iocs" / "timeserver" / "st.sh"
    conf = tmp_path / "site.conf"
    prefix = random_prefix("TSST")
    conf.write_text(f"TS_PREFIX={prefix}\nTS_SOURCE=internal\nTS_PERIOD_MS=50\n"
                    f"TS_BROADCAST_PORT={free_port()}\nTS_AUTO_RESET=no\n"
                    "TS_INTERFACES=127.0.0.1\n")
    port = ca_ports.next_port()
    env = ca_ports.env(server_port=port)
    env["TS_PERIOD_MS"] = "40"  # the environment wins over the file
    with Subprocess([str(script), str(conf)], env=env, python_module=False,
                    ready=lambda: read(prefix + PV.STATE, timeout=0.5)) as proc:
        assert "--period 40 " in proc.output() and "--no-auto-reset" in proc.output()
        assert read(prefix + PV.PERIOD_SET, timeout=2).data[0] == 40.0
