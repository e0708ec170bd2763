"""The pure timing core: ticks, interpolation, averaging, discontinuities, P-loop, FSM."""

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trainstamp.timing import (
    AS_PER_NS,
    MAX_TRAIN_ID,
    PeriodAverager,
    PeriodLoop,
    Stamp,
    StampStatus,
    State,
    Tick,
    TickBuilder,
    TimerModel,
    check_period_ms,
    first_internal_id,
    interpolate_train_id,
    parse_source,
)
from trainstamp.timing._core import parse_tcp_uri

T0 = 1_795_000_000_123_456_789  # a UNIX time in ns
P = 100_000_000  # 100 ms in ns
TICK = Tick.from_ns(1000, T0, 100_000)


# --- Tick ------------------------------------------------------------------------------

def test_tick_from_ns_splits_seconds_and_attoseconds():
    assert TICK.sec == 1_795_000_000
    assert TICK.frac_as == 123_456_789 * AS_PER_NS
    assert TICK.t_ns == T0
    assert TICK.period_ns == P


@given(st.integers(0, MAX_TRAIN_ID), st.integers(0, 2**62), st.integers(0, 2**40))
def test_tick_ns_round_trip(train_id, t_ns, period_us):
    tick = Tick.from_ns(train_id, t_ns, period_us)
    assert tick.t_ns == t_ns and 0 <= tick.frac_as < 10**18


@given(st.integers(0, 10**9 - 1))
def test_ns_fraction_in_attoseconds_is_exact_as_double(ns):
    # FRAC is published as a CA DOUBLE: exact for every whole-ns fraction.
    frac_as = ns * AS_PER_NS
    assert int(float(frac_as)) == frac_as


