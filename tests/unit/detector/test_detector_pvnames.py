"""The IOC serves team1k's PV table exactly, and every PV the device uses."""

from trainstamp.detector import _pvnames as PV
from trainstamp.detector._ioc import Team1kIOC
from trainstamp.detector.device import Team1k


def ioc_suffixes(prefix="T1:"):
    ioc = Team1kIOC(prefix=prefix, server=None)
    return {name[len(prefix):] for name in ioc.pvdb}


def test_seed_pv_table_is_served():
    assert set(PV.SEED_PVS) <= ioc_suffixes()
    assert len(PV.SEED_PVS) == 21


def test_device_pvs_are_all_served():
    served = ioc_suffixes()
    used = set()
    for cpt in Team1k._sig_attrs.values():
        if cpt.suffix is not None and cpt.cls.__name__.startswith("Epics"):
            used.add(cpt.suffix)
            if "write_pv" in cpt.kwargs:
                used.add(cpt.kwargs["write_pv"])
    assert used and used <= served, used - served


def test_added_pvs():
    served = ioc_suffixes()
    assert set(PV.RX_COUNTERS) <= served
    for suffix in (PV.CAPTURE_DIR, PV.CAPTURE_NAME, PV.CAPTURE_FULL_PATH, PV.LAST_TRAIN_ID,
                   PV.LAST_FRAME_NUMBER, PV.BELLOW_INSERT, PV.BELLOW_POSITION, PV.POWER_ON,
                   PV.POWER_STATUS, PV.RX_RCVBUF, PV.REG_TIMEOUTS, PV.REG_STRAY, PV.ERR_BAD_PUTS):
        assert suffix in served


def test_commands_are_writable_and_status_read_only():
    ioc = Team1kIOC(prefix="T1:", server=None)
    for suffix in PV.SEED_PVS:
        read_only = type(ioc.pvdb["T1:" + suffix]).__name__.endswith("RO")
        assert read_only == (not suffix.startswith("CMD:")), suffix


def test_device_errors_say_something_and_name_the_device():
    from trainstamp.detector.device import _reason

    assert "connection lost" in _reason(KeyError("response"))
    assert _reason(TimeoutError()) == "TimeoutError"
    assert _reason(ValueError("bad")) == "ValueError: bad"


def test_whole_number_check_refuses_what_caproto_would_truncate():
    import pytest

    from trainstamp.detector._caputil import check_switch, check_whole

    for bad in (1.5, float("nan"), float("inf"), "abc", "1.5", 2.0**31, b"x"):
        with pytest.raises(ValueError, match="not a whole number"):
            check_whole("CMD:EXPOSURE_MODE", bad)
    assert check_whole("X", 3.0) == 3 and check_whole("X", "0x10") == 16 and check_whole("X", b"7\0") == 7
    with pytest.raises(ValueError, match="must be 1 or 0"):
        check_switch("CMD:RESET", 2)
