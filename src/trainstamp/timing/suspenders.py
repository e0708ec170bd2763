"""bluesky suspenders for train-ID outages: suspend a run rather than stamp it wrongly.

Two of bluesky's own suspenders watch the :class:`~trainstamp.timing.device.TimeServer`:

- ``SuspendWhenChanged(timeserver.state, expected_value="ON", allow_resume=True)``
  trips as soon as the IOC leaves ON. That happens at once when its source is lost,
  and after the missed periods when the source falls silent.
- ``SuspendBoolLow(timeserver.ticking)`` trips when the device's own stamps stop being
  OK. The ``ID`` alarm covers INIT and UNKNOWN. A ``ID`` PV that disconnects covers a
  dead IOC, whose STATE the device can no longer hear. No tick within ``stale_after``
  periods covers a stalled IOC or network.

While either one is tripped the RunEngine holds the plan. bluesky rewinds to the last
checkpoint and, once both have been back to normal for ``sleep`` seconds, runs on from
there. A plan started during an outage waits until the TimeServer is back. Events taken
in the moment between the outage and the suspension are stamped STALE by the device,
never OK.

A fly scan (:func:`~trainstamp.plans.train_fly`) records consecutive trains with the
hardware running free, so it cannot rewind and resume part-way. While one runs it holds
the suspenders off (:func:`hold_off`, :func:`release`): an outage then fails the fly at
once, with a message that names the TimeServer, instead of aborting it through a
suspension it cannot honour. On release the suspenders look at the TimeServer again, so
an outage that outlasts the fly still holds the next plan.

The IPython profile installs them for the session's TimeServer
(``profiles/profile_trainstamp/startup/25-suspenders.py``).
"""

from __future__ import annotations

import threading
import weakref
from typing import Any

from bluesky.suspenders import SuspendBoolLow, SuspenderBase, SuspendWhenChanged

__all__ = ["hold_off", "install_timeserver_suspenders", "release", "timeserver_suspenders"]

_lock = threading.Lock()
#: TimeServer device -> number of fly scans holding its suspenders off.
_holds: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()
#: TimeServer device -> the suspenders made for it (to look again on release).
_made: weakref.WeakKeyDictionary[Any, weakref.WeakSet] = weakref.WeakKeyDictionary()


def _held(timeserver: Any) -> bool:
    with _lock:
        return _holds.get(timeserver, 0) > 0


def hold_off(timeserver: Any) -> None:
    """Keep ``timeserver``'s suspenders from tripping until :func:`release`."""
    with _lock:
        _holds[timeserver] = _holds.get(timeserver, 0) + 1


def release(timeserver: Any) -> None:
    """Undo one :func:`hold_off`; the suspenders then judge the TimeServer as it is now."""
    with _lock:
        left = max(_holds.get(timeserver, 0) - 1, 0)
        _holds[timeserver] = left
        suspenders = list(_made.get(timeserver, ())) if left == 0 else []
    for suspender in suspenders:
        signal = suspender._sig
        if signal.connected:
            suspender(signal.get())


class _HeldMixin:
    _timeserver: Any

    def _should_suspend(self, value: Any) -> bool:
        return not _held(self._timeserver) and super()._should_suspend(value)


class _StateSuspender(_HeldMixin, SuspendWhenChanged):
    pass


class _TickingSuspender(_HeldMixin, SuspendBoolLow):
    pass

#: Seconds the TimeServer must be back to normal before a suspended run resumes.
DEFAULT_RESUME_SLEEP = 1.0


def timeserver_suspenders(timeserver: Any, *, sleep: float = DEFAULT_RESUME_SLEEP,
                          **kwargs: Any) -> list[SuspenderBase]:
    """The two suspenders for ``timeserver`` (a :class:`~trainstamp.timing.device.TimeServer`).

    ``sleep`` is how long the TimeServer must be ON and ticking before the run resumes.
    Other keyword arguments (``pre_plan``, ``post_plan``) go to both suspenders.
    """
    where = getattr(timeserver, "prefix", "") or timeserver.name
    suspenders: list[SuspenderBase] = [
        _StateSuspender(
            timeserver.state, expected_value="ON", allow_resume=True, sleep=sleep,
            tripped_message=f"TimeServer {where} is not ON: no valid train ID; the run "
                            "resumes when it is ON again", **kwargs),
        _TickingSuspender(
            timeserver.ticking, sleep=sleep,
            tripped_message=f"TimeServer {where} gives no fresh, valid tick (IOC silent, "
                            "disconnected or ID in alarm); the run resumes when it ticks",
            **kwargs),
    ]
    for suspender in suspenders:
        suspender._timeserver = timeserver
    with _lock:
        _made.setdefault(timeserver, weakref.WeakSet()).update(suspenders)
    return suspenders


def install_timeserver_suspenders(RE: Any, timeserver: Any, **kwargs: Any) -> list[SuspenderBase]:
    """Install :func:`timeserver_suspenders` on ``RE``; return them (to remove later)."""
    suspenders = timeserver_suspenders(timeserver, **kwargs)
    for suspender in suspenders:
        RE.install_suspender(suspender)
    return suspenders
