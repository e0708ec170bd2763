"""Each device makes its own fly collector from the endpoint its IOC publishes
(``BROADCAST_URI`` of the TimeServer, ``PYRO_URI`` of the tagger): nobody passes a URI."""

from __future__ import annotations

import pytest
from ophyd.sim import make_fake_device

from trainstamp.detector import FrameCollector
from trainstamp.tagger import MarkerCountCollector
from trainstamp.timing import TickCollector


def test_timeserver_takes_the_ticks_from_the_broadcaster_it_publishes(fake_timeserver):
    ts = fake_timeserver
    ts.broadcast_uri.sim_put("tcp://ts-host:6001")
    auto = ts.collector(10)
    assert isinstance(auto, TickCollector) and auto.num_trains == 10
    assert auto.feed_uri == "tcp://ts-host:6001" and auto.feed_fallback
    strict = ts.collector(10, ticks_from="broadcaster")
    assert strict.feed_uri == "tcp://ts-host:6001" and not strict.feed_fallback
    assert ts.collector(10, ticks_from="monitor").feed_uri is None
    ts.broadcast_uri.sim_put("")  # an IOC started with --broadcast-port 0
    assert ts.collector(10).feed_uri is None
    with pytest.raises(RuntimeError, match="publishes no tick broadcaster .*BROADCAST_URI"):
        ts.collector(10, ticks_from="broadcaster")
    with pytest.raises(ValueError, match="ticks_from must be one of auto, broadcaster, "
                                         "monitor, got 'tcp'"):
        ts.collector(10, ticks_from="tcp")


def test_an_unreachable_broadcaster_falls_back_to_the_monitor_only_under_auto(
        fake_timeserver, monkeypatch):
    from trainstamp.testing import free_port
    from trainstamp.timing import _collector

    monkeypatch.setattr(_collector, "FEED_CONNECT_TIMEOUT", 0.2)
    fake_timeserver.broadcast_uri.sim_put(f"tcp://127.0.0.1:{free_port()}")  # nobody there
    strict = fake_timeserver.collector(3, ticks_from="broadcaster")
    with pytest.raises(TimeoutError, match="cannot connect to the tick feed"):
        strict.stage()
    strict.unstage()
    auto = fake_timeserver.collector(3)
    auto.stage()
    try:
        assert auto.feed_uri is None  # the CA monitor instead
        assert auto.describe_collect()["train_id"]["source"] == "timeserver:tick"
    finally:
        auto.unstage()


def test_tagger_serves_its_pyro_uri_to_the_collector(fake_timeserver):
    from trainstamp.tagger.device import TimeTagger

    tagger = make_fake_device(TimeTagger)("TT:", name="tagger")
    tagger.pyro_uri.sim_put("PYRO:TimeTagger@tagger-host:23001")
    ticks = fake_timeserver.collector(5)
    counts = tagger.collector(5, timeserver=fake_timeserver, click_channel=3, ticks=ticks)
    assert isinstance(counts, MarkerCountCollector)
    assert (counts.uri, counts.click_channel, counts.ticks) == (
        "PYRO:TimeTagger@tagger-host:23001", 3, ticks)
    assert counts.name == "tagger_counts"  # the data keys stay tagger_counts_*
    tagger.pyro_uri.sim_put("")
    with pytest.raises(RuntimeError, match="publishes no Pyro5 server .*PYRO_URI is empty"):
        tagger.collector(5, timeserver=fake_timeserver)


def test_detector_makes_its_frame_collector(fake_timeserver):
    from trainstamp.detector.device import Team1k

    det = make_fake_device(Team1k)("DET:", name="team1k")
    frames = det.collector(7, timeserver=fake_timeserver)
    assert isinstance(frames, FrameCollector)
    assert (frames.detector, frames.num_trains, frames.name) == (det, 7, "team1k_frames")


def test_every_collector_is_a_stageable_flyer_that_collects_pages(fake_timeserver):
    from bluesky.protocols import EventPageCollectable, Flyable, Stageable

    from trainstamp.detector.device import Team1k

    det = make_fake_device(Team1k)("DET:", name="team1k")
    for c in (fake_timeserver.collector(2), det.collector(2, timeserver=fake_timeserver),
              MarkerCountCollector("PYRO:x@127.0.0.1:1", 1, fake_timeserver, 2)):
        assert isinstance(c, Flyable) and isinstance(c, EventPageCollectable), c
        assert isinstance(c, Stageable), c
