"""Collectors for :func:`~trainstamp.plans.train_fly`: one event stream each, one event
per train, collected in event pages while the acquisition runs.

- :class:`TickCollector` (stream ``timeserver``): every TimeServer tick, from the
  Channel Access monitor on ``ID`` or from the TimeServer's broadcaster.
- :class:`FrameCollector` (stream ``detector``): every detector frame, read from the
  capture file (HDF5, SWMR) while the IOC writes it; exact packet-header train IDs.
- :class:`MarkerCountCollector` (stream ``tagger``): photon counts per train from a
  ``CountBetweenMarkers`` on the tagger server (Pyro5).

Each is a bluesky Flyable and EventPageCollectable whose configuration is the
TimeServer's, so every descriptor carries it.
"""


from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
from ophyd.status import Status

from trainstamp.timing import suspenders
from trainstamp.trainid import NO_TRAIN_ID, TRAIN_ID_KEY, TRAIN_ID_STATUS_KEY

__all__ = ["FrameCollector", "MarkerCountCollector", "TickCollector"]

_STATUS_CHOICES = ["OK", "STALE", "INVALID", "EXACT"]


def _id_keys(source: str) -> dict[str, dict[str, Any]]:
    return {
        TRAIN_ID_KEY: {"source": source, "dtype": "integer", "dtype_numpy": "<i8", "shape": []},
        TRAIN_ID_STATUS_KEY: {"source": source, "dtype": "string", "shape": [],
                              "choices": _STATUS_CHOICES},
    }


def _page(columns: dict[str, list], times: list[float]) -> dict[str, Any]:
    return {"data": columns, "timestamps": {k: list(times) for k in columns}, "time": list(times)}


class _Collector:
    """What the three collectors share: name, TimeServer configuration, done status."""

    parent = None

    def __init__(self, name: str, timeserver: Any) -> None:
        self.name = name
        self.timeserver = timeserver
        self._done: Status | None = None

    def read_configuration(self) -> dict[str, Any]:
        return dict(self.timeserver.read_configuration())

    def describe_configuration(self) -> dict[str, Any]:
        return dict(self.timeserver.describe_configuration())

    def complete(self) -> Status:
        if self._done is None:
            raise RuntimeError(f"{self.name}: complete() before kickoff()")
        return self._done

    def _finish(self, exc: BaseException | None = None) -> None:
        if self._done is not None and not self._done.done:
            if exc is None:
                self._done.set_finished()
            else:
                self._done.set_exception(exc)


