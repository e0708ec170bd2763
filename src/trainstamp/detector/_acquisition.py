"""The detector server's core, without EPICS: registers, receiver, capture, peripherals.

:class:`Team1kServer` owns the register client, the receiver process and its shared
ring, the capture writer thread and the serial peripherals. Every method blocks (it may
do register or serial I/O); the IOC calls them from worker threads. Frames never pass
through Python objects on their way to HDF5: the writer hands the shared-memory slot to
``write_direct_chunk`` and checks afterwards that the slot was not reused meanwhile.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from pathlib import Path

import numpy as np

from trainstamp.detector import _params
from trainstamp.detector._capture import CaptureFile, confine
from trainstamp.detector._capture_job import (
    CLOCK_MATCH_NS,
    CaptureJob,
    CaptureState,
    frame_period_ns,
    precedes_start_train,
    predates_put,
)
from trainstamp.detector._config import DetectorConfig
from trainstamp.detector._peripherals import BellowStage, PowerSupply
from trainstamp.detector._protocol import (
    DEFAULT_DATA_PORT,
    DEFAULT_DETECTOR_IP,
    DEFAULT_REGISTER_PORT,
    FRAME_BYTES,
)
from trainstamp.detector._receiver import Receiver, ReceiverConfig
from trainstamp.detector._regclient import DetectorCommands, RegisterClient
from trainstamp.detector._registers import STATUS_DESTINATION, Reg
from trainstamp.detector._transfer import FrameTransferServer

log = logging.getLogger(__name__)

MAX_CAPTURE = 1_000_000
#: Room a capture must leave on the disk beyond its frames (metadata, other files).
DISK_MARGIN = 256 << 20


class Team1kServer:
    """Everything behind the detector IOC's PVs."""

    def __init__(self, detector_ip: str = DEFAULT_DETECTOR_IP, register_port: int = DEFAULT_REGISTER_PORT,
                 data_port: int = DEFAULT_DATA_PORT, data_dir: str = ".", receiver: ReceiverConfig | None = None,
                 register_timeout: float = 0.2, register_retries: int = 3,
                 bellow_port: str | None = None, power_port: str | None = None,
                 param_dirs: list[str] | None = None,
                 transfer: FrameTransferServer | None = None) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.param_dirs = [Path(d).resolve() for d in param_dirs or []]
        self.rx_cfg = receiver or ReceiverConfig(detector_ip=detector_ip, data_port=data_port)
        self.regs = RegisterClient(detector_ip, register_port, register_timeout, register_retries,
                                   bind_host=self.rx_cfg.bind_host or None)
        self.cmd = DetectorCommands(self.regs)
        self.config = DetectorConfig(self.cmd)
        self.restores = 0  # times the configuration was re-applied to a restarted FPGA
        self.rx = Receiver(self.rx_cfg)
        self.bellow = BellowStage(bellow_port) if bellow_port else None
        self.power = PowerSupply(power_port) if power_port else None
        #: the data-transfer port (ZMQ) that serves captured frames; None: none
        self.transfer = transfer
        self.capture_timeout_s = 10.0
        self.job: CaptureJob | None = None
        self.file: CaptureFile | None = None
        self.keep_open = False
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def start(self) -> Team1kServer:
        if self.transfer is not None:
            self.transfer.start()
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
        if self.transfer is not None:
            self.transfer.close()
        for p in (self.bellow, self.power):
            if p is not None:
                p.close()

    # ---------------------------------------------------------------- detector
    def start_daq(self) -> list[str]:
        """Start the DAQ on the configured settings, restored first if the FPGA lost
        them (see :meth:`restore_if_restarted`, whose answer this returns)."""
        lost = self.restore_if_restarted() if self.config.values else []
        self.rx.register()
        self.cmd.start_daq()
        return lost

    def stop_daq(self) -> list[str]:
        self.cmd.stop_daq()
        return []

    def reset(self) -> None:
        """Reset the detector and the data connection, then restore the configuration.

        A reset sets the FPGA's registers to their defaults (trigger INTERNAL: frames
        without train IDs), so the configured settings are written back; the caller
        reads them back into the readbacks. A capture in progress is cancelled.
        """
        self.cancel_capture("cancelled by CMD:RESET")
        self.cmd.reset()
        self.rx.reanchor()
        self.config.apply()
        self.rx.register()

    def restore_if_restarted(self) -> list[str]:
        """Re-apply the configuration if the FPGA no longer holds it (it restarted).

        Also re-registers the data destination if the FPGA forgot it. Returns the
        settings that had been lost (empty: nothing to do).
        """
        with self.config.lock:
            lost = self.config.mismatches()
            if lost:
                log.warning("FPGA lost its configuration (%s): re-applying it", ", ".join(lost))
                self.config.apply()
                self.rx.reanchor()
                self.restores += 1
                still = self.config.mismatches()
                if still:
                    raise RuntimeError(f"FPGA does not hold the configuration after a restore: {', '.join(still)}")
        if not self.regs.read(Reg.STATUS) & STATUS_DESTINATION:
            self.rx.register()
        return lost

    def apply_parameter_file(self, path: str, confined: bool = True) -> int:
        """Parse the whole file first; apply it only if every line is good.

        ``confined``: the path comes over CA and must lie in a parameter directory.
        """
        settings = self.read_parameter_file(path) if confined else _params.parse_parameter_file(path)
        self.apply_settings(settings)
        return len(settings)

    def read_parameter_file(self, name: str) -> list[_params.Setting]:
        """Confine (to the parameter directories), read and parse a file named over CA."""
        return _params.parse_parameter_file(_params.confine_parameter_file(self.param_dirs, name))

    def apply_settings(self, settings: list[_params.Setting]) -> None:
        _params.apply_settings(self.config, settings)

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

    def capture(self, n: int, path: Path | None = None, put_ns: int | None = None,
                start_train: int = 0) -> CaptureJob:
        """Start capturing ``n`` frames; into the open file, or a new one at ``path``.

        The first is the frame of the train in force at ``put_ns`` (host wall clock, ns;
        default now): a frame of that train already published is taken, frames of
        trains that ended before it are skipped (see :func:`predates_put`).

        With ``start_train`` (a train ID, in external trigger) the first is instead the
        frame whose header carries that train: earlier trains are skipped, and the
        capture fails if the first frame found is of a later train (the frame of
        ``start_train`` was lost, or had left the ring). This is how a plan makes the
        detector and the tagger start on the same train.
        """
        if int(n) != n or not 0 < n <= MAX_CAPTURE:
            raise ValueError(f"capture count {n} outside 1..{MAX_CAPTURE}")
        target = (self.file.path if self.file is not None else path)
        if target is not None:
            free = shutil.disk_usage(next(p for p in (target, *target.parents) if p.exists())).free
            need = int(n) * FRAME_BYTES + DISK_MARGIN
            if need > free:
                raise ValueError(f"capture of {int(n)} frames needs {need / 2**30:.1f} GiB, "
                                 f"{free / 2**30:.1f} GiB free on the disk of {str(target.parent)!r}")
        with self._lock:
            if self.busy:
                raise ValueError("a capture is in progress")
            if self.file is None:
                if path is None:
                    raise ValueError("no capture file: open one or give a path")
                self.file = CaptureFile(path)
                self.keep_open = False
            by_train = int(start_train) if self.config.expects_train_ids else 0
            job = CaptureJob(int(n), self.file.path, first_index=self.file.count,
                             expects_train_ids=self.config.expects_train_ids,
                             start_train=max(by_train, 0))
            self.job = job
            put_ns = time.time_ns() if put_ns is None else int(put_ns)
            head = self.rx.head
            start_seq = head + 1
            if job.start_train:
                # Frames of the train asked for (and after it) may be in the ring already.
                while (start_seq - 1 >= max(1, head - 7) and self.rx.valid(start_seq - 1)
                       and self.rx.frame_info(start_seq - 1)[1] >= job.start_train):
                    start_seq -= 1
                self._start_writer(job, start_seq, 0, None)
                return job
            recent = []
            for seq in range(max(1, head - 8), head + 1):
                fn, train_id, ts, _ = self.rx.frame_info(seq)
                if self.rx.valid(seq):
                    recent.append((fn, train_id, ts))
            period = frame_period_ns(recent, put_ns)
            # The frame of the train in force at the put may already be published (it is
            # read out a few ms into its train); start there, as the tagger does. Only
            # frames of trains (external trigger): an internal-trigger frame has none.
            while start_seq - 1 >= max(1, head - 7):
                _, train_id, ts, _ = self.rx.frame_info(start_seq - 1)
                next_ts = self.rx.frame_info(start_seq)[2] if start_seq <= head else None
                if (train_id == 0 or not self.rx.valid(start_seq - 1)
                        or abs(ts - put_ns) > CLOCK_MATCH_NS
                        or predates_put(ts, put_ns, period, next_ts) is not False):
                    break
                start_seq -= 1
            self._start_writer(job, start_seq, put_ns, period)
        return job

    def _start_writer(self, job: CaptureJob, seq: int, put_ns: int, period: float | None) -> None:
        self._thread = threading.Thread(target=self._run_capture,
                                        args=(job, self.file, seq, put_ns, period),
                                        name="capture-writer", daemon=True)
        self._thread.start()

    def _run_capture(self, job: CaptureJob, f: CaptureFile, seq: int, put_ns: int = 0,
                     period_ns: float | None = None) -> None:
        """Write the next ``job.total`` frames from ``seq`` on.

        Frames published after the put whose train had already ended before it (a frame
        still in flight, or a cold receiver publishing late) are skipped: a capture
        starts with the train in force at the put, as the tagger's acquisitions do.
        """
        rx, n_slots = self.rx, self.rx_cfg.n_slots
        last_progress = time.monotonic()
        judging = put_ns > 0  # until the first frame of the train in force is found
        waiting_for = job.start_train  # until the frame of this train is found
        before = None  # (frame number, train ID) of the frame before seq, while waiting
        if waiting_for and seq > 1 and rx.valid(seq - 1):
            before = rx.frame_info(seq - 1)[:2]
        try:
            while job.progress < job.total and job.status == CaptureState.CAPTURING:
                head = rx.head
                if waiting_for and head >= seq:
                    fn, train_id = rx.frame_info(seq)[:2]
                    if precedes_start_train(train_id, waiting_for, fn, before):
                        before = (fn, train_id)
                        job.skipped += 1
                        seq += 1
                        if time.monotonic() - last_progress > self.capture_timeout_s:
                            raise TimeoutError(f"train {waiting_for} (CAPTURE:START_TRAIN) not "
                                               f"reached in {self.capture_timeout_s:g} s; frames "
                                               f"are at train {train_id}")
                        continue
                    if train_id != waiting_for:
                        job.message = (f"CAPTURE:START_TRAIN {waiting_for} never came: the "
                                       f"trains went on at {train_id}")
                        log.warning("capture: %s", job.message)
                    waiting_for = 0
                if judging and head >= seq:
                    ts = rx.frame_info(seq)[2]
                    next_ts = rx.frame_info(seq + 1)[2] if head > seq else None
                    old = predates_put(ts, put_ns, period_ns, next_ts)
                    if old is None:  # no period known yet: wait for the next frame
                        head = seq - 1
                    elif old:
                        job.skipped += 1
                        seq += 1
                        last_progress = time.monotonic()
                        continue
                    else:
                        judging = False
                if head < seq:
                    if time.monotonic() - last_progress > self.capture_timeout_s:
                        raise TimeoutError(f"no frame for {self.capture_timeout_s:g} s "
                                           f"({job.progress} of {job.total} captured)")
                    time.sleep(0.0005)
                    continue
                if head - seq > n_slots - 2:  # fell behind the ring: skip to what is still there
                    skip = head - seq - (n_slots - 2)
                    job.overruns += skip
                    seq += skip
                fn, train_id, _, complete = rx.frame_info(seq)
                id_ok = train_id != 0 or not job.expects_train_ids
                index = f.append(rx.frame_raw(seq), fn, train_id, complete, train_id != 0)
                if not rx.valid(seq):  # the slot was reused while we wrote it
                    f.truncate(index)
                    job.overruns += 1
                    seq += 1
                    continue
                if not id_ok:
                    job.bad_train_ids += 1
                job.train_ids.append(train_id)
                job.frame_numbers.append(fn)
                job.progress += 1
                seq += 1
                last_progress = time.monotonic()
            f.flush()
            if job.status == CaptureState.CAPTURING:
                job.status = CaptureState.READY
                if job.bad_train_ids:
                    job.message = (f"{job.bad_train_ids} of {job.progress} frames without a train ID "
                                   "in external trigger (flagged train_id_valid=0)")
        except Exception as exc:  # reported through CAPTURE:STATUS/MESSAGE, never raised
            log.exception("capture failed")
            job.status = CaptureState.ERROR
            job.message = str(exc)[:200]
        finally:
            if not self.keep_open:
                self.close_file()
            job.done.set()

    def wait_idle(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s for the capture thread to end; True once none runs."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
        return not self.busy

    def cancel_capture(self, why: str = "cancelled") -> bool:
        """End a capture in progress (ERROR with ``why``); False if none was running."""
        if self.job is not None and not self.job.done.is_set():
            self.job.message = why
            self.job.status = CaptureState.ERROR
            return True
        return False

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
