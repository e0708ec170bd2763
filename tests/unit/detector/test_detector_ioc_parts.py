"""The detector IOC's parts, in process (no server, no sockets): PV names, the shared
0/1 putter, and the polls' guard."""

import asyncio
import logging
import re

import pytest

from trainstamp.detector import _pvnames as PV
from trainstamp.detector._ioc import Team1kIOC, preview_due
from trainstamp.detector._ioc._base import polled

PREFIX = "P1:"


def make_ioc():
    return Team1kIOC(prefix=PREFIX, server=None)


def test_every_pv_name_comes_from_the_constants_module():
    names = {v for k, v in vars(PV).items() if k.isupper() and isinstance(v, str)}
    names |= set(PV.RX_COUNTERS)
    served = {name[len(PREFIX):] for name in make_ioc().pvdb}
    assert served <= names, served - names
    assert len(served) == 85  # 80, DATA:URI, REQUESTS, BAD_REQUESTS, FRAMES_SENT, IMAGE:PVA_PERIOD


def test_each_part_holds_the_pvs_of_its_concern():
    ioc = make_ioc()

    def suffixes(group):
        return {name[len(PREFIX):] for name in group.pvdb}

    assert suffixes(ioc.capture) == {PV.CMD_CAPTURE} | {
        s for s in suffixes(ioc) if s.startswith("CAPTURE:")}
    assert suffixes(ioc.pva_image) == {PV.IMAGE_PVA_PERIOD}
    assert suffixes(ioc.preview) | suffixes(ioc.pva_image) == {
        s for s in suffixes(ioc) if s.split(":")[0] == "IMAGE"}
    assert suffixes(ioc.register_link) == {s for s in suffixes(ioc) if s.startswith("REG:")}
    assert set(PV.RX_COUNTERS) <= suffixes(ioc.receiver)
    assert {s.split(":")[0] for s in suffixes(ioc.bellow)} == {"BELLOW"}
    assert {s.split(":")[0] for s in suffixes(ioc.power)} == {"POWER"}
    assert suffixes(ioc.transfer) == {s for s in suffixes(ioc) if s.startswith("DATA:")}
    assert all(s.startswith("CMD:") or ":" not in s for s in suffixes(ioc.settings))


@pytest.mark.parametrize(("part", "attr", "meaning"), [
    ("settings", "cmd_start_daq", "1 (start) or 0 (stop)"),
    ("settings", "cmd_reset", "1 (reset) or 0"),
    ("settings", "cmd_test_mode", "0 or 1"),
    ("capture", "file_open", "0 or 1"),
    ("capture", "cancel", "1 (cancel) or 0"),
    ("bellow", "insert", "1 (insert) or 0 (retract)"),
    ("power", "on", "1 or 0"),
])
def test_the_switches_share_one_putter_that_refuses_all_but_0_and_1(part, attr, meaning):
    ioc = make_ioc()
    pv = getattr(getattr(ioc, part), attr)
    message = f"{pv.pvspec.name} 2 must be {meaning}"
    with pytest.raises(ValueError, match=re.escape(message)):
        asyncio.run(pv.write(2))
    assert ioc.err_bad_puts.value == 1
    assert ioc.err_message.value == f"ValueError: {message}"
    assert pv.value == 0  # the setpoint kept its value


def test_a_poll_waits_for_the_start_up_and_logs_its_failures(caplog):
    calls = []

    class Part:
        ioc = type("IOC", (), {"started": False})()

        @polled("test poll")
        async def poll(self, instance, async_lib):
            calls.append(instance)
            raise RuntimeError("link down")

    part = Part()
    asyncio.run(part.poll("before", None))
    assert calls == []
    Part.ioc.started = True
    with caplog.at_level(logging.ERROR, logger="trainstamp.detector._ioc"):
        asyncio.run(part.poll("after", None))  # does not raise
    assert calls == ["after"]
    assert "test poll failed" in caplog.text and "link down" in caplog.text


def test_an_image_is_due_only_for_a_new_frame():
    """CA's preview and PVA's IMAGE post only a frame newer than the one shown: never
    before the first frame, and never again while the DAQ is stopped."""
    assert not preview_due(0, 0)  # no frame yet
    assert preview_due(1, 0)
    assert not preview_due(7, 7)  # the DAQ stopped: the head does not move
    assert preview_due(8, 7)
