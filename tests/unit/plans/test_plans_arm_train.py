"""Arming the devices for a named train: which train, and the messages of a step."""

from __future__ import annotations

import pytest
from bluesky.simulators import RunEngineSimulator, assert_message_and_return_remaining
from ophyd import Component as Cpt
from ophyd import Device, Signal
from ophyd.sim import det1
from plans_fakes import FIRST_ID, tick

from trainstamp.plans import arm_train, one_train
from trainstamp.plans._stubs import next_train_to_arm


class Armable(Device):
    """A device that can start on a named train (as the detector and the tagger can)."""

    start_train = Cpt(Signal, value=0, kind="omitted")
    counts = Cpt(Signal, value=1.0, kind="hinted")

    def train_start_signals(self):
        return [self.start_train]


def test_no_tick_no_train(fake_timeserver):
    assert next_train_to_arm(fake_timeserver) is None


@pytest.mark.parametrize(("period_us", "lead"), [(100_000, 1), (50_000, 1), (20_000, 3),
                                                  (10_000, 5), (1_000_000, 1)])
def test_the_train_armed_is_at_least_50_ms_after_the_tick(fake_timeserver, clock, period_us, lead):
    ts = fake_timeserver
    ts.period.sim_put(period_us)
    tick(ts, FIRST_ID, clock.t_ns)
    assert next_train_to_arm(ts) == FIRST_ID + lead


def test_a_step_arms_the_devices_that_can_before_triggering_them(fake_timeserver, clock):
    ts = fake_timeserver
    tick(ts, FIRST_ID, clock.t_ns)
    dev = Armable(name="dev")
    msgs = RunEngineSimulator().simulate_plan(one_train([dev, det1], ts))
    msgs = assert_message_and_return_remaining(
        msgs, lambda m: m.command == "trigger" and m.obj is ts)
    msgs = assert_message_and_return_remaining(
        msgs, lambda m: m.command == "set" and m.obj is dev.start_train
        and m.args == (FIRST_ID + 1,))
    msgs = assert_message_and_return_remaining(msgs, lambda m: m.command == "wait")
    msgs = assert_message_and_return_remaining(
        msgs, lambda m: m.command == "trigger" and m.obj is dev)
    # a device without train_start_signals is only triggered
    assert not any(m.command == "set" and m.obj is det1 for m in msgs)


def test_arm_train_returns_the_devices_armed():
    dev = Armable(name="dev")
    msgs = RunEngineSimulator().simulate_plan(arm_train([dev, det1], 42))
    sets = [m for m in msgs if m.command == "set"]
    assert [(m.obj, m.args) for m in sets] == [(dev.start_train, (42,))]
    assert list(RunEngineSimulator().simulate_plan(arm_train([det1], 42))) == []
