"""Create a new embedded catalog database from a blank template.

Tiled creates a SQLite catalog by running ``tiled catalog init`` (alembic) in a
subprocess, which takes about 4 s, every time a data directory is new. The result
holds nothing but the schema and an empty root container, so it is made once per
tiled version into a template in the user's cache directory
(``$XDG_CACHE_HOME/trainstamp``, else ``~/.cache/trainstamp``), and each new catalog
is a copy of it. Without a writable cache directory every catalog is made by tiled
itself, as before.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)


def cache_dir(environ: dict[str, str] | None = None) -> Path:
    """Where trainstamp keeps files that can be made again: the catalog template."""
    env = os.environ if environ is None else environ
    base = env.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "trainstamp"


def _tiled_init(path: Path) -> None:
    """Let tiled create the catalog database ``path`` (alembic, in a subprocess)."""
    cmd = [sys.executable, "-m", "tiled", "catalog", "init", f"sqlite:///{path}"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    if done.returncode:
        raise RuntimeError(f"tiled could not create the catalog {path}: "
                           f"{(done.stderr or done.stdout).strip()[-500:]}")


def _is_blank_catalog(path: Path) -> bool:
    """Whether ``path`` is a catalog database holding nothing but its root node."""
    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
            (nodes,) = db.execute("SELECT count(*) FROM nodes").fetchone()
            db.execute("SELECT version_num FROM alembic_version").fetchone()
    except sqlite3.Error:
        return False
    return nodes == 1


def template(environ: dict[str, str] | None = None) -> Path | None:
    """The blank catalog of this tiled version, made if missing; None if the cache
    directory cannot be written."""
    import tiled

    folder = cache_dir(environ)
    path = folder / f"catalog-template-tiled-{tiled.__version__}.db"
    if path.exists() and _is_blank_catalog(path):
        return path
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".catalog-", suffix=".db", dir=folder)
    except OSError as exc:
        log.info("no catalog template (cache %s: %s); tiled creates the catalog", folder, exc)
        return None
    os.close(fd)
    os.unlink(tmp)  # tiled refuses to initialise over an existing file
    try:
        _tiled_init(Path(tmp))
        os.replace(tmp, path)  # atomic: a concurrent maker's template is just as good
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    return path


def create_catalog(path: Path, environ: dict[str, str] | None = None) -> bool:
    """Create the catalog database ``path`` as a copy of the template. False: it was not
    created here (no template, or another process created it first), and tiled's own
    ``init_if_not_exists`` should see to it."""
    source = template(environ)
    if source is None:
        return False
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
    os.close(fd)
    try:
        shutil.copyfile(source, tmp)
        os.link(tmp, path)  # fails if the catalog appeared meanwhile: never overwrite one
    except OSError:  # it exists now, or the file system has no hard links
        return False
    finally:
        os.unlink(tmp)
    return True
