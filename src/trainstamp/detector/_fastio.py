"""Packet I/O loops compiled with numba over libc ``recvfrom``/``sendto``.

Python's socket module has no ``recvmmsg``, and a Python-level loop spends most of its
time creating objects per packet. These kernels call libc directly from nopython code,
so the receive path creates no Python object per packet: ``recvfrom`` lands in one
packet buffer, the source address is checked in place, and
:func:`~trainstamp.detector._frames.assemble_packet` copies the payload into its frame
slot. The send kernel does the same for the emulator's fault-free fast path.
"""

from __future__ import annotations

import ctypes
import socket
import struct

import numba
import numpy as np

from trainstamp.detector import _protocol as P
from trainstamp.detector._frames import C_FOREIGN, assemble_packet

_libc = ctypes.CDLL(None, use_errno=True)
_recvfrom = _libc.recvfrom
_recvfrom.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int,
                      ctypes.c_void_p, ctypes.c_void_p]
_recvfrom.restype = ctypes.c_ssize_t
_sendto = _libc.sendto
_sendto.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int,
                    ctypes.c_void_p, ctypes.c_uint32]
_sendto.restype = ctypes.c_ssize_t

SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)
SO_SNDBUFFORCE = getattr(socket, "SO_SNDBUFFORCE", 32)


def sockaddr_in(host: str, port: int) -> np.ndarray:
    """A 16-byte ``struct sockaddr_in`` for libc calls."""
    raw = struct.pack("<H", socket.AF_INET) + struct.pack("!H", port) + socket.inet_aton(host) + bytes(8)
    return np.frombuffer(raw, np.uint8).copy()


def request_buffer(sock: socket.socket, option: int, size: int) -> int:
    """Ask for a socket buffer of ``size`` bytes; return what the kernel granted.

    Tries the ``*FORCE`` variant first (it passes ``rmem_max`` when run as root); the
    kernel doubles the request for bookkeeping, so the granted value is reported as is.
    """
    force = SO_RCVBUFFORCE if option == socket.SO_RCVBUF else SO_SNDBUFFORCE
    try:
        sock.setsockopt(socket.SOL_SOCKET, force, size)
    except OSError:
        sock.setsockopt(socket.SOL_SOCKET, option, size)
    return sock.getsockopt(socket.SOL_SOCKET, option)


def set_recv_timeout(sock: socket.socket, seconds: float) -> None:
    """``SO_RCVTIMEO`` so that a blocking libc ``recvfrom`` returns -1 after ``seconds``."""
    sec = int(seconds)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", sec, int((seconds - sec) * 1e6)))


@numba.njit(nogil=True)  # not cacheable: calls through ctypes pointers
def receive_batch(fd, max_packets, pkt, addr, addrlen, src_ip, src_port,
                  payload, ppf, ring, meta, masks, counters, state):
    """Receive up to ``max_packets`` datagrams into the frame ring.

    ``src_ip`` (4 bytes, network order) and ``src_port`` (0 = any) name the detector;
    anything else is counted foreign. Returns (packets read, frames published, timed out).
    """
    got = 0
    published = 0
    for _ in range(max_packets):
        addrlen[0] = 16
        n = _recvfrom(fd, pkt.ctypes.data, pkt.size, 0, addr.ctypes.data, addrlen.ctypes.data)
        if n < 0:
            return got, published, 1
        got += 1
        port = (np.int64(addr[2]) << 8) | np.int64(addr[3])
        if (addr[4] != src_ip[0] or addr[5] != src_ip[1] or addr[6] != src_ip[2]
                or addr[7] != src_ip[3] or (src_port != 0 and port != src_port)):
            counters[C_FOREIGN] += 1
            continue
        published += assemble_packet(pkt, n, payload, ppf, ring, meta, masks, counters, state)
    return got, published, 0


@numba.njit(nogil=True)
def send_frame(fd, dest, header, frame_bytes, payload, ppf, staging):
    """Send one frame: ``header`` (48 bytes) with the packet index patched per packet.

    Returns the number of packets the kernel accepted.
    """
    hs = P.HEADER_SIZE
    staging[:hs] = header
    sent = 0
    for i in range(ppf):
        staging[P.OFF_PACKET_INDEX] = i & 0xFF
        staging[P.OFF_PACKET_INDEX + 1] = (i >> 8) & 0xFF
        staging[P.OFF_PACKET_INDEX + 2] = (i >> 16) & 0xFF
        staging[P.OFF_PACKET_INDEX + 3] = (i >> 24) & 0xFF
        staging[hs:hs + payload] = frame_bytes[i * payload:(i + 1) * payload]
        r = _sendto(fd, staging.ctypes.data, hs + payload, 0, dest.ctypes.data, 16)
        if r > 0:
            sent += 1
    return sent
