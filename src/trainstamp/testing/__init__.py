"""Test helpers that ship with the package, in the spirit of ``ophyd_async.testing``.

- :func:`free_port`, :func:`random_prefix`: pick loopback ports and PV prefixes.
- :class:`CAPortPool`, :func:`ca_env`: keep every IOC and client on loopback ports the
  test chose, so nothing reaches another IOC on the machine; :class:`PVAPorts` does the
  same for one IOC's PV Access server.
- :class:`Subprocess`, :class:`SubprocessIOC`: run emulators and IOCs as real
  subprocesses, wait for them to come up with a deadline, and always clean them up.
- :func:`wait_until`: poll a condition with a deadline instead of sleeping.
- :func:`fuzz_cases`, :func:`report_cases`: size and report the fuzz suites.
- :func:`postgres_cluster`, :func:`find_postgres_bin`: a private PostgreSQL cluster on
  loopback (``initdb`` + ``pg_ctl`` in a temporary directory) for the Tiled server.
- :class:`RefusingIOCProcess`: a tiny IOC whose putters refuse, for tests of how
  clients report a refused put (:mod:`trainstamp.testing._refusing_ioc`).
"""

from trainstamp._wait import wait_until
from trainstamp.testing._ca import CAPortPool, PVAPorts, ca_env, random_prefix
from trainstamp.testing._fuzz import fuzz_cases, report_cases
from trainstamp.testing._ports import free_port, wait_for_tcp
from trainstamp.testing._postgres import PostgresCluster, find_postgres_bin, postgres_cluster
from trainstamp.testing._process import Subprocess, SubprocessIOC
from trainstamp.testing._refusing_ioc import RefusingIOCProcess

__all__ = [
    "CAPortPool",
    "PVAPorts",
    "PostgresCluster",
    "RefusingIOCProcess",
    "Subprocess",
    "SubprocessIOC",
    "ca_env",
    "find_postgres_bin",
    "free_port",
    "fuzz_cases",
    "postgres_cluster",
    "random_prefix",
    "report_cases",
    "wait_for_tcp",
    "wait_until",
]
