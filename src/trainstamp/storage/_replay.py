"""``trainstamp replay``: store spooled runs in a catalog.

A spool file (:mod:`trainstamp.storage._spool_file`) holds every document of one run that
the catalog could not take. :func:`replay` writes them, unchanged, through the same
writer a session uses (``TiledWriter``), so the stored run has the same uid, events,
train IDs and detector assets as if the catalog had never failed. Then it checks the
catalog has the run's stop document and every event, and moves the file to
``spool/replayed/``.

If the catalog already holds an incomplete copy of the run (the start document and
whatever was written before the failure), that copy is deleted first; a complete copy
is left alone unless ``replace`` is asked for.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainstamp.storage._spool_file import (
    SPOOL_SUFFIX,
    Spool,
    SpoolError,
    iter_documents,
    pending_spools,
    read_spool,
)

__all__ = ["ReplayResult", "main", "replay", "replay_all", "spool_files"]


@dataclass
class ReplayResult:
    """What :func:`replay` did with one spool file."""

    path: Path
    uid: str
    #: "stored", or "already stored" (a complete copy was there; nothing written)
    outcome: str
    events: dict[str, int]
    notes: list[str]


def _stored_events(run: Any) -> dict[str, int]:
    stop = run.metadata.get("stop") or {}
    return dict(stop.get("num_events") or {})


def replay(path: str | os.PathLike, client: Any, *, replace: bool = False,
           keep: bool = False, out: Callable[[str], object] = print) -> ReplayResult:
    """Store the run spooled in ``path`` in ``client``'s catalog.

    Raises :class:`~trainstamp.storage._spool_file.SpoolError` for a file that cannot be
    replayed (nothing is written then) and ``RuntimeError`` if the catalog does not end
    up holding the whole run; the spool file stays where it is in both cases.
    """
    from trainstamp.storage._catalog import make_writer

    spool: Spool = read_spool(path)
    uid, notes = spool.uid, list(spool.notes)
    if not spool.stopped:
        notes.append("no stop document (the writing process died mid-run): the run is "
                     "closed with exit_status 'abort'")
    expected = spool.event_counts()
    if uid in client:
        existing = client[uid]
        if existing.metadata.get("stop") is not None and not replace:
            out(f"{spool.path.name}: run {uid} is already complete in the catalog; "
                "nothing written (--replace writes it again)")
            return ReplayResult(spool.path, uid, "already stored", _stored_events(existing),
                                notes)
        client.delete_contents(uid, recursive=True, external_only=False)
        notes.append("the catalog's " + ("copy" if existing.metadata.get("stop") else
                     "incomplete copy (left by the failed write)") + " was deleted first")
    writer = make_writer(client, spool_dir=False)
    for name, doc in iter_documents(spool):
        writer(name, doc)
    run = client[uid]
    if run.metadata.get("stop") is None:
        raise RuntimeError(f"{spool.path}: the catalog has no stop document for run {uid} "
                           "after the replay")
    stored = {stream: len(run[stream].read(variables=["time"])["time"])
              for stream in expected if stream in run}
    if stored != expected:
        raise RuntimeError(f"{spool.path}: the catalog holds {stored} events of run {uid}, "
                           f"the spool {expected}")
    if not keep:
        done = spool.path.parent / "replayed"
        done.mkdir(exist_ok=True)
        spool.path.replace(done / spool.path.name)
    return ReplayResult(spool.path, uid, "stored", stored, notes)


def replay_all(client: Any, spool_dir: str | os.PathLike | None = None, *,
               out: Callable[[str], object] = print) -> list[ReplayResult]:
    """Store every run waiting in ``spool_dir`` (default: the spool of the data directory
    ``client`` was opened with) in ``client``'s catalog; from the process that holds the
    embedded catalog, where ``trainstamp replay`` would be refused."""
    from trainstamp.storage._catalog import config_of

    directory = Path(spool_dir) if spool_dir is not None else config_of(client).spool_dir
    results = []
    for path in pending_spools(directory):
        result = replay(path, client, out=out)
        out(f"{path.name}: run {result.uid} {result.outcome}")
        results.append(result)
    return results


def spool_files(paths: Sequence[str | os.PathLike]) -> list[Path]:
    """The spool files named: files as given, directories for the spool files in them."""
    found: list[Path] = []
    for item in paths:
        path = Path(item)
        found.extend(pending_spools(path) if path.is_dir() else [path])
    return found


def _default_target(files: Sequence[Path]) -> str | None:
    """The data directory a spool file sits in (``<data dir>/spool/<uid>.jsonl``, or
    ``<data dir>/spool/replayed/<uid>.jsonl``)."""
    dirs = set()
    for f in files:
        parent = f.resolve().parent
        if parent.name == "replayed" and parent.parent.name == "spool":
            parent = parent.parent
        if parent.name == "spool":
            dirs.add(parent.parent)
    return str(dirs.pop()) if len(dirs) == 1 else None


def main(argv: Sequence[str]) -> int:
    """``trainstamp replay SPOOL... [--data-dir D | --tiled-uri U]``."""
    from trainstamp.storage._catalog import CatalogInUse, catalog
    from trainstamp.storage._config import ENV_DATA_DIR, ENV_TILED_URI, StorageConfig

    parser = argparse.ArgumentParser(
        prog="trainstamp replay",
        description="Store runs that the catalog could not take (spool files, "
                    f"<data dir>/spool/<run uid>{SPOOL_SUFFIX}) in a catalog. A "
                    "directory stands for every spool file in it.")
    parser.add_argument("spools", nargs="+", metavar="SPOOL", help="spool file or directory")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--data-dir", default=None,
                       help="embedded catalog to store into (default: $TRAINSTAMP_DATA_DIR, "
                            "else the data directory the spool file is in, else ./data)")
    where.add_argument("--tiled-uri", default=None,
                       help="Tiled server to store into (default $TRAINSTAMP_TILED_URI)")
    parser.add_argument("--api-key", default=None, help="API key of the Tiled server")
    parser.add_argument("--replace", action="store_true",
                        help="write a run again even if the catalog holds a complete copy")
    parser.add_argument("--keep", action="store_true",
                        help="leave the spool files where they are (default: moved to "
                             "spool/replayed/ once stored)")
    args = parser.parse_args(list(argv))
    missing = [p for p in args.spools if not Path(p).exists()]
    if missing:
        print(f"trainstamp replay: no such file or directory: {', '.join(missing)}",
              file=sys.stderr)
        return 2
    files = spool_files(args.spools)
    if not files:
        print("trainstamp replay: no spool files found in "
              f"{', '.join(args.spools)}", file=sys.stderr)
        return 2
    data_dir = args.data_dir
    if data_dir is None and args.tiled_uri is None and not (
            os.environ.get(ENV_DATA_DIR) or os.environ.get(ENV_TILED_URI)):
        data_dir = _default_target(files)
    try:
        cfg = StorageConfig.resolve(data_dir, tiled_uri=args.tiled_uri, api_key=args.api_key)
    except ValueError as exc:
        parser.error(str(exc))
    failed = 0
    try:
        with catalog(config=cfg) as client:
            print(f"replaying {len(files)} spool file(s) into the {cfg.describe()}")
            for path in files:
                try:
                    result = replay(path, client, replace=args.replace, keep=args.keep)
                except SpoolError as exc:
                    print(f"trainstamp replay: {exc}; nothing written", file=sys.stderr)
                    failed = failed or 2
                    continue
                except Exception as exc:
                    print(f"trainstamp replay: {path}: {type(exc).__name__}: {exc}; the "
                          "spool file is kept", file=sys.stderr)
                    failed = 1
                    continue
                events = ", ".join(f"{k} {v}" for k, v in result.events.items()) or "none"
                print(f"  {result.path.name}: run {result.uid} {result.outcome} "
                      f"(events: {events})")
                for note in result.notes:
                    print(f"    note: {note}")
    except CatalogInUse as exc:
        print(f"trainstamp replay: {exc}", file=sys.stderr)
        return 1
    return failed
