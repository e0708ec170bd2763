"""``train_fly``: every train of an acquisition, collected while it runs.

A step plan waits for each train and so is bound by the RunEngine (a few hundred
events/s at best) and skips trains whenever one step takes longer than a period. A fly
scan lets the hardware run free and collects what it recorded, in event pages, as the
acquisition goes. Each device makes its own collector (it knows its endpoints, as its
IOC publishes them), one event stream each, one event per train:

- ``timeserver.collector(...)``, a :class:`~trainstamp.timing.TickCollector` (stream
  ``timeserver``): every TimeServer tick, from the broadcaster the IOC publishes in
  ``BROADCAST_URI`` or the Channel Access monitor on ``ID``: ``train_id`` is the tick
  itself.
- ``detector.collector(...)``, a :class:`~trainstamp.detector.FrameCollector` (stream
  ``detector``): every detector frame, read from the capture file (HDF5, SWMR) while the
  IOC writes it: ``train_id`` is the exact ID from the frame's packet headers
  (``"EXACT"``), with the frame number and completeness.
- ``tagger.collector(...)``, a :class:`~trainstamp.tagger.MarkerCountCollector` (stream
  ``tagger``): photon counts per train from a ``CountBetweenMarkers`` on the tagger
  server at the IOC's ``PYRO_URI`` (Pyro5), whose begin channel is the marker channel,
  so bin *k* is the *k*-th train of the window; it carries the first and last train it
  covers.

The plan only drives them (stage, kickoff, collect, complete, unstage); their base is
:class:`trainstamp.plans._collectors.Collector`.

Every stream's events carry ``train_id`` and ``train_id_status``; every descriptor
carries the TimeServer configuration (each collector's configuration is the
TimeServer's).
"""

# No `from __future__ import annotations`: bluesky-queueserver validates queued plans
# against these annotations at run time (see trainstamp.plans).

from collections.abc import Sequence
from typing import Any

from bluesky import plan_stubs as bps
from bluesky import preprocessors as bpp
from bluesky.protocols import Readable, Triggerable
from bluesky.utils import CustomPlanMetadata, MsgGenerator

from trainstamp.plans._stamp import TrainStamp, stamp_wrapper
from trainstamp.plans._stubs import wait_for_train

__all__ = ["train_fly"]


