"""The ophyd ``Team1k`` device: the detector IOC seen from Bluesky.

- configuration components (exposure and trigger mode, integration time, test mode, ADC
  clock, frames per point);
- ``stage()`` opens one HDF5 file for the run on the IOC (``CAPTURE:OPEN``), starting
  the DAQ if it was not running, and emits an ``AD_HDF5`` Resource for it;
- ``trigger()`` captures ``frames_per_point`` frames into that file and finishes when
  the IOC has written them;
- ``read()`` gives the image as a Datum reference into the file plus the frames' exact
  train IDs (``<name>_train_id``) and frame numbers from the packet headers, and
  ``<name>_train_id_valid``: False for a frame whose header carried no train ID (0),
  which is never a train; the IOC counts such frames in CAPTURE:BAD_TRAIN_IDS when
  external trigger was configured, and the device logs a warning;
- ``collector(num_trains, timeserver=...)`` makes the frame stream of a fly scan, read
  from that file as the IOC writes it;
- ``unstage()`` closes the file (and stops the DAQ if staging started it). A stage that
  fails half-way unstages what it did, and unstage always completes the ophyd
  bookkeeping, so a failed plan never leaves the device staged for the next one.

Every error raised names the device.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import OrderedDict
from pathlib import PurePosixPath
from typing import TYPE_CHECKING

from event_model import compose_resource
from ophyd import Component as Cpt
from ophyd import Device, DeviceStatus, EpicsSignalRO, Signal
from ophyd.device import Staged

from trainstamp.detector import _pvnames as PV
from trainstamp.detector._capture import DATA
from trainstamp.detector._protocol import FRAME_COLS, FRAME_ROWS
from trainstamp.signals import EpicsSignal  # a refused put raises PutRefused at once

if TYPE_CHECKING:
    from trainstamp.detector._collector import FrameCollector

log = logging.getLogger(__name__)


def _rw(readback: str, setpoint: str, **kw) -> Cpt:
    return Cpt(EpicsSignal, readback, write_pv=setpoint, kind="config", **kw)


class Team1k(Device):
    """TEAM1k detector on the ``trainstamp ioc detector`` IOC (prefix e.g. ``TEAM1K:``)."""

    #: where the IOC says why it refused a put (read after a refusal under pyepics)
    put_refusal_pv = PV.ERR_MESSAGE

    exposure_mode = _rw(PV.EXPOSURE_MODE, PV.CMD_EXPOSURE_MODE)
    trigger_mode = _rw(PV.TRIGGER_MODE, PV.CMD_TRIGGER_MODE)
    integration_time = _rw(PV.INTEGRATION_TIME, PV.CMD_INTEGRATION_TIME)
    test_mode = _rw(PV.TEST_MODE, PV.CMD_TEST_MODE)
    adc_clock_freq = _rw(PV.ADC_CLOCK_FREQ, PV.CMD_ADC_CLOCK_FREQ)
    frames_per_point = Cpt(Signal, value=1, kind="config")

    status = Cpt(EpicsSignalRO, PV.STATUS, string=True, kind="omitted")
    acquiring = Cpt(EpicsSignalRO, PV.ACQUIRING, kind="omitted")
    frame_rate = Cpt(EpicsSignalRO, PV.FRAME_RATE, kind="omitted")
    frame_count = Cpt(EpicsSignalRO, PV.FRAME_COUNT, kind="omitted")
    start_daq = Cpt(EpicsSignal, PV.CMD_START_DAQ, kind="omitted")
    capture_cmd = Cpt(EpicsSignal, PV.CMD_CAPTURE, kind="omitted")
    capture_status = Cpt(EpicsSignalRO, PV.CAPTURE_STATUS, string=True, kind="omitted")
    capture_progress = Cpt(EpicsSignalRO, PV.CAPTURE_PROGRESS, kind="omitted")
    capture_total = Cpt(EpicsSignalRO, PV.CAPTURE_TOTAL, kind="omitted")
    capture_root = Cpt(EpicsSignalRO, PV.CAPTURE_ROOT, string=True, kind="omitted")
    capture_dir = Cpt(EpicsSignal, PV.CAPTURE_DIR, string=True, kind="omitted")
    capture_name = Cpt(EpicsSignal, PV.CAPTURE_NAME, string=True, kind="omitted")
    capture_full_path = Cpt(EpicsSignalRO, PV.CAPTURE_FULL_PATH, string=True, kind="omitted")
    capture_open = Cpt(EpicsSignal, PV.CAPTURE_OPEN, kind="omitted")
    capture_cancel = Cpt(EpicsSignal, PV.CAPTURE_CANCEL, kind="omitted")
    capture_start_train = Cpt(EpicsSignal, PV.CAPTURE_START_TRAIN, put_complete=True,
                              kind="omitted")
    capture_first_index = Cpt(EpicsSignalRO, PV.CAPTURE_FIRST_INDEX, kind="omitted")
    capture_finished = Cpt(EpicsSignalRO, PV.CAPTURE_FINISHED, kind="omitted")
    capture_message = Cpt(EpicsSignalRO, PV.CAPTURE_MESSAGE, string=True, kind="omitted")
    capture_train_ids = Cpt(EpicsSignalRO, PV.CAPTURE_TRAIN_IDS, kind="omitted")
    capture_bad_train_ids = Cpt(EpicsSignalRO, PV.CAPTURE_BAD_TRAIN_IDS, kind="omitted")
    capture_frame_numbers = Cpt(EpicsSignalRO, PV.CAPTURE_FRAME_NUMBERS, kind="omitted")
    last_train_id = Cpt(EpicsSignalRO, PV.LAST_TRAIN_ID, kind="omitted")
    rx_lost = Cpt(EpicsSignalRO, PV.RX_LOST, kind="omitted")
    rx_incomplete = Cpt(EpicsSignalRO, PV.RX_INCOMPLETE, kind="omitted")

    def __init__(self, prefix: str = "TEAM1K:", *, name: str = "team1k", trigger_timeout_s: float = 60.0,
                 **kwargs) -> None:
        super().__init__(prefix, name=name, **kwargs)
        self.trigger_timeout_s = trigger_timeout_s
        self._asset_docs: list[tuple[str, dict]] = []
        self._datum_factory = None
        self._started_daq = False
        self._last: dict[str, object] = {}
        self._n_points = 0

    def train_start_signals(self) -> list[EpicsSignal]:
        """What a plan sets to make the next capture start on a named train
        (:func:`~trainstamp.plans.arm_train`)."""
        return [self.capture_start_train]

    # ------------------------------------------------------------ keys
    @property
    def image_key(self) -> str:
        return f"{self.name}_image"

    @property
    def train_id_key(self) -> str:
        return f"{self.name}_train_id"

    @property
    def train_id_valid_key(self) -> str:
        return f"{self.name}_train_id_valid"

    @property
    def frame_number_key(self) -> str:
        return f"{self.name}_frame_number"

    # ------------------------------------------------------------ staging
    def stage(self):
        n = int(self.frames_per_point.get())
        if n < 1:
            raise ValueError(f"{self.name}: frames_per_point {n} must be at least 1")
        staged = super().stage()
        try:
            self._stage_file(n)
        except Exception as exc:
            try:  # leave nothing staged: the next plan must be able to stage again
                self.unstage()
            except Exception as undo:
                log.warning("%s: unstage after a failed stage: %s", self.name, undo)
            raise RuntimeError(f"{self.name}: stage failed: {_reason(exc)}") from exc
        return staged

    def _stage_file(self, n: int) -> None:
        if not self.acquiring.get():
            self.start_daq.put(1, wait=True)
            self._started_daq = True
        self.capture_name.put(f"{self.name}_{uuid.uuid4().hex[:8]}", wait=True)
        self.capture_open.put(1, wait=True)
        root = PurePosixPath(self.capture_root.get())
        path = PurePosixPath(self.capture_full_path.get())
        resource, self._datum_factory, _ = compose_resource(
            start={"uid": "replaced by the RunEngine"}, spec="AD_HDF5", root=str(root),
            resource_path=str(path.relative_to(root)), resource_kwargs={"frame_per_point": n},
        )
        resource.pop("run_start", None)
        self._asset_docs.append(("resource", resource))
        self._n_points = 0

    def unstage(self):
        errors = []
        try:  # a plan that failed mid-capture: end it, or the file cannot close
            if self.capture_status.get() == "CAPTURING":
                self.capture_cancel.put(1, wait=True)
        except Exception as exc:
            errors.append(f"capture_cancel = 1: {_reason(exc)}")
        for signal, value in ((self.capture_open, 0), (self.start_daq, 0)):
            if signal is self.start_daq and not self._started_daq:
                continue
            try:
                signal.put(value, wait=True)
            except Exception as exc:  # the IOC may be gone: carry on, then say so
                errors.append(f"{signal.attr_name} = {value}: {_reason(exc)}")
        self._started_daq = False
        self._datum_factory = None
        try:
            result = super().unstage()
        except BaseException:
            # Unstaged all the same (the IOC died mid-run): the next plan can stage it.
            self._staged = Staged.no
            raise
        if errors:
            raise RuntimeError(f"{self.name}: unstage incomplete: {'; '.join(errors)}")
        return result

    # ------------------------------------------------------------ acquisition
    def trigger(self) -> DeviceStatus:
        if self._datum_factory is None:
            raise RuntimeError(f"{self.name} must be staged before trigger()")
        n = int(self.frames_per_point.get())
        status = DeviceStatus(self, timeout=self.trigger_timeout_s)
        n0 = self.capture_finished.get()
        finished = threading.Event()

        def on_finished(value, **kw):
            if value > n0:
                finished.set()

        cid = self.capture_finished.subscribe(on_finished, run=False)

        # The put is made in the waiting thread, not here: trigger() returns at once, so
        # a plan triggers the next device (the tagger) in the same train instead of one
        # put-completion round trip later, which under load can be past the next tick.
        def wait() -> None:
            try:
                try:
                    self.capture_cmd.put(n, wait=True)
                except Exception as exc:
                    raise RuntimeError(f"{self.name}: capture of {n} frames not started: "
                                       f"{_reason(exc)}") from exc
                if not finished.wait(self.trigger_timeout_s):
                    raise TimeoutError(f"{self.name}: capture of {n} frames did not finish")
                state = self.capture_status.get()
                if state != "READY":
                    raise RuntimeError(f"{self.name}: capture {state}: {self.capture_message.get()}")
                first = int(self.capture_first_index.get())
                if first % n:
                    raise RuntimeError(f"{self.name}: capture started at frame {first}, not a multiple of {n}")
                train_ids = [int(t) for t in self.capture_train_ids.get()[:n]]
                frame_numbers = [int(f) for f in self.capture_frame_numbers.get()[:n]]
                valid = [t > 0 for t in train_ids]
                bad = int(self.capture_bad_train_ids.get())
                if bad:
                    log.warning("%s: %d of %d frames without a train ID in external trigger "
                                "(flagged %s = False)", self.name, bad, n, self.train_id_valid_key)
                datum = self._datum_factory({"point_number": first // n})
                self._asset_docs.append(("datum", datum))
                self._last = {
                    self.image_key: datum["datum_id"],
                    self.train_id_key: train_ids[0] if n == 1 else train_ids,
                    self.train_id_valid_key: valid[0] if n == 1 else valid,
                    self.frame_number_key: frame_numbers[0] if n == 1 else frame_numbers,
                    "time": time.time(),
                }
                self._n_points += 1
            except Exception as exc:
                status.set_exception(exc if str(exc).startswith(self.name)
                                     else RuntimeError(f"{self.name}: {_reason(exc)}"))
            else:
                status.set_finished()
            finally:
                self.capture_finished.unsubscribe(cid)

        threading.Thread(target=wait, name=f"{self.name}-trigger", daemon=True).start()
        return status

    def read(self) -> OrderedDict:
        out = super().read()
        ts = self._last.get("time", time.time())
        for key in (self.image_key, self.train_id_key, self.train_id_valid_key, self.frame_number_key):
            if key in self._last:
                out[key] = {"value": self._last[key], "timestamp": ts}
        return out

    def describe(self) -> OrderedDict:
        out = super().describe()
        n = int(self.frames_per_point.get())
        source = f"PV:{self.prefix}{PV.CAPTURE_FULL_PATH}"
        out[self.image_key] = {
            "source": source, "dtype": "array", "shape": [n, FRAME_ROWS, FRAME_COLS],
            "dtype_numpy": "<u2", "external": "FILESTORE:",
        }
        shape = [] if n == 1 else [n]
        for key in (self.train_id_key, self.frame_number_key):
            out[key] = {"source": f"PV:{self.prefix}{PV.CAPTURE_TRAIN_IDS}", "dtype": "integer" if n == 1 else "array",
                        "shape": shape, "dtype_numpy": "<u8"}
        out[self.train_id_valid_key] = {"source": f"PV:{self.prefix}{PV.CAPTURE_TRAIN_IDS}",
                                        "dtype": "boolean" if n == 1 else "array", "shape": shape,
                                        "dtype_numpy": "|b1"}
        return out

    # ------------------------------------------------------------ fly scans
    def collector(self, num_trains: int, *, timeserver, timeout_s: float = 10.0) -> FrameCollector:
        """The collector of this detector's frames for a fly scan (stream ``detector`` of
        :func:`~trainstamp.plans.train_fly`): ``num_trains`` frames read from the capture
        file that :meth:`stage` opened, as the IOC writes them."""
        from trainstamp.detector._collector import FrameCollector

        return FrameCollector(self, timeserver, num_trains, timeout_s=timeout_s)

    def collect_asset_docs(self):
        docs, self._asset_docs = self._asset_docs, []
        yield from docs

    #: where ``read()``'s image lives inside the file
    dataset = DATA


def _reason(exc: BaseException) -> str:
    """An exception as text that says something, even when its own text does not
    (``KeyError('response')`` from a client whose circuit died mid-put)."""
    if isinstance(exc, KeyError):
        return f"no answer from the IOC (connection lost: {type(exc).__name__} {exc})"
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