class TickCollector(_Collector):
    """Every TimeServer tick from ``stage`` (or ``kickoff``) until ``num_trains`` ticks
    have come.

    With ``hold`` set it keeps going past ``num_trains`` until :meth:`finish_at` names
    the last train wanted, so the ticks cover every train the other streams recorded.

    The ticks come from the Channel Access monitor on the TimeServer's ``ID``, or,
    with ``feed_uri``, from the TimeServer's own tick broadcaster (TCP, the ASCII
    train-ID protocol). A CA monitor may skip an update when the client is busy
    (observed here: about 1 in 150 at 100 Hz on a loaded machine), so a lossless
    record of every tick needs the broadcaster; ``<timeserver>_tick_time`` is then the
    receive time rather than the tick time.

    Parameters
    ----------
    timeserver : TimeServer
        Its ``train_id`` signal is monitored; each new whole ID above 0 is one tick.
    num_trains : int
        Ticks to record.
    timeout : float
        Seconds without a tick after which ``complete`` fails.
    feed_uri : str, optional
        ``tcp://host:port`` of the TimeServer's broadcaster.
    """

    def __init__(self, timeserver: Any, num_trains: int, *, name: str | None = None,
                 timeout: float = 5.0, feed_uri: str | None = None) -> None:
        super().__init__(name or f"{timeserver.name}_ticks", timeserver)
        self.feed_uri = feed_uri
        self._feed = None
        self.num_trains = num_trains
        self.timeout = timeout
        self._lock = threading.Lock()
        self._ids: list[int] = []
        self._times: list[float] = []
        self._taken = 0
        self._last = 0
        self._cid = None
        self._watch: threading.Thread | None = None
        self._until: int | None = None
        self._ticking_cid = None
        self._holding = False
        self.hold = False

    def finish_at(self, train_id: int) -> None:
        """Keep recording until a tick at or above ``train_id`` (then finish)."""
        with self._lock:
            self._until, self.hold = int(train_id), False
            done = bool(self._ids) and self._ids[-1] >= self._until
        if done:
            self._stop_monitor()
            self._finish()

    def _full(self) -> bool:
        if self.hold or len(self._ids) < self.num_trains:
            return False
        return self._until is None or self._ids[-1] >= self._until

    def _on_id(self, value=None, timestamp=None, **kwargs) -> None:
        try:
            number = float(value)
        except (TypeError, ValueError):
            return
        if not number.is_integer() or number <= 0 or int(number) == self._last:
            return
        with self._lock:
            if self._done is None or self._done.done:
                return
            self._last = int(number)
            self._ids.append(int(number))
            self._times.append(float(timestamp or time.time()))
            full = self._full()
        if full:
            self._stop_monitor()
            self._finish()

    def ids_from(self, train_id: int) -> list[int]:
        """The ticks recorded so far at or after ``train_id``."""
        with self._lock:
            ids = list(self._ids)
        i = int(np.searchsorted(np.asarray(ids, dtype=np.int64), train_id, "left"))
        return ids[i:]

    def _on_feed(self, train_id: int, recv_ns: int) -> None:
        self._on_id(value=train_id, timestamp=recv_ns / 1e9)

    def _on_ticking(self, value=None, **kwargs) -> None:
        """The TimeServer stopped vouching for its ticks (not ON, ``ID`` in alarm or
        disconnected): a fly cannot rewind and resume part-way, so it fails now and says
        why, instead of recording unvouched IDs."""
        if value or self._done is None or self._done.done:
            return
        why = getattr(self.timeserver, "health", "")
        if not why:
            # Only late (a busy client, a slow network): the ticks themselves still
            # come, and the watchdog fails the fly if they stop for ``timeout``.
            return
        self._stop_monitor()
        where = getattr(self.timeserver, "prefix", "") or self.timeserver.name
        self._finish(RuntimeError(
            f"TimeServer {where} gave no valid train ID during the fly ({why}) after "
            f"{len(self._ids)} of {self.num_trains} ticks; a fly records consecutive "
            "trains and cannot resume part-way: run it again once the TimeServer is ON"))

    def _stop_monitor(self) -> None:
        cid, self._ticking_cid = self._ticking_cid, None
        if cid is not None:
            self.timeserver.ticking.unsubscribe(cid)
        cid, self._cid = self._cid, None
        if cid is not None:
            self.timeserver.train_id.unsubscribe(cid)
        feed, self._feed = self._feed, None
        if feed is not None:
            feed.stop()

    def stage(self) -> list[Any]:
        """Start recording ticks now (before the other devices start), so the stream
        covers every train they record, even ones they buffered before kickoff."""
        self._stop_monitor()
        with self._lock:
            self._ids, self._times, self._taken = [], [], 0
            self._last = int(self.timeserver.train_id.get() or 0)  # the tick already in force
            self._done = Status(obj=self)
        if self.feed_uri is None:
            self._cid = self.timeserver.train_id.subscribe(self._on_id, run=False)
        else:
            from trainstamp.timing.feed import TrainFeed

            self._feed = TrainFeed(self.feed_uri, self._on_feed, name=f"{self.name}-feed").start()
            if not self._feed.wait_connected(5.0):
                self._stop_monitor()
                raise TimeoutError(f"{self.name}: cannot connect to the tick feed {self.feed_uri}")
        if not self._holding:
            suspenders.hold_off(self.timeserver)  # see trainstamp.timing.suspenders
            self._holding = True
        if hasattr(self.timeserver, "ticking"):
            self._ticking_cid = self.timeserver.ticking.subscribe(self._on_ticking, run=True)
        self._watch = threading.Thread(target=self._watchdog, daemon=True,
                                       name=f"{self.name}-watchdog")
        self._watch.start()
        return [self]

    def unstage(self) -> list[Any]:
        self._stop_monitor()
        if self._holding:
            self._holding = False
            suspenders.release(self.timeserver)
        return [self]

    def kickoff(self) -> Status:
        if (self._cid is None and self._feed is None) or self._done is None or self._done.done:
            self.stage()
        status = Status(obj=self)
        status.set_finished()
        return status

    def _watchdog(self) -> None:
        seen, since = -1, time.monotonic()
        while self._done is not None and not self._done.done:
            n = len(self._ids)
            if n != seen:
                seen, since = n, time.monotonic()
            elif time.monotonic() - since > self.timeout:
                self._stop_monitor()
                self._finish(TimeoutError(f"{self.name}: no tick for {self.timeout} s "
                                          f"after {n} of {self.num_trains}"))
            time.sleep(0.05)

    def stop(self, *, success: bool = False) -> None:
        self._stop_monitor()
        self._finish(None if success else RuntimeError(f"{self.name} stopped"))

    def describe_collect(self) -> dict[str, Any]:
        source = f"{self.timeserver.name}:tick" if self.feed_uri is None else self.feed_uri
        keys = _id_keys(source)
        keys[f"{self.timeserver.name}_tick_time"] = {"source": source, "dtype": "number",
                                                     "shape": [], "units": "s"}
        return keys

    def collect_pages(self) -> Iterator[dict[str, Any]]:
        with self._lock:
            ids, times = self._ids[self._taken:], self._times[self._taken:]
            self._taken = len(self._ids)
        if ids:
            yield _page({TRAIN_ID_KEY: ids, TRAIN_ID_STATUS_KEY: ["OK"] * len(ids),
                         f"{self.timeserver.name}_tick_time": times}, times)


