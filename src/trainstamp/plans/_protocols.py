"""What the plans need of the devices they are given, as bluesky-style protocols.

The public plans take bluesky's own protocols (``Readable``, ``Movable``,
``Triggerable``). These two name what trainstamp adds on top: a TimeServer that
answers "which train was it at time t", and a device that can be told the train to
start on. Any object with the methods fits; nothing has to inherit from them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from bluesky.protocols import Configurable, Movable, Readable

from trainstamp.timing._core import Stamp

__all__ = ["StartsOnTrain", "TrainClock"]


@runtime_checkable
class TrainClock(Readable, Configurable, Protocol):
    """A TimeServer as the stamps and collectors use it (normally
    :class:`trainstamp.timing.device.TimeServer`)."""

    def train_id_at(self, *, t_ns: int | None = None) -> Stamp:
        """The train ID, with its status, at wall-clock time ``t_ns`` (now if None)."""
        ...


@runtime_checkable
class StartsOnTrain(Protocol):
    """A device whose acquisition can be armed to start on a named train."""

    def train_start_signals(self) -> Sequence[Movable]:
        """The setpoints that take the train ID to start on."""
        ...
