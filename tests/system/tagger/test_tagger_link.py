"""The tag link over loopback: hostile streams, reconnects and overflow marking."""

from __future__ import annotations

import socket
import threading
import time

import numpy as np
import pytest

from trainstamp.tagger import _wire as wire
from trainstamp.tagger._emulator import TaggerEmulator
from trainstamp.tagger._settings import TaggerSettings
from trainstamp.tagger._stream import TagService
from trainstamp.tagger.engine import Countrate, TimeTaggerVirtual
from trainstamp.testing import wait_until

pytestmark = pytest.mark.system
HELLO = {"serial": "FAKE-1", "channels": [1, 2, 3], "marker_channel": 3, "settings": {}}


def _block(n: int, start_ps: int, seq: int) -> bytes:
    tags = np.zeros(n, wire.TAG_DTYPE)
    tags["channel"] = 1 + np.arange(n) % 2
    tags["time"] = start_ps + np.arange(n, dtype=np.int64) * 1000
    return b"".join(bytes(p) for p in wire.encode_tags(tags, seq, end_time=start_ps + n * 1000))


class FakeTagger:
    """A tagger that plays scripted byte sequences, one per connection."""

    def __init__(self, scripts: list[list[bytes]]) -> None:
        self.scripts = scripts
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        with self.sock:
            for script in self.scripts:
                conn, _ = self.sock.accept()
                with conn:
                    for chunk in script:
                        conn.sendall(chunk)
                        time.sleep(0.01)  # let the reader see separate recv()s
                    time.sleep(0.1)
            self.done.set()


def test_malformed_and_truncated_blocks_never_reach_the_engine():
    hello = wire.encode_message(wire.Kind.HELLO, HELLO)
    corrupt = bytearray(_block(10, 30_000, 2))
    corrupt[60] ^= 0x55
    truncated = _block(10, 90_000, 4)[:-30]
    fake = FakeTagger([
        [hello, _block(10, 0, 0), b"\x00garbage TTSB garbage" * 5, _block(10, 15_000, 1),
         bytes(corrupt), _block(10, 60_000, 3), truncated],
        [hello, _block(10, 200_000, 0)],
    ])
    svc = TagService(f"tcp://127.0.0.1:{fake.port}")
    engine = TimeTaggerVirtual(channels=[1, 2, 3], marker_channel=3)
    rate = Countrate(engine, [1, 2])
    svc.add_sink(engine)
    svc.link.backoff_initial_s = 0.05
    svc.start()
    try:
        # 40 good tags, and the Error tag that flags the stretch lost across the reconnect
        wait_until(lambda: svc.stats.tags == 41, timeout=10, message="the four good blocks")
        assert fake.done.wait(5)
    finally:
        svc.stop()
    rs = svc.link.reader.stats
    assert rs.bad_headers > 0 and rs.skipped_bytes > 0
    assert rs.bad_payloads >= 2  # the corrupt block and the truncated one
    assert svc.link.connects == 2
    assert int(np.sum(rate.getCountsTotal())) == 40
    assert svc.stats.process_errors == 0
    assert svc.stats.reconnects == 1 and svc.stats.errors == 1


def test_control_requests_round_trip_and_refusals():
    emu = TaggerEmulator(port=0, seed=1).start()
    svc = TagService(f"tcp://127.0.0.1:{emu.port}").start()
    try:
        assert svc.link.wait_connected(5)
        assert svc.link.request("set_dead_time", 2, 5000.0) == 5000
        with pytest.raises(ValueError, match="dead time 1"):
            svc.link.request("set_dead_time", 2, 1)
        with pytest.raises(ValueError, match="unknown operation"):
            svc.link.request("format_disk")
        assert svc.link.request("describe")["settings"]["2"]["dead_time"] == 5000
    finally:
        svc.stop()
        emu.stop()


def test_overflow_is_marked_and_counted():
    settings = TaggerSettings()
    for ch in (1, 2, 3, 4):
        settings.set_test_signal(ch, True)
    emu = TaggerEmulator(port=0, settings=settings, backlog_bytes=1 << 20, seed=2).start()
    reader = wire.FrameReader()
    counts = np.zeros(5, np.int64)
    missed = 0
    with socket.create_connection(("127.0.0.1", emu.port)) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 16)
        wait_until(lambda: emu.stats["overflow_begins"] >= 1,
                   timeout=10, message="the consumer to fall behind")
        sock.settimeout(0.5)
        deadline = time.monotonic() + 10
        while counts[wire.TagType.OverflowEnd] == 0 and time.monotonic() < deadline:
            for f in reader.feed(sock.recv(1 << 20)):
                if f.kind == wire.Kind.TAGS:
                    counts += np.bincount(f.tags["type"], minlength=5)
                    missed += int(f.tags["missed_events"].sum())
    emu.stop()
    assert counts[wire.TagType.OverflowBegin] >= 1 and counts[wire.TagType.OverflowEnd] >= 1
    assert missed > 0
    assert reader.stats.bad_payloads == 0 and reader.stats.lost_blocks == 0


