"""Where runs are stored: an embedded catalog in a data directory, or a Tiled server.

Resolution order for each setting: the function argument, then the environment, then
the default.

=============================  ======================================================
``TRAINSTAMP_DATA_DIR``        data directory of the embedded catalog (``./data``)
``TRAINSTAMP_TILED_URI``       a Tiled server to use instead, e.g. ``http://host:8000``
``TRAINSTAMP_TILED_API_KEY``   API key for that server (else Tiled's own login/config)
``TRAINSTAMP_READABLE_STORAGE`` extra directories the embedded catalog may read
                               assets from, separated by ``os.pathsep``
=============================  ======================================================
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["DEFAULT_DATA_DIR", "StorageConfig"]

DEFAULT_DATA_DIR = Path("data")
ENV_DATA_DIR = "TRAINSTAMP_DATA_DIR"
ENV_TILED_URI = "TRAINSTAMP_TILED_URI"
ENV_TILED_API_KEY = "TRAINSTAMP_TILED_API_KEY"
ENV_READABLE_STORAGE = "TRAINSTAMP_READABLE_STORAGE"


@dataclass(frozen=True)
class StorageConfig:
    """Resolved storage settings.

    ``tiled_uri`` set means "use that server"; otherwise the embedded catalog in
    ``data_dir`` is used. The embedded layout is::

        <data_dir>/catalog.db       SQLite: run metadata and the data-source index
        <data_dir>/storage.duckdb   DuckDB: event tables (scalars, small arrays)
        <data_dir>/tiled/           array data written by Tiled
        <data_dir>/detector/        detector HDF5 files (external assets)
        <data_dir>/spool/           runs the catalog could not take (JSON lines)

    The whole ``data_dir`` and every ``readable_storage`` entry are readable by the
    catalog, so HDF5 files referenced by Resource documents under them read back.
    """

    data_dir: Path
    tiled_uri: str | None = None
    api_key: str | None = None
    readable_storage: tuple[Path, ...] = field(default_factory=tuple)

    @classmethod
    def resolve(
        cls,
        data_dir: str | os.PathLike | None = None,
        *,
        tiled_uri: str | None = None,
        api_key: str | None = None,
        readable_storage: tuple[str | os.PathLike, ...] | list = (),
        environ: dict[str, str] | None = None,
    ) -> StorageConfig:
        env = os.environ if environ is None else environ
        directory = data_dir or env.get(ENV_DATA_DIR) or DEFAULT_DATA_DIR
        uri = tiled_uri or env.get(ENV_TILED_URI) or None
        key = api_key or env.get(ENV_TILED_API_KEY) or None
        extra = list(readable_storage)
        extra += [p for p in env.get(ENV_READABLE_STORAGE, "").split(os.pathsep) if p]
        if uri is not None and not uri.startswith(("http://", "https://")):
            raise ValueError(f"Tiled URI must start with http:// or https://, got {uri!r}")
        return cls(
            data_dir=Path(directory).expanduser().resolve(),
            tiled_uri=uri,
            api_key=key,
            readable_storage=tuple(Path(p).expanduser().resolve() for p in extra),
        )

    @property
    def embedded(self) -> bool:
        return self.tiled_uri is None

    @property
    def catalog_db(self) -> Path:
        return self.data_dir / "catalog.db"

    @property
    def duckdb(self) -> Path:
        return self.data_dir / "storage.duckdb"

    @property
    def array_dir(self) -> Path:
        return self.data_dir / "tiled"

    @property
    def detector_dir(self) -> Path:
        """Where detector HDF5 files go, so the catalog can read them back."""
        return self.data_dir / "detector"

    @property
    def spool_dir(self) -> Path:
        """Where a run's documents are spooled (JSON lines) until the catalog has them;
        used for a Tiled server too."""
        return self.data_dir / "spool"

    def replay_args(self) -> list[str]:
        """The ``trainstamp replay`` options that reach this catalog."""
        if self.embedded:
            return ["--data-dir", str(self.data_dir)]
        return ["--tiled-uri", str(self.tiled_uri)]

    def describe(self) -> str:
        if self.embedded:
            return f"embedded Tiled catalog in {self.data_dir}"
        return f"Tiled server {self.tiled_uri}"
