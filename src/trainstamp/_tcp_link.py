"""A TCP client thread that stays connected: the reconnect loop every link shares.

The train feed of the emulators (:class:`~trainstamp.timing.feed.TrainFeed`) and the
tagger server's tag link (:class:`~trainstamp.tagger._link.TaggerLink`) both connect
to a ``tcp://host:port``, read until the peer closes or the link fails, and connect
again after a capped exponential backoff, until stopped. :class:`ReconnectingLink` is
that loop, written once; a subclass says how to read a connection (:meth:`_read`) and
what to do when one opens or ends.

A link thread never dies of what it receives: an ``OSError`` is a lost connection (logged
at debug level), and any other exception from :meth:`_read` drops the connection too,
counted in :attr:`faults` with its text in :attr:`last_fault`, then reconnects.
"""

from __future__ import annotations

import logging
import socket
import threading

log = logging.getLogger(__name__)

__all__ = ["ReconnectingLink"]


class ReconnectingLink:
    """Connect to ``host:port`` on a daemon thread, read, reconnect with backoff.

    Parameters
    ----------
    host, port
        Where to connect.
    name
        The thread's name, and the link's in log lines.
    backoff_initial_s, backoff_max_s
        The first wait after a lost connection, doubled after each failed attempt up to
        the maximum; back to the first after a connection is made.
    recv_timeout_s
        The socket timeout while reading, so :meth:`_read` can notice :meth:`stop`.
    rcvbuf_bytes
        ``SO_RCVBUF`` to ask for (None: the system's default).
    """

    #: Seconds a connection attempt may take.
    connect_timeout_s = 2.0

    def __init__(self, host: str, port: int, *, name: str, backoff_initial_s: float = 0.1,
                 backoff_max_s: float = 5.0, recv_timeout_s: float = 0.2,
                 rcvbuf_bytes: int | None = None) -> None:
        self.host, self.port = host, port
        self.backoff_initial_s, self.backoff_max_s = backoff_initial_s, backoff_max_s
        self.recv_timeout_s = recv_timeout_s
        self.rcvbuf_bytes = rcvbuf_bytes
        self.connects = 0  # connections made
        self.faults = 0  # exceptions that dropped the connection (then reconnected)
        self.last_fault = ""
        self._stop = threading.Event()
        self._connected = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    # -- what a subclass provides ---------------------------------------------------------
    def _read(self, sock: socket.socket) -> None:
        """Read ``sock`` until the peer closes it or :attr:`stopping`; raise on a failure."""
        raise NotImplementedError

    def _on_connect(self, sock: socket.socket) -> None:
        """Hook: a connection was made (before :meth:`_read`)."""

    def _on_disconnect(self) -> None:
        """Hook: the connection ended, for whatever reason (before the backoff wait)."""

    # -- the loop -------------------------------------------------------------------------
    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def start(self):
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def wait_connected(self, timeout: float) -> bool:
        return self._connected.wait(timeout)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        name = self._thread.name
        delay = self.backoff_initial_s
        while not self._stop.is_set():
            try:
                with socket.create_connection((self.host, self.port),
                                              timeout=self.connect_timeout_s) as sock:
                    if self.rcvbuf_bytes:
                        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.rcvbuf_bytes)
                    sock.settimeout(self.recv_timeout_s)
                    self.connects += 1
                    self._on_connect(sock)
                    self._connected.set()
                    delay = self.backoff_initial_s
                    self._read(sock)
            except OSError as exc:
                log.debug("%s %s:%s: %s", name, self.host, self.port, exc)
            except Exception as exc:  # what a peer sends must not end the link
                self.faults += 1
                self.last_fault = f"{type(exc).__name__}: {exc}"
                log.exception("%s %s:%s: dropped the connection", name, self.host, self.port)
            finally:
                self._connected.clear()
                self._on_disconnect()
            if self._stop.wait(delay):
                return
            delay = min(delay * 2, self.backoff_max_s)
