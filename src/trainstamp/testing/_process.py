"""Run emulators and IOCs as real subprocesses, and always clean them up."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence

from trainstamp._children import spawn, stop_group
from trainstamp._wait import wait_until


class Subprocess:
    """A ``python -m trainstamp ...`` child with its output captured to a temp file.

    Use it as a context manager. ``ready`` is polled (with ``timeout``) after start; on
    exit the child gets SIGINT, then SIGKILL if it has not gone within ``stop_timeout``.
    ``output()`` returns what the child printed, for assertions and failure messages.
    """

    def __init__(
        self,
        args: Sequence[str],
        env: dict[str, str] | None = None,
        ready: Callable[[], object] | None = None,
        timeout: float = 30.0,
        stop_timeout: float = 10.0,
        python_module: bool = True,
    ) -> None:
        self.args = [sys.executable, "-m", "trainstamp", *args] if python_module else list(args)
        self.env = dict(os.environ if env is None else env)
        self.env.setdefault("PYTHONUNBUFFERED", "1")
        self.ready = ready
        self.timeout = timeout
        self.stop_timeout = stop_timeout
        self.proc: subprocess.Popen[bytes] | None = None
        self._log = tempfile.NamedTemporaryFile(prefix="trainstamp-", suffix=".log", delete=False)  # noqa: SIM115 - lives as long as the child

    def start(self) -> Subprocess:
        self.proc = spawn(self.args, self.env, self._log)
        if self.ready is not None:
            try:
                wait_until(self._ready_or_died, timeout=self.timeout,
                           message=lambda: f"{' '.join(self.args[2:])} to start:\n{self.output()}")
            except BaseException:
                self.stop()
                raise
        return self

    def _ready_or_died(self) -> object:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError(
                f"{self.args} exited with {self.proc.returncode}:\n{self.output()}"
            )
        assert self.ready is not None
        return self.ready()

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def output(self) -> str:
        self._log.flush()
        with open(self._log.name, "rb") as fh:
            return fh.read().decode(errors="replace")

    def stop(self) -> int | None:
        return None if self.proc is None else stop_group(self.proc, self.stop_timeout)

    def kill(self) -> None:
        """SIGKILL the child's whole process group (for crash tests)."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(self.stop_timeout)

    def __enter__(self) -> Subprocess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
        self._log.close()
        os.unlink(self._log.name)


class SubprocessIOC(Subprocess):
    """An IOC subprocess on its own CA port; ready once ``ready_pv`` answers a read.

    ``pool`` is the session's :class:`~trainstamp.testing.CAPortPool`; the IOC binds one
    of its ports, so the test process (whose ``EPICS_CA_ADDR_LIST`` lists them all)
    finds it and nothing else does.
    """

    def __init__(self, args: Sequence[str], pool, ready_pv: str, timeout: float = 30.0,
                 env: dict[str, str] | None = None) -> None:
        from caproto.sync.client import read

        self.port = pool.next_port()
        full_env = pool.env(server_port=self.port)
        if env:
            full_env.update(env)
        self.ready_pv = ready_pv

        def ready() -> bool:
            read(ready_pv, timeout=0.5, repeater=False)
            return True

        super().__init__(args, env=full_env, ready=ready, timeout=timeout)
