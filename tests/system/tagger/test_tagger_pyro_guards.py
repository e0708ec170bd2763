"""The tagger server's Pyro5 daemon under attack: ownership, listing, compression,
memory budgets and idle sockets, against a real ``trainstamp ioc tagger`` process."""

from __future__ import annotations

import contextlib
import socket
import struct
import zlib
from pathlib import Path

import pytest
from caproto.sync.client import read

from trainstamp._readiness import tcp_ready
from trainstamp.testing import Subprocess, SubprocessIOC, free_port, random_prefix, wait_until

pytestmark = pytest.mark.system
Pyro5 = pytest.importorskip("Pyro5.api")



def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


@pytest.fixture(scope="module")
def server(ca_ports):
    tagger_port, pyro_port = free_port(), free_port()
    prefix = random_prefix("TTG")
    emu = Subprocess(["emulate", "tagger", "--port", str(tagger_port), "--seed", "3",
                      "--poisson", "1:1000"], ready=tcp_ready("127.0.0.1", tagger_port))
    ioc = SubprocessIOC(["ioc", "tagger", "--prefix", prefix,
                         "--tagger", f"tcp://127.0.0.1:{tagger_port}",
                         "--pyro-port", str(pyro_port),
                         "--pyro-client-mib", "20", "--pyro-total-mib", "40"],
                        ca_ports, ready_pv=f"{prefix}CONNECTED")
    with emu, ioc:
        wait_until(lambda: read(f"{prefix}CONNECTED").data[0] in (1, b"On"), timeout=20,
                   message="tag link up")
        yield {"uri": f"PYRO:TimeTagger@127.0.0.1:{pyro_port}", "port": pyro_port,
               "ioc": ioc, "prefix": prefix}
        assert ioc.alive, ioc.output()


def test_another_client_cannot_list_free_or_read_my_objects(server):
    """Once, Pyro.Daemon.registered() listed every ID; another client then freed A's
    tagger (True) and read A's getData()."""
    with Pyro5.Proxy(server["uri"]) as a:
        tagger = a.createTimeTagger()
        corr = a.Correlation(tagger, 1, 1, binwidth=1000, n_bins=10)
        with Pyro5.Proxy(f"PYRO:Pyro.Daemon@127.0.0.1:{server['port']}") as d:
            assert sorted(d.registered()) == ["Pyro.Daemon", "TimeTagger", "TimeTaggerRPC"]
        # even knowing the IDs (here handed over), another client gets nothing
        for uri, calls in ((tagger._pyroUri, ("free", "getSerial", "getConfiguration")),
                           (corr._pyroUri, ("free", "getData", "getCaptureDuration", "stop"))):
            with Pyro5.Proxy(uri) as stolen:
                for call in calls:
                    with pytest.raises(PermissionError, match="another client"):
                        getattr(stolen, call)()
        with Pyro5.Proxy(server["uri"]) as b:
            with pytest.raises(PermissionError):
                b.freeTimeTagger(tagger)
            with pytest.raises(PermissionError):
                b.Correlation(tagger, 1, 1, binwidth=1000, n_bins=10)
        assert corr.getData() == [0] * 10 or len(corr.getData()) == 10  # A is unharmed
        a.freeTimeTagger(tagger)


def test_a_compressed_message_is_refused_before_it_is_inflated(server):
    """Once, 1 MB of zlib flagged compressed inflated to 1 GiB in the server."""
    import Pyro5.protocol as proto

    bomb = zlib.compress(b"\0" * (256 << 20), 9)  # 256 MiB inflated, ~250 kB sent
    head = struct.pack(proto._header_format, b"PYRO", proto.PROTOCOL_VERSION,
                       proto.MSG_CONNECT, 1, proto.FLAGS_COMPRESSED, 0, len(bomb), 0,
                       b"\0" * 16, 0, proto._magic_number)
    pid = server["ioc"].proc.pid
    before = _rss_kib(pid)
    for _ in range(3):
        with socket.create_connection(("127.0.0.1", server["port"]), timeout=10) as sock:
            sock.sendall(head + bomb)
            sock.settimeout(10)
            try:
                while sock.recv(65536):
                    pass  # the server closes the connection
            except ConnectionResetError:
                pass
    assert _rss_kib(pid) - before < 64 << 10  # never 256 MiB
    with Pyro5.Proxy(server["uri"]) as tt:
        assert tt.scanTimeTagger()


def test_memory_is_bounded_per_client_and_overall(server):
    """Once, 24 Correlation(n_bins=2**23) on separate connections cost 1.9 GB. Here the
    budgets are 20 MiB per client and 40 MiB overall; each object holds 8 MiB."""
    clients, made = [], []
    try:
        first = Pyro5.Proxy(server["uri"])
        clients.append(first)
        tagger = first.createTimeTagger()
        made += [first.Correlation(tagger, 1, 1, binwidth=1, n_bins=2**20) for _ in range(2)]
        with pytest.raises(ValueError, match="MiB"):
            first.Correlation(tagger, 1, 1, binwidth=1, n_bins=2**20)  # 24 > 20 MiB
        refused = 0
        for _ in range(6):  # other clients, one object each, until the server is full
            c = Pyro5.Proxy(server["uri"])
            clients.append(c)
            t = c.createTimeTagger()
            try:
                made.append(c.Correlation(t, 1, 1, binwidth=1, n_bins=2**20))
            except ValueError as exc:
                assert "the server" in str(exc)
                refused += 1
        assert len(made) == 4 and refused == 4  # 4 x (8 MiB + a little) <= 40 MiB < 5 x
    finally:
        for c in clients:
            c._pyroRelease()
    # closing the clients gave the memory back
    with Pyro5.Proxy(server["uri"]) as c:
        t = c.createTimeTagger()
        c.Correlation(t, 1, 1, binwidth=1, n_bins=2**20)


@pytest.mark.parametrize("kind", ["raw", "pyro"])
def test_idle_sockets_do_not_starve_a_real_client(server, kind):
    """Once, 100 idle sockets took the 80-thread pool and a real client timed out."""
    idle = []
    try:
        for _ in range(100):
            if kind == "raw":  # connected, never says a word
                idle.append(socket.create_connection(("127.0.0.1", server["port"])))
            else:  # a handshaken Pyro connection that owns nothing and sits there
                p = Pyro5.Proxy(server["uri"])
                with contextlib.suppress(Exception):  # refused while the pool is full
                    p._pyroBind()
                idle.append(p)

        def real_client() -> bool:
            with Pyro5.Proxy(server["uri"]) as tt:
                tt._pyroTimeout = 5
                return bool(tt.scanTimeTagger())

        # a bound for a starved server, not a speed test: the handshake timeout is 5 s
        # and parking runs every 2 s
        wait_until(real_client, timeout=60, message="a real client to get through")
    finally:
        for s in idle:
            s.close() if isinstance(s, socket.socket) else s._pyroRelease()
