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

The IPython profile installs them for the session's TimeServer
(``profiles/profile_trainstamp/startup/25-suspenders.py``).
"""

from __future__ import annotations

from typing import Any

from bluesky.suspenders import SuspendBoolLow, SuspenderBase, SuspendWhenChanged

__all__ = ["install_timeserver_suspenders", "timeserver_suspenders"]

#: Seconds the TimeServer must be back to normal before a suspended run resumes.
DEFAULT_RESUME_SLEEP = 1.0


def timeserver_suspenders(timeserver: Any, *, sleep: float = DEFAULT_RESUME_SLEEP,
                          **kwargs: Any) -> list[SuspenderBase]:
    """The two suspenders for ``timeserver`` (a :class:`~trainstamp.timing.device.TimeServer`).

    ``sleep`` is how long the TimeServer must be ON and ticking before the run resumes.
    Other keyword arguments (``pre_plan``, ``post_plan``) go to both suspenders.
    """
    where = getattr(timeserver, "prefix", "") or timeserver.name
    return [
        SuspendWhenChanged(
            timeserver.state, expected_value="ON", allow_resume=True, sleep=sleep,
            tripped_message=f"TimeServer {where} is not ON: no valid train ID; the run "
                            "resumes when it is ON again", **kwargs),
        SuspendBoolLow(
            timeserver.ticking, sleep=sleep,
            tripped_message=f"TimeServer {where} gives no fresh, valid tick (IOC silent, "
                            "disconnected or ID in alarm); the run resumes when it ticks",
            **kwargs),
    ]


def install_timeserver_suspenders(RE: Any, timeserver: Any, **kwargs: Any) -> list[SuspenderBase]:
    """Install :func:`timeserver_suspenders` on ``RE``; return them (to remove later)."""
    suspenders = timeserver_suspenders(timeserver, **kwargs)
    for suspender in suspenders:
        RE.install_suspender(suspender)
    return suspenders
