"""A settings change is in effect when it returns, however far the stream runs behind.

Tags the tagger made before a change (already sent, queued in the server, or in the
emulator's send queue) carry the old settings. A measurement started after the change
returned must not count them: a delay scan would otherwise put the previous step's
peak into this step's histogram. The processor is held here, so the stream runs behind
real time deterministically, as it does on a loaded machine.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest

from trainstamp.tagger._emulator import TaggerEmulator
from trainstamp.tagger._instrument import Instrument
from trainstamp.tagger._settings import TaggerSettings
from trainstamp.tagger._stream import TagService
from trainstamp.tagger.engine import Countrate
from trainstamp.testing import wait_until

pytestmark = pytest.mark.system


class Gate:
    """A sink that holds the processor while ``closed`` is set: the stream backs up."""

    def __init__(self) -> None:
        self.closed = threading.Event()
        self.open = threading.Event()
        self.holding = threading.Event()

    def process(self, tags, train_ids, end_time) -> None:
        if self.closed.is_set():
            self.holding.set()
            self.open.wait(30)


def test_a_measurement_started_after_a_change_sees_no_tag_made_before_it():
    settings = TaggerSettings(n_channels=2)
    settings.set_test_signal(1, True)
    emu = TaggerEmulator(port=0, seed=3, settings=settings).start()
    svc = TagService(f"tcp://127.0.0.1:{emu.port}")
    inst = Instrument(svc)
    svc.start()
    gate = Gate()
    try:
        inst.wait_connected()
        engine = inst.make_engine_tagger()
        svc.add_sink(engine)
        svc.add_sink(gate)
        wait_until(lambda: svc.stats.tags > 1000, timeout=20, message="test-signal tags")
        gate.closed.set()
        assert gate.holding.wait(10)
        held_at = engine._now
        box: list = []
        change = threading.Thread(
            target=lambda: box.append(inst.apply("set_test_signal", 1, False)))
        change.start()
        wait_until(lambda: not emu.settings.channels[1].test_signal, timeout=10,
                   message="the emulator to switch the test signal off")
        # The stream is held before the change: the change must not be reported done.
        change.join(1.0)
        returned_while_held = not change.is_alive()
        gate.closed.clear()
        gate.open.set()
        change.join(15)
        assert not change.is_alive() and box == [False]
        assert not returned_while_held, (
            "the change returned while the stream was still before it: a measurement "
            "started then would count tags made with the old settings")
        counter = Countrate(engine, [1])
        assert engine._now > held_at
        start = svc.delivered_ps
        wait_until(lambda: svc.delivered_ps > start + 50_000_000_000, timeout=20,
                   message="50 ms more of stream")
        assert int(np.sum(counter.getCountsTotal())) == 0
    finally:
        gate.open.set()
        svc.stop()
        emu.stop()
