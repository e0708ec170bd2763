"""The IOC serves exactly the PV suffixes the device shares, with the documented types."""

from caproto import ChannelType

from trainstamp.timing import PV, STATE_STRINGS, State
from trainstamp.timing._ioc import TimeServerIOC


def test_pvdb_matches_the_shared_suffixes():
    ioc = TimeServerIOC(prefix="X:", broadcast_port=0)
    assert set(ioc.pvdb) == {"X:" + suffix for suffix in PV.ALL}
    # MISSED_PERIODS joined the 12 of the seed and CA, then BROADCAST_URI (the endpoint)
    assert len(PV.ALL) == 14


def test_pv_types_keep_64_bit_fields_exact():
    pvdb = TimeServerIOC(prefix="X:", broadcast_port=0).pvdb
    for suffix in (PV.ID, PV.SEC, PV.FRAC, PV.PERIOD, PV.PERIOD_ACTUAL, PV.PERIOD_SET):
        assert pvdb["X:" + suffix].data_type == ChannelType.DOUBLE, suffix
    assert tuple(pvdb["X:" + PV.STATE].enum_strings) == STATE_STRINGS
    assert tuple(s.name for s in State) == STATE_STRINGS
    for suffix in (PV.SOURCE, PV.STATUS):
        assert pvdb["X:" + suffix].data_type == ChannelType.CHAR
        assert pvdb["X:" + suffix].max_length == 256


def test_broadcast_uri_names_a_host_clients_can_reach():
    from trainstamp.timing._ioc import broadcast_uri

    assert broadcast_uri("127.0.0.1", 5055) == "tcp://127.0.0.1:5055"
    assert broadcast_uri("0.0.0.0", 6000).startswith("tcp://")
    assert "0.0.0.0" not in broadcast_uri("0.0.0.0", 6000)  # the host's name instead
    ioc = TimeServerIOC(prefix="X:", broadcast_port=0)  # no broadcaster: nothing to reach
    assert ioc.pvdb["X:" + PV.BROADCAST_URI].value == ""

