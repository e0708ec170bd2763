"""The acquisition process: UDP data port -> shared-memory ring of frame slots.

As in team1k's acquisition subprocess and slsDetector's Listener, the receive loop runs
in its own process so nothing in the IOC (asyncio, HDF5, Channel Access) can stall it.
One shared-memory block holds:

- ``ring``: ``n_slots`` frame slots of 2 MiB; payloads are copied straight into place;
- ``meta``: per slot, publication sequence, frame number, train ID, timestamp, packets
  received and the complete flag (see ``_frames.M_*``);
- ``masks``: per slot, one byte per packet (the packet mask);
- ``counters``: frame and packet counters (see ``_frames.C_*``), written only by the
  receiver;
- ``control``: requests from the parent (stop, register, re-anchor).

A consumer follows ``counters[C_HEAD]`` and reads slot ``(seq - 1) % n_slots``; the slot's
``M_SEQ`` equals ``seq`` while its contents are valid, so a consumer that fell more than
``n_slots`` frames behind detects the overwrite instead of reading torn data.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import asdict, dataclass
from multiprocessing import resource_tracker, shared_memory
from pathlib import Path

import numpy as np

from trainstamp._wait import wait_until
from trainstamp.detector import _frames as F
from trainstamp.detector import _protocol as P
from trainstamp.detector._fastio import RecvBatch, receive_mmsg, request_buffer, set_recv_timeout

log = logging.getLogger(__name__)

K_STOP = 0
K_REGISTER = 1
K_REANCHOR = 2
N_CONTROL = 4


@dataclass(frozen=True)
class ReceiverConfig:
    """Where the detector is and how its frames are cut."""

    detector_ip: str = "127.0.0.1"
    data_port: int = P.DEFAULT_DATA_PORT
    #: local address of the data socket; "" = the interface that routes to the detector
    bind_host: str = ""
    bind_port: int = 0
    payload_size: int = P.JUMBO_PAYLOAD
    n_slots: int = 128
    rcvbuf: int = 128 * 1024 * 1024
    #: an open frame with no packet for this long is published incomplete
    frame_timeout_s: float = 0.1
    check_source_port: bool = True
    #: 1..99: run the receive loop under SCHED_FIFO at this priority (needs root or
    #: CAP_SYS_NICE), so other load on the host cannot starve it; 0: normal scheduling
    realtime_priority: int = 0

    def __post_init__(self) -> None:
        P.packets_per_frame(self.payload_size)
        if self.n_slots < 2:
            raise ValueError(f"n_slots {self.n_slots} must be at least 2")
        if not 0 < self.frame_timeout_s <= 10:
            raise ValueError(f"frame_timeout_s {self.frame_timeout_s} s outside (0, 10]")
        if not 0 <= self.realtime_priority <= 99:
            raise ValueError(f"realtime_priority {self.realtime_priority} outside 0..99")


SHM_PREFIX = "team1k_"
SHM_DIR = Path("/dev/shm")


def sweep_stale_rings() -> list[str]:
    """Unlink rings left behind by owners that died without cleaning up (kill -9).

    Ring names carry the owner's pid (``team1k_<pid>_<random>``); a ring whose owner no
    longer exists is unlinked. Returns the names removed.
    """
    removed = []
    if not SHM_DIR.is_dir():
        return removed
    for path in SHM_DIR.glob(f"{SHM_PREFIX}*_*"):
        try:
            pid = int(path.name[len(SHM_PREFIX):].split("_", 1)[0])
        except ValueError:
            continue
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            with contextlib.suppress(OSError):
                path.unlink()
                removed.append(path.name)
        except PermissionError:
            pass  # alive, someone else's
    return removed


class SharedRing:
    """The arrays of one receiver, laid out in one shared-memory block."""

    def __init__(self, cfg: ReceiverConfig, name: str | None = None) -> None:
        ppf = P.packets_per_frame(cfg.payload_size)
        self.shapes = [
            ("ring", (cfg.n_slots, P.FRAME_BYTES), np.uint8),
            ("meta", (cfg.n_slots, F.META_FIELDS), np.int64),
            ("masks", (cfg.n_slots, ppf), np.uint8),
            ("counters", (F.N_COUNTERS,), np.int64),
            ("control", (N_CONTROL,), np.int64),
            ("state", (F.N_STATE,), np.int64),
        ]
        size = sum(int(np.prod(s)) * np.dtype(t).itemsize for _, s, t in self.shapes)
        if name is None:
            sweep_stale_rings()
            name = f"{SHM_PREFIX}{os.getpid()}_{uuid.uuid4().hex[:8]}"
            self.shm = shared_memory.SharedMemory(name=name, create=True, size=size)
            self.owner = True
        else:
            self.shm = shared_memory.SharedMemory(name=name)
            # the parent owns the block; keep this process's tracker from unlinking it
            resource_tracker.unregister(self.shm._name, "shared_memory")  # type: ignore[attr-defined]
            self.owner = False
        off = 0
        for key, shape, dtype in self.shapes:
            n = int(np.prod(shape)) * np.dtype(dtype).itemsize
            setattr(self, key, np.ndarray(shape, dtype, buffer=self.shm.buf, offset=off))
            off += n
        if self.owner:
            self.ring[:] = 0
            self.meta[:] = 0
            self.counters[:] = 0
            self.control[:] = 0
            self.state[:] = 0

    @property
    def name(self) -> str:
        return self.shm.name

    def close(self) -> None:
        for key, _, _ in self.shapes:
            setattr(self, key, None)
        # BufferError: a view is still alive somewhere; the mapping goes with the process
        with contextlib.suppress(BufferError):
            self.shm.close()
        if self.owner:
            with contextlib.suppress(FileNotFoundError):
                self.shm.unlink()


def _receiver_main(cfg: ReceiverConfig, shm_name: str) -> None:
    """Body of the receiver process."""
    ring = SharedRing(cfg, shm_name)
    # map every page of the ring now: a page-table miss per 4 KiB on first touch would
    # otherwise cost two faults per jumbo packet while the first lap of the ring is filled
    int(ring.ring[:, ::4096].sum())
    from trainstamp.detector._regclient import local_address_for

    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((cfg.bind_host or local_address_for(cfg.detector_ip), cfg.bind_port))
    granted = request_buffer(sock, socket.SO_RCVBUF, cfg.rcvbuf)
    set_recv_timeout(sock, min(cfg.frame_timeout_s, 0.05))
    ppf = P.packets_per_frame(cfg.payload_size)
    batch = RecvBatch(64)
    src_ip = np.frombuffer(socket.inet_aton(socket.gethostbyname(cfg.detector_ip)), np.uint8).copy()
    src_port = cfg.data_port if cfg.check_source_port else 0
    fd = sock.fileno()
    dest = (socket.gethostbyname(cfg.detector_ip), cfg.data_port)
    c, ctl = ring.counters, ring.control
    if cfg.realtime_priority:
        try:  # the loop blocks in recvmmsg, so a real-time receiver cannot spin the CPU away
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(cfg.realtime_priority))
        except (OSError, AttributeError) as exc:
            log.warning("cannot set SCHED_FIFO priority %d: %s", cfg.realtime_priority, exc)
    # compile the kernel before announcing readiness
    receive_mmsg(fd, 0, batch.mm, batch.packets, batch.names, src_ip, src_port, cfg.payload_size, ppf,
                 ring.ring, ring.meta, ring.masks, c, ring.state)
    c[F.C_RCVBUF] = granted
    c[F.C_LOCAL_PORT] = sock.getsockname()[1]
    c[F.C_READY] = 1
    quiet_since = time.monotonic()
    parent = os.getppid()
    try:
        while not ctl[K_STOP] and os.getppid() == parent:  # also stop if the parent died
            if ctl[K_REGISTER]:
                ctl[K_REGISTER] = 0
                try:
                    sock.sendto(P.encode_registration(), dest)
                except OSError as exc:
                    log.warning("registration to %s failed: %s", dest, exc)
            if ctl[K_REANCHOR]:
                ctl[K_REANCHOR] = 0
                F.publish_open_frame(cfg.payload_size, ppf, ring.ring, ring.meta, ring.masks,
                                     c, ring.state)
                ring.state[F.S_HAVE_LAST] = 0
            got, _, timed_out = receive_mmsg(fd, 64, batch.mm, batch.packets, batch.names, src_ip,
                                             src_port, cfg.payload_size, ppf, ring.ring, ring.meta,
                                             ring.masks, c, ring.state)
            now = time.monotonic()
            if got:
                quiet_since = now
            if timed_out and ring.state[F.S_OPEN] and now - quiet_since >= cfg.frame_timeout_s:
                # the detector stopped in the middle of a frame: publish what we have
                F.publish_open_frame(cfg.payload_size, ppf, ring.ring, ring.meta, ring.masks,
                                     c, ring.state)
    finally:
        sock.close()
        ring.close()


class Receiver:
    """Parent-side handle of the receiver process and its shared ring.

    ``start()`` spawns the process and waits until its socket is bound; ``register()``
    sends the loopback registration; ``counters()`` reads the loss counters; frames are
    read with :meth:`frame_view` / :meth:`valid`.
    """

    def __init__(self, cfg: ReceiverConfig) -> None:
        self.cfg = cfg
        self.ppf = P.packets_per_frame(cfg.payload_size)
        self.shared = SharedRing(cfg)
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60.0) -> Receiver:
        # A plain child interpreter (not multiprocessing): no re-import of __main__, no
        # fork of a threaded IOC.
        self._proc = subprocess.Popen(
            [sys.executable, "-c", _CHILD, self.shared.name, json.dumps(asdict(self.cfg))],
            stdin=subprocess.DEVNULL, env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        try:
            wait_until(lambda: self.shared.counters[F.C_READY] or self._proc.poll() is not None,
                       timeout=timeout, interval=0.01, message="the receiver process")
        except TimeoutError:
            self.stop()
            raise
        if self._proc.poll() is not None:
            raise RuntimeError(f"receiver process exited with {self._proc.returncode}")
        return self

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def local_port(self) -> int:
        return int(self.shared.counters[F.C_LOCAL_PORT])

    @property
    def local_address(self) -> str:
        """The address the data socket binds (the detector link's interface)."""
        from trainstamp.detector._regclient import local_address_for

        return self.cfg.bind_host or local_address_for(self.cfg.detector_ip)

    @property
    def rcvbuf_granted(self) -> int:
        return int(self.shared.counters[F.C_RCVBUF])

    def register(self) -> None:
        """Send the data-port registration from the receive socket."""
        self.shared.control[K_REGISTER] = 1

    def reanchor(self) -> None:
        """Forget the last frame number (after a detector reset restarts the count)."""
        self.shared.control[K_REANCHOR] = 1

    @property
    def head(self) -> int:
        return int(self.shared.counters[F.C_HEAD])

    def counters(self) -> dict[str, int]:
        c = self.shared.counters.copy()
        return {name: int(c[i]) for name, i in F.COUNTER_NAMES.items()}

    def slot(self, seq: int) -> int:
        return (seq - 1) % self.cfg.n_slots

    def valid(self, seq: int) -> bool:
        """True while frame ``seq`` is still in its slot (check after reading it)."""
        return int(self.shared.meta[self.slot(seq), F.M_SEQ]) == seq

    def frame_raw(self, seq: int) -> np.ndarray:
        """The 2 MiB of frame ``seq`` as uint8, a view into shared memory (no copy)."""
        return self.shared.ring[self.slot(seq)]

    def frame_view(self, seq: int) -> np.ndarray:
        return self.frame_raw(seq).view("<u2").reshape(P.FRAME_ROWS, P.FRAME_COLS)

    def frame_info(self, seq: int) -> tuple[int, int, int, bool]:
        """(frame number, train ID, timestamp ns, complete) of frame ``seq``."""
        m = self.shared.meta[self.slot(seq)].copy()
        train = int(np.int64(m[F.M_TRAIN_ID]).view(np.uint64))
        return int(m[F.M_FRAME_NUMBER]), train, int(m[F.M_TIMESTAMP]), bool(m[F.M_COMPLETE])

    def stop(self, timeout: float = 5.0) -> None:
        if self.shared.control is not None:
            self.shared.control[K_STOP] = 1
        if self._proc is not None:
            try:
                self._proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(timeout)
            self._proc = None
        self.shared.close()

    def __enter__(self) -> Receiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: list[str]) -> None:
    """Entry point of the receiver child: ``argv`` = shared-memory name, JSON config."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s receiver %(levelname)s %(message)s")
    _receiver_main(ReceiverConfig(**json.loads(argv[1])), argv[0])


_CHILD = "import sys; from trainstamp.detector._receiver import main; main(sys.argv[1:])"
