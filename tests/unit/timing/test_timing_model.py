"""The pure TimeServer model: faults, STATUS truth, the missed-period rule, anchors."""

import pytest

from trainstamp.timing import Fault, RateLimit, State, TimerModel, check_missed_periods
from trainstamp.timing._model import MAX_EXACT_ID

T0 = 1_795_000_000_123_456_789
P = 100_000_000  # 100 ms in ns


def on(model: TimerModel) -> TimerModel:
    model.opening()
    model.initialized()
    return model


def test_fault_is_udf_until_the_first_tick_then_none_then_what_failed():
    m = TimerModel("tcp://h:1", 100.0)
    assert m.fault is Fault.UDF
    on(m)
    assert m.fault is Fault.UDF  # ON, but no tick yet
    m.on_id(10, T0)
    assert m.fault is Fault.NONE
    m.error("silent", Fault.TIMEOUT)
    assert (m.state, m.fault) == (State.UNKNOWN, Fault.TIMEOUT)
    m.reset(automatic=True)
    assert m.fault is Fault.TIMEOUT  # still no valid ID until the next tick
    on(m)
    assert m.fault is Fault.TIMEOUT
    m.on_id(20, T0 + 10 * P)
    assert m.fault is Fault.NONE
    m.reset()  # the operator's RESET
    assert m.fault is Fault.UDF
    with pytest.raises(ValueError, match="needs a fault"):
        m.error("x", Fault.NONE)


def test_auto_reset_counts_the_jump_across_the_outage_operator_reset_does_not():
    m = on(TimerModel("tcp://h:1"))
    m.on_id(100, T0)
    m.on_id(101, T0 + P)
    m.error("lost")
    m.reset(automatic=True)
    on(m)
    assert m.on_id(101, T0 + 5 * P) is None  # the ID in force before: not a new train
    assert m.on_id(107, T0 + 7 * P).train_id == 107
    assert m.discontinuities == 1
    m.error("lost")
    m.reset(automatic=True)
    on(m)
    m.on_id(108, T0 + 8 * P)  # the very next ID: no jump
    assert m.discontinuities == 1
    m.reset()
    on(m)
    m.on_id(5000, T0 + 9 * P)  # the operator's reset re-anchors without counting
    assert m.discontinuities == 1


def test_zero_is_never_a_tick_and_counts_as_a_bad_message():
    m = on(TimerModel("tcp://h:1"))
    assert m.on_id(0, T0) is None
    assert m.bad_messages == 1 and m.last is None and m.fault is Fault.UDF
    assert "train ID 0" in m.status


def test_source_refused_while_initializing_and_on():
    m = TimerModel("tcp://h:1")
    m.set_source("tcp://h:2")  # INIT before opening: nothing uses the source yet
    assert m.opening().uri == "tcp://h:2"
    with pytest.raises(ValueError, match="state is INIT .* being initialized"):
        m.set_source("local:internal")
    m.initialized()
    with pytest.raises(ValueError, match="state is ON .* in use"):
        m.set_source("local:internal")
    m.error("lost")
    assert m.set_source("local:internal").uri == "local:internal"
    assert m.source.uri == "local:internal"


def test_status_says_the_current_truth():
    m = on(TimerModel("local:internal"))
    assert m.status == "ON from local:internal"
    m.refused("PERIOD_SET refused: period -1.0 ms outside 1..60000 ms")
    assert m.status == ("PERIOD_SET refused: period -1.0 ms outside 1..60000 ms; "
                        "ON from local:internal")
    m.accepted()  # a later good put: the refusal is old news
    assert m.status == "ON from local:internal"
    m.refused("SOURCE refused: ...")
    m.error("local:internal: source stopped")  # a new state: the refusal is old news too
    assert m.status == "local:internal: source stopped"
    m.reset()
    on(m)
    m.on_bad_message("12abc")
    assert m.status == "ON from local:internal; bad message #1: 12abc"
    m.on_id(MAX_EXACT_ID + 1, T0)
    assert "above 2**53" in m.status
    m.on_id(MAX_EXACT_ID + 2, T0 + P)
    m.reset()
    on(m)
    m.on_id(7, T0 + 2 * P)
    assert m.status == "ON from local:internal"  # exact again; bad message text gone


def test_missed_period_limit_uses_the_larger_of_setpoint_and_measured():
    m = on(TimerModel("tcp://h:1", 100.0, missed_periods=3))
    assert not m.measured and m.silence_limit_ns() == 3 * P  # PERIOD_SET alone
    assert "PERIOD_SET, nothing measured yet" in m.silence_message(3 * P)
    m.on_id(1, T0)
    m.on_id(2, T0 + 2 * P)  # the source runs at 200 ms
    assert m.measured and m.silence_limit_ns() == 6 * P
    m.set_period(500.0)  # a larger setpoint wins at once
    assert m.silence_limit_ns() == 15 * P
    m.set_missed_periods(10)
    assert m.silence_limit_ns() == 50 * P
    assert "10 missed periods of 500 ms, measured" in m.silence_message(50 * P)
    assert m.pause_ns() == 125_000_000  # a quarter of PERIOD_SET


@pytest.mark.parametrize("value", [0, -1, 1001, 1.5, float("nan"), float("inf"), "x", True])
def test_missed_periods_refused(value):
    with pytest.raises(ValueError, match="missed periods"):
        check_missed_periods(value)


@pytest.mark.parametrize("value,expected", [(1, 1), (3.0, 3), ("7", 7), (1000, 1000)])
def test_missed_periods_accepted(value, expected):
    assert check_missed_periods(value) == expected


def test_rate_limit_logs_a_burst_then_one_summary_per_interval():
    limit = RateLimit(burst=3, interval_ns=10)
    logged = [limit.hit(t) for t in range(0, 9)]  # 9 events in one interval
    assert logged == [True] * 3 + [False] * 6
    assert limit.summary(9) == 0  # the interval is not over yet
    assert limit.summary(10) == 6 and limit.summary(11) == 0
    assert limit.hit(10) is True  # a new interval: a new burst
    for t in range(11, 15):
        limit.hit(t)
    assert limit.summary(15, force=True) == 2
    with pytest.raises(ValueError):
        RateLimit(burst=0)
