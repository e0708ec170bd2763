"""What every part of the detector IOC shares: the way to the IOC, and its polls.

Each part (:class:`DetectorGroup` subclass) is a caproto ``SubGroup`` of
:class:`~trainstamp.detector._ioc._team1k.Team1kIOC`. Its PVs carry their full suffixes
from :mod:`trainstamp.detector._pvnames` (the parts are mounted with an empty prefix), so a
part may hold PVs of several prefixes (the capture part holds CMD:CAPTURE and
CAPTURE:*). The server, the worker pools and the refusal counter belong to the IOC;
a part reaches them through :attr:`DetectorGroup.ioc`.
"""

from __future__ import annotations

import functools
import logging
import time
from typing import TYPE_CHECKING

from caproto.server import PVGroup

if TYPE_CHECKING:
    from trainstamp.detector._acquisition import Team1kServer
    from trainstamp.detector._ioc._team1k import Team1kIOC

log = logging.getLogger("trainstamp.detector._ioc")

#: Seconds after start-up in which every failed poll is logged; afterwards at most one
#: per poll in this many seconds, so a dead link does not flood the log.
QUIET_AFTER_S = 10.0


class FailureLog:
    """Decides which failures of one poll are logged: all in the first
    :data:`QUIET_AFTER_S` after start-up, then at most one per :data:`QUIET_AFTER_S`."""

    def __init__(self, what: str) -> None:
        self.what = what
        self._first = None
        self._last = 0.0

    def failed(self) -> None:
        """Log the exception being handled, if it is due."""
        now = time.monotonic()
        if self._first is None:
            self._first = now
        if now - self._first < QUIET_AFTER_S or now - self._last >= QUIET_AFTER_S:
            self._last = now
            log.exception("%s failed", self.what)


def polled(what: str):
    """Decorate a scan body of a :class:`DetectorGroup`.

    The body runs only once the IOC has finished its start-up (the receiver started and
    the detector's configuration adopted), and a failure is logged (see
    :class:`FailureLog`) rather than raised: a status update must never take the IOC
    down, nor put an alarm on the PV it happens to be attached to.
    """

    def decorate(body):
        failures = FailureLog(what)

        @functools.wraps(body)
        async def scan(self, instance, async_lib):
            if not self.ioc.started:
                return
            try:
                await body(self, instance, async_lib)
            except Exception:
                failures.failed()

        return scan

    return decorate


class DetectorGroup(PVGroup):
    """A part of the detector IOC (see the module docstring)."""

    @property
    def ioc(self) -> Team1kIOC:
        """The IOC this part belongs to."""
        group = self
        while group.parent is not None:
            group = group.parent
        return group

    @property
    def server(self) -> Team1kServer:
        return self.ioc.server

    async def _refuse(self, exc: BaseException) -> None:
        """A refused put (see :func:`trainstamp.detector._caputil.guarded`): the IOC counts it."""
        await self.ioc._refuse(exc)

    async def _io(self, fn, *args):
        """Register or serial I/O on the IOC's worker pool for it."""
        return await self.ioc._io(fn, *args)

    async def _file_io(self, fn, *args):
        """Capture-file work on the IOC's pool for files."""
        return await self.ioc._file_io(fn, *args)
