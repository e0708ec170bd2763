"""A private PostgreSQL cluster on loopback, for tests and benchmarks of the Tiled server.

``initdb`` makes a new cluster in a temporary directory, ``pg_ctl`` starts it on a free
port of 127.0.0.1 (its Unix socket in the same directory), and the cluster is stopped
and deleted on exit. The machine's own clusters are never touched. PostgreSQL refuses
to run as root, so as root the cluster runs as the ``postgres`` account (Debian's
package creates it) and its directory belongs to that account.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from trainstamp.testing._ports import free_port

__all__ = ["PostgresCluster", "find_postgres_bin", "postgres_cluster"]


def find_postgres_bin() -> Path | None:
    """The directory of ``initdb``, ``pg_ctl`` and ``postgres``, or None if missing.

    ``PATH`` first, then Debian's versioned ``/usr/lib/postgresql/<N>/bin`` (the
    ``postgresql`` package does not put them on ``PATH``), newest version first.
    """
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl"):
        return Path(os.path.realpath(found)).parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin"),
                        key=lambda p: int(Path(p).parent.name) if Path(p).parent.name.isdigit()
                        else 0, reverse=True)
    for directory in candidates:
        if all((Path(directory) / b).exists() for b in ("initdb", "pg_ctl", "postgres")):
            return Path(directory)
    return None


@dataclass(frozen=True)
class PostgresCluster:
    """A running private cluster: connect to ``uri`` (database ``dbname``, no password)."""

    directory: Path
    port: int
    user: str
    dbname: str

    @property
    def uri(self) -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{self.dbname}"


def _run(args: list[str], run_as: str | None, log: Path) -> None:
    with open(log, "ab") as out:
        proc = subprocess.run(args, stdout=out, stderr=subprocess.STDOUT, user=run_as,
                              timeout=120, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({proc.returncode}):\n"
                           f"{log.read_text(errors='replace')[-3000:]}")


@contextlib.contextmanager
def postgres_cluster(bin_dir: Path | None = None, *, dbname: str = "tiled",
                     user: str = "tiled", fsync: bool = False) -> Iterator[PostgresCluster]:
    """Start a private cluster with database ``dbname`` owned by ``user`` (trust auth on
    loopback only); stop it (fast shutdown) and delete it on exit. ``fsync`` is off by
    default: a test cluster need not survive a power cut."""
    bin_dir = bin_dir or find_postgres_bin()
    if bin_dir is None:
        raise FileNotFoundError("PostgreSQL binaries (initdb, pg_ctl) not found")
    run_as = "postgres" if os.geteuid() == 0 else None
    root = Path(tempfile.mkdtemp(prefix="trainstamp-pg-"))
    data, log = root / "data", root / "server.log"
    log.touch()
    if run_as is not None:
        account = pwd.getpwnam(run_as)
        for path in (root, log):
            os.chown(path, account.pw_uid, account.pw_gid)
    port = free_port()
    started = False
    try:
        _run([str(bin_dir / "initdb"), "-D", str(data), "-U", user, "--auth=trust",
              "-E", "UTF8", "--no-sync"], run_as, log)
        options = (f"-c listen_addresses=127.0.0.1 -c port={port} "
                   f"-c unix_socket_directories={root} -c fsync={'on' if fsync else 'off'}")
        _run([str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(log), "-o", options,
              "-w", "-t", "60", "start"], run_as, log)
        started = True
        createdb = bin_dir / "createdb"
        _run([str(createdb), "-h", "127.0.0.1", "-p", str(port), "-U", user, dbname],
             run_as, log)
        yield PostgresCluster(root, port, user, dbname)
    finally:
        if started:
            with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                _run([str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "-t", "60",
                      "stop"], run_as, log)
        shutil.rmtree(root, ignore_errors=True)
