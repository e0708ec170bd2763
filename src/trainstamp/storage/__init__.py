"""Run storage: an embedded Tiled catalog by default, or a Tiled server.

- :func:`open_catalog` / :func:`catalog` / :func:`close_catalog`: a Tiled client on the
  run catalog (embedded SQLite + DuckDB in a data directory, or a server).
- :func:`make_writer` / :func:`subscribe`: ``TiledWriter`` for a RunEngine, optionally
  stamping the run-end train ID into stop documents.
- :func:`last_run`, :func:`find_runs`, :func:`read_stream`, :func:`read_train_ids`:
  find runs (by train ID) and read them back.
- :func:`train_id_problems`, :func:`train_consistency` / :func:`check_train_consistency`,
  :func:`check_alignment`: the one checker of stored runs (one stream keeps the
  train-ID contract; the streams of a run name the same trains; a step scan's devices
  report trains within each event's TimeServer window).
- :func:`runs_with_train`, :func:`load_trains`, :func:`detector_frames`,
  :func:`tagger_data`, :func:`side_by_side`, :func:`merge_streams`, :func:`train_table`: analysis by train ID (xarray).
- :func:`export_euxfel`: write a run as a European XFEL run directory (EXtra-data);
  ``trainstamp export euxfel``.
- :func:`tiled_profile`, :func:`write_tiled_profile`: open the embedded catalog, or a
  server, with ``databroker.from_profile``.
- ``trainstamp serve`` (:mod:`trainstamp.storage._serve`): a Tiled server on PostgreSQL
  for many writing processes (docs/storage.md, "Scale out").
- :class:`StorageConfig`: how the settings (arguments, ``TRAINSTAMP_*`` environment)
  resolve.
- :class:`CatalogInUse`: the embedded catalog is written by another process.
- :class:`SpoolingWriter`, :func:`read_spool`, :func:`pending_spools`, :func:`replay`:
  every run is spooled to a file until the catalog has it; ``trainstamp replay`` stores
  what the catalog could not take.
"""

from trainstamp.storage._analysis import (
    detector_frames,
    load_trains,
    merge_streams,
    runs_with_train,
    side_by_side,
    tagger_data,
    tiled_profile,
    train_key_of,
    train_table,
    write_tiled_profile,
)
from trainstamp.storage._catalog import (
    CatalogInUse,
    catalog,
    close_catalog,
    config_of,
    make_writer,
    open_catalog,
    subscribe,
)
from trainstamp.storage._check import (
    Alignment,
    StreamTrains,
    TrainConsistency,
    check_alignment,
    check_train_consistency,
    train_consistency,
    train_id_problems,
)
from trainstamp.storage._config import DEFAULT_DATA_DIR, StorageConfig
from trainstamp.storage._euxfel_write import ExportResult, export_euxfel
from trainstamp.storage._read import find_runs, last_run, read_stream, read_train_ids
from trainstamp.storage._replay import ReplayResult, replay, replay_all
from trainstamp.storage._spool import SpoolingWriter
from trainstamp.storage._spool_file import SpoolError, pending_spools, read_spool

__all__ = [
    "DEFAULT_DATA_DIR",
    "Alignment",
    "CatalogInUse",
    "ExportResult",
    "ReplayResult",
    "SpoolError",
    "SpoolingWriter",
    "StorageConfig",
    "StreamTrains",
    "TrainConsistency",
    "catalog",
    "check_alignment",
    "check_train_consistency",
    "close_catalog",
    "config_of",
    "detector_frames",
    "export_euxfel",
    "find_runs",
    "last_run",
    "load_trains",
    "make_writer",
    "merge_streams",
    "open_catalog",
    "pending_spools",
    "read_spool",
    "read_stream",
    "read_train_ids",
    "replay",
    "replay_all",
    "runs_with_train",
    "side_by_side",
    "subscribe",
    "tagger_data",
    "tiled_profile",
    "train_consistency",
    "train_id_problems",
    "train_key_of",
    "train_table",
    "write_tiled_profile",
]
