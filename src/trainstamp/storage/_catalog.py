"""Open the run catalog and subscribe a RunEngine to it.

By default the catalog is embedded: a Tiled catalog on SQLite (metadata) and DuckDB
(event tables) in the data directory, served in process through Tiled's ASGI app, so
no port is opened and nothing keeps running after the client is closed. With a Tiled
URI (argument or ``TRAINSTAMP_TILED_URI``) the same API talks to a Tiled server.

Documents are written by ``bluesky_tiled_plugins.TiledWriter``; the writer is wrapped
in a :class:`~trainstamp.plans.StopStamper` when a TimeServer is given, so the stored
stop document carries the run-end train ID.
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from collections.abc import Iterator
from typing import Any

from trainstamp.storage._config import StorageConfig

__all__ = ["catalog", "close_catalog", "make_writer", "open_catalog", "subscribe"]


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
    """
    cfg = config or StorageConfig.resolve(
        data_dir, tiled_uri=tiled_uri, api_key=api_key, readable_storage=readable_storage
    )
    if not cfg.embedded:
        from tiled.client import from_uri

        return from_uri(cfg.tiled_uri, api_key=cfg.api_key)
    return _open_embedded(cfg)


def _open_embedded(cfg: StorageConfig) -> Any:
    from tiled.catalog import from_uri as catalog_from_uri
    from tiled.server.app import build_app
    from tiled.utils import ensure_uri

    for directory in (cfg.data_dir, cfg.array_dir, cfg.detector_dir):
        directory.mkdir(parents=True, exist_ok=True)
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
    return from_context(context)


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


def make_writer(client: Any, *, timeserver: Any = None, batch_size: int | None = None) -> Any:
    """A document callback that stores runs in ``client``'s catalog.

    Parameters
    ----------
    client : tiled client
        From :func:`open_catalog`.
    timeserver : TimeServer, optional
        If given, stop documents get ``train_id_end`` (:class:`~trainstamp.plans.StopStamper`).
    batch_size : int, optional
        Events buffered before a write (TiledWriter's default if None). Use 1 to see
        events in the catalog while the run is going.
    """
    from bluesky_tiled_plugins import TiledWriter

    # Arrays of up to 16 elements would otherwise go into the SQL event table, which
    # hands them back from ``stream.read()`` as text ("[1. 2.]"); store every array
    # as an array node so each reads back as numbers.
    kwargs: dict[str, Any] = {"max_array_size": 0}
    if batch_size is not None:
        kwargs["batch_size"] = batch_size
    writer = TiledWriter(client, **kwargs)
    if timeserver is None:
        return writer
    from trainstamp.plans._stamp import StopStamper

    return StopStamper(writer, timeserver)


def subscribe(
    RE: Any, client: Any, *, timeserver: Any = None, batch_size: int | None = None
) -> int:
    """Subscribe ``RE`` to a writer into ``client``'s catalog; return the token.

    See :func:`make_writer` for the arguments.
    """
    return RE.subscribe(make_writer(client, timeserver=timeserver, batch_size=batch_size))