class FrameCollector(_Collector):
    """Every frame of one detector capture, read from the capture file as it grows.

    ``kickoff`` asks the IOC for ``num_trains`` frames into the file the (staged)
    :class:`~trainstamp.detector.Team1k` opened for the run; ``collect_pages`` reads the
    per-frame train IDs, frame numbers and completeness that the IOC has flushed
    (``/entry/data/train_id`` ...; SWMR), and ``complete`` finishes when all frames are
    there. In external-trigger mode there is one frame per train and its ``train_id`` is
    exact; a frame without one (header ID 0) is flagged ``"INVALID"`` with -1.
    """

    def __init__(self, detector: Any, timeserver: Any, num_trains: int, *,
                 name: str | None = None, timeout: float = 10.0) -> None:
        super().__init__(name or f"{detector.name}_frames", timeserver)
        self.detector = detector
        self.num_trains = num_trains
        self.timeout = timeout
        self._path: str | None = None
        self._first = 0
        self._taken = 0
        self._file = None
        self._last_growth = 0.0
        self.last_train_id = 0
        self.lost = 0  # bins of the window the tagger lost (overflows)

    def _open(self):
        import h5py

        if self._file is None:
            self._file = h5py.File(self._path, "r", libver="latest", swmr=True)
        return self._file

    def _length(self) -> int:
        f = self._open()
        n = None
        for key in ("train_id", "frame_number", "complete"):
            ds = f[f"/entry/data/{key}"]
            ds.refresh()
            n = ds.shape[0] if n is None else min(n, ds.shape[0])
        return int(n)

    def kickoff(self) -> Status:
        det = self.detector
        self._path = det.capture_full_path.get()
        if not self._path:
            raise RuntimeError(f"{det.name} has no open capture file: stage it first")
        self._file = None
        self._first = self._length()
        self._taken = 0
        self._last_growth = time.monotonic()
        self._done = Status(obj=self)
        det.capture_cmd.put(self.num_trains, wait=True)
        status = Status(obj=self)
        status.set_finished()
        return status

    def describe_collect(self) -> dict[str, Any]:
        source = f"{self.detector.name}:packet_header"
        keys = _id_keys(source)
        keys[self.detector.frame_number_key] = {"source": source, "dtype": "integer",
                                                "dtype_numpy": "<u8", "shape": []}
        keys[f"{self.detector.name}_complete"] = {"source": source, "dtype": "boolean",
                                                  "shape": []}
        return keys

    def collect_pages(self) -> Iterator[dict[str, Any]]:
        if self._path is None:
            return
        n = min(self._length() - self._first, self.num_trains)
        if n > self._taken:
            self._last_growth = time.monotonic()
            f = self._file
            lo, hi = self._first + self._taken, self._first + n
            ids = f["/entry/data/train_id"][lo:hi].astype(np.int64)
            numbers = f["/entry/data/frame_number"][lo:hi].astype(np.int64)
            complete = f["/entry/data/complete"][lo:hi].astype(bool)
            self._taken = n
            if ids.size and ids[-1] > 0:
                self.last_train_id = int(ids[-1])
            now = time.time()
            good = ids > 0
            yield _page({
                TRAIN_ID_KEY: np.where(good, ids, NO_TRAIN_ID).tolist(),
                TRAIN_ID_STATUS_KEY: np.where(good, "EXACT", "INVALID").tolist(),
                self.detector.frame_number_key: numbers.tolist(),
                f"{self.detector.name}_complete": complete.tolist(),
            }, [now] * (hi - lo))
        if self._taken >= self.num_trains:
            self._finish()
        elif time.monotonic() - self._last_growth > self.timeout:
            self._finish(TimeoutError(f"{self.name}: no frame for {self.timeout} s after "
                                      f"{self._taken} of {self.num_trains}"))

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


