"""team1k's ``Client`` over Channel Access: the detector IOC from plain Python.

Frames do not travel over CA: :meth:`Client.acquire_frames` and :meth:`Client.get_frames`
capture into an HDF5 file on the IOC (``CMD:CAPTURE``) and read it back, so the client
must see the IOC's data directory (same host or a shared filesystem).
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import numpy as np
from caproto import ChannelType, ErrorResponseReceived
from caproto.sync.client import write as sync_write
from caproto.threading.client import Context

from trainstamp._wait import wait_until
from trainstamp.detector import _pvnames as PV
from trainstamp.detector._capture import read_capture
from trainstamp.detector._registers import ExposureModes, TriggerModes

__all__ = ["Client", "ExposureModes", "TriggerModes"]


class Client:
    """Control and read the TEAM1k IOC at ``prefix``."""

    def __init__(self, prefix: str = "TEAM1K:", timeout: float = 5.0) -> None:
        self.prefix = prefix
        self.timeout = timeout
        self._ctx = Context()
        self._pvs: dict = {}
        self._subs: dict[str, list] = {}
        self._lock = threading.Lock()

    # ------------------------------------------------------------ plumbing
    def _pv(self, suffix: str):
        with self._lock:
            if suffix not in self._pvs:
                (self._pvs[suffix],) = self._ctx.get_pvs(self.prefix + suffix, timeout=self.timeout)
            return self._pvs[suffix]

    def get(self, suffix: str):
        """Value of PV ``prefix + suffix``: a scalar, a string, or an array."""
        data = self._pv(suffix).read(timeout=self.timeout).data
        if isinstance(data, np.ndarray) and data.dtype == np.uint8:
            return bytes(data).split(b"\0", 1)[0].decode()
        if len(data) == 1:
            v = data[0]
            return v.decode() if isinstance(v, bytes) else v.item() if hasattr(v, "item") else v
        return data

    def put(self, suffix: str, value) -> None:
        """Write and wait for completion; a refused put raises ``ValueError`` with the
        IOC's message.

        Uses caproto's synchronous client, which reports the server's error response at
        once (the threading client only notices it at its timeout).
        """
        data_type = None
        if isinstance(value, str):
            value = np.frombuffer(value.encode() + b"\0", np.uint8)
        elif not isinstance(value, np.ndarray | list | tuple):
            if isinstance(value, float):  # sent as given: the IOC refuses 1.5 for a LONG,
                data_type = ChannelType.DOUBLE  # where the client would have truncated it
            value = [value]
        try:
            sync_write(self.prefix + suffix, value, notify=True, timeout=self.timeout, data_type=data_type)
        except ErrorResponseReceived as exc:
            raise ValueError(f"{self.prefix}{suffix} refused {value!r}: {self.get(PV.ERR_MESSAGE)}") from exc

    def close(self) -> None:
        for suffix in list(self._subs):
            self.stop_monitor(suffix)
        self._ctx.disconnect()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------ status
    def get_status(self) -> str:
        return self.get(PV.STATUS)

    def is_acquiring(self) -> bool:
        return bool(self.get(PV.ACQUIRING))

    def get_frame_rate(self) -> float:
        return float(self.get(PV.FRAME_RATE))

    def get_frame_count(self) -> int:
        return int(self.get(PV.FRAME_COUNT))

    def get_exposure_mode(self) -> ExposureModes:
        return ExposureModes(int(self.get(PV.EXPOSURE_MODE)))

    def get_trigger_mode(self) -> TriggerModes:
        return TriggerModes(int(self.get(PV.TRIGGER_MODE)))

    def get_integration_time(self) -> float:
        return float(self.get(PV.INTEGRATION_TIME))

    def get_adc_clock_freq(self) -> float:
        return float(self.get(PV.ADC_CLOCK_FREQ))

    def get_capture_status(self) -> str:
        return self.get(PV.CAPTURE_STATUS)

    def get_counters(self) -> dict[str, int]:
        """Receiver loss counters (complete, incomplete, dropped, lost, ...)."""
        return {key: int(self.get(suffix)) for suffix, key in PV.RX_COUNTERS.items()}

    # ------------------------------------------------------------ settings
    def set_exposure_mode(self, mode: int) -> None:
        self.put(PV.CMD_EXPOSURE_MODE, int(mode))

    def set_trigger_mode(self, mode: int) -> None:
        self.put(PV.CMD_TRIGGER_MODE, int(mode))

    def set_integration_time(self, ms: float) -> None:
        self.put(PV.CMD_INTEGRATION_TIME, float(ms))

    def set_adc_clock_freq(self, mhz: float) -> None:
        self.put(PV.CMD_ADC_CLOCK_FREQ, float(mhz))

    def set_adc_data_delay(self, delay: int) -> None:
        self.put(PV.CMD_ADC_DATA_DELAY, int(delay))

    def load_parameter_file(self, path: str) -> None:
        self.put(PV.CMD_PARAMETER_FILE, str(path))

    def set_test_mode(self, on: bool) -> None:
        self.put(PV.CMD_TEST_MODE, 1 if on else 0)

    def reset_connection(self) -> None:
        self.put(PV.CMD_RESET, 1)

    # ------------------------------------------------------------ acquisition
    def start_daq(self) -> None:
        self.put(PV.CMD_START_DAQ, 1)

    def stop_daq(self) -> None:
        self.put(PV.CMD_START_DAQ, 0)

    def capture(self, n: int, timeout: float | None = None) -> tuple[str, int]:
        """Capture ``n`` frames on the IOC; return (file path, index of the first frame)."""
        n0 = int(self.get(PV.CAPTURE_FINISHED))
        self.put(PV.CMD_CAPTURE, int(n))
        wait_until(lambda: int(self.get(PV.CAPTURE_FINISHED)) > n0,
                   timeout=timeout if timeout is not None else 30.0 + n * 0.1,
                   message=f"the capture of {n} frames to finish")
        status = self.get(PV.CAPTURE_STATUS)
        if status != "READY":
            raise RuntimeError(f"capture {status}: {self.get(PV.CAPTURE_MESSAGE)}")
        return self.get(PV.CAPTURE_FULL_PATH), int(self.get(PV.CAPTURE_FIRST_INDEX))

    def get_frames(self, n: int) -> np.ndarray:
        """The next ``n`` frames of the running stream, shape (n, 1024, 1024) uint16."""
        path, first = self.capture(n)
        return read_capture(path)["data"][first:first + n]

    def acquire_frames(self, n: int) -> np.ndarray:
        """Start the DAQ (if needed), capture ``n`` frames, stop it again; return them."""
        started = not self.is_acquiring()
        if started:
            self.start_daq()
        try:
            return self.get_frames(n)
        finally:
            if started:
                self.stop_daq()

    def monitor_image(self, callback: Callable[[np.ndarray], None]) -> None:
        """Call ``callback(image)`` with each preview image (2-D, binned as IMAGE:BINNING)."""
        pv = self._pv(PV.IMAGE)

        def on_update(sub, response):
            data = np.asarray(response.data)
            w = int(self.get(PV.IMAGE_WIDTH))
            if w and data.size % w == 0 and data.size > 1:
                callback(data.reshape(-1, w))

        sub = pv.subscribe()
        sub.add_callback(on_update)
        self._subs.setdefault(PV.IMAGE, []).append((sub, on_update))

    def stop_monitor(self, name: str = PV.IMAGE) -> None:
        for sub, cb in self._subs.pop(name, []):
            sub.remove_callback(cb)

    # ------------------------------------------------------------ peripherals
    def insert_detector(self) -> None:
        self.put(PV.BELLOW_INSERT, 1)

    def retract_detector(self) -> None:
        self.put(PV.BELLOW_INSERT, 0)

    def power_on(self) -> None:
        self.put(PV.POWER_ON, 1)

    def power_off(self) -> None:
        self.put(PV.POWER_ON, 0)
