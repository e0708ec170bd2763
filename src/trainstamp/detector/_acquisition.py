"""The detector server's core, without EPICS: registers, receiver, capture, peripherals.

:class:`Team1kServer` owns the register client, the receiver process and its shared
ring, the capture writer thread and the serial peripherals. Every method blocks (it may
do register or serial I/O); the IOC calls them from worker threads. Frames never pass
through Python objects on their way to HDF5: the writer hands the shared-memory slot to
``write_direct_chunk`` and checks afterwards that the slot was not reused meanwhile.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from trainstamp.detector import _params
from trainstamp.detector._capture import CaptureFile, confine
from trainstamp.detector._peripherals import BellowStage, PowerSupply
from trainstamp.detector._receiver import Receiver, ReceiverConfig
from trainstamp.detector._regclient import DetectorCommands, RegisterClient

log = logging.getLogger(__name__)

MAX_CAPTURE = 1_000_000


class CaptureState:
    IDLE = "IDLE"
    CAPTURING = "CAPTURING"
    READY = "READY"
    ERROR = "ERROR"


@dataclass
class CaptureJob:
    """One ``CMD:CAPTURE N`` and what came of it."""

    total: int
    path: Path
    first_index: int = 0
    progress: int = 0
    overruns: int = 0
    status: str = CaptureState.CAPTURING
    message: str = ""
    train_ids: list[int] = field(default_factory=list)
    frame_numbers: list[int] = field(default_factory=list)
    done: threading.Event = field(default_factory=threading.Event)


class Team1kServer:
    """Everything behind the detector IOC's PVs."""

    def __init__(self, detector_ip: str = "10.0.0.32", register_port: int = 42000,
                 data_port: int = 41000, data_dir: str = ".", receiver: ReceiverConfig | None = None,
                 register_timeout: float = 0.2, register_retries: int = 3,
                 bellow_port: str | None = None, power_port: str | None = None) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.regs = RegisterClient(detector_ip, register_port, register_timeout, register_retries)
        self.cmd = DetectorCommands(self.regs)
        self.rx_cfg = receiver or ReceiverConfig(detector_ip=detector_ip, data_port=data_port)
        self.rx = Receiver(self.rx_cfg)
        self.bellow = BellowStage(bellow_port) if bellow_port else None
        self.power = PowerSupply(power_port) if power_port else None
        self.capture_timeout = 10.0
        self.job: CaptureJob | None = None
        self.file: CaptureFile | None = None
        self.keep_open = False
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def start(self) -> Team1kServer:
        self.rx.start()
        self.rx.register()
        return self

    def close(self) -> None:
        if self.job is not None and not self.job.done.is_set():
            self.job.status = CaptureState.ERROR
            self.job.message = "server shutting down"
        if self._thread is not None:
            self._thread.join(5)
        self.close_file()
        self.rx.stop()
        self.regs.close()
        for p in (self.bellow, self.power):
            if p is not None:
                p.close()

    # ---------------------------------------------------------------- detector
    def start_daq(self) -> None:
        self.rx.register()
        self.cmd.start_daq()

    def stop_daq(self) -> None:
        self.cmd.stop_daq()

    def reset(self) -> None:
        """Reset the detector and the data connection: registration and frame anchor."""
        self.cmd.reset()
        self.rx.reanchor()
        self.rx.register()

    def apply_parameter_file(self, path: str) -> int:
        """Parse the whole file first; apply it only if every line is good."""
        settings = _params.parse_parameter_file(path)
        _params.apply_settings(self.cmd, settings)
        return len(settings)

    # ---------------------------------------------------------------- capture
    def capture_path(self, directory: str, name: str, number: int) -> Path:
        return confine(self.data_dir, directory, f"{name}_{number:05d}.h5")

    def open_file(self, path: Path) -> None:
        with self._lock:
            if self.busy:
                raise ValueError("a capture is in progress")
            self.close_file()
            self.file = CaptureFile(path)
            self.keep_open = True

    def close_file(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None
        self.keep_open = False

    @property
    def busy(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def capture(self, n: int, path: Path | None = None) -> CaptureJob:
        """Start capturing the next ``n`` frames; into the open file, or a new one at ``path``."""
        if int(n) != n or not 0 < n <= MAX_CAPTURE:
            raise ValueError(f"capture count {n} outside 1..{MAX_CAPTURE}")
        with self._lock:
            if self.busy:
                raise ValueError("a capture is in progress")
            if self.file is None:
                if path is None:
                    raise ValueError("no capture file: open one or give a path")
                self.file = CaptureFile(path)
                self.keep_open = False
            job = CaptureJob(int(n), self.file.path, first_index=self.file.count)
            self.job = job
            start_seq = self.rx.head + 1
            self._thread = threading.Thread(target=self._run_capture, args=(job, self.file, start_seq),
                                            name="capture-writer", daemon=True)
            self._thread.start()
        return job

    def _run_capture(self, job: CaptureJob, f: CaptureFile, seq: int) -> None:
        rx, n_slots = self.rx, self.rx_cfg.n_slots
        last_progress = time.monotonic()
        try:
            while job.progress < job.total and job.status == CaptureState.CAPTURING:
                head = rx.head
                if head < seq:
                    if time.monotonic() - last_progress > self.capture_timeout:
                        raise TimeoutError(f"no frame for {self.capture_timeout:g} s "
                                           f"({job.progress} of {job.total} captured)")
                    time.sleep(0.0005)
                    continue
                if head - seq > n_slots - 2:  # fell behind the ring: skip to what is still there
                    skip = head - seq - (n_slots - 2)
                    job.overruns += skip
                    seq += skip
                fn, train_id, _, complete = rx.frame_info(seq)
                index = f.append(rx.frame_raw(seq), fn, train_id, complete)
                if not rx.valid(seq):  # the slot was reused while we wrote it
                    f.truncate(index)
                    job.overruns += 1
                    seq += 1
                    continue
                job.train_ids.append(train_id)
                job.frame_numbers.append(fn)
                job.progress += 1
                seq += 1
                last_progress = time.monotonic()
            f.flush()
            if job.status == CaptureState.CAPTURING:
                job.status = CaptureState.READY
        except Exception as exc:  # reported through CAPTURE:STATUS/MESSAGE, never raised
            log.exception("capture failed")
            job.status = CaptureState.ERROR
            job.message = str(exc)[:200]
        finally:
            if not self.keep_open:
                self.close_file()
            job.done.set()

    def cancel_capture(self) -> None:
        if self.job is not None and not self.job.done.is_set():
            self.job.status = CaptureState.ERROR
            self.job.message = "cancelled"

    # ---------------------------------------------------------------- preview
    def latest_frame(self) -> tuple[np.ndarray, int, int] | None:
        """A copy of the newest frame, its train ID and frame number (None if none yet)."""
        seq = self.rx.head
        if seq == 0:
            return None
        fn, train_id, _, _ = self.rx.frame_info(seq)
        frame = self.rx.frame_view(seq).copy()
        if not self.rx.valid(seq):
            return None
        return frame, train_id, fn


def bin_image(frame: np.ndarray, binning: int) -> np.ndarray:
    """Mean over ``binning`` x ``binning`` blocks (binning 1 returns the frame)."""
    if binning == 1:
        return frame
    r, c = frame.shape
    return frame.reshape(r // binning, binning, c // binning, binning).mean(axis=(1, 3))
