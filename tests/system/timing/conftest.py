"""Fixtures for the timing system tests: TimeServer IOC subprocesses and CA helpers."""

from __future__ import annotations

import contextlib

import pytest
from caproto.sync.client import read, write

from trainstamp.testing import SubprocessIOC, free_port, random_prefix, wait_until


class TimeServerProc:
    """A running ``trainstamp ioc timeserver`` with CA helpers bound to its prefix."""

    def __init__(self, proc: SubprocessIOC, prefix: str, broadcast_port: int) -> None:
        self.proc = proc
        self.prefix = prefix
        self.broadcast_port = broadcast_port

    def pv(self, suffix: str) -> str:
        return self.prefix + suffix

    def get(self, suffix: str, **kwargs):
        data = read(self.pv(suffix), timeout=2.0, **kwargs).data
        if not hasattr(data, "dtype"):  # ENUM / STRING: a list of bytes
            return data[0].decode() if isinstance(data[0], bytes) else str(data[0])
        if data.dtype.kind in "ui" and data.dtype.itemsize == 1:  # CHAR waveform text
            return bytes(data).rstrip(b"\0").decode()
        if data.dtype.kind in "SO":
            return data[0].decode() if isinstance(data[0], bytes) else str(data[0])
        return data[0] if len(data) == 1 else data

    def put(self, suffix: str, value):
        return write(self.pv(suffix), value, notify=True, timeout=2.0)

    def wait(self, suffix: str, predicate, timeout: float = 10.0):
        """Poll ``suffix`` until ``predicate(value)`` holds; return that value."""

        def check():
            value = self.get(suffix)
            return (value,) if predicate(value) else None

        return wait_until(check, timeout=timeout,
                          message=lambda: f"{suffix} (now {self._safe(suffix)!r}, STATUS "
                                          f"{self._safe('STATUS')!r})\n{self.proc.output()[-3000:]}")[0]

    def _safe(self, suffix: str):
        try:
            return self.get(suffix)
        except Exception as exc:  # for failure messages only
            return exc


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)


@pytest.fixture
def timeserver(ca_ports, request):
    """Factory: ``timeserver("--source", URI, ...)`` starts an IOC and returns it.

    If the test fails, the end of each IOC's output goes into the report.
    """
    procs: list[SubprocessIOC] = []
    with contextlib.ExitStack() as stack:

        def start(*args: str, ready: str = "STATE", env: dict[str, str] | None = None) -> TimeServerProc:
            prefix = random_prefix("TS")
            port = free_port()
            argv = ["ioc", "timeserver", "--prefix", prefix, "--interfaces", "127.0.0.1",
                    "--broadcast-port", str(port), "--list-pvs", *args]
            proc = SubprocessIOC(argv, ca_ports, ready_pv=prefix + ready, env=env)
            stack.enter_context(proc)
            procs.append(proc)
            return TimeServerProc(proc, prefix, port)

        yield start
        call = getattr(request.node, "rep_call", None)
        if call is not None and call.failed:
            for proc in procs:
                print(f"--- output of {' '.join(proc.args[3:7])} (CA port {proc.port}) ---")
                print(proc.output()[-8000:])
    # Every IOC must have shut down by itself on SIGINT (not needed SIGKILL).
    assert [p.proc.returncode for p in procs] == [0] * len(procs)

