"""team1k's ``Client``: the detector IOC from plain Python, on this host or another.

Commands and status go over Channel Access. Frames do not: :meth:`Client.acquire_frames`
and :meth:`Client.get_frames` capture into an HDF5 file on the IOC (``CMD:CAPTURE``)
and fetch the frames over the IOC's ZMQ data-transfer port (team1k's ``--zmq-port``,
42005 by default; see :mod:`trainstamp.detector._transfer`), so the client needs no
shared filesystem. The port is the one the IOC publishes in ``DATA:URI`` unless
``data_port`` is given; the host is ``data_host`` (default: the address in ``DATA:URI``).
An IOC without a data port (``--zmq-port 0``) is read through the file instead, which
then must be visible here, unless ``data_host`` is given: a client told to fetch from
another host is never quietly switched to a local file read, and gets an error instead.
The train IDs, frame numbers and completeness of the frames last fetched are in
:attr:`Client.last_train_ids`, :attr:`Client.last_frame_numbers` and
:attr:`Client.last_complete` (False: some of the frame's packets never arrived, and its
missing rows are zero).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from caproto import ChannelType, ErrorResponseReceived
from caproto.sync.client import write as sync_write
from caproto.threading.client import Context

from trainstamp._wait import wait_until
from trainstamp.detector import _pvnames as PV
from trainstamp.detector._peripherals import INSERTED_MM, RETRACTED_MM
from trainstamp.detector._registers import ExposureModes, TriggerModes
from trainstamp.detector._transfer import CHUNK_FRAMES, decode_reply, read_frames

__all__ = ["Client", "ExposureModes", "TriggerModes"]


def data_endpoint(uri: str, data_host: str | None, data_port: int | None) -> str | None:
    """Where a client fetches frames: ``tcp://host:port`` from the IOC's ``DATA:URI``
    (``uri``, empty if the IOC has no data port) and the client's own ``data_host`` and
    ``data_port``, which win over the URI's. None: no port is known. An IOC bound to
    every interface (0.0.0.0) is reached on localhost unless ``data_host`` says where.
    """
    host, port = data_host, data_port
    if uri:
        ioc_host, _, ioc_port = uri.removeprefix("tcp://").rpartition(":")
        host = host or ioc_host
        port = port or int(ioc_port)
    if not port:
        return None
    if host in (None, "", "0.0.0.0"):
        host = "localhost"
    return f"tcp://{host}:{port}"


class Client:
    """Control and read the TEAM1k IOC at ``prefix``; frames from ``data_host``."""

    #: seconds a bellow move may take before insert/retract_detector give up
    MOVE_TIMEOUT_S = 60.0

    def __init__(self, prefix: str = "TEAM1K:", timeout: float = 5.0, *,
                 data_host: str | None = None, data_port: int | None = None) -> None:
        self.prefix = prefix
        self.timeout = timeout
        self.data_host = data_host
        self.data_port = data_port
        self.last_train_ids = np.zeros(0, np.uint64)
        self.last_frame_numbers = np.zeros(0, np.uint64)
        self.last_complete = np.zeros(0, bool)
        self._zmq = None  # (context, socket, endpoint) of the data-transfer link
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
        given = value
        if isinstance(value, str):
            value = np.frombuffer(value.encode() + b"\0", np.uint8)
        elif not isinstance(value, np.ndarray | list | tuple):
            if isinstance(value, float):  # sent as given: the IOC refuses 1.5 for a LONG,
                data_type = ChannelType.DOUBLE  # where the client would have truncated it
            value = [value]
        try:
            sync_write(self.prefix + suffix, value, notify=True, timeout=self.timeout, data_type=data_type)
        except ErrorResponseReceived as exc:
            raise ValueError(f"{self.prefix}{suffix} refused {given!r}: "
                             f"{self.get(PV.ERR_MESSAGE)}") from exc

    def close(self) -> None:
        for suffix in list(self._subs):
            self.stop_monitor(suffix)
        self._drop_data_link()
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
        """The next ``n`` frames of the running stream, shape (n, 1024, 1024) uint16;
        their train IDs, frame numbers and completeness go to :attr:`last_train_ids`,
        :attr:`last_frame_numbers` and :attr:`last_complete`."""
        endpoint = self._data_endpoint()
        if endpoint is None and self.data_host is not None:
            raise RuntimeError(
                f"data_host={self.data_host!r} was given, but the IOC {self.prefix} has no "
                f"data-transfer port ({self.prefix}{PV.DATA_URI} is empty: started with "
                "--zmq-port 0, or the port died, see the IOC log) and no data_port was "
                "given; frames cannot reach this client")
        path, first = self.capture(n)
        if endpoint is None:  # no data port: the file must be visible from here
            total, frames, meta = read_frames(Path(path), first, n)
            if len(frames) < n:
                raise RuntimeError(f"{path} holds {total} frames, not {first + n}")
            meta["complete"] = np.asarray(meta["complete"], bool)
        else:
            frames, meta = self._fetch(endpoint, path, first, n)
        self.last_train_ids = np.asarray(meta["train_id"], np.uint64)
        self.last_frame_numbers = np.asarray(meta["frame_number"], np.uint64)
        self.last_complete = np.asarray(meta["complete"], bool)
        return frames

    # ------------------------------------------------------------ data transfer (ZMQ)
    def _data_endpoint(self) -> str | None:
        """tcp://host:port of the IOC's data-transfer port; None if it has none."""
        uri = ""
        if self.data_port is None or self.data_host is None:
            # an IOC still starting up publishes its port within moments: wait for it
            deadline = time.monotonic() + self.timeout
            while (not (uri := self.get(PV.DATA_URI)) and self.get(PV.STATUS) == "STARTING"
                   and time.monotonic() < deadline):
                time.sleep(0.05)
        return data_endpoint(uri, self.data_host, self.data_port)

    def _request(self, endpoint: str, body: dict) -> list[bytes]:
        """One request and its reply; a timeout closes the socket (a REQ socket that
        lost its reply is unusable) and raises ``TimeoutError``."""
        import json

        import zmq

        if self._zmq is None or self._zmq[2] != endpoint:
            self._drop_data_link()
            ctx = zmq.Context.instance()
            sock = ctx.socket(zmq.REQ)
            sock.setsockopt(zmq.LINGER, 0)
            sock.connect(endpoint)
            self._zmq = (ctx, sock, endpoint)
        sock = self._zmq[1]
        sock.send(json.dumps(body).encode())
        if not sock.poll(int(self.timeout * 1000), zmq.POLLIN):
            self._drop_data_link()
            raise TimeoutError(f"no reply from the data-transfer port {endpoint} within "
                               f"{self.timeout:g} s")
        return sock.recv_multipart()

    def _fetch(self, endpoint: str, path: str, first: int, n: int):
        frames = np.empty((n, 1024, 1024), np.uint16)
        meta = {"train_id": np.zeros(n, np.uint64), "frame_number": np.zeros(n, np.uint64),
                "complete": np.zeros(n, bool)}
        done = 0
        while done < n:
            header, chunk = decode_reply(self._request(endpoint, {
                "op": "frames", "path": path, "first": first + done,
                "count": min(CHUNK_FRAMES, n - done)}))
            k = len(chunk)
            if k == 0:
                raise RuntimeError(f"{path} holds {header.get('total')} frames, not "
                                   f"{first + n}")
            frames[done:done + k] = chunk
            for key, values in meta.items():
                values[done:done + k] = header[key]
            done += k
        return frames, meta

    def _drop_data_link(self) -> None:
        if self._zmq is not None:
            self._zmq[1].close()
            self._zmq = None

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
        """Move the detector in; returns when the stage is there and stopped."""
        self.put(PV.BELLOW_INSERT, 1)
        self._wait_for_stage(INSERTED_MM)

    def retract_detector(self) -> None:
        """Move the detector out; returns when the stage is there and stopped."""
        self.put(PV.BELLOW_INSERT, 0)
        self._wait_for_stage(RETRACTED_MM)

    def _wait_for_stage(self, target_mm: float) -> None:
        wait_until(lambda: (abs(float(self.get(PV.BELLOW_POSITION)) - target_mm) < 1e-3
                            and not int(self.get(PV.BELLOW_MOVING))),
                   timeout=self.MOVE_TIMEOUT_S, interval=0.05,
                   message=lambda: f"the bellow stage to reach {target_mm:g} mm (at "
                                   f"{self.get(PV.BELLOW_POSITION)} mm, "
                                   f"{self.get(PV.BELLOW_STATUS)})")

    def power_on(self) -> None:
        self.put(PV.POWER_ON, 1)

    def power_off(self) -> None:
        self.put(PV.POWER_ON, 0)
