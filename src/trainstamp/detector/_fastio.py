"""Packet I/O loops compiled (and cached) with numba over libc ``recvfrom``/``sendto``.

Python's socket module has no ``recvmmsg``, and a Python-level loop spends most of its
time creating objects per packet. These kernels call libc directly from nopython code,
so the receive path creates no Python object per packet: ``recvmmsg`` fills a batch of
preallocated datagram buffers, each source address is checked in place, and
:func:`~trainstamp.detector._frames.assemble_packet` copies the payload into its frame
slot. The emulator's fault-free fast path sends a whole frame per ``sendmmsg`` call,
each datagram gathering its header and a slice of the frame (no payload copy).
"""

from __future__ import annotations

import ctypes
import socket
import struct

import numba
import numpy as np

from trainstamp.detector import _protocol as P
from trainstamp.detector._frames import C_FOREIGN, assemble_packet

if ctypes.sizeof(ctypes.c_void_p) != 8 or not hasattr(socket, "SO_RCVBUF"):
    raise ImportError("the detector's packet loops need 64-bit Linux (struct mmsghdr layout)")
import llvmlite.binding as llvm
from llvmlite import ir
from numba.core import cgutils, types
from numba.extending import intrinsic

# The kernels call libc by symbol name, not through a ctypes pointer: the compiled code
# then holds no process address, so numba can cache it (``cache=True``) and a process
# starts without recompiling them. The symbols are registered with the JIT here, before
# any kernel is compiled or loaded from the cache.
_libc = ctypes.CDLL(None, use_errno=True)
for _name in ("recvfrom", "sendto", "recvmmsg", "sendmmsg"):
    llvm.add_symbol(_name, ctypes.cast(getattr(_libc, _name), ctypes.c_void_p).value)

_INT, _SIZE, _PTR = types.int32, types.int64, "ptr"


def _libc_codegen(name: str, ret, params):
    """Code that calls libc's ``name``: integer arguments are cast to ``params`` (a
    ``_PTR`` entry takes an address, as ``array.ctypes.data`` gives it)."""

    def codegen(context, builder, sig, args):
        voidptr = ir.IntType(8).as_pointer()
        lltypes = [voidptr if p is _PTR else context.get_value_type(p) for p in params]
        fn = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(context.get_value_type(ret), lltypes), name)
        values = []
        for value, fromty, p, llty in zip(args, sig.args, params, lltypes, strict=True):
            if p is _PTR:
                value = builder.inttoptr(context.cast(builder, value, fromty, types.uintp), llty)
            else:
                value = context.cast(builder, value, fromty, p)
            values.append(value)
        return builder.call(fn, values)

    return codegen


@intrinsic
def _recvfrom(typingctx, fd, buf, size, flags, addr, addrlen):
    return (_SIZE(fd, buf, size, flags, addr, addrlen),
            _libc_codegen("recvfrom", _SIZE, (_INT, _PTR, _SIZE, _INT, _PTR, _PTR)))


@intrinsic
def _sendto(typingctx, fd, buf, size, flags, addr, addrlen):
    return (_SIZE(fd, buf, size, flags, addr, addrlen),
            _libc_codegen("sendto", _SIZE, (_INT, _PTR, _SIZE, _INT, _PTR, types.uint32)))


@intrinsic
def _recvmmsg(typingctx, fd, msgvec, vlen, flags, timeout):
    return (_INT(fd, msgvec, vlen, flags, timeout),
            _libc_codegen("recvmmsg", _INT, (_INT, _PTR, types.uint32, _INT, _PTR)))


@intrinsic
def _sendmmsg(typingctx, fd, msgvec, vlen, flags):
    return (_INT(fd, msgvec, vlen, flags),
            _libc_codegen("sendmmsg", _INT, (_INT, _PTR, types.uint32, _INT)))


MSG_WAITFORONE = 0x10000
MSG_TRUNC = 0x20
#: struct mmsghdr on 64-bit Linux as 8 uint64 words: msg_name, msg_namelen, msg_iov,
#: msg_iovlen, msg_control, msg_controllen, msg_flags, msg_len
MM_NAME, MM_NAMELEN, MM_IOV, MM_IOVLEN, MM_FLAGS, MM_LEN = 0, 1, 2, 3, 6, 7
#: largest datagram kept whole; anything longer is truncated by the kernel and flagged
MAX_DATAGRAM = 9216

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


@numba.njit(nogil=True, cache=True)
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


