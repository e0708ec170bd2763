"""Fly mode at 100 Hz with the whole simulated beamline (its own module, so the 10 Hz
beamline of test_acquisition_stack.py is stopped before this one starts)."""

from __future__ import annotations

import pytest
from acquisition_stack import CLICK_CHANNEL, acquisition_stack, connect_devices
from bluesky import RunEngine

from trainstamp.plans import check_train_consistency, train_fly
from trainstamp.storage import catalog, last_run, subscribe

pytestmark = pytest.mark.system


def test_fly_at_100_hz(tmp_path, ca_ports):
    data = tmp_path / "data"
    n = 300
    # At 100 Hz the TimeServer runs as docs/timing.md advises for that rate on a shared
    # host: with real-time ticks. On the event loop's ticks it went UNKNOWN (3 missed
    # periods = 30 ms) mid-fly in three runs at load 5-11, and the fly failed on it.
    with acquisition_stack(ca_ports, data, period_ms=10,
                           timeserver_args=("--realtime",)) as stack:
        ts, det, tt = connect_devices(stack)
        try:
            with catalog(data) as client:
                RE = RunEngine(context_managers=[])
                subscribe(RE, client, timeserver=ts)
                # No failure is accepted: the tagger chain keeps up at 100 Hz (a burst
                # of IDs read in one recv() once collapsed its period estimate and
                # stopped it; see tests/unit/tagger/test_tagger_markers.py).
                RE(train_fly([det], n, timeserver=ts, tagger=tt, ticks_from="broadcaster",
                             click_channel=CLICK_CHANNEL))
                run = last_run(client)
                assert run.metadata["stop"]["exit_status"] == "success", run.metadata["stop"]
                result = check_train_consistency(run, min_overlap=n // 2)
                assert result.streams["detector"].count == n
                assert result.streams["tagger"].count == n
                # Ticks and tagger agree exactly. Every frame is a real train, none twice;
                # 2 MiB frames at 100 Hz can outrun a loaded 2-core host, so frames the
                # detector dropped are reported, not hidden (see docs/performance.md).
                detector_gaps = [p for p in result.problems if p.startswith("detector:")
                                 and "missing" in p or p.startswith("detector: lacks")]
                others = [p for p in result.problems if p not in detector_gaps]
                assert others == [], result.problems
                if detector_gaps:
                    print("detector frames dropped at 100 Hz:", detector_gaps)
        finally:
            for dev in (ts, det, tt):
                dev.destroy()
        assert not stack.dead(), stack.dead()
