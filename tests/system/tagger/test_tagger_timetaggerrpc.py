"""Swabian's ``timetaggerrpc`` client, as shipped on PyPI, against ``trainstamp ioc tagger``.

One stack for the module: the tagger emulator (no sources: the client turns the test
signal on) and the tagger server on a free Pyro5 port. The client runs in its own
interpreter (``ttrpc_client.py``), because it registers numpy converters in Pyro5
process-wide.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from caproto.sync.client import read

from trainstamp._readiness import tcp_ready
from trainstamp.testing import Subprocess, SubprocessIOC, free_port, random_prefix, wait_until

pytestmark = pytest.mark.system
Pyro5 = pytest.importorskip("Pyro5.api")
pytest.importorskip("TimeTaggerRPC.client")

HERE = Path(__file__).parent
TEST_SIGNAL_HZ = 800_000  # the emulator's test signal: an edge every 1.25 us



@pytest.fixture(scope="module")
def server(ca_ports):
    tagger_port, pyro_port = free_port(), free_port()
    prefix = random_prefix("TTR")
    emu = Subprocess(["emulate", "tagger", "--port", str(tagger_port), "--seed", "5"],
                     ready=tcp_ready("127.0.0.1", tagger_port))
    ioc = SubprocessIOC(["ioc", "tagger", "--prefix", prefix,
                         "--tagger", f"tcp://127.0.0.1:{tagger_port}",
                         "--pyro-port", str(pyro_port)],
                        ca_ports, ready_pv=f"{prefix}CONNECTED")
    with emu, ioc:
        wait_until(lambda: read(f"{prefix}CONNECTED").data[0] in (1, b"On"), timeout=20,
                   message="tag link up")
        yield {"port": pyro_port, "prefix": prefix, "ioc": ioc,
               "uri": f"PYRO:TimeTaggerRPC@127.0.0.1:{pyro_port}"}
        assert ioc.alive, ioc.output()


def test_the_shipped_client_runs_and_gets_numpy_arrays(server):
    proc = subprocess.run([sys.executable, str(HERE / "ttrpc_client.py"), "127.0.0.1",
                           str(server["port"])], env=dict(os.environ), capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])

    assert out["enums"]["ChannelEdge"]["StandardRising"] == 9
    assert out["enums"]["CoincidenceTimestamp"] == {"Last": 0, "Average": 1, "First": 2,
                                                    "ListedFirst": 3}
    assert out["enums"]["Resolution"]["HighResC"] == 3
    assert out["serial"] == "EMU-TT-0001"
    assert {1, 2} <= set(out["rising"]) and all(c > 0 for c in out["rising"])
    assert out["sync_channels"] == out["rising"]  # the group's tagger is a tagger too

    data, index, rates = out["data"], out["index"], out["rates"]
    assert data["shape"] == [1000] and index["shape"] == [1000]
    assert np.dtype(data["dtype"]).kind == "i" and np.dtype(index["dtype"]).kind == "i"
    assert out["duration_ps"] == 10**12
    y, x = np.array(data["values"]), np.array(index["values"])
    assert np.all(np.diff(x) == 10)  # 10 ps bins around 0
    # the test signal is common to both inputs: one peak within the skew (< 100 ps each)
    assert y.sum() > 0.9 * TEST_SIGNAL_HZ
    assert abs(x[np.argmax(y)]) <= 200
    # Countrate: 0.8 MHz on each input, over exactly 1 s of tagger time
    assert rates["shape"] == [2] and np.dtype(rates["dtype"]).kind == "f"
    np.testing.assert_allclose(rates["values"], TEST_SIGNAL_HZ, rtol=0.01)
    # a Coincidence and an initially open GatedChannel, counted in a synchronized group
    np.testing.assert_allclose(out["synced"]["values"], TEST_SIGNAL_HZ, rtol=0.01)
    assert out["freed"] is True
    wait_until(lambda: read(server["prefix"] + "PYRO_OBJECTS").data[0] == 0, timeout=10,
               message="the client's objects to be freed")


def test_the_same_guards_hold_on_the_timetaggerrpc_object(server):
    """Ownership by token, no listing, and plain refusals: as on ``TimeTagger``."""
    port = server["port"]
    with Pyro5.Proxy(f"PYRO:Pyro.Daemon@127.0.0.1:{port}") as d:
        assert sorted(d.registered()) == ["Pyro.Daemon", "TimeTagger", "TimeTaggerRPC"]
    with Pyro5.Proxy(server["uri"]) as a:
        tagger = a.createTimeTagger()
        corr = a.Correlation(tagger, 1, 2, binwidth=10, n_bins=10)
        with Pyro5.Proxy(corr._pyroUri) as stolen:
            for call in ("free", "getData", "stop"):
                with pytest.raises(PermissionError, match="another client"):
                    getattr(stolen, call)()
        with Pyro5.Proxy(server["uri"]) as b:
            with pytest.raises(PermissionError):
                b.freeTimeTagger(tagger)
            with pytest.raises(PermissionError):
                b.Countrate(tagger, [1])
        with pytest.raises(ValueError, match="Standard"):
            a.createTimeTagger("", 1)  # Resolution.HighResA
        with pytest.raises(ValueError, match="n_bins"):
            a.Correlation(tagger, 1, 2, binwidth=10, n_bins=2**40)
        # an array argument whose NPY header claims 2**40 elements: refused, nothing
        # allocated, and the connection still serves
        lie = base64.b64encode(b"\x93NUMPY\x01\x00v\x00" + (
            b"{'descr': '<i8', 'fortran_order': False, 'shape': (1099511627776,), }"
        ).ljust(117) + b"\n" + bytes(8)).decode()
        with pytest.raises(ValueError, match="NPY header claims"):
            a.Countrate(tagger, {"__class__": "numpy.ndarray", "data": lie})
        assert corr.getCaptureDuration() >= 0  # A is unharmed
    # A's root connection closed: everything it made is freed
    wait_until(lambda: read(server["prefix"] + "PYRO_OBJECTS").data[0] == 0, timeout=10,
               message="the closed client's objects to be freed")