class RecvBatch:
    """Preallocated ``recvmmsg`` vectors: ``n`` datagram buffers, addresses and headers."""

    def __init__(self, n: int = 64) -> None:
        if not 1 <= n <= 1024:
            raise ValueError(f"batch size {n} outside 1..1024")
        self.n = n
        self.packets = np.zeros((n, MAX_DATAGRAM), np.uint8)
        self.names = np.zeros((n, 16), np.uint8)
        self.iov = np.zeros((n, 2), np.uint64)
        self.mm = np.zeros((n, 8), np.uint64)
        for i in range(n):
            self.iov[i] = (self.packets.ctypes.data + i * MAX_DATAGRAM, MAX_DATAGRAM)
            self.mm[i, MM_NAME] = self.names.ctypes.data + i * 16
            self.mm[i, MM_NAMELEN] = 16
            self.mm[i, MM_IOV] = self.iov.ctypes.data + i * 16
            self.mm[i, MM_IOVLEN] = 1


@numba.njit(nogil=True, cache=True)
def receive_mmsg(fd, max_calls, mm, packets, names, src_ip, src_port,
                 payload, ppf, ring, meta, masks, counters, state):
    """Like :func:`receive_batch`, but up to ``mm.shape[0]`` datagrams per ``recvmmsg``.

    Returns (packets read, frames published, timed out). Datagrams longer than the
    buffer come back truncated with ``MSG_TRUNC`` and are counted malformed.
    """
    got = 0
    published = 0
    vlen = mm.shape[0]
    for _ in range(max_calls):
        for i in range(vlen):
            mm[i, MM_NAMELEN] = 16
            mm[i, MM_FLAGS] = 0
        n = _recvmmsg(fd, mm.ctypes.data, vlen, MSG_WAITFORONE, 0)
        if n < 0:
            return got, published, 1
        got += n
        for i in range(n):
            a = names[i]
            port = (np.int64(a[2]) << 8) | np.int64(a[3])
            if (a[4] != src_ip[0] or a[5] != src_ip[1] or a[6] != src_ip[2] or a[7] != src_ip[3]
                    or (src_port != 0 and port != src_port)):
                counters[C_FOREIGN] += 1
                continue
            length = np.int64(mm[i, MM_LEN] & np.uint64(0xFFFFFFFF))
            if mm[i, MM_FLAGS] & np.uint64(MSG_TRUNC):
                length = 0  # longer than any valid packet: malformed
            published += assemble_packet(packets[i], length, payload, ppf, ring, meta, masks, counters, state)
    return got, published, 0


@numba.njit(nogil=True, cache=True)
def send_frame_mmsg(fd, dest, header, frame_bytes, payload, ppf, headers, iov, mm):
    """Send one frame with ``sendmmsg``: each datagram gathers its own header copy and a
    slice of ``frame_bytes`` (no payload copy in user space).

    ``headers`` (ppf, 48), ``iov`` (ppf, 4) and ``mm`` (ppf, 8) are scratch arrays.
    Returns the number of datagrams the kernel accepted.
    """
    hs = P.HEADER_SIZE
    base_h = headers.ctypes.data
    base_f = frame_bytes.ctypes.data
    base_iov = iov.ctypes.data
    for i in range(ppf):
        headers[i, :] = header
        headers[i, P.OFF_PACKET_INDEX] = i & 0xFF
        headers[i, P.OFF_PACKET_INDEX + 1] = (i >> 8) & 0xFF
        headers[i, P.OFF_PACKET_INDEX + 2] = (i >> 16) & 0xFF
        headers[i, P.OFF_PACKET_INDEX + 3] = (i >> 24) & 0xFF
        iov[i, 0] = base_h + i * hs
        iov[i, 1] = hs
        iov[i, 2] = base_f + i * payload
        iov[i, 3] = payload
        mm[i, MM_NAME] = dest.ctypes.data
        mm[i, MM_NAMELEN] = 16
        mm[i, MM_IOV] = base_iov + i * 32
        mm[i, MM_IOVLEN] = 2
        mm[i, 4] = 0
        mm[i, 5] = 0
        mm[i, MM_FLAGS] = 0
    sent = 0
    failures = 0
    while sent < ppf and failures < 3:
        r = _sendmmsg(fd, mm.ctypes.data + sent * 64, ppf - sent, 0)
        if r <= 0:
            failures += 1  # ENOBUFS and the like: count what went, give up on the rest
            continue
        sent += r
    return sent


@numba.njit(nogil=True, cache=True)
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