def train_fly(
    detectors: Sequence[Readable],
    num_trains: int,
    *,
    timeserver: Triggerable,
    tagger: Readable | None = None,
    click_channel: int = 1,
    marker_channel: int | None = None,
    ticks_from: str = "auto",
    poll_period_s: float = 0.2,
    stamp: TrainStamp | None = None,
    md: CustomPlanMetadata | None = None,
) -> MsgGenerator[str]:
    """Record ``num_trains`` consecutive trains from every device, collecting as it goes.

    Streams (one event per train): ``timeserver`` (every tick, always), ``detector`` (one
    per detector, i.e. :class:`~trainstamp.detector.Team1k` in external-trigger mode:
    exact IDs from the packet headers) and ``tagger`` (if ``tagger`` is given: counts per
    train on ``click_channel``). The collectors start together after a train, then the
    plan collects every ``poll_period_s`` seconds, in event pages, until all have their
    trains. Works at any train rate the devices keep up with (the RunEngine sees one page
    per poll, not one message per train).

    With several detectors their streams are ``detector``, ``detector_2`` ... in order.

    Parameters
    ----------
    detectors : sequence
        Team1k devices (staged by the plan; the file they open holds the frames); each
        makes its collector with ``collector(num_trains, timeserver=...)``.
    num_trains : int
        Trains to record; at least 1.
    timeserver : TimeServer
        The clock; its ticks are one stream.
    tagger : TimeTagger, optional
        The tagger device; its IOC publishes the Pyro5 server the counts come from. No
        tagger stream without it.
    click_channel, marker_channel : int
        Tagger channel counted per train, and the marker channel (asked by default).
    ticks_from : {"auto", "broadcaster", "monitor"}
        Where the ticks come from (:meth:`~trainstamp.timing.device.TimeServer.collector`):
        the TimeServer's broadcaster (TCP, lossless) or the CA monitor on ``ID`` (which
        may skip one at high rates); ``"auto"``: the broadcaster when the IOC publishes
        one that can be reached.
    poll_period_s : float
        Seconds between collections.
    stamp : TrainStamp, optional
        Gives ``train_id_start``; ``TrainStamp(timeserver)`` by default.
    md : dict, optional
        Metadata; overrides the plan's defaults.

    Returns
    -------
    uid : str
    """
    if isinstance(num_trains, bool) or not isinstance(num_trains, int) or num_trains < 1:
        raise ValueError(f"num_trains must be an integer >= 1, got {num_trains!r}")
    if not poll_period_s > 0:
        raise ValueError(f"poll_period_s must be > 0, got {poll_period_s!r}")
    detectors = list(detectors)
    stamp = stamp if stamp is not None else TrainStamp(timeserver)
    ticks = timeserver.collector(num_trains, ticks_from=ticks_from)
    ticks.hold = bool(detectors) or tagger is not None  # until the others are done
    collectors: list[tuple[str, Any]] = [("timeserver", ticks)]
    for i, det in enumerate(detectors):
        stream = "detector" if i == 0 else f"detector_{i + 1}"
        collectors.append((stream, det.collector(num_trains, timeserver=timeserver)))
    if tagger is not None:
        collectors.append(("tagger", tagger.collector(
            num_trains, timeserver=timeserver, click_channel=click_channel,
            marker_channel=marker_channel, ticks=ticks)))
    _md: dict[str, Any] = {
        "detectors": [det.name for det in detectors],
        "timeserver": timeserver.name,
        "num_trains": num_trains,
        "num_points": num_trains,
        "streams": [s for s, _ in collectors],
        "plan_args": {"detectors": list(map(repr, detectors)), "num_trains": num_trains,
                      "timeserver": repr(timeserver),
                      "tagger": None if tagger is None else repr(tagger),
                      "click_channel": click_channel, "ticks_from": ticks_from},
        "plan_name": "train_fly",
        "hints": {},
    }
    _md.update(md or {})

    def collect_all() -> MsgGenerator[None]:
        for stream, c in collectors:
            yield from bps.collect(c, name=stream)

    @bpp.run_decorator(md=_md)
    def inner() -> MsgGenerator[None]:
        for stream, c in collectors:
            yield from bps.declare_stream(c, name=stream, collect=True)
        others = [c for _, c in collectors if c is not ticks]
        yield from wait_for_train(timeserver)  # start everything just after a tick
        for _, c in collectors:
            yield from bps.kickoff(c, wait=True)
        def failed() -> bool:
            return any(c.complete().done and not c.complete().success for _, c in collectors)

        # One failed collector ends the fly at once: the others would wait for trains
        # that can no longer line up with the failed stream.
        while not all(c.complete().done for _, c in collectors) and not failed():
            yield from bps.sleep(poll_period_s)
            yield from collect_all()
            if ticks.hold and all(c.complete().done for c in others):
                ticks.finish_at(max(c.last_train_id for c in others))
        yield from collect_all()
        # A failed collector fails the run with its own message (the stop document's
        # reason), not just "FailedStatus".
        failed = [str(c.complete().exception()) for _, c in collectors
                  if c.complete().done and not c.complete().success]
        if failed:
            raise RuntimeError("; ".join(failed))
        for _, c in collectors:
            yield from bps.complete(c, wait=True)

    def cleanup() -> MsgGenerator[None]:
        yield from bps.stop(timeserver)

    # The ticks first: they must cover every train the detectors and the tagger record.
    # Unstaged in reverse, whatever ended the plan: each collector's unstage fails its
    # pending status and releases its monitor, file or connection; the ticks go last.
    staged_objs = [ticks, *detectors, *(c for _, c in collectors if c is not ticks)]

    @bpp.stage_decorator(staged_objs)
    @bpp.finalize_decorator(cleanup)
    def staged() -> MsgGenerator[str]:
        yield from wait_for_train(timeserver)
        return (yield from stamp_wrapper(inner(), stamp))

    return (yield from staged())
