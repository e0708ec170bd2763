"""The run spool: every run's documents also go to a JSON-lines file, so none is lost.

:class:`SpoolingWriter` sits between the RunEngine and the catalog writer
(``TiledWriter``). For each run it writes every document, as it arrives, to
``<data dir>/spool/<run uid>.jsonl`` (the format is in
:mod:`trainstamp.storage._spool_file`) and then hands it to the catalog writer:

- the run stops and the catalog took every document: the spool file is deleted;
- the catalog fails (a locked or full disk, a server that went away): the writer is not
  called again for that run, the failure and the spool file are announced at once
  (stderr and the ``trainstamp.storage`` logger), and the documents keep going to the
  spool until the run stops. The data taking goes on; ``trainstamp replay FILE`` stores
  the run later (:mod:`trainstamp.storage._replay`);
- the process dies mid-run: the spool holds every document up to then.

The spool is written ahead of the catalog and flushed after every document, so a
``kill -9`` of the session loses nothing the OS had received; it is fsynced when the
run stops.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from trainstamp.storage._spool_file import SPOOL_SUFFIX, encode_line

__all__ = ["SpoolingWriter", "announce"]

log = logging.getLogger("trainstamp.storage")


# --- the writer ---------------------------------------------------------------------------


def announce(message: str) -> None:
    """Tell the user at once: stderr (the console of a session) and the log."""
    if log.hasHandlers():  # else logging's last resort would print it a second time
        log.error("%s", message)
    print(f"trainstamp storage: {message}", file=sys.stderr, flush=True)


def _describe_error(exc: BaseException) -> str:
    """The error in one line: its type and first line (without SQLAlchemy's SQL echo)."""
    lines = str(exc).strip().splitlines()
    text = lines[0].split(" [SQL:")[0].strip() if lines else ""
    if len(text) > 200:
        text = text[:199] + "…"
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class _RunSpool:
    """The spool file and the catalog's health for one run."""

    def __init__(self, owner: SpoolingWriter, start: dict) -> None:
        self.owner = owner
        self.uid = start["uid"]
        self.documents = 0
        self.catalog_ok = True
        self.file = None
        self.path: Path | None = None
        self.spool_error: str | None = None
        if owner.spool_dir is None:
            self.spool_error = "spooling is off"
            return
        try:
            owner.spool_dir.mkdir(parents=True, exist_ok=True)
            self.path = owner.spool_dir / f"{self.uid}{SPOOL_SUFFIX}"
            self.file = open(self.path, "x", encoding="utf-8")  # noqa: SIM115 - lives as long as the run
        except OSError as exc:
            self._spool_failed(exc)

    def __call__(self, name: str, doc: dict) -> None:
        if self.file is not None:
            try:
                self.file.write(encode_line(name, doc))
                self.file.flush()
                self.documents += 1
            except (OSError, TypeError, ValueError) as exc:
                self._spool_failed(exc)
        if self.catalog_ok:
            try:
                self.owner.writer(name, doc)
            except Exception as exc:
                self._catalog_failed(name, exc)
        if name == "stop":
            self.finish()

    def _spool_failed(self, exc: BaseException) -> None:
        self.spool_error = _describe_error(exc)
        if self.file is not None:
            with contextlib.suppress(OSError):
                self.file.close()
            self.file = None
        if not self.catalog_ok:
            raise RuntimeError(
                f"run {self.uid}: the catalog failed and the spool {self.path} failed too "
                f"({self.spool_error}): documents of this run are being lost") from exc
        announce(f"run {self.uid[:8]}: cannot spool it to {self.owner.spool_dir} "
                 f"({self.spool_error}); the catalog still receives it, but a catalog "
                 "failure now would lose data. The spool is in the data directory: set "
                 "TRAINSTAMP_DATA_DIR (or --data-dir) to a writable one.")

    def _catalog_failed(self, name: str, exc: BaseException) -> None:
        self.catalog_ok = False
        reason = _describe_error(exc)
        log.debug("catalog writer failed", exc_info=exc)
        if self.file is None:
            raise RuntimeError(
                f"run {self.uid}: writing the {name} document to the "
                f"{self.owner.target} failed ({reason}) and the run cannot be spooled "
                f"({self.spool_error}): its documents are lost") from exc
        with contextlib.suppress(OSError):
            os.fsync(self.file.fileno())
        announce(f"run {self.uid[:8]}: writing its {name} document to the "
                 f"{self.owner.target} failed ({reason}). Nothing is lost: this run's "
                 f"documents go on into {self.path}, and the catalog is not written again "
                 f"for this run. Store it once the catalog works again with: "
                 f"{self.owner.replay_command(self.path)} (or, in this process, "
                 "trainstamp.storage.replay_all(client))")

    def finish(self) -> None:
        if self.file is not None:
            with contextlib.suppress(OSError):
                self.file.flush()
                os.fsync(self.file.fileno())
            with contextlib.suppress(OSError):
                self.file.close()
            self.file = None
        if self.path is None:
            return
        if self.catalog_ok and self.spool_error is None:
            with contextlib.suppress(OSError):
                self.path.unlink()
        elif not self.catalog_ok:
            self.owner.spooled[self.uid] = self.path
            announce(f"run {self.uid[:8]} ({self.documents} documents) is in "
                     f"{self.path}, not in the catalog. Store it with: "
                     f"{self.owner.replay_command(self.path)}")


class SpoolingWriter:
    """A document callback: the catalog ``writer`` behind a per-run spool file.

    Parameters
    ----------
    writer : callable
        The catalog writer, ``writer(name, doc)`` (``TiledWriter``).
    spool_dir : path or None
        Where the spool files go (``<data dir>/spool``); None: no spool (a catalog
        failure then raises, since nothing else holds the documents).
    target : str
        The catalog, as the messages name it (``StorageConfig.describe()``).
    replay_args : list of str
        What ``trainstamp replay FILE`` needs to reach this catalog (``--data-dir D``
        or ``--tiled-uri U``), for the message that tells the user.

    ``spooled`` maps the uid of every run that only the spool holds to its file.
    """

    def __init__(self, writer: Callable[[str, dict], Any], spool_dir: str | os.PathLike | None,
                 *, target: str = "catalog", replay_args: list[str] | None = None) -> None:
        self.writer = writer
        self.spool_dir = None if spool_dir is None else Path(spool_dir)
        self.target = target
        self.replay_args = list(replay_args or [])
        self.spooled: dict[str, Path] = {}
        self._runs: dict[str, _RunSpool] = {}
        self._owner_of: dict[str, str] = {}  # descriptor/resource uid -> run uid

    def replay_command(self, path: Path) -> str:
        return " ".join(["trainstamp", "replay", str(path), *self.replay_args])

    def _run_of(self, name: str, doc: dict) -> _RunSpool | None:
        if name in ("descriptor", "resource", "stream_resource", "stop"):
            uid = doc.get("run_start")
        elif name in ("event", "event_page", "stream_datum"):
            uid = self._owner_of.get(doc.get("descriptor"))
        elif name in ("datum", "datum_page"):
            uid = self._owner_of.get(doc.get("resource"))
        else:
            uid = None
        run = self._runs.get(uid) if uid is not None else None
        if run is None and len(self._runs) == 1:
            # Documents without a run reference (resources of old devices): the only
            # run open is theirs.
            run = next(iter(self._runs.values()))
        return run

    def __call__(self, name: str, doc: dict) -> None:
        if name == "start":
            run = self._runs[doc["uid"]] = _RunSpool(self, doc)
        else:
            run = self._run_of(name, doc)
            if run is None:  # not part of a run this writer saw start: pass it on
                self.writer(name, doc)
                return
            if name in ("descriptor", "resource", "stream_resource") and "uid" in doc:
                self._owner_of[doc["uid"]] = run.uid
        try:
            run(name, doc)
        finally:
            if name == "stop":
                self._runs.pop(run.uid, None)
                for key in [k for k, v in self._owner_of.items() if v == run.uid]:
                    del self._owner_of[key]

    def __getattr__(self, attr: str) -> Any:
        # The writer's own API stays reachable through the wrapper.
        return getattr(self.writer, attr)


