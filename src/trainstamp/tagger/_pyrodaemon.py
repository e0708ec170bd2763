"""The Pyro5 daemon of the tagger server, hardened: who may call what, and how much.

- **Ownership by token.** Every client connection that arrives without a token (a
  plain ``Pyro5.api.Proxy(uri)``, as in Swabian's examples) is given a fresh random
  token at its handshake: that connection is the token's *root*. Proxies the server
  hands back (taggers, measurements, virtual channels) carry the token as their
  handshake data, so the connections they open belong to the same client. Every call
  on an object checks that the caller's token is the object's owner
  (:meth:`~trainstamp.tagger._adapters.Adapter._target`); another client gets
  ``PermissionError`` even if it learnt the object's ID. When the root connection
  closes, everything the token owns is freed.
- **No listing.** The built-in ``Pyro.Daemon`` object still answers ``ping``, ``info``
  and the metadata a proxy asks for at connect, but ``registered()`` names only the
  public ``TimeTagger`` and ``TimeTaggerRPC`` objects, never the clients' objects.
- **No compressed messages.** Pyro inflates a compressed message before any size
  check (1 MB of zlib became 1 GiB); a message flagged compressed is refused and the
  connection closed, before it is read. ``MAX_MESSAGE_SIZE`` caps the rest.
- **Threads.** A connection that does not send its handshake is dropped: each read of
  it may wait :data:`HANDSHAKE_TIMEOUT_S` (the header, then the rest). When more than 3/4 of the worker pool is taken, the
  connections idle longest whose token owns nothing are closed (parked) until half
  is free, so idle sockets cannot starve a real client.
- **Serializer.** serpent only (the client default); pickle and dill are never
  accepted, whatever a client asks for. numpy arrays a ``timetaggerrpc`` client sends
  (NPY over base64) are read with ``allow_pickle=False`` and their header checked
  against the bytes that came (:func:`trainstamp.tagger._ttrpcwire.decode_npy`).
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import socket
import struct
import threading
import time

import Pyro5.api
import Pyro5.errors
import Pyro5.protocol
import Pyro5.server
from Pyro5 import core

log = logging.getLogger(__name__)

#: Largest Pyro5 message the server accepts or sends (Pyro's default is 1 GiB).
MAX_MESSAGE_SIZE = 256 << 20
#: Seconds a new connection has to complete the Pyro handshake.
HANDSHAKE_TIMEOUT_S = 5.0
#: Worker threads (one per client connection) and when idle connections are parked.
THREADPOOL_SIZE = 80
PARK_ABOVE = 0.75
PARK_DOWN_TO = 0.5
#: The only names ``Pyro.Daemon.registered()`` reveals.
PUBLIC_OBJECTS = ("TimeTagger", "TimeTaggerRPC")

_HEADER = struct.Struct(Pyro5.protocol._header_format)


class GuardedDaemonObject(Pyro5.server.DaemonObject):
    """``Pyro.Daemon`` without the list of every registered object."""

    @Pyro5.api.expose
    def registered(self):
        return [core.DAEMON_NAME] + [n for n in PUBLIC_OBJECTS if n in self.daemon.objectsById]


def configure_pyro() -> None:
    """Process-wide Pyro settings of the server (call before making the daemon)."""
    cfg = Pyro5.config
    cfg.MAX_MESSAGE_SIZE = MAX_MESSAGE_SIZE
    cfg.SERVERTYPE = "thread"
    cfg.THREADPOOL_SIZE = THREADPOOL_SIZE
    cfg.COMPRESSION = False
    cfg.SERIALIZER = "serpent"
    from trainstamp.tagger._ttrpcwire import NDARRAY_CLASS, decode_npy

    Pyro5.api.register_dict_to_class(NDARRAY_CLASS, decode_npy)


class RpcDaemon(Pyro5.server.Daemon):
    """A Pyro daemon with the guards in the module doc; tells the RPC object when a
    client's root connection closes."""

    rpc = None

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.objectsById[core.DAEMON_NAME] = GuardedDaemonObject(self)
        self._conn_lock = threading.Lock()
        self._conns: dict[object, float] = {}  # live connection -> last activity
        self._roots: dict[str, object] = {}  # token -> its root connection
        self.refused_compressed = 0
        self.parked = 0

    # -- guards --------------------------------------------------------------------
    def _refuse_compressed(self, conn) -> None:
        """Look at the next message's header before Pyro reads (and inflates) it."""
        sock = conn.sock
        try:
            head = sock.recv(_HEADER.size, socket.MSG_PEEK | socket.MSG_WAITALL)
        except (TimeoutError, OSError):
            return  # Pyro's own read reports it
        if len(head) == _HEADER.size and head.startswith(b"PYRO"):
            flags = _HEADER.unpack(head)[4]
            if flags & Pyro5.protocol.FLAGS_COMPRESSED:
                self.refused_compressed += 1
                log.warning("refused a compressed Pyro message from %s",
                            getattr(conn, "sock", None) and _peer(conn))
                raise Pyro5.errors.SecurityError("compressed messages are refused")

    def _handshake(self, conn, denied_reason=None):
        # A denial runs on the accepting thread: never let a silent socket hold it.
        conn.sock.settimeout(HANDSHAKE_TIMEOUT_S if denied_reason is None else 0.2)
        try:
            if denied_reason is None:
                self._refuse_compressed(conn)
            ok = super()._handshake(conn, denied_reason)
        finally:
            with contextlib.suppress(OSError):
                conn.sock.settimeout(None)
        if ok:
            with self._conn_lock:
                self._conns[conn] = time.monotonic()
        return ok

    def validateHandshake(self, conn, data):
        token = data if isinstance(data, str) and data.startswith("tt-") else None
        with self._conn_lock:
            if token is None or token not in self._roots:
                token = "tt-" + secrets.token_hex(16)
                self._roots[token] = conn
        conn.trainstamp_token = token
        return "hello"

    def handleRequest(self, conn):
        self._refuse_compressed(conn)
        with self._conn_lock:
            self._conns[conn] = time.monotonic()
        try:
            return super().handleRequest(conn)
        finally:
            with self._conn_lock:
                if conn in self._conns:
                    self._conns[conn] = time.monotonic()

    def clientDisconnect(self, conn) -> None:
        token = getattr(conn, "trainstamp_token", None)
        with self._conn_lock:
            self._conns.pop(conn, None)
            root = self._roots.get(token) is conn
            if root:
                del self._roots[token]
        if root and self.rpc is not None:
            self.rpc.release_client(token)

    # -- parking idle connections -------------------------------------------------------
    def _housekeeping(self):
        super()._housekeeping()
        self.park_idle()

    def park_idle(self, now: float | None = None) -> int:
        """Close the longest-idle connections that own nothing, when the pool is full."""
        now = time.monotonic() if now is None else now
        with self._conn_lock:
            live = len(self._conns)
            if live <= THREADPOOL_SIZE * PARK_ABOVE:
                return 0
            owners = self.rpc.owners() if self.rpc is not None else set()
            idle = sorted((t, id(c), c) for c, t in self._conns.items()
                          if getattr(c, "trainstamp_token", None) not in owners
                          and now - t > 1.0)
            victims = [c for _, _, c in idle[:max(0, live - int(THREADPOOL_SIZE * PARK_DOWN_TO))]]
        for conn in victims:
            with contextlib.suppress(OSError):
                conn.sock.shutdown(socket.SHUT_RDWR)  # its worker sees the close and ends
        self.parked += len(victims)
        if victims:
            log.warning("parked %d idle Pyro5 connections that owned nothing (%d live)",
                        len(victims), live)
        return len(victims)

    def connections(self) -> int:
        with self._conn_lock:
            return len(self._conns)


