"""The ``tagger`` stream of :func:`~trainstamp.plans.train_fly`: photon counts per train
from a ``CountBetweenMarkers`` on the tagger server, a Pyro5 client of it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np
import Pyro5.api

from trainstamp.plans._collectors import Collector, id_keys, page
from trainstamp.trainid import TRAIN_ID_KEY, TRAIN_ID_STATUS_KEY

if TYPE_CHECKING:
    from trainstamp.timing._collector import TickCollector

__all__ = ["MarkerCountCollector"]


class MarkerCountCollector(Collector):
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
                 timeout_s: float = 10.0, ticks: TickCollector | None = None) -> None:
        super().__init__(name, timeserver)
        self.ticks = ticks
        self.uri = uri
        self.click_channel = int(click_channel)
        self.marker_channel = marker_channel
        self.num_trains = num_trains
        self.timeout_s = timeout_s
        self._module = self._tagger = self._measurement = None
        self._taken = 0
        self._last_growth = 0.0
        self._overflows0 = 0
        self.last_train_id = 0
        self.lost = 0  # bins of the window the tagger lost (overflows)

    def _claim(self) -> None:
        for proxy in (self._module, self._tagger, self._measurement):
            if proxy is not None:
                proxy._pyroClaimOwnership()

    def stage(self) -> list[Any]:
        """Connect and create the measurement now, so kickoff only starts it."""
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

    def _begin(self) -> None:
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

    def describe_collect(self) -> dict[str, Any]:
        source = f"{self.name}:markers"
        keys = id_keys(source)
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
        # Asked before the data: a window that closes between the two reads must not
        # look closed with its last bins unread (it looked like lost bins).
        running = self._measurement.isRunning()
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
                yield page({
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
                    f"to {last} (window {first}..{last}): a marker was missed or extra"
                    f"{self._disagreement(first, widths)}"))
            else:
                self._finish()
        elif not running:
            # The window of num_trains markers is over with fewer bins: the tagger lost
            # some in an overflow, and which train each later bin belongs to is no
            # longer known. Fail now, with the reason, rather than after the timeout.
            self.lost = self.num_trains - self._taken
            self._finish(RuntimeError(
                f"{self.name}: the tagger's window of {self.num_trains} trains ended with "
                f"{self._taken} bins: {self.lost} lost ({self._overflow_text()}; see the "
                f"tagger IOC's STATUS and OVERFLOWS)"))
        elif time.monotonic() - self._last_growth > self.timeout_s:
            self._finish(TimeoutError(f"{self.name}: no train for {self.timeout_s} s after "
                                      f"{self._taken} of {self.num_trains}"))

    def _disagreement(self, first: int, widths: np.ndarray) -> str:
        """Where the server's marker IDs first part from the ticks', and the bin widths
        there (a missed marker shows as a bin two periods wide, an extra one as a short
        bin), so an operator can tell a lost marker from a mispaired one."""
        try:
            server = [int(i) for i in self._measurement.getBinTrainIds()]
            ticks = self.ticks.ids_from(first)[:len(server)] if self.ticks is not None else []
            k = next((i for i, (a, b) in enumerate(zip(server, ticks, strict=False)) if a != b), None)
            if k is None:
                return ""
            around = slice(max(k - 2, 0), k + 3)
            ms = ", ".join(f"{w / 1e9:.2f}" for w in widths[around])
            return (f"; bin {k} is train {server[k]} to the server and {ticks[k]} by the "
                    f"ticks; widths of bins {around.start}..{around.stop - 1}: {ms} ms")
        except Exception as exc:  # a diagnosis only: the failure stands without it
            return f"; (no detail: {exc})"

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
