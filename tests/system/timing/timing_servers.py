"""Facility train-ID servers for the timing system tests: the test writes the bytes.

:class:`TrainServer` accepts connections; the test sends what it wants on the newest
one. :class:`Ticker` sends one ID per period to whichever connection is newest, can
fall silent, and can be killed and restarted on the same port, as a facility's train-ID
server would be.
"""

from __future__ import annotations

import contextlib
import queue
import socket
import struct
import threading

from trainstamp.testing import free_port


class TrainServer:
    """A minimal facility train-ID server: accepts connections, the test writes bytes."""

    def __init__(self, port: int | None = None, backlog: int = 8) -> None:
        self.port = port or free_port()
        self.sock = socket.create_server(("127.0.0.1", self.port), backlog=backlog)
        self.sock.settimeout(0.2)
        self.accepted: queue.Queue[socket.socket] = queue.Queue()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()
        self.conn: socket.socket | None = None

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.accepted.put(conn)

    def next_connection(self, timeout: float = 10.0) -> socket.socket:
        self.conn = self.accepted.get(timeout=timeout)
        return self.conn

    def send(self, data: bytes) -> None:
        assert self.conn is not None
        self.conn.sendall(data)

    def reset_connection(self) -> None:
        """Close with RST (SO_LINGER 0): a connection reset, not an orderly close."""
        assert self.conn is not None
        self.conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.conn.close()
        self.conn = None

    def close(self) -> None:
        self._stop.set()
        self.sock.close()
        if self.conn is not None:
            self.conn.close()
        while not self.accepted.empty():
            self.accepted.get_nowait().close()
        self._thread.join(2)


class Ticker:
    """A facility server that sends ``start``, ``start + 1``, ... one per ``period_s``.

    Each ID goes to the newest connection. :meth:`silence` stops sending but keeps the
    connection open (a hung server); :meth:`kill` closes the listening socket and every
    connection (a crashed server); :meth:`restart` listens again on the same port. The
    count goes on while the server is silent or down, as the facility's trains do.
    """

    def __init__(self, start: int, period_s: float, port: int | None = None) -> None:
        self.next_id = start
        self.period_s = period_s
        self.server = TrainServer(port)
        self.port = self.server.port
        self.sent: list[int] = []
        self._conn: socket.socket | None = None
        self._sending = threading.Event()
        self._sending.set()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        # Pacing the stimulus, not waiting for a condition: one ID per period. The
        # facility's trains go on while the server is silent or down.
        while not self._stop.wait(self.period_s):
            with self._lock:
                train_id = self.next_id
                self.next_id += 1
                with contextlib.suppress(queue.Empty):
                    while True:
                        self._replace(self.server.accepted.get_nowait())
                if self._conn is None or not self._sending.is_set():
                    continue
                try:
                    self._conn.sendall(b"%d\n" % train_id)
                    self.sent.append(train_id)
                except OSError:
                    self._replace(None)

    def _replace(self, conn: socket.socket | None) -> None:
        if self._conn is not None:
            self._conn.close()
        self._conn = conn

    def silence(self) -> None:
        self._sending.clear()

    def resume(self) -> None:
        self._sending.set()

    def kill(self) -> None:
        with self._lock:
            self._replace(None)
            self.server.close()

    def restart(self) -> None:
        with self._lock:
            self.server = TrainServer(self.port)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self._replace(None)
        self.server.close()