def _peer(conn) -> str:
    try:
        host, port = conn.sock.getpeername()[:2]
        return f"{host}:{port}"
    except OSError:
        return "?"


def token_proxy(daemon: RpcDaemon, obj: object, token: str | None):
    """A proxy for ``obj`` whose connections carry ``token`` (the owner's)."""
    proxy = daemon.proxyFor(obj)
    if token is not None:
        proxy._pyroHandshake = token
    return proxy


def start_daemon(rpc, host: str = "127.0.0.1",
                 port: int = 23000) -> tuple[RpcDaemon, str, threading.Thread]:
    """Serve ``rpc`` as ``PYRO:TimeTagger@host:port`` and its numpy face as
    ``PYRO:TimeTaggerRPC@host:port`` (:mod:`trainstamp.tagger._ttrpc`) on a daemon
    thread; return the daemon, the ``TimeTagger`` URI and the thread."""
    from trainstamp.tagger._ttrpc import OBJECT_ID, LibraryRPC

    configure_pyro()  # process-wide: call in the server
    daemon = RpcDaemon(host=host, port=port)
    daemon.rpc = rpc
    rpc.attach(daemon)
    uri = str(daemon.register(rpc, "TimeTagger"))
    daemon.register(LibraryRPC(rpc), OBJECT_ID)
    thread = threading.Thread(target=daemon.requestLoop, name="pyro-daemon", daemon=True)
    thread.start()
    return daemon, uri, thread
