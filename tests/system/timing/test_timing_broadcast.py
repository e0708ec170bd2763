"""The tick broadcaster over loopback TCP, and the standalone ``emulate trains`` server."""

import asyncio
import socket

import pytest

from trainstamp.testing import Subprocess, free_port, wait_for_tcp, wait_until
from trainstamp.timing._broadcast import Broadcaster
from trainstamp.timing.feed import TrainFeed

pytestmark = pytest.mark.system


async def _slow_client_is_dropped() -> None:
    bc = await Broadcaster("127.0.0.1", 0, max_buffer=1024, sndbuf=4096).start()
    try:
        # A stalled client: tiny receive buffer and it never reads.
        slow = socket.socket()
        slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        slow.setblocking(False)
        await asyncio.get_running_loop().sock_connect(slow, ("127.0.0.1", bc.port))
        # A dead client: connects, then vanishes with a reset.
        dead = socket.create_connection(("127.0.0.1", bc.port))
        reader, writer = await asyncio.open_connection("127.0.0.1", bc.port)
        await asyncio.wait_for(_until(lambda: bc.clients == 3), 5)
        dead.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
        dead.close()
        await asyncio.wait_for(_until(lambda: bc.clients == 2), 5)

        got: list[int] = []

        async def fast_reader() -> None:
            while line := await reader.readline():
                got.append(int(line))

        task = asyncio.create_task(fast_reader())
        n = 20_000
        for i in range(n):
            bc.broadcast(10**12 + i)  # never awaits: nobody can hold it up
            if i % 20 == 0:
                await asyncio.sleep(0)
        await asyncio.wait_for(_until(lambda: len(got) == n), 10)
        assert got == list(range(10**12, 10**12 + n))  # the fast client lost nothing
        assert bc.dropped == 1 and bc.clients == 1  # the laggard was dropped
        writer.close()
        task.cancel()
        slow.close()
    finally:
        await bc.stop()


async def _until(predicate) -> None:
    while not predicate():
        await asyncio.sleep(0.005)


def test_slow_or_dead_client_never_holds_up_the_others():
    asyncio.run(_slow_client_is_dropped())


def test_broadcaster_refuses_tiny_buffer():
    with pytest.raises(ValueError, match="max_buffer 10 bytes is below the limit of 64"):
        Broadcaster(max_buffer=10)


def test_emulate_trains_serves_consecutive_ids():
    port = free_port()
    args = ["emulate", "trains", "--port", str(port), "--period", "10", "--start", "500"]
    with Subprocess(args, ready=lambda: wait_for_tcp("127.0.0.1", port, 0.5) or True) as proc:
        got: list[tuple[int, int]] = []
        with TrainFeed(f"tcp://127.0.0.1:{port}", lambda i, t: got.append((i, t))) as feed:
            wait_until(lambda: len(got) >= 20, timeout=10, message="20 train IDs")
        ids = [i for i, _ in got]
        assert ids[0] >= 500
        assert ids == list(range(ids[0], ids[0] + len(ids)))
        assert feed.stats.bad_messages == 0
        assert f"serving train IDs on tcp://127.0.0.1:{port} every 10 ms from 500" in proc.output()
    assert proc.proc.returncode == 0


@pytest.mark.parametrize("args,message", [
    (["--period", "0"], "period 0.0 ms outside 1..60000 ms"),
    (["--period", "nan"], "period nan ms outside"),
    (["--start", "-5"], "train ID '-5' is not an integer"),
    (["--port", "70000"], "port '70000' outside 0..65535"),
])
def test_emulate_trains_refuses_bad_arguments(args, message):
    with Subprocess(["emulate", "trains", *args]) as proc:
        assert proc.proc.wait(20) == 2
        assert message in proc.output()


def test_train_feed_uses_the_same_message_rules_as_the_timeserver(caplog):
    """Unterminated IDs end at a pause, 0 is no train, and a flood of bad messages is
    counted exactly but logged briefly (TrainFeed shares MessageSplitter.feed_ids)."""
    from timing_servers import TrainServer

    server = TrainServer()
    got: list[int] = []
    try:
        with caplog.at_level("WARNING", logger="trainstamp.timing.feed"), \
                TrainFeed(f"tcp://127.0.0.1:{server.port}", lambda i, t: got.append(i),
                          pause_ms=20) as feed:
            server.next_connection()
            for train_id in (2013, 2014):
                server.send(b"%d" % train_id)  # no terminator: the pause ends it
                wait_until(lambda i=train_id: got and got[-1] == i, timeout=10,
                           message=f"ID {train_id}")
            server.send(b"0\n" + b"junk\n" * 5000 + b"2015\n")
            wait_until(lambda: got[-1:] == [2015], timeout=10, message="ID 2015")
            assert feed.stats.bad_messages == 5001
    finally:
        server.close()
    assert got == [2013, 2014, 2015]
    lines = [r.getMessage() for r in caplog.records if r.name == "trainstamp.timing.feed"]
    assert 1 <= len(lines) <= 6, lines
