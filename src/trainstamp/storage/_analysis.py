"""Analysis by train: find the runs that hold a train, load its data side by side.

Stored runs are read through the Tiled client (``run[stream][key]``). These helpers
add the one thing a train-based analysis needs on top: an index by **train ID**.

- :func:`runs_with_train`: the runs whose events actually contain a train (a run span
  from :func:`~trainstamp.storage.find_runs` narrows the search, then each candidate
  stream's train-ID column is checked).
- :func:`load_trains`: one stream's data keys for a range of trains, as an
  :class:`xarray.Dataset` with a ``train_id`` dimension. External arrays (detector
  frames in HDF5) are read only for the rows in the range.
- :func:`detector_frames`, :func:`tagger_data`: the detector images at their exact
  train IDs, and the tagger readings with the first and last train each one covers.
- :func:`side_by_side`: both in one Dataset indexed by train ID;
  :func:`merge_streams`: any streams of a run (a fly run's per-device streams) likewise.
- :func:`train_table`: the per-train scalars of such a Dataset as a pandas DataFrame.
- :func:`tiled_profile`, :func:`write_tiled_profile`: a Tiled profile for the
  embedded catalog, so ``databroker.from_profile(name)`` opens the same runs.

Each key is read on its own (``stream[key].read()``) rather than through
``stream.read()``: the latter turns array-valued table columns (a tagger histogram)
into strings.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import numpy as np

from trainstamp.storage._config import StorageConfig
from trainstamp.storage._read import find_runs
from trainstamp.trainid import TRAIN_ID_KEY

__all__ = [
    "detector_frames",
    "load_trains",
    "merge_streams",
    "runs_with_train",
    "side_by_side",
    "tagger_data",
    "tiled_profile",
    "train_key_of",
    "train_table",
    "write_tiled_profile",
]

#: Columns TiledWriter adds to every event table; not data keys of the run.
_BOOKKEEPING = ("seq_num", "time")


def _check_train_id(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise ValueError(f"{what} must be an integer train ID, got {value!r}")
    if value <= 0:
        raise ValueError(f"{what} must be a train ID > 0, got {value}")
    return int(value)


def _range(first: Any, last: Any) -> tuple[int | None, int | None]:
    lo = None if first is None else _check_train_id(first, "first")
    hi = None if last is None else _check_train_id(last, "last")
    if lo is not None and hi is not None and hi < lo:
        raise ValueError(f"last train {hi} is before first train {lo}")
    return lo, hi


def data_keys(stream: Any) -> list[str]:
    """The data keys of a stream, from its descriptor (no bookkeeping columns)."""
    keys = stream.metadata.get("data_keys")
    if keys:
        return list(keys)
    return [k for k in stream if k not in _BOOKKEEPING and not k.startswith("ts_")]


def train_key_of(stream: Any, prefix: str | None = None) -> str:
    """The data key that holds the train ID of each event of ``stream``.

    With ``prefix`` (a device name) it is ``<prefix>_train_id`` (a device with exact
    IDs, such as the detector), else the stamp's ``train_id`` if present, else the one
    ``*_train_id`` key of the stream.
    """
    keys = data_keys(stream)
    if prefix is not None:
        key = f"{prefix}_{TRAIN_ID_KEY}"
        if key not in keys:
            raise KeyError(f"stream has no {key!r} data key; it has {sorted(keys)}")
        return key
    if TRAIN_ID_KEY in keys:
        return TRAIN_ID_KEY
    candidates = [k for k in keys if k.endswith(f"_{TRAIN_ID_KEY}")
                  and not k.endswith(("_first_train_id", "_last_train_id"))]
    if len(candidates) != 1:
        raise KeyError(f"cannot tell the train-ID key of the stream among {sorted(keys)}; "
                       "pass train_key=")
    return candidates[0]


def _train_ids(stream: Any, key: str) -> np.ndarray:
    ids = np.asarray(stream[key].read())
    if ids.ndim != 1:
        raise ValueError(f"{key!r} has shape {ids.shape}; one train ID per event is needed "
                         "(frames_per_point > 1 gives several: use frames_per_point=1)")
    return ids.astype(np.int64)


def runs_with_train(
    client: Any, train_id: int, *, streams: Sequence[str] | None = None, exact: bool = True
) -> dict[str, Any]:
    """The runs with an event recorded in train ``train_id``, by uid.

    Candidates are the runs whose span (``train_id_start`` .. ``train_id_end``) holds
    the train (:func:`~trainstamp.storage.find_runs`). With ``exact`` (default), a
    candidate is kept only if one of its ``streams`` (all by default) has an event with
    that train ID in its train-ID column (:func:`train_key_of`), so a train that fell
    between two steps of a scan does not count.
    """
    train_id = _check_train_id(train_id, "train_id")
    found = {}
    for uid, run in find_runs(client, train_id).items():
        if not exact:
            found[uid] = run
            continue
        for name in (streams if streams is not None else list(run)):
            if name not in run:
                continue
            try:
                key = train_key_of(run[name])
            except KeyError:
                continue
            if np.any(_train_ids(run[name], key) == train_id):
                found[uid] = run
                break
    return found


def _rows(ids: np.ndarray, lo: int | None, hi: int | None) -> np.ndarray:
    keep = np.ones(ids.shape, dtype=bool)
    if lo is not None:
        keep &= ids >= lo
    if hi is not None:
        keep &= ids <= hi
    return np.flatnonzero(keep)


def _read_rows(column: Any, rows: np.ndarray) -> np.ndarray:
    """Read ``rows`` of an array client: one contiguous slice, then pick the rows."""
    if rows.size == 0:
        shape = tuple(column.shape)
        return np.empty((0, *shape[1:]), dtype=np.dtype(column.dtype))
    a, b = int(rows[0]), int(rows[-1]) + 1
    block = np.asarray(column[a:b])
    return block[rows - a]


def load_trains(
    run: Any,
    first: int | None = None,
    last: int | None = None,
    *,
    stream: str = "primary",
    fields: Iterable[str] | None = None,
    train_key: str | None = None,
    squeeze_frames: bool = True,
) -> Any:
    """The events of ``stream`` for trains ``first`` .. ``last`` (inclusive), by train ID.

    Parameters
    ----------
    run : BlueskyRun
        A run from the catalog (``client[uid]``).
    first, last : int, optional
        Train range; open-ended where None.
    stream : str
        Event stream, ``"primary"`` by default.
    fields : iterable of str, optional
        Data keys to load (all by default; the train-ID key is always the index).
    train_key : str, optional
        The data key that holds the train IDs (:func:`train_key_of` by default).
    squeeze_frames : bool
        Drop a frames-per-point axis of length 1 from detector images
        (``(n, 1, y, x)`` becomes ``(n, y, x)``).

    Returns
    -------
    xarray.Dataset
        One ``train_id`` dimension (the coordinate), one variable per data key. Train
        IDs must be unique in the loaded range.
    """
    import xarray as xr

    lo, hi = _range(first, last)
    if stream not in run:
        raise KeyError(f"run {run.metadata['start']['uid']} has no stream {stream!r}; "
                       f"it has {list(run)}")
    events = run[stream]
    key = train_key or train_key_of(events)
    ids = _train_ids(events, key)
    rows = _rows(ids, lo, hi)
    picked = ids[rows]
    dup = np.unique(picked)[np.unique(picked, return_counts=True)[1] > 1]
    if dup.size:
        raise ValueError(f"train IDs repeat in {stream!r} ({key}): {dup[:10].tolist()}")
    names = [k for k in (fields if fields is not None else data_keys(events)) if k != key]
    variables = {}
    for name in names:
        if name not in events:
            raise KeyError(f"stream {stream!r} has no data key {name!r}")
        values = _read_rows(events[name], rows)
        if squeeze_frames and values.ndim == 4 and values.shape[1] == 1:
            values = values[:, 0]
        dims = [TRAIN_ID_KEY] + [f"{name}_dim{i}" for i in range(1, values.ndim)]
        variables[name] = (dims, values)
    return xr.Dataset(variables, coords={TRAIN_ID_KEY: picked},
                      attrs={"uid": run.metadata["start"]["uid"], "stream": stream,
                             "train_key": key})


def detector_frames(
    run: Any,
    first: int | None = None,
    last: int | None = None,
    *,
    detector: str = "det",
    stream: str = "primary",
) -> Any:
    """The images of ``detector`` for trains ``first`` .. ``last``, at their exact IDs.

    The index is the detector's own ``<detector>_train_id`` (from its packet headers),
    not the interpolated stamp. Returns an :class:`xarray.DataArray`
    ``(train_id, y, x)`` with the frame numbers as a coordinate when stored.
    """
    ds = load_trains(run, first, last, stream=stream, train_key=f"{detector}_{TRAIN_ID_KEY}",
                     fields=[k for k in (f"{detector}_image", f"{detector}_frame_number")
                             if k in data_keys(run[stream])])
    image = ds[f"{detector}_image"].rename(
        {d: n for d, n in zip(ds[f"{detector}_image"].dims[1:], ("y", "x"), strict=True)})
    if f"{detector}_frame_number" in ds:
        image = image.assign_coords(frame_number=ds[f"{detector}_frame_number"])
    return image


def tagger_data(
    run: Any,
    first: int | None = None,
    last: int | None = None,
    *,
    tagger: str = "tagger",
    slot: str = "corr1",
    stream: str = "primary",
) -> Any:
    """The readings of one tagger slot that overlap trains ``first`` .. ``last``.

    A tagger reading covers the trains ``<tagger>_<slot>_first_train_id`` to
    ``..._last_train_id``; it is indexed by its first train and keeps the last as a
    variable. Histogram arrays keep their bin axis (``bin``); the bin times
    (``INDEX``) become the ``bin`` coordinate when they are the same in every reading.
    """
    import xarray as xr

    lo, hi = _range(first, last)
    events = run[stream]
    base = f"{tagger}_{slot}_"
    keys = [k for k in data_keys(events) if k.startswith(base)]
    first_key, last_key = base + "first_train_id", base + "last_train_id"
    if first_key not in keys or last_key not in keys:
        raise KeyError(f"stream {stream!r} has no {first_key!r}/{last_key!r}; "
                       f"keys of {tagger}.{slot}: {sorted(keys)}")
    starts, ends = _train_ids(events, first_key), _train_ids(events, last_key)
    keep = np.ones(starts.shape, dtype=bool)
    if lo is not None:
        keep &= ends >= lo
    if hi is not None:
        keep &= starts <= hi
    rows = np.flatnonzero(keep)
    out = {}
    index = None
    for key in keys:
        if key == first_key:
            continue
        values = _read_rows(events[key], rows)
        name = key[len(base):]
        if (name == "index" and values.ndim == 2 and len(values)
                and np.all(values == values[:1])):
            index = values[0]
            continue
        dims = [TRAIN_ID_KEY] + ["bin"] * (values.ndim > 1)
        out[name] = (dims, values)
    coords = {TRAIN_ID_KEY: starts[rows]}
    if index is not None:
        coords["bin"] = index
    ds = xr.Dataset(out, coords=coords, attrs={"tagger": tagger, "slot": slot})
    return ds.rename({v: f"{tagger}_{slot}_{v}" for v in ds.data_vars})


def side_by_side(
    run: Any,
    first: int | None = None,
    last: int | None = None,
    *,
    detector: str | None = "det",
    tagger: str | None = "tagger",
    slot: str = "corr1",
    detector_stream: str = "primary",
    tagger_stream: str = "primary",
) -> Any:
    """Detector frames and tagger data of trains ``first`` .. ``last`` in one Dataset.

    Frames are placed at their exact train IDs, tagger readings at the first train they
    cover (with ``<tagger>_<slot>_last_train_id`` alongside). The union of trains is the
    index; where one device has no data for a train its variables hold NaN there
    (xarray promotes integer arrays to float when such a gap exists).
    Pass ``detector=None`` or ``tagger=None`` to leave one out.
    """
    import xarray as xr

    parts = []
    if detector is not None:
        parts.append(detector_frames(run, first, last, detector=detector,
                                     stream=detector_stream).to_dataset(name=f"{detector}_image"))
    if tagger is not None:
        parts.append(tagger_data(run, first, last, tagger=tagger, slot=slot,
                                 stream=tagger_stream))
    if not parts:
        raise ValueError("nothing to load: detector and tagger are both None")
    merged = xr.merge(parts, join="outer", combine_attrs="drop")
    merged.attrs = {"uid": run.metadata["start"]["uid"], "first": first, "last": last}
    return merged


def train_table(ds: Any) -> Any:
    """The per-train scalars of a Dataset from these helpers, as a pandas DataFrame.

    Keeps the variables and coordinates that have only the ``train_id`` dimension
    (train IDs, frame numbers, capture durations, ...); arrays such as images and
    histograms are left out. The index is ``train_id``.
    """
    import pandas as pd

    columns = {name: ds[name].values for name in [*ds.coords, *ds.data_vars]
               if ds[name].dims == (TRAIN_ID_KEY,) and name != TRAIN_ID_KEY}
    return pd.DataFrame(columns, index=pd.Index(ds[TRAIN_ID_KEY].values, name=TRAIN_ID_KEY))


def merge_streams(
    run: Any,
    first: int | None = None,
    last: int | None = None,
    *,
    streams: Sequence[str] | None = None,
) -> Any:
    """Several streams of a run in one Dataset indexed by train ID (outer join).

    Each stream is loaded with :func:`load_trains` (its own train-ID key), so a fly
    run's ``timeserver``, ``detector`` and ``tagger`` streams line up train by train.
    Variables that appear in more than one stream (``train_id_status``) are prefixed
    with the stream name. By default every stream that has a train-ID key is used.
    """
    import xarray as xr

    names = list(run) if streams is None else list(streams)
    parts = {}
    for name in names:
        try:
            parts[name] = load_trains(run, first, last, stream=name)
        except KeyError:
            if streams is not None:
                raise
    if not parts:
        raise ValueError(f"no stream of run {run.metadata['start']['uid']} has a train-ID key")
    seen: dict[str, int] = {}
    for ds in parts.values():
        for var in ds.data_vars:
            seen[var] = seen.get(var, 0) + 1
    renamed = []
    for name, ds in parts.items():
        clash = {v: f"{name}_{v}" for v in ds.data_vars if seen[v] > 1}
        dims = {d: f"{name}_{d}" for v in clash for d in ds[v].dims if d != TRAIN_ID_KEY}
        renamed.append(ds.rename({**clash, **dims}))
    merged = xr.merge(renamed, join="outer", combine_attrs="drop")
    merged.attrs = {"uid": run.metadata["start"]["uid"], "streams": list(parts)}
    return merged


def tiled_profile(config: StorageConfig | None = None) -> dict[str, Any]:
    """A Tiled profile (as a dict) that serves the embedded catalog in process.

    Written to a profile directory (:func:`write_tiled_profile`), it lets
    ``databroker.from_profile(name)`` (the same as ``tiled.client.from_profile``) open
    the runs without a server. For a server config the profile is its URI, with the API
    key (if any) as its ``?api_key=`` query: Tiled's profile schema has no ``api_key``
    entry (it refuses one), and its client moves that query into the request header.
    Without a key, Tiled's client takes ``TILED_API_KEY`` from the environment.
    """
    cfg = config or StorageConfig.resolve()
    if not cfg.embedded:
        uri = str(cfg.tiled_uri)
        if cfg.api_key:
            uri += ("&" if "?" in uri else "?") + urlencode({"api_key": cfg.api_key})
        return {"uri": uri}
    return {"direct": {"trees": [{"path": "/", "tree": "catalog", "args": {
        "uri": f"sqlite:///{cfg.catalog_db}",
        "writable_storage": [str(cfg.array_dir), f"duckdb:///{cfg.duckdb}"],
        "readable_storage": [str(cfg.data_dir), *map(str, cfg.readable_storage)],
        "init_if_not_exists": True,
    }}]}}


def write_tiled_profile(
    directory: str | os.PathLike, name: str = "trainstamp", config: StorageConfig | None = None
) -> Path:
    """Write :func:`tiled_profile` as ``<directory>/<name>.yml``; return the path.

    Point ``TILED_PROFILES`` at ``directory`` (or use ``~/.config/tiled/profiles``),
    then ``databroker.from_profile(name)``.
    """
    import yaml

    path = Path(directory) / f"{name}.yml"
    path.parent.mkdir(parents=True, exist_ok=True)
    profile = tiled_profile(config)
    path.write_text(yaml.safe_dump({name: profile}, sort_keys=False))
    if "api_key=" in profile.get("uri", ""):  # the file holds the API key
        path.chmod(0o600)
    return path
