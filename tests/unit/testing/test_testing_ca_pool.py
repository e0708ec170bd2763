"""The CA port pool: ports no other socket can be handed, and no two sessions share.

Why it matters, shown with caproto itself: a CA client whose search socket sits on one
of the ports it searches gets its own search request back, and caproto's sync client
takes that request for the server's answer (same command, its own cid). The pool's
ports lie outside the ephemeral range, so a socket bound to port 0 is never on one.
"""

import socket

import caproto as ca

from trainstamp.testing import CAPortPool
from trainstamp.testing._ca import ephemeral_range


def test_pool_ports_lie_outside_the_ephemeral_range_and_are_not_shared():
    low, high = ephemeral_range()
    pool = CAPortPool(size=10)
    other = CAPortPool(size=10)  # another session (here: another pool) never shares one
    for port in (*pool.ports, pool.repeater_port):
        assert not low <= port <= high, port
    assert not set(pool.ports) & set(other.ports)
    assert pool.repeater_port not in other.ports


def test_a_search_sent_to_its_own_port_comes_back_as_a_bogus_answer():
    # The failure the pool's port choice prevents (caproto's sync client search loop).
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(2.0)
    try:
        port = sock.getsockname()[1]
        low, high = ephemeral_range()
        assert low <= port <= high  # bound to 0: a port from the ephemeral range
        request = ca.Broadcaster(our_role=ca.CLIENT).send(
            ca.VersionRequest(0, ca.DEFAULT_PROTOCOL_VERSION),
            ca.SearchRequest("SOME:PV", 50320, ca.DEFAULT_PROTOCOL_VERSION))
        sock.sendto(request, ("127.0.0.1", port))  # the port is in the search list
        data, sender = sock.recvfrom(ca.MAX_UDP_RECV)
        client = ca.Broadcaster(our_role=ca.CLIENT)
        answers = [c for c in client.recv(data, sender) if isinstance(c, ca.SearchResponse)]
        assert answers and answers[0].cid == 50320  # "found", at a nonsense address
        assert ca.extract_address(answers[0]) == ("0.0.196.144", 5)
    finally:
        sock.close()
