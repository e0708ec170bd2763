"""``trainstamp serve``: a Tiled server on PostgreSQL, for writing from many processes.

The embedded catalog (the default) takes one writing process. To let several RunEngine
hosts write at once, run Tiled as a server on PostgreSQL and point each host at it with
``TRAINSTAMP_TILED_URI``. This module is that server's recipe:

- :func:`server_config` (pure) is the Tiled service configuration: one catalog tree on
  the database (metadata in it, event tables in it too when it is PostgreSQL), array
  data written under a directory, the detector data directories readable (so the HDF5
  files a detector's Resource documents name read back), bluesky-tiled-plugins'
  ``application/json-seq`` exporter for BlueskyRun (``run.documents()``), and the
  single-user API key. Secrets (the database URI, which may hold a password, and the
  API key) stay out of the file: it names environment variables that Tiled expands
  when it reads the file.
- :func:`main` writes that file and serves it (what ``tiled serve config FILE`` does).
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["ENV_DATABASE", "JSON_SEQ_EXPORTER", "main", "server_config"]

#: The catalog database of the server (``postgresql://user:password@host:port/db``).
ENV_DATABASE = "TRAINSTAMP_TILED_DATABASE"
ENV_API_KEY = "TRAINSTAMP_TILED_API_KEY"
ENV_READABLE = "TRAINSTAMP_READABLE_STORAGE"
#: The server-side exporter that ``BlueskyRun.documents()`` asks for.
JSON_SEQ_EXPORTER = "bluesky_tiled_plugins.exporters:json_seq_exporter"
CONFIG_NAME = "tiled-server.yml"


def server_config(data_dir: str | os.PathLike, readable: Sequence[str | os.PathLike] = (), *,
                  database: str = f"${{{ENV_DATABASE}}}", postgresql: bool = True,
                  api_key: str = f"${{{ENV_API_KEY}}}", host: str = "127.0.0.1",
                  port: int = 8000) -> dict[str, Any]:
    """The Tiled service configuration (a dict to dump as YAML) of the server.

    Parameters
    ----------
    data_dir : path
        Where Tiled writes array data (``<data_dir>/tiled``; shared by every server
        process of one catalog). An embedded-style DuckDB file there holds the event
        tables when the database is not PostgreSQL.
    readable : paths
        Directories the server may read external assets from: the detector data
        directories, as the RunEngine hosts name them in Resource documents.
    database : str
        The catalog URI, or (default) a reference to ``$TRAINSTAMP_TILED_DATABASE``.
    postgresql : bool
        The database is PostgreSQL: its tables also take the event tables, so every
        server process of the catalog shares them.
    api_key : str
        The single-user API key, or (default) a reference to ``$TRAINSTAMP_TILED_API_KEY``.
    """
    root = Path(data_dir)
    tables = database if postgresql else f"duckdb:///{root / 'storage.duckdb'}"
    return {
        "trees": [{"path": "/", "tree": "catalog", "args": {
            "uri": database,
            "writable_storage": [str(root / "tiled"), tables],
            "readable_storage": [str(Path(p)) for p in readable],
            "init_if_not_exists": True,
        }}],
        "authentication": {"single_user_api_key": api_key},
        "media_types": {"BlueskyRun": {"application/json-seq": JSON_SEQ_EXPORTER}},
        "uvicorn": {"host": host, "port": port},
    }


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="trainstamp serve",
        description="Serve the run catalog with Tiled on PostgreSQL (docs/storage.md, "
                    "'Scale out'). RunEngine hosts then write to it with "
                    "TRAINSTAMP_TILED_URI=http://HOST:PORT/api/v1 and the API key.")
    p.add_argument("--database", default=os.environ.get(ENV_DATABASE),
                   help=f"catalog database, postgresql://USER[:PASSWORD]@HOST[:PORT]/DB "
                        f"(default ${ENV_DATABASE}); the database must exist, its tables are "
                        "created on first start")
    p.add_argument("--data-dir", type=Path, default=Path("tiled-server"),
                   help="where array data and the written config go (default ./tiled-server)")
    p.add_argument("--read", action="append", default=[], metavar="DIR",
                   help="a directory the server may read detector files from (repeat; "
                        f"default ${ENV_READABLE}, ':'-separated)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--api-key", default=None,
                   help=f"single-user API key (default ${ENV_API_KEY}; else a random one, "
                        "printed)")
    p.add_argument("--write-config", type=Path, metavar="FILE",
                   help="only write the Tiled config to FILE (serve it with "
                        "'tiled serve config FILE') and exit")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if not args.database:
        print(f"trainstamp serve: no database: give --database or set ${ENV_DATABASE} "
              "(postgresql://USER[:PASSWORD]@HOST[:PORT]/DB)", file=sys.stderr)
        return 2
    postgresql = args.database.split(":", 1)[0].split("+", 1)[0] in ("postgresql", "postgres")
    readable = args.read or [p for p in os.environ.get(ENV_READABLE, "").split(os.pathsep) if p]
    data_dir = args.data_dir.expanduser().resolve()
    config = server_config(data_dir, [Path(p).expanduser().resolve() for p in readable],
                           postgresql=postgresql, host=args.host, port=args.port)
    import yaml

    path = args.write_config or data_dir / CONFIG_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    if args.write_config:
        print(f"wrote {path}; serve it with: {ENV_DATABASE}=... {ENV_API_KEY}=... "
              f"tiled serve config {path}")
        return 0
    (data_dir / "tiled").mkdir(parents=True, exist_ok=True)
    api_key = args.api_key or os.environ.get(ENV_API_KEY)
    generated = api_key is None
    # The file names the secrets by environment variable; Tiled expands them on reading.
    os.environ[ENV_DATABASE] = args.database
    os.environ[ENV_API_KEY] = api_key or secrets.token_hex(32)
    return _serve(path, args.database, generated)


def _serve(path: Path, database: str, print_key: bool) -> int:
    import uvicorn
    from tiled.config import parse_configs
    from tiled.server.app import build_app_from_config
    from tiled.server.logging_config import LOGGING_CONFIG

    parsed = parse_configs(path)
    # scalable: Tiled checks that nothing in the config ties it to one process (the
    # API key is set, no in-memory cache), so more processes may serve the same catalog.
    app = build_app_from_config(parsed, scalable=True)
    host, port = parsed.uvicorn["host"], parsed.uvicorn["port"]
    shown = database.split("@", 1)[-1]  # no user or password in the log
    print(f"trainstamp serve: Tiled on {shown}, config {path}\n"
          f"  RunEngine hosts: TRAINSTAMP_TILED_URI=http://{host}:{port}/api/v1", flush=True)
    if print_key:
        print(f"  API key (TRAINSTAMP_TILED_API_KEY): {os.environ[ENV_API_KEY]}", flush=True)
    uvicorn.run(app, host=host, port=port, log_config=LOGGING_CONFIG)
    return 0
