"""The helpers every test and ``trainstamp up`` rely on: deadlines, ports, CA environment."""

from __future__ import annotations

import socket

import pytest

from trainstamp._ca_env import ca_client_env, ca_server_env
from trainstamp._readiness import free_ports, tcp_ready
from trainstamp._wait import wait_until
from trainstamp.testing import ca_env, free_port


def test_wait_until_returns_the_first_truthy_value():
    values = iter([0, None, "", 7])
    assert wait_until(lambda: next(values), timeout=5, interval=0) == 7


def test_wait_until_names_what_it_waited_for_and_chains_the_last_error():
    def never():
        raise ConnectionRefusedError("not up yet")

    with pytest.raises(TimeoutError, match="waiting for the IOC") as info:
        wait_until(never, timeout=0.05, interval=0.01, message=lambda: "the IOC")
    assert isinstance(info.value.__cause__, ConnectionRefusedError)


def test_wait_until_with_no_time_asks_once():
    calls = []
    with pytest.raises(TimeoutError):
        wait_until(lambda: calls.append(1), timeout=0)
    assert calls == [1]


@pytest.mark.parametrize("kind", ["tcp", "udp", "both"])
def test_free_ports_are_distinct_and_bindable(kind):
    ports = free_ports(5, kind=kind)
    assert len(set(ports)) == 5
    types = {"tcp": [socket.SOCK_STREAM], "udp": [socket.SOCK_DGRAM],
             "both": [socket.SOCK_STREAM, socket.SOCK_DGRAM]}[kind]
    for port in ports:
        for sock_type in types:
            with socket.socket(socket.AF_INET, sock_type) as sock:
                sock.bind(("127.0.0.1", port))
    assert isinstance(free_port("both"), int)
    with pytest.raises(ValueError, match="kind must be"):
        free_ports(1, kind="sctp")


def test_tcp_ready_is_not_ready_until_something_listens():
    port = free_ports(1, kind="tcp")[0]
    check = tcp_ready("127.0.0.1", port)
    with pytest.raises(OSError):
        check()
    with socket.socket() as server:
        server.bind(("127.0.0.1", port))
        server.listen()
        assert check() is True


def test_client_env_searches_exactly_the_endpoints_given():
    env = ca_client_env(["127.0.0.1:5064", "10.0.0.2:5070", "127.0.0.1:5064"])
    assert env == {"EPICS_CA_AUTO_ADDR_LIST": "NO",
                   "EPICS_CA_ADDR_LIST": "127.0.0.1:5064 10.0.0.2:5070"}


def test_server_env_serves_one_interface_and_beacons_there_only():
    assert ca_server_env("127.0.0.1") == {"EPICS_CAS_INTF_ADDR_LIST": "127.0.0.1",
                                          "EPICS_CAS_AUTO_BEACON_ADDR_LIST": "NO",
                                          "EPICS_CAS_BEACON_ADDR_LIST": "127.0.0.1"}
    assert ca_server_env("10.0.0.2", 5070)["EPICS_CA_SERVER_PORT"] == "5070"


def test_test_env_is_confined_to_loopback_and_keeps_the_control_layer():
    env = ca_env([5100, 5101], repeater_port=5102, base={"OPHYD_CONTROL_LAYER": "pyepics",
                                                          "EPICS_CA_SERVER_PORT": "9"})
    assert env["EPICS_CA_ADDR_LIST"] == "127.0.0.1:5100 127.0.0.1:5101"
    assert env["EPICS_CA_AUTO_ADDR_LIST"] == "NO"
    assert env["EPICS_CAS_INTF_ADDR_LIST"] == "127.0.0.1"
    assert env["EPICS_CA_REPEATER_PORT"] == env["EPICS_CAS_BEACON_PORT"] == "5102"
    assert env["OPHYD_CONTROL_LAYER"] == "pyepics"
    assert env["EPICS_CA_SERVER_PORT"] == "9"  # no server port given: the base's stays
    assert ca_env([5100], base={}, server_port=5100)["EPICS_CA_SERVER_PORT"] == "5100"
    assert ca_env([5100], base={})["OPHYD_CONTROL_LAYER"] == "caproto"
