"""Fuzz suites against a real ``trainstamp ioc tagger``: CA puts and Pyro5 calls.

Sized by ``fuzz_cases()`` (10,000 inputs each in ``make test``, 100,000 under ``make
fuzz``). Each checks 0 crashes and 0 hangs (every input answered, the IOC alive and
exiting cleanly), bounded memory (RSS), that the counters account for every bad input,
and that good data of the same run are intact.

- CA puts to every writable PV (slot setpoints, switches, channel settings): NaN, ±inf,
  out of range, ±1e300, fractions, 2**31, wrong types (strings to numbers), arrays to
  scalars, 257-5,000-byte strings, binary, and some valid values. A refused put leaves
  the PV as it was and ``BAD_PUTS`` counts every refusal exactly.
- Pyro5 calls: factories with wrong types and huge sizes (``n_bins=10**9``,
  ``binwidth=0``), methods of measurements and taggers with garbage arguments, calls
  on unknown object IDs, dunder and private names. Every call is answered with a
  builtin error or a result; a measurement of a good client runs through it all.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import pytest
from caproto import CaprotoTimeoutError, ChannelType
from caproto.threading.client import Context

from trainstamp._readiness import tcp_ready
from trainstamp.signals import PutRefused  # importing it routes refusals to the put
from trainstamp.testing import (
    Subprocess,
    SubprocessIOC,
    free_port,
    fuzz_cases,
    random_prefix,
    report_cases,
    wait_until,
)

pytestmark = [pytest.mark.system, pytest.mark.fuzz]
Pyro5 = pytest.importorskip("Pyro5.api")
pyro_errors = pytest.importorskip("Pyro5.errors")

CASES = fuzz_cases()


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")



@pytest.fixture(scope="module")
def rig(ca_ports):
    tagger_port, pyro_port = free_port(), free_port()
    prefix = random_prefix("TTF")
    emu = Subprocess(["emulate", "tagger", "--port", str(tagger_port), "--seed", "11",
                      "--poisson", "1:2000", "--poisson", "2:2000"],
                     ready=tcp_ready("127.0.0.1", tagger_port))
    ioc = SubprocessIOC(["ioc", "tagger", "--prefix", prefix, "--interfaces", "127.0.0.1",
                         "--tagger", f"tcp://127.0.0.1:{tagger_port}",
                         "--pyro-port", str(pyro_port)],
                        ca_ports, ready_pv=f"{prefix}CONNECTED")
    with emu, ioc:
        wait_until(lambda: ioc.alive and _connected(prefix), timeout=20, message="tag link up")
        yield {"prefix": prefix, "ioc": ioc, "uri": f"PYRO:TimeTagger@127.0.0.1:{pyro_port}",
               "port": pyro_port}
        assert ioc.alive, ioc.output()
    assert ioc.proc.returncode == 0, ioc.output()  # exited cleanly: no crash, no hang


def _connected(prefix: str) -> bool:
    from caproto.sync.client import read

    return read(f"{prefix}CONNECTED").data[0] in (1, b"On")


# --- CA puts -----------------------------------------------------------------------------

def _writable() -> list[str]:
    from trainstamp.tagger._ioc import make_ioc_class

    ioc = make_ioc_class(8)(prefix="", service=None, instrument=None)
    return sorted(name for name, pv in ioc.pvdb.items() if not pv.pvspec.read_only)


#: PVs whose valid values would start something slow or load the host: bad values only.
BAD_ONLY = ("ACQUIRE", "TEST_SIGNAL")
BAD_NUMBERS = [math.nan, math.inf, -math.inf, -1.0, 1e300, -1e300, 5e-324, 2.0**31,
               -(2.0**31) - 1, 2.0**53 + 1, 0.5, 1.5, 60000.5]
GOOD_NUMBERS = [0.0, 1.0, 2.0, 3.0, 0.25, 100.0, 1000.0, 5000.0]


def _put_value(rng, name: str):
    """(value list, data type) for one put to ``name``."""
    kind = rng.integers(0, 10)
    if name.endswith(BAD_ONLY):
        return [BAD_NUMBERS[rng.integers(len(BAD_NUMBERS))]], ChannelType.DOUBLE
    if kind < 3:
        return [BAD_NUMBERS[rng.integers(len(BAD_NUMBERS))]], ChannelType.DOUBLE
    if kind < 5:
        return [GOOD_NUMBERS[rng.integers(len(GOOD_NUMBERS))]], ChannelType.DOUBLE
    if kind < 6:
        return [int(rng.integers(-(2**31), 2**31 - 1))], ChannelType.LONG
    if kind < 7:
        text = ["nan", "inf", "-1", "1", "abc", "", " ", "1e3", "0x10"][rng.integers(9)]
        return [text], ChannelType.STRING
    if kind < 8:
        return list(rng.normal(0, 1e6, int(rng.integers(2, 6)))), ChannelType.DOUBLE
    if kind < 9:
        return [ord("x")] * int(rng.integers(257, 5000)), ChannelType.CHAR
    return list(rng.integers(0, 256, int(rng.integers(1, 300)))), ChannelType.CHAR


def _value(pv):
    data = pv.read(timeout=5).data
    return [float(v) for v in np.atleast_1d(data)]


def _same(a, b) -> bool:
    return len(a) == len(b) and all(x == y or (math.isnan(x) and math.isnan(y))
                                    for x, y in zip(a, b, strict=True))


def test_ca_put_fuzz(rig):
    prefix, proc = rig["prefix"], rig["ioc"]
    names = _writable()
    ctx = Context()
    try:
        pvs = dict(zip(names, ctx.get_pvs(*(prefix + n for n in names)), strict=True))
        health = dict(zip(("BAD_PUTS", "TAGS", "FAULTS", "STATUS"), ctx.get_pvs(
            *(prefix + n for n in ("BAD_PUTS", "TAGS", "FAULTS", "STATUS"))), strict=True))
        for pv in (*pvs.values(), *health.values()):
            pv.wait_for_connection(timeout=10)
        for slot in ("CORR1:", "HIST1:", "RATE1:", "CNT1:"):  # warm up: build each slot once
            pvs[slot + "START"].write([1], wait=True, timeout=30)
            pvs[slot + "STOP"].write([1], wait=True, timeout=30)
        rss0, bad0 = rss_kib(proc.proc.pid), health["BAD_PUTS"].read().data[0]
        rng = np.random.default_rng(12)
        puts = refused = unencodable = 0
        slowest, t0 = 0.0, time.perf_counter()
        known = {name: _value(pv) for name, pv in pvs.items()}  # each PV's value now
        while puts < CASES:
            name = names[int(rng.integers(len(names)))]
            value, dtype = _put_value(rng, name)
            pv = pvs[name]
            before = known[name]
            t = time.monotonic()
            try:
                pv.write(value, wait=True, timeout=10, data_type=dtype)
                accepted = True
            except PutRefused:
                accepted = False
            except CaprotoTimeoutError:
                raise AssertionError(f"no answer to {name} = {value[:5]!r} ({dtype})") from None
            except Exception:  # the client could not encode it: nothing reached the IOC
                unencodable += 1
                continue
            slowest = max(slowest, time.monotonic() - t)
            puts += 1
            known[name] = _value(pv)
            slot, _, suffix = name.rpartition(":")
            if accepted and suffix in ("START", "ACQUIRE"):  # a run uses START_TRAIN up
                known[f"{slot}:START_TRAIN"] = _value(pvs[f"{slot}:START_TRAIN"])
            if not accepted:
                refused += 1
                assert _same(known[name], before), (name, value[:5], before)
        wait_until(lambda: health["BAD_PUTS"].read().data[0] - bad0 == refused, timeout=10,
                   message=lambda: f"BAD_PUTS {health['BAD_PUTS'].read().data[0] - bad0} "
                                   f"== {refused} refusals")
        # good data intact: tags still flow, no fault
        tags = health["TAGS"].read().data[0]
        wait_until(lambda: health["TAGS"].read().data[0] > tags, timeout=20,
                   message="tags after the fuzz")
        assert health["FAULTS"].read().data[0] == 0
        growth = rss_kib(proc.proc.pid) - rss0
        report_cases("tagger CA puts (IOC)", puts, refused=refused, pvs=len(names),
                     unencodable=unencodable, slowest_answer_ms=round(slowest * 1000, 1),
                     rss_growth_kib=growth, seconds=round(time.perf_counter() - t0, 1))
        assert growth < 128 * 1024, f"RSS grew by {growth} KiB"
    finally:
        ctx.disconnect()


# --- Pyro5 calls -------------------------------------------------------------------------

ALLOWED = {"ValueError", "TypeError", "RuntimeError", "PermissionError", "AttributeError",
           "DaemonError", "SecurityError", "ProtocolError",
           "CommunicationError"}  # "rejected: unknown object", at connect
GARBAGE = [None, True, -1, 0, 1, 2, 3, 10**9, 2**63, -(2**63), 1.5, math.nan, math.inf,
           "", "x" * 1000, [1, 2], [], {}, {"a": 1}, [[1]], b"\xff"]
FACTORIES = ["Correlation", "Histogram", "StartStop", "Countrate", "Counter",
             "CountBetweenMarkers", "DelayedChannel", "GatedChannel", "Coincidence",
             "Coincidences", "Combiner", "SynchronizedMeasurements"]
METHODS = ["getData", "getIndex", "startFor", "startForTrains", "start", "stop", "clear",
           "getCaptureDuration", "fetchArray", "getDataNormalized",
           "getTrainRange", "isRunning", "free"]
TAGGER_METHODS = ["setTriggerLevel", "setInputDelay", "setDeadtime", "setEventDivider",
                  "setTestSignal", "getTriggerLevel", "getChannelList", "setSource",
                  "getConfiguration", "sync"]
DUNDER = ["__init__", "__class__", "__dict__", "__reduce__", "__getattribute__",
          "_target", "_release", "_rpc", "_call", "process", "_pyroId", "__del__"]


def _args(rng, n_max=4):
    return [GARBAGE[rng.integers(len(GARBAGE))] for _ in range(int(rng.integers(0, n_max)))]


def _kwargs(rng):
    keys = ["binwidth", "n_bins", "n_values", "clear", "first_train_id", "bogus"]
    return {keys[rng.integers(len(keys))]: GARBAGE[rng.integers(len(GARBAGE))]
            for _ in range(int(rng.integers(0, 3)))}


def test_pyro_call_fuzz(rig):
    from caproto.sync.client import read

    proc, uri, port = rig["ioc"], rig["uri"], rig["port"]
    good_client = Pyro5.Proxy(uri)
    good_tagger = good_client.createTimeTagger()
    good = good_client.Countrate(good_tagger, [1, 2])
    good.startFor(int(2e12))  # 2 s of tagger time, running through the whole fuzz
    rss0 = rss_kib(proc.proc.pid)
    rng = np.random.default_rng(13)
    errors: dict[str, int] = {}
    calls = ok = 0
    t0 = time.perf_counter()
    while calls < CASES:
        with Pyro5.Proxy(uri) as tt:
            tt._pyroTimeout = 30
            tagger = tt.createTimeTagger()
            tagger._pyroTimeout = 30
            made = [tt.Countrate(tagger, [1])]
            made[0]._pyroTimeout = 30
            for _ in range(100):
                what = int(rng.integers(0, 7))
                try:
                    if what == 0:
                        name = FACTORIES[rng.integers(len(FACTORIES))]
                        obj = getattr(tt, name)(tagger, *_args(rng), **_kwargs(rng))
                        made.append(obj)
                        obj._pyroTimeout = 30
                    elif what == 1:
                        obj = made[int(rng.integers(len(made)))]
                        getattr(obj, METHODS[rng.integers(len(METHODS))])(*_args(rng, 3))
                    elif what == 2:
                        getattr(tagger, TAGGER_METHODS[rng.integers(len(TAGGER_METHODS))])(
                            *_args(rng, 3))
                    elif what == 3:  # an object that does not exist
                        with Pyro5.Proxy(f"PYRO:obj_{rng.bytes(16).hex()}@127.0.0.1:{port}") as p:
                            p._pyroTimeout = 30
                            p.getData()
                    elif what == 4:  # dunder and private names, straight to the wire
                        obj = [tt, tagger, *made][int(rng.integers(len(made) + 2))]
                        obj._pyroInvoke(DUNDER[rng.integers(len(DUNDER))], tuple(_args(rng, 2)),
                                        {})
                    elif what == 6:  # waits with garbage, never "forever" (-1 means that)
                        obj = made[int(rng.integers(len(made)))]
                        wait = [0, 1, 1.5, math.nan, math.inf, "x", None, [5], 10][
                            rng.integers(9)]
                        obj.waitUntilFinished(wait)
                    else:  # huge sizes and zero widths
                        name = ["Correlation", "Histogram", "Counter"][rng.integers(3)]
                        size = [10**9, 2**31, 2**24, -5, 0][rng.integers(5)]
                        bw = [0, -1, 10**18, 1][rng.integers(4)]
                        key = "n_values" if name == "Counter" else "n_bins"
                        chans = [1] if name == "Counter" else 1
                        args = (chans,) if name == "Counter" else (1, 2)
                        made.append(getattr(tt, name)(tagger, *args, binwidth=bw,
                                                      **{key: size}))
                    ok += 1
                except pyro_errors.TimeoutError:
                    raise AssertionError(f"a call was not answered (hang): case {what}, "
                                         f"state {rng.bit_generator.state['state']}") from None
                except pyro_errors.ConnectionClosedError:
                    raise AssertionError("the server closed a connection") from None
                except Exception as exc:
                    name = type(exc).__name__
                    errors[name] = errors.get(name, 0) + 1
                    assert name in ALLOWED, (name, exc)
                calls += 1
    # the good client's measurement went through it all
    assert good.waitUntilFinished(120_000)
    assert good.getCaptureDuration() == int(2e12)
    assert all(c > 0 for c in good.getCountsTotal())
    # the fuzz clients are gone, and so are their objects
    wait_until(lambda: read(rig["prefix"] + "PYRO_OBJECTS").data[0] == 2, timeout=20,
               message="only the good client's objects left")
    good_client.freeTimeTagger(good_tagger)
    good_client._pyroRelease()
    growth = rss_kib(proc.proc.pid) - rss0
    report_cases("tagger Pyro5 calls (IOC)", calls, answered=ok, errors=errors,
                 rss_growth_kib=growth, seconds=round(time.perf_counter() - t0, 1))
    assert growth < 512 * 1024, f"RSS grew by {growth} KiB"
