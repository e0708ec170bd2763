"""Re-broadcast every tick to any number of TCP clients, in the seed's ASCII protocol.

The detector and tagger emulators (and any facility program) take their triggers from
here with :class:`~trainstamp.timing.feed.TrainFeed`. :meth:`Broadcaster.broadcast` never
waits on a client: each message is handed to the client's transport, whose buffer is
bounded by ``max_buffer`` bytes. A client that lets it fill (slow, stalled or dead) is
dropped at once, so it can never delay the tick for anyone else.
"""

from __future__ import annotations

import asyncio
import logging
import socket

from trainstamp.timing._protocol import encode_train_id

log = logging.getLogger(__name__)

#: Per-client bytes queued in user space before the client is dropped. At ~12 bytes
#: per ID this is several thousand ticks, minutes at 10 Hz.
DEFAULT_MAX_BUFFER = 64 * 1024


class Broadcaster:
    """A TCP server that writes each train ID to every connected client.

    ``sndbuf``, if given, sets the kernel send buffer of each client socket (tests use a
    small one so a stalled client is detected quickly).
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *,
                 max_buffer: int = DEFAULT_MAX_BUFFER, sndbuf: int | None = None) -> None:
        if max_buffer < 64:
            raise ValueError(f"max_buffer {max_buffer} bytes is below the limit of 64")
        self.host = host
        self.port = port
        self.max_buffer = max_buffer
        self.sndbuf = sndbuf
        self.sent = 0
        self.dropped = 0
        self.accepted = 0
        self._clients: dict[asyncio.StreamWriter, str] = {}
        self._server: asyncio.Server | None = None

    @property
    def clients(self) -> int:
        return len(self._clients)

    async def start(self) -> Broadcaster:
        self._server = await asyncio.start_server(self._serve, self.host, self.port,
                                                  reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in list(self._clients):
            writer.transport.abort()
        self._clients.clear()
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        host, port = writer.get_extra_info("peername")[:2]
        peer = f"{host}:{port}"
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.sndbuf:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.sndbuf)
        self._clients[writer] = peer
        self.accepted += 1
        log.info("broadcast client %s connected (%d clients)", peer, len(self._clients))
        try:
            # Clients have nothing to say; read (and discard) only to notice them leave.
            while await reader.read(4096):
                pass
        except OSError:
            pass
        finally:
            if self._clients.pop(writer, None) is not None:
                log.info("broadcast client %s left", peer)
            writer.transport.abort()

    def broadcast(self, train_id: int) -> None:
        """Queue ``train_id`` to every client without waiting; drop clients that lag."""
        msg = encode_train_id(train_id)
        for writer, peer in list(self._clients.items()):
            transport = writer.transport
            if transport.is_closing():
                self._clients.pop(writer, None)
                continue
            if transport.get_write_buffer_size() + len(msg) > self.max_buffer:
                self._clients.pop(writer, None)
                self.dropped += 1
                log.warning("broadcast client %s dropped: %d bytes queued (limit %d)",
                            peer, transport.get_write_buffer_size(), self.max_buffer)
                transport.abort()
                continue
            writer.write(msg)
            self.sent += 1
