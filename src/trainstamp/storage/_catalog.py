"""Open the run catalog and subscribe a RunEngine to it.

By default the catalog is embedded: a Tiled catalog on SQLite (metadata) and DuckDB
(event tables) in the data directory, served in process through Tiled's ASGI app, so
no port is opened and nothing keeps running after the client is closed. With a Tiled
URI (argument or ``TRAINSTAMP_TILED_URI``) the same API talks to a Tiled server.

Documents are written by ``bluesky_tiled_plugins.TiledWriter``, behind a
:class:`~trainstamp.storage._spool.SpoolingWriter` (every run also goes to a spool file
until the catalog has it) and, when a TimeServer is given, a
:class:`~trainstamp.trainid.StopStamper`, so the stored stop document carries the run-end
train ID; :func:`subscribe` stamps the RunEngine's stop documents for every subscriber.

One process at a time may write an embedded catalog: DuckDB locks its file for one
writing process. Tiled takes that lock at the first write, so a second process used to
open the catalog fine and then fail every run at its stop, after the data were taken.
:func:`open_catalog` takes the lock when it opens the catalog instead, and refuses with
:class:`CatalogInUse`, naming the process that holds it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import warnings
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from trainstamp.storage._config import StorageConfig
from trainstamp.storage._new_catalog import create_catalog
from trainstamp.trainid import StopStamper, stamp_stop_documents

__all__ = ["CatalogInUse", "catalog", "close_catalog", "make_writer", "open_catalog",
           "subscribe"]

#: The settings each open client was made from (by its tiled Context), so a writer on
#: it knows where to spool and how a replay reaches the same catalog.
_CONFIG_OF: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


class CatalogInUse(RuntimeError):
    """The embedded catalog is being written by another process (``pid``, if known)."""

    def __init__(self, message: str, *, data_dir: Path, pid: int | None) -> None:
        super().__init__(message)
        self.data_dir = data_dir
        self.pid = pid


def config_of(client: Any) -> StorageConfig:
    """The settings ``client`` was opened with (the environment's for a foreign client)."""
    try:
        cfg = _CONFIG_OF.get(client.context)
    except (AttributeError, TypeError):
        cfg = None
    return cfg or StorageConfig.resolve()


def _process_name(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ""
    return " ".join(raw.decode(errors="replace").split("\0")).strip()[:200]


def _in_use(cfg: StorageConfig, exc: BaseException) -> CatalogInUse:
    text = str(exc)
    found = re.search(r"PID (\d+)", text)
    pid = int(found.group(1)) if found else None
    holder = f"process {pid}" if pid is not None else "another process"
    name = _process_name(pid) if pid is not None else ""
    if name:
        holder += f" ({name})"
    return CatalogInUse(
        f"the embedded catalog in {cfg.data_dir} is in use by {holder}. Its DuckDB file "
        f"({cfg.duckdb.name}) takes one writing process at a time, so runs from this one "
        "would fail after their data were taken. Either stop that process, or let every "
        "process write through one Tiled server (TRAINSTAMP_TILED_URI or --tiled-uri; "
        "docs/storage.md), or use another data directory (TRAINSTAMP_DATA_DIR or "
        "--data-dir).", data_dir=cfg.data_dir, pid=pid)


def _claim_writer_lock(adapter: Any, cfg: StorageConfig) -> None:
    """Open the catalog's DuckDB connection now (tiled opens it lazily, at the first
    write), which takes DuckDB's lock on the file for this process, or fails at once
    if another process holds it. Tiled shares one connection per file in a process, so a
    second client in the same process is not refused."""
    for storage in getattr(adapter.context, "writable_storage", {}).values():
        if getattr(storage, "dialect", None) != "duckdb":
            continue
        try:
            storage.connect().close()  # the pooled handle; the connection stays open
        except Exception as exc:
            if "lock" in str(exc).lower():
                raise _in_use(cfg, exc) from None
            raise


def open_catalog(
    data_dir: str | os.PathLike | None = None,
    *,
    tiled_uri: str | None = None,
    api_key: str | None = None,
    readable_storage: tuple | list = (),
    config: StorageConfig | None = None,
) -> Any:
    """A Tiled client on the run catalog; close it with :func:`close_catalog`.

    Parameters
    ----------
    data_dir : path, optional
        Data directory of the embedded catalog (``$TRAINSTAMP_DATA_DIR`` or ``./data``).
        Created if missing; an existing catalog in it is reused.
    tiled_uri : str, optional
        Use this Tiled server instead (``$TRAINSTAMP_TILED_URI``).
    api_key : str, optional
        API key for the server (``$TRAINSTAMP_TILED_API_KEY``).
    readable_storage : paths, optional
        Extra directories the embedded catalog may read external assets (HDF5) from,
        besides the data directory.
    config : StorageConfig, optional
        Resolved settings; overrides all the other arguments.

    Returns
    -------
    client : tiled.client.container.Container
        ``client[uid]`` is a run; ``client[uid]["primary"].read()`` its primary stream.

    Raises
    ------
    CatalogInUse
        Another process writes the embedded catalog (its PID is in the message).
    """
    cfg = config or StorageConfig.resolve(
        data_dir, tiled_uri=tiled_uri, api_key=api_key, readable_storage=readable_storage
    )
    if not cfg.embedded:
        from tiled.client import from_uri

        client = from_uri(cfg.tiled_uri, api_key=cfg.api_key)
    else:
        client = _open_embedded(cfg)
    with contextlib.suppress(TypeError):  # a context that cannot be weakly referenced
        _CONFIG_OF[client.context] = cfg
    return client


def _open_embedded(cfg: StorageConfig) -> Any:
    from tiled.catalog import from_uri as catalog_from_uri
    from tiled.server.app import build_app
    from tiled.utils import ensure_uri

    for directory in (cfg.data_dir, cfg.array_dir, cfg.detector_dir):
        directory.mkdir(parents=True, exist_ok=True)
    if not cfg.catalog_db.exists():
        create_catalog(cfg.catalog_db)  # a copy of a blank template: 4 s less than tiled's init
    adapter = catalog_from_uri(
        cfg.catalog_db,
        writable_storage=[cfg.array_dir, ensure_uri(f"duckdb:///{cfg.duckdb}")],
        readable_storage=[cfg.data_dir, *cfg.readable_storage],
        # Initialising runs a subprocess (alembic); only a new catalog needs it.
        init_if_not_exists=not cfg.catalog_db.exists(),
    )
    # tiled.server.app logs its version at INFO to stdout on every start; keep it quiet.
    logging.getLogger("tiled.server.app").setLevel(logging.WARNING)
    app = build_app(adapter)
    with warnings.catch_warnings():
        # tiled's in-process transport is starlette's TestClient, which warns about httpx.
        warnings.simplefilter("ignore")
        from tiled.client import Context, from_context

        context = Context.from_app(app)
    try:
        _claim_writer_lock(adapter, cfg)
        return from_context(context)
    except BaseException:
        context.close()
        raise


def close_catalog(client: Any) -> None:
    """Close a client from :func:`open_catalog` (and, if embedded, its database)."""
    client.context.close()


@contextlib.contextmanager
def catalog(*args: Any, **kwargs: Any) -> Iterator[Any]:
    """:func:`open_catalog` as a context manager that closes the client."""
    client = open_catalog(*args, **kwargs)
    try:
        yield client
    finally:
        close_catalog(client)


def make_writer(client: Any, *, timeserver: Any = None, batch_size: int | None = None,
                spool_dir: str | os.PathLike | bool | None = None) -> Any:
    """A document callback that stores runs in ``client``'s catalog.

    Parameters
    ----------
    client : tiled client
        From :func:`open_catalog`.
    timeserver : TimeServer, optional
        If given, stop documents get ``train_id_end`` (:class:`~trainstamp.trainid.StopStamper`).
    batch_size : int, optional
        Events buffered before a write (TiledWriter's default if None). Use 1 to see
        events in the catalog while the run is going.
    spool_dir : path or False, optional
        Where each run is spooled until the catalog has it (default: the ``spool/``
        folder of the data directory the client was opened with). ``False``: no spool;
        a catalog failure then raises into the RunEngine.
    """
    from bluesky_tiled_plugins import TiledWriter

    # Arrays of up to 16 elements would otherwise go into the SQL event table, which
    # hands them back from ``stream.read()`` as text ("[1. 2.]"); store every array
    # as an array node so each reads back as numbers.
    kwargs: dict[str, Any] = {"max_array_size": 0}
    if batch_size is not None:
        kwargs["batch_size"] = batch_size
    writer = TiledWriter(client, **kwargs)
    if spool_dir is not False:
        from trainstamp.storage._spool import SpoolingWriter

        cfg = config_of(client)
        writer = SpoolingWriter(writer, cfg.spool_dir if spool_dir in (None, True) else spool_dir,
                                target=cfg.describe(), replay_args=cfg.replay_args())
    if timeserver is None:
        return writer
    return StopStamper(writer, timeserver)


def subscribe(
    RE: Any, client: Any, *, timeserver: Any = None, batch_size: int | None = None
) -> int:
    """Subscribe ``RE`` to a writer into ``client``'s catalog; return the token.

    See :func:`make_writer` for the arguments. With a ``timeserver``, every stop
    document of ``RE`` is stamped before it is dispatched
    (:func:`~trainstamp.trainid.stamp_stop_documents`), so subscribers other than this
    writer, a 0MQ or Kafka publisher among them, see ``train_id_end`` too.
    """
    if timeserver is not None:
        stamp_stop_documents(RE, timeserver)
    return RE.subscribe(make_writer(client, timeserver=timeserver, batch_size=batch_size))