class MarkerCountCollector(_Collector):
    """Photon counts per train from the tagger server's ``CountBetweenMarkers``.

    The measurement's begin channel is the tagger's marker channel (one tag per train),
    so with ``startForTrains(num_trains)`` bin *k* holds the clicks of the *k*-th marker
    of the window. The server maps the first and the last marker to their train IDs
    (``getTrainRange``). Bin *k* is the *k*-th train issued from the first: with
    ``ticks`` (a :class:`TickCollector` running alongside) the *k*-th tick at or after
    the first marker's train, since the TimeServer may skip an ID (a late timer) and
    then no marker exists for it; without ``ticks``, the first ID plus *k*. Either way
    ``complete`` fails unless the last bin's train is the one the server mapped the
    last marker to, so a missed or extra marker never shifts IDs silently. A window that
    ends with bins missing (the tagger lost them in an overflow) fails at once.

    Parameters
    ----------
    uri : str
        Pyro5 URI of the tagger server (the IOC's ``PYRO_URI``), e.g.
        ``"PYRO:TimeTagger@127.0.0.1:23000"``.
    click_channel : int
        Channel whose tags are counted.
    marker_channel : int, optional
        The tagger's marker channel; asked from the server by default.
    """

    def __init__(self, uri: str, click_channel: int, timeserver: Any, num_trains: int, *,
                 marker_channel: int | None = None, name: str = "tagger_counts",
                 timeout: float = 10.0, ticks: TickCollector | None = None) -> None:
        super().__init__(name, timeserver)
        self.ticks = ticks
        self.uri = uri
        self.click_channel = int(click_channel)
        self.marker_channel = marker_channel
        self.num_trains = num_trains
        self.timeout = timeout
        self._module = self._tagger = self._measurement = None
        self._taken = 0
        self._last_growth = 0.0
        self._overflows0 = 0
        self.last_train_id = 0

    def _claim(self) -> None:
        for proxy in (self._module, self._tagger, self._measurement):
            if proxy is not None:
                proxy._pyroClaimOwnership()

    def stage(self) -> list[Any]:
        """Connect and create the measurement now, so kickoff only starts it."""
        import Pyro5.api

        self.close()
        self._module = Pyro5.api.Proxy(self.uri)
        self._tagger = self._module.createTimeTagger()
        marker = self.marker_channel
        if marker is None:
            marker = self._tagger.getMarkerChannel()
            if marker is None:
                raise RuntimeError(f"tagger at {self.uri} announces no marker channel")
        self._measurement = self._module.CountBetweenMarkers(
            self._tagger, self.click_channel, int(marker), n_values=self.num_trains)
        self._measurement.stop()
        return [self]

    def unstage(self) -> list[Any]:
        self.close()
        return [self]

    def kickoff(self) -> Status:
        if self._measurement is None:
            self.stage()
        self._claim()
        # The window opens at the first marker of a train the ticks will cover: under
        # load the tag stream runs behind the TimeServer, and its next marker may be
        # of a train before the tick stream began.
        first = self.ticks.ids_from(0)[:1] if self.ticks is not None else []
        floor = first[0] if first else int(self.timeserver.train_id.get() or 0) + 1
        self._overflows0 = int(self._tagger.getOverflows())
        self._measurement.startForTrains(self.num_trains, first_train_id=max(floor, 0))
        self.last_train_id = 0
        self._taken = 0
        self._last_growth = time.monotonic()
        self._done = Status(obj=self)
        status = Status(obj=self)
        status.set_finished()
        return status

    def describe_collect(self) -> dict[str, Any]:
        source = f"{self.name}:markers"
        keys = _id_keys(source)
        for key in ("first_train_id", "last_train_id"):
            keys[f"{self.name}_{key}"] = {"source": source, "dtype": "integer",
                                          "dtype_numpy": "<i8", "shape": []}
        keys[f"{self.name}_counts"] = {"source": source, "dtype": "integer",
                                       "dtype_numpy": "<i8", "shape": []}
        keys[f"{self.name}_width"] = {"source": source, "dtype": "integer", "units": "ps",
                                      "dtype_numpy": "<i8", "shape": []}
        return keys

    def collect_pages(self) -> Iterator[dict[str, Any]]:
        if self._measurement is None:
            return
        self._claim()
        widths = np.asarray(self._measurement.getBinWidths(), dtype=np.int64)
        filled = int(np.argmin(widths > 0)) if (widths <= 0).any() else widths.size
        train_range = self._measurement.getTrainRange()
        if filled > self._taken and train_range:
            self._last_growth = time.monotonic()
            counts = np.asarray(self._measurement.getData(), dtype=np.int64)
            ids = self._bin_ids(int(train_range[0]), filled)
            sl = slice(self._taken, self._taken + len(ids))
            if ids:
                self.last_train_id = ids[-1]
                now = time.time()
                yield _page({
                    TRAIN_ID_KEY: ids,
                    TRAIN_ID_STATUS_KEY: ["OK"] * len(ids),
                    f"{self.name}_first_train_id": ids,
                    f"{self.name}_last_train_id": ids,
                    f"{self.name}_counts": counts[sl].tolist(),
                    f"{self.name}_width": widths[sl].tolist(),
                }, [now] * len(ids))
                self._taken += len(ids)
        if self._taken >= self.num_trains:
            first, last = (int(x) for x in train_range)
            if last != self.last_train_id:
                self._finish(RuntimeError(
                    f"{self.name}: bin {self.num_trains - 1} was taken as train "
                    f"{self.last_train_id}, but the server mapped the window's last marker "
                    f"to {last} (window {first}..{last}): a marker was missed or extra"))
            else:
                self._finish()
        elif not self._measurement.isRunning():
            # The window of num_trains markers is over with fewer bins: the tagger lost
            # some in an overflow, and which train each later bin belongs to is no
            # longer known. Fail now, with the reason, rather than after the timeout.
            self.lost = self.num_trains - self._taken
            self._finish(RuntimeError(
                f"{self.name}: the tagger's window of {self.num_trains} trains ended with "
                f"{self._taken} bins: {self.lost} lost ({self._overflow_text()}; see the "
                f"tagger IOC's STATUS and OVERFLOWS)"))
        elif time.monotonic() - self._last_growth > self.timeout:
            self._finish(TimeoutError(f"{self.name}: no train for {self.timeout} s after "
                                      f"{self._taken} of {self.num_trains}"))

    def _overflow_text(self) -> str:
        """What the tagger counted during the window, to name why bins were lost."""
        try:
            n = int(self._tagger.getOverflows()) - self._overflows0
        except Exception as exc:  # the reason for the loss matters more than this
            return f"an overflow or a gap in the tag stream; overflows unknown: {exc}"
        if n > 0:
            return f"{n} overflow(s) of the tag stream during the window"
        return "a gap in the tag stream, though the tagger counted no overflow"

    def _bin_ids(self, first: int, filled: int) -> list[int]:
        """Train IDs of bins ``_taken .. filled-1`` (fewer if the ticks are not there yet)."""
        k0 = self._taken
        if self.ticks is None:
            return list(range(first + k0, first + filled))
        issued = self.ticks.ids_from(first)
        if issued and issued[0] != first:
            raise RuntimeError(f"{self.name}: the first marker's train {first} is not among "
                               f"the TimeServer's ticks (next tick {issued[0]})")
        return issued[k0:filled]

    def close(self) -> None:
        for proxy in (self._measurement, self._tagger, self._module):
            if proxy is not None:
                try:
                    proxy._pyroClaimOwnership()
                    proxy._pyroRelease()
                except Exception:  # the server went away: nothing left to release
                    pass
        self._module = self._tagger = self._measurement = None


