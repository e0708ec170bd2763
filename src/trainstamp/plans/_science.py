"""A photon-counting science plan: g2 against a tagger input delay, train-stamped."""

# No `from __future__ import annotations`: bluesky-queueserver validates queued plans
# against these annotations at run time (see trainstamp.plans).

from typing import Any

from bluesky import plan_stubs as bps
from bluesky.protocols import Readable, Triggerable
from bluesky.utils import CustomPlanMetadata, MsgGenerator

from trainstamp.plans._stamp import TrainStamp
from trainstamp.plans._train_scan import _check_count, train_scan

__all__ = ["g2_delay_scan"]


def g2_delay_scan(
    tagger: Readable,
    channel: int,
    start_ps: float,
    stop_ps: float,
    num: int,
    *,
    timeserver: Triggerable,
    trains_per_point: int = 1,
    trains_per_measurement: int = 5,
    chan1: int | None = None,
    chan2: int | None = None,
    binwidth_ps: int | None = None,
    n_bins: int | None = None,
    stamp: TrainStamp | None = None,
    md: CustomPlanMetadata | None = None,
) -> MsgGenerator[str]:
    """Scan the input delay of one tagger channel and record g2 at each delay.

    A Hanbury Brown–Twiss or pair-source user moves a peak through the correlation
    window by delaying one input: this plan steps ``CH<channel>:DELAY`` on the tagger IOC
    from ``start_ps`` to ``stop_ps`` and, at each point, acquires the IOC's correlation
    slot (``CORR1``) over ``trains_per_measurement`` whole trains. Each event holds the
    counts, the bin times and g2 (``Correlation.getDataNormalized``:
    ``<tagger>_corr1_g2``), the first and last train the histogram covers, the delay,
    and the event's ``train_id``. It is :func:`~trainstamp.plans.train_scan` over the
    delay with the tagger as detector, so the stamping contract holds as there.

    Parameters
    ----------
    tagger : trainstamp.tagger.TimeTagger
        The tagger device; its ``corr1`` slot must be active (the default).
    channel : int
        Input channel whose delay is scanned (1..8).
    start_ps, stop_ps : float
        First and last delay in ps (the IOC accepts ±2 µs).
    num : int
        Number of delays.
    timeserver : TimeServer
        Paces and stamps the plan.
    trains_per_point : int, optional
        Histograms recorded at each delay (1).
    trains_per_measurement : int, optional
        Trains each histogram integrates (5).
    chan1, chan2, binwidth_ps, n_bins : optional
        Correlation settings put before the scan; left as they are if None.
    stamp : TrainStamp, optional
        ``TrainStamp(timeserver)`` by default.
    md : dict, optional
        Metadata; overrides the plan's defaults.

    Returns
    -------
    uid : str
        The run's uid.
    """
    channel = _check_count("channel", channel)
    trains_per_measurement = _check_count("trains_per_measurement", trains_per_measurement)
    if "corr1" not in tagger.active_slots:
        raise ValueError(f"the tagger's corr1 slot must be active, got {tagger.active_slots}")
    try:
        delay = getattr(tagger, f"ch{channel}").delay
    except AttributeError:
        raise ValueError(f"tagger {tagger.name} has no input channel {channel}") from None
    slot = tagger.corr1
    settings = [(slot.n_trains, trains_per_measurement)]
    for signal, value in ((slot.chan1, chan1), (slot.chan2, chan2),
                          (slot.binwidth, binwidth_ps), (slot.n_bins, n_bins)):
        if value is not None:
            settings.append((signal, value))
    _md: dict[str, Any] = {
        "plan_name": "g2_delay_scan",
        "delay_channel": channel,
        "trains_per_measurement": trains_per_measurement,
    }
    _md.update(md or {})

    def configure() -> MsgGenerator[Any]:
        for signal, value in settings:
            yield from bps.mv(signal, value)

    yield from configure()
    return (yield from train_scan([tagger], delay, start_ps, stop_ps, num, trains_per_point,
                                  timeserver=timeserver, stamp=stamp, md=_md))