class LiveFake:
    """A fake tagger: sends ``script`` on the first connection, then good blocks of
    ``faults`` (5 ms of stream time every 5 ms) until stopped; later connections get a
    hello and the live blocks only."""

    def __init__(self, script: bytes, faults, hello: dict = HELLO) -> None:
        self.script, self.faults, self.hello = script, faults, hello
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.stop = threading.Event()
        self.connections = 0
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        self.sock.settimeout(0.2)
        with self.sock:
            while not self.stop.is_set():
                try:
                    conn, _ = self.sock.accept()
                except TimeoutError:
                    continue
                self.connections += 1
                with conn:
                    try:
                        if self.connections == 1:
                            conn.sendall(self.script)
                        else:
                            conn.sendall(wire.encode_message(wire.Kind.HELLO, self.hello))
                        self.faults.step = 5 * 10**9
                        while not self.stop.wait(0.005):
                            conn.sendall(self.faults.good())
                    except OSError:
                        continue

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)


def _service(port: int):
    from trainstamp.tagger._instrument import Instrument

    svc = TagService(f"tcp://127.0.0.1:{port}")
    instrument = Instrument(svc)
    engine = TimeTaggerVirtual(channels=[1, 2, 3], marker_channel=3)
    svc.add_sink(engine)
    svc.link.backoff_initial_s = 0.05
    return svc, instrument, engine


def test_a_block_ending_at_a_huge_time_costs_that_block_only():
    """Once, one well-formed block ending far ahead made the link refuse what followed:
    5 of the next 200 valid tags were counted."""
    from trainstamp.testing.tag_frames import FrameFaults, tags_frame

    faults = FrameFaults(seed=3, step_ps=1_000_000)
    script = wire.encode_message(wire.Kind.HELLO, HELLO) + faults.good()
    script += tags_frame(np.array([faults.t + 5]), 10**6, 2**62)  # one poisoned block
    script += b"".join(faults.good() for _ in range(50))  # 200 valid tags
    good_before = faults.good_tags
    fake = LiveFake(script, faults)
    svc, _, engine = _service(fake.port)
    rate = Countrate(engine, [1])
    svc.start()
    try:
        wait_until(lambda: svc.stats.tags >= good_before, timeout=20, message="good tags")
        assert svc.link.reader.stats.bad_payloads == 1
        assert svc.link.connects == 1
        assert int(np.sum(rate.getCountsTotal())) >= good_before
    finally:
        svc.stop()
        fake.close()


def test_a_hello_with_nonsense_channels_is_counted_and_the_link_stays():
    """Once, ``channels`` as a string killed the link thread: CONNECTED stayed Off."""
    from trainstamp.testing.tag_frames import FrameFaults

    faults = FrameFaults(seed=4, step_ps=1_000_000)
    bad = dict(HELLO, channels="12345678")
    script = wire.encode_message(wire.Kind.HELLO, bad) + faults.good()
    fake = LiveFake(script, faults)
    svc, instrument, _ = _service(fake.port)
    svc.start()
    try:
        wait_until(lambda: svc.link.reader.stats.bad_payloads == 1, timeout=20,
                   message="the bad hello counted")
        assert svc.link.connected and not instrument.connected()  # no tagger identity
        assert "hello: channels" in svc.link.reader.stats.last_error
        # the tagger reconnects with a good hello: the same service takes it
        svc.link._sock.close()
        wait_until(instrument.connected, timeout=20, message="the good hello")
        assert svc.channels == [1, 2, 3] and svc.link.faults == 0
        assert svc.link._thread.is_alive()
    finally:
        svc.stop()
        fake.close()


def test_an_acquisition_finishes_after_ten_thousand_bad_frames():
    """Once, after 10,000 mixed bad frames (all counted) an acquisition on the same link
    never finished. Now the counters are exact and the acquisition ends."""
    from trainstamp.testing.tag_frames import FrameFaults

    faults = FrameFaults(seed=5, step_ps=1_000_000)
    parts = [wire.encode_message(wire.Kind.HELLO, HELLO), faults.good()]
    for _ in range(10_000):
        parts += [faults.bad_frame(), faults.good()]
    script = b"".join(parts)
    good_in_script = faults.good_tags
    fake = LiveFake(script, faults)
    svc, _, engine = _service(fake.port)
    rate = Countrate(engine, [1])
    svc.start()
    try:
        wait_until(lambda: svc.stats.tags >= good_in_script, timeout=60,
                   message="the good tags of the script")
        rs = svc.link.reader.stats
        assert rs.bad_headers + rs.bad_payloads == faults.expect["bad_frames"]
        assert rs.lost_blocks == faults.expect["lost_blocks"]
        rate.startFor(int(50e9))  # 50 ms of stream time, on the same link
        # a bound for a hung link, not a speed test
        assert rate.waitUntilFinished(60_000), "acquisition not finished"
        assert rate.getCaptureDuration() == int(50e9)
        assert svc.link.connects == 1 and svc.stats.faults == 0
        assert svc.stats.process_errors == 0  # no block the engine could not take
    finally:
        svc.stop()
        fake.close()
