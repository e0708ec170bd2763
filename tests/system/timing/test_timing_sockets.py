"""Where the TimeServer IOC listens: what docs/timing.md#sockets says, checked.

The sockets of the IOC process are read from /proc (Linux): every TCP socket in
LISTEN and every unconnected UDP socket, with its local address.

The PV Access server (p4p's pvxs) listens for TCP on the interfaces it is given, but
binds its UDP sockets to the wildcard by design (to receive unicast, broadcast and
multicast searches on every platform) and answers only searches sent to its
interfaces; :func:`split_pva` sets those apart.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from caproto.sync.client import read

from trainstamp.testing import PVAPorts, Subprocess, free_port, random_prefix
from trainstamp.testing._ca import ephemeral_range
from trainstamp.timing import PV

pytestmark = pytest.mark.system

_TCP_LISTEN = "0A"
_UDP_UNCONNECTED = "07"


def _addr(hex_addr: str) -> tuple[str, int]:
    ip_hex, port_hex = hex_addr.split(":")
    ip = ".".join(str(int(ip_hex[i:i + 2], 16)) for i in (6, 4, 2, 0))
    return ip, int(port_hex, 16)


def bound_sockets(pid: int) -> set[tuple[str, str, int]]:
    """``{("tcp" | "udp", ip, port)}``: listening TCP and unconnected UDP sockets of
    ``pid`` and its children."""
    pids = {pid}
    children = Path(f"/proc/{pid}/task/{pid}/children")
    if children.exists():
        pids |= {int(p) for p in children.read_text().split()}
    inodes = set()
    for p in pids:
        for fd in Path(f"/proc/{p}/fd").iterdir():
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    found = set()
    for kind, wanted in (("tcp", _TCP_LISTEN), ("udp", _UDP_UNCONNECTED)):
        for line in Path(f"/proc/net/{kind}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[9] in inodes and fields[3] == wanted:
                found.add((kind, *_addr(fields[1])))
    return found


def split_pva(sockets, pva: PVAPorts):
    """(the PVA server's sockets, the rest); checks the PVA server listens for TCP on
    loopback only. Its UDP sockets: searches on the wildcard at the broadcast port, and
    one bound to an ephemeral port for sending beacons (no CA socket is either)."""
    low, high = ephemeral_range()
    mine = {s for s in sockets if s == ("tcp", "127.0.0.1", pva.server_port)
            or s == ("udp", "0.0.0.0", pva.broadcast_port)
            or (s[0] == "udp" and s[1] == "0.0.0.0" and low <= s[2] <= high)}
    assert ("tcp", "127.0.0.1", pva.server_port) in mine, sockets
    assert ("udp", "0.0.0.0", pva.broadcast_port) in mine, sockets
    assert not {s for s in sockets if s[0] == "tcp" and s[2] == pva.server_port} - mine
    return mine, sockets - mine


def test_ioc_with_interfaces_binds_only_loopback_and_broadcasts_on_loopback(timeserver):
    pva = PVAPorts()
    # --interfaces 127.0.0.1; the broadcaster's bind left at its default
    ts = timeserver(env=pva.server_env())
    ts.wait(PV.STATE, lambda s: s == "ON")
    _, sockets = split_pva(bound_sockets(ts.proc.proc.pid), pva)
    assert ("tcp", "127.0.0.1", ts.broadcast_port) in sockets  # loopback by default
    assert ("udp", "127.0.0.1", ts.proc.port) in sockets  # CA searches
    assert {ip for _, ip, _ in sockets} == {"127.0.0.1"}, sockets


def _env_without_interfaces(ca_ports, port, pva: PVAPorts):
    env = ca_ports.env(server_port=port)
    env.pop("EPICS_CAS_INTF_ADDR_LIST", None)
    env.update(pva.server_env())
    return env


def test_standalone_ioc_binds_ca_to_every_interface_by_caprotos_default(ca_ports):
    prefix = random_prefix("TSS")
    port = ca_ports.next_port()
    argv = ["ioc", "timeserver", "--prefix", prefix, "--broadcast-port", str(free_port())]
    pva = PVAPorts()
    with Subprocess(argv, env=_env_without_interfaces(ca_ports, port, pva),
                    ready=lambda: read(prefix + PV.STATE, timeout=0.5)) as proc:
        _, sockets = split_pva(bound_sockets(proc.proc.pid), pva)
    assert ("udp", "0.0.0.0", port) in sockets and ("tcp", "0.0.0.0", port) in sockets
    assert {ip for kind, ip, p in sockets if p != port} == {"127.0.0.1"}  # broadcaster


def test_shipped_instance_config_names_the_ca_interfaces(ca_ports):
    script = Path(__file__).parents[3] / "iocs" / "timeserver" / "st.sh"
    conf = script.with_name("timeserver.conf")
    text = conf.read_text()
    assert "\nTS_INTERFACES=127.0.0.1" in text and "\nTS_BROADCAST_BIND=127.0.0.1" in text
    prefix = random_prefix("TSC")
    port = ca_ports.next_port()
    pva = PVAPorts()
    env = _env_without_interfaces(ca_ports, port, pva)
    env.update(TS_PREFIX=prefix, TS_BROADCAST_PORT=str(free_port()))  # not the defaults
    with Subprocess([str(script), str(conf)], env=env, python_module=False,
                    ready=lambda: read(prefix + PV.STATE, timeout=0.5)) as proc:
        assert "--interfaces 127.0.0.1" in proc.output()
        assert "--missed-periods 3" in proc.output()
        _, sockets = split_pva(bound_sockets(proc.proc.pid), pva)
    assert ("udp", "127.0.0.1", port) in sockets
    assert {ip for _, ip, _ in sockets} == {"127.0.0.1"}, sockets
