"""Every public plan passes bluesky-queueserver's validation, with devices by name.

The queue server describes each plan from its signature, validates a queued item's
arguments against the annotations (a pydantic model built from them) and turns device
names into the devices of its namespace. This runs those same functions
(``bluesky_queueserver.manager.profile_ops``) on a namespace like the worker's: the
plans of :mod:`trainstamp.plans`, the real device classes with fake signals (no IOC, no
network), and the profile's user-group permissions.
"""

from __future__ import annotations

import inspect

import pytest
from bluesky_queueserver.manager import profile_ops
from ophyd.sim import SynAxis, make_fake_device

import trainstamp.plans
from trainstamp.detector import Team1k
from trainstamp.session import default_profile_dir
from trainstamp.tagger import TimeTagger
from trainstamp.timing.device import TimeServer

PERMISSIONS = default_profile_dir() / "startup" / "user_group_permissions.yaml"
GROUP = "primary"

#: One queue item per public plan, as an operator types it: devices by their names.
ITEMS = {
    "train_count": (
        [["det", "tagger"], 3], {"timeserver": "timeserver", "md": {"sample": "A"}}),
    "train_scan": (
        [["det"], "axis", 0, 1.5, 3], {"trains_per_point": 2, "timeserver": "timeserver"}),
    "train_fly": (
        [["det"], 5], {"timeserver": "timeserver", "tagger": "tagger", "click_channel": 1,
                       "ticks_from": "broadcaster"}),
    "g2_delay_scan": (
        ["tagger", 3, -500, 500, 3], {"timeserver": "timeserver", "n_bins": 100}),
    "wait_for_train": (["timeserver"], {"wait": True}),
    "one_train": ([["det"], "timeserver"], {"stream_name": "primary"}),
    "arm_train": ([["det", "tagger"], 1_000_000], {}),
}


@pytest.fixture(scope="module")
def worker():
    """The worker's namespace and the allowed plans and devices of the profile's groups."""
    ns = {name: getattr(trainstamp.plans, name) for name in trainstamp.plans.__all__}
    ns.update(
        timeserver=make_fake_device(TimeServer)("TS:", name="timeserver"),
        det=make_fake_device(Team1k)("TEAM1K:", name="det"),
        tagger=make_fake_device(TimeTagger)("TT:", name="tagger"),
        axis=SynAxis(name="axis"),
    )
    existing_plans, existing_devices, plans, devices = (
        profile_ops.existing_plans_and_devices_from_nspace(nspace=ns))
    allowed_plans, allowed_devices = profile_ops.load_allowed_plans_and_devices(
        existing_plans=existing_plans, existing_devices=existing_devices,
        path_user_group_permissions=str(PERMISSIONS))
    return ns, plans, devices, allowed_plans[GROUP], allowed_devices[GROUP]


def test_every_public_plan_has_a_queue_item_here(worker):
    ns, plans, *_ = worker
    public = {name for name in trainstamp.plans.__all__ if name in plans}
    assert public - {"stamp_wrapper"} == set(ITEMS)


@pytest.mark.parametrize("name", sorted(ITEMS))
def test_plan_validates_and_gets_its_devices(worker, name):
    ns, plans, devices, allowed_plans, allowed_devices = worker
    args, kwargs = ITEMS[name]
    item = {"name": name, "args": args, "kwargs": kwargs, "user_group": GROUP}
    ok, message = profile_ops.validate_plan(item, allowed_plans=allowed_plans,
                                            allowed_devices=allowed_devices)
    assert ok, message
    prepared = profile_ops.prepare_plan(
        item, plans_in_nspace=plans, devices_in_nspace=devices,
        allowed_plans={GROUP: allowed_plans}, allowed_devices={GROUP: allowed_devices},
        nspace=ns)
    assert prepared["callable"] is ns[name]

    def objects(value):
        """The value with every device name the item gave replaced by its device."""
        if isinstance(value, list):
            return [objects(v) for v in value]
        if isinstance(value, dict):
            return {k: objects(v) for k, v in value.items()}
        return ns[value] if isinstance(value, str) and value in devices else value

    signature = inspect.signature(ns[name])
    got = signature.bind(*prepared["args"], **prepared["kwargs"]).arguments
    assert got == signature.bind(*objects(args), **objects(kwargs)).arguments
    if name != "arm_train":  # the one stub that takes no TimeServer
        assert got["timeserver"] is ns["timeserver"]


@pytest.mark.parametrize(("args", "kwargs", "message"), [
    ([["det"], "three"], {"timeserver": "timeserver"}, "num_trains"),
    ([["det"], 3, 4], {"timeserver": "timeserver"}, "too many positional arguments"),
    ([["det"], 3], {}, "missing a required argument: 'timeserver'"),
    ([["det"], 3], {"timeserver": "timeserver", "md": "sample A"}, "md"),
    ([["det"], 3], {"timeserver": "timeserver", "num_train": 4}, "num_train"),
])
def test_a_bad_item_is_refused_before_it_is_queued(worker, args, kwargs, message):
    _, _, _, allowed_plans, allowed_devices = worker
    item = {"name": "train_count", "args": args, "kwargs": kwargs, "user_group": GROUP}
    ok, text = profile_ops.validate_plan(item, allowed_plans=allowed_plans,
                                         allowed_devices=allowed_devices)
    assert not ok
    assert message in text


def test_stamp_wrapper_is_not_a_plan_to_queue(worker):
    _, plans, _, allowed_plans, _ = worker
    assert "stamp_wrapper" in plans and "stamp_wrapper" not in allowed_plans