@pytest.mark.parametrize("kwargs,match", [
    (dict(train_id=-1, sec=0, frac_as=0, period_us=0), "train_id -1"),
    (dict(train_id=2**64, sec=0, frac_as=0, period_us=0), "train_id"),
    (dict(train_id=0, sec=-1, frac_as=0, period_us=0), "sec -1"),
    (dict(train_id=0, sec=0, frac_as=10**18, period_us=0), "frac_as"),
    (dict(train_id=0, sec=0, frac_as=0, period_us=-5), "period_us -5"),
])
def test_tick_refuses_out_of_range_fields(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Tick(**kwargs)


# --- interpolation ---------------------------------------------------------------------

@pytest.mark.parametrize("dt,expected", [
    (0, 1000), (1, 1000), (P - 1, 1000), (P, 1001), (2 * P + 5, 1002),
    (-1, 999), (-P, 999), (-P - 1, 998), (-3 * P, 997),
])
def test_interpolation_after_and_before_the_tick(dt, expected):
    assert interpolate_train_id(TICK, T0 + dt) == Stamp(expected, StampStatus.OK)


def test_stale_after_missed_periods():
    assert interpolate_train_id(TICK, T0 + 3 * P - 1).status == StampStatus.OK
    assert interpolate_train_id(TICK, T0 + 3 * P) == Stamp(1003, StampStatus.STALE)
    assert interpolate_train_id(TICK, T0 + 5 * P - 1, stale_after=5).status == StampStatus.OK
    assert interpolate_train_id(TICK, T0 - 3 * P).status == StampStatus.OK
    assert interpolate_train_id(TICK, T0 - 3 * P - 1) == Stamp(996, StampStatus.STALE)


def test_invalid_before_the_first_tick_never_zero():
    stamp = interpolate_train_id(None, T0)
    assert stamp.train_id is None and stamp.status == StampStatus.INVALID


def test_invalid_when_interpolating_below_zero():
    tick = Tick.from_ns(1, T0, 100_000)
    assert interpolate_train_id(tick, T0 - P).train_id == 0
    assert interpolate_train_id(tick, T0 - P - 1).status == StampStatus.INVALID


def test_unknown_period_returns_last_id():
    tick = Tick.from_ns(7, T0, 0)
    assert interpolate_train_id(tick, T0 + 10 * P) == Stamp(7, StampStatus.OK)


def test_stale_after_must_be_positive():
    with pytest.raises(ValueError, match="stale_after 0"):
        interpolate_train_id(TICK, T0, stale_after=0)


@given(st.integers(-(10**12), 10**12), st.integers(1, 10**10))
def test_interpolation_matches_floor_formula(dt, period_ns):
    tick = Tick.from_ns(10**13, T0, 0)
    tick = Tick(tick.train_id, tick.sec, tick.frac_as, period_ns // 1000 or 1)
    stamp = interpolate_train_id(tick, T0 + dt)
    assert stamp.train_id == tick.train_id + dt // tick.period_ns
    assert stamp.status != StampStatus.INVALID


@given(st.integers(-(10**11), 10**11))
def test_interpolation_is_monotonic_in_time(dt):
    a = interpolate_train_id(TICK, T0 + dt).train_id
    b = interpolate_train_id(TICK, T0 + dt + 1).train_id
    assert b - a in (0, 1)


# --- averaging and discontinuities -----------------------------------------------------

def test_averager_mean_over_last_n():
    avg = PeriodAverager(3)
    assert avg.period_us == 0 and avg.period_ms == 0.0 and avg.mean_ns is None
    for interval in (100_000_000, 100_000_000, 100_000_000, 200_000_000):
        avg.add(interval)
    assert len(avg) == 3
    assert avg.mean_ns == pytest.approx(400_000_000 / 3)
    assert avg.period_us == 133_333
    assert avg.period_ms == pytest.approx(133.333333)


def test_builder_averages_last_100_changes():
    b = TickBuilder()
    t = T0
    for i in range(150):
        t += 100_000_000 if i < 50 else 50_000_000
        b.on_id(i, t)
    # 100 intervals of 50 ms remain in the window
    assert b.averager.period_us == 50_000
    assert b.last.period_us == 50_000


def test_builder_uses_nominal_period_until_measured():
    b = TickBuilder(nominal_period_us=100_000)
    assert b.on_id(5, T0).period_us == 100_000
    assert b.on_id(6, T0 + 90_000_000).period_us == 90_000


def test_repeated_id_is_not_a_change():
    b = TickBuilder()
    assert b.on_id(5, T0) is not None
    assert b.on_id(5, T0 + 10) is None
    assert b.last.t_ns == T0 and b.discontinuities == 0


@pytest.mark.parametrize("jump_to", [0, 3, 12, 10**9])
def test_discontinuity_re_anchors_and_counts(jump_to):
    b = TickBuilder()
    b.on_id(5, T0)
    b.on_id(6, T0 + P)
    tick = b.on_id(jump_to, T0 + 2 * P)
    assert b.discontinuities == 1
    assert tick.train_id == jump_to and b.last == tick
    assert len(b.averager) == 1  # the jump's interval is not averaged
    b.on_id(jump_to + 1, T0 + 3 * P)
    assert b.discontinuities == 1 and len(b.averager) == 2
    assert interpolate_train_id(b.last, T0 + 4 * P).train_id == jump_to + 2


# --- P-type loop -----------------------------------------------------------------------

def test_p_loop_converges_geometrically_and_snaps():
    loop = PeriodLoop(100.0, gain=0.2)
    assert loop.step() == 100_000_000
    loop.set(200.0)
    steps = [loop.step() for _ in range(200)]
    assert steps[0] == 120_000_000  # immediate effect: 20 % of the step at once
    err = [200_000_000 - s for s in steps]
    assert err[10] == pytest.approx(100e6 * 0.8**11, rel=1e-6)  # 90 % after 11 ticks
    assert steps[-1] == 200_000_000 and steps[-50:] == [200_000_000] * 50


def test_p_loop_refuses_bad_gain():
    with pytest.raises(ValueError, match="gain 0"):
        PeriodLoop(100.0, gain=0)


@pytest.mark.parametrize("value", [0, -1, float("nan"), float("inf"), 1e9, 0.5, "abc", None])
def test_period_setpoint_refused(value):
    with pytest.raises(ValueError, match=re.escape(repr(value))):
        check_period_ms(value)


def test_first_internal_id_never_reused_across_restarts():
    # Run 1 starts at wall time w1 and ticks at the fastest allowed period (1 ms)
    # for 10 s; run 2 starts right after. Its first ID is above all of run 1's.
    w1 = T0
    last_of_run1 = first_internal_id(w1) + 10_000
    assert first_internal_id(w1 + 10_000 * 1_000_000 + 1_000_000) > last_of_run1
    assert first_internal_id(T0) < 2**53


# --- source URIs -----------------------------------------------------------------------

@pytest.mark.parametrize("uri,scheme,target", [
    ("internal", "local", "internal"),
    ("x2timer", "local", "x2timer"),
    ("local:internal", "local", "internal"),
    ("LOCAL:x2timer", "local", "x2timer"),
    ("tcp://127.0.0.1:5055", "tcp", "127.0.0.1:5055"),
    ("tcp://timing.example.org:1234/", "tcp", "timing.example.org:1234"),
    ("ca://EVR:PULSEID", "ca", "EVR:PULSEID"),
    ("ca://X:Y.VAL", "ca", "X:Y.VAL"),
])
def test_parse_source(uri, scheme, target):
    src = parse_source(uri)
    assert (src.scheme, src.target) == (scheme, target)
    assert parse_source(src.uri) == src


@pytest.mark.parametrize("uri,match", [
    ("", "empty source"),
    ("   ", "empty source"),
    ("http://x", "unknown source scheme 'http'"),
    ("foo:bar", "unknown source scheme 'foo'"),
    ("local:nonsense", "unknown local source 'nonsense'"),
    ("tcp://host", "expected tcp://host:port"),
    ("tcp://:5000", "expected tcp://host:port"),
    ("tcp://host:99999", "bad port '99999'"),
    ("tcp://host:abc", "bad port 'abc'"),
    ("tcp:host:5", "expected tcp://host:port"),
    ("ca://", "expected ca://PVNAME"),
    ("ca:PV", "expected ca://PVNAME"),
    ("ca://A B", "whitespace"),
    ("ca://A\"B", "contains"),
    ("local:internal\n", "local:internal"),  # surrounding whitespace is stripped
    ("x" * 300, "limit 255"),
])
def test_parse_source_refuses(uri, match):
    if uri == "local:internal\n":
        assert parse_source(uri).uri == "local:internal"
        return
    with pytest.raises(ValueError, match=re.escape(match)):
        parse_source(uri)


def test_parse_tcp_uri_ipv6():
    assert parse_tcp_uri("tcp://[::1]:5055") == ("::1", 5055)


@given(st.text(max_size=60))
def test_parse_source_only_raises_value_error(text):
    try:
        src = parse_source(text)
    except ValueError:
        return
    assert src.scheme in ("local", "tcp", "ca")


# --- state machine ---------------------------------------------------------------------

def test_state_machine_init_on_unknown_reset():
    m = TimerModel("internal", 100.0)
    assert m.state == State.INIT
    assert m.on_id(1, T0) is None  # not ON: ignored
    m.initialized()
    assert m.state == State.ON
    assert m.on_id(1, T0).train_id == 1
    m.error("boom")
    assert (m.state, m.status) == (State.UNKNOWN, "boom")
    with pytest.raises(ValueError, match="cannot go ON from UNKNOWN"):
        m.initialized()
    m.reset()
    assert m.state == State.INIT and m.last is None
    assert m.interpolate(T0).status == StampStatus.INVALID


def test_source_only_changes_before_initialization():
    m = TimerModel("local:internal")
    m.set_source("tcp://h:1")  # INIT: allowed
    m.initialized()
    with pytest.raises(ValueError, match="only be changed before initialization"):
        m.set_source("local:internal")
    assert m.source.uri == "tcp://h:1"
    m.error("lost")
    m.set_source("local:internal")  # UNKNOWN: allowed, takes effect on reset
    assert m.source.uri == "local:internal"


def test_bad_messages_counted_with_reason():
    m = TimerModel()
    m.on_bad_message("empty message")
    m.on_bad_message("12abc")
    assert m.bad_messages == 2 and "12abc" in m.status


def test_set_period_updates_nominal():
    m = TimerModel(period_ms=100.0)
    m.set_period(50.0)
    assert m.period.setpoint_ms == 50.0 and m.ticks.nominal_period_us == 50_000
    with pytest.raises(ValueError, match="nan"):
        m.set_period(float("nan"))


def test_nominal_period_only_for_the_internal_source():
    m = TimerModel("tcp://h:1", 100.0)
    m.initialized()
    assert m.on_id(10, T0).period_us == 0  # unknown until two consecutive IDs
    assert m.on_id(11, T0 + 80_000_000).period_us == 80_000
    m = TimerModel("internal", 100.0)
    m.initialized()
    assert m.on_id(10, T0).period_us == 100_000
