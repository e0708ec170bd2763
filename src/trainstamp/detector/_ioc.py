"""The TEAM1k detector IOC: team1k's PV table over Channel Access, served by caproto.

PVs (prefix ``TEAM1K:`` by default; suffixes in :mod:`trainstamp.detector._pvs`):

- team1k status: STATUS, ACQUIRING, FRAME_RATE, FRAME_COUNT, EXPOSURE_MODE,
  TRIGGER_MODE, INTEGRATION_TIME, CAPTURE:STATUS, CAPTURE:PROGRESS, CAPTURE:TOTAL, IMAGE
- team1k commands: CMD:EXPOSURE_MODE, CMD:TRIGGER_MODE, CMD:INTEGRATION_TIME,
  CMD:START_DAQ, CMD:CAPTURE, CMD:ADC_CLOCK_FREQ, CMD:ADC_DATA_DELAY,
  CMD:PARAMETER_FILE, CMD:RESET, CMD:TEST_MODE
- capture file: CAPTURE:ROOT, DIR, NAME, NUMBER, FULL_PATH, OPEN, FILE_FRAMES,
  FIRST_INDEX, FINISHED, MESSAGE, TRAIN_IDS, FRAME_NUMBERS, OVERRUNS, TIMEOUT
- last frame: LAST:TRAIN_ID, LAST:FRAME_NUMBER, LAST:COMPLETE
- loss counters: RX:COMPLETE, INCOMPLETE, DROPPED, LOST, DUPLICATE, MALFORMED, FOREIGN,
  LATE, BACKWARDS, IMPLAUSIBLE, INCONSISTENT, PACKETS, RCVBUF, ALIVE; REG:TIMEOUTS,
  RETRIES, ERRORS, STRAY, RESTORES; ERR:BAD_PUTS, ERR:MESSAGE
- preview: IMAGE:WIDTH, HEIGHT, BINNING, PERIOD, TRAIN_ID
- peripherals: BELLOW:INSERT, POSITION, MOVING, STATUS; POWER:ON, STATUS, VOLTAGE, CURRENT

Full frames never travel over CA: they go to HDF5. IMAGE is a binned preview posted at
most every IMAGE:PERIOD (>= 0.5 s), and only when a new frame exists. Blocking work runs
on worker threads, one pool per kind so that one cannot starve another: register and
serial I/O, capture files, and parameter-file reads. A refused put raises (the client
sees the error), is counted in ERR:BAD_PUTS and described in ERR:MESSAGE.

The setpoints (CMD:*) show the device's state at connect and after every reset or
restore; the configuration the IOC holds is written back after CMD:RESET and whenever
the FPGA is found not holding it (restarted), which STATUS and REG:RESTORES report.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from caproto import ChannelType
from caproto.server import PVGroup, pvproperty

from trainstamp.detector import _pvs as PV
from trainstamp.detector._acquisition import CaptureState, Team1kServer, bin_image
from trainstamp.detector._capture import confine
from trainstamp.detector._caputil import COUNTED, check_switch, check_whole, float_pv, long_pv
from trainstamp.detector._caputil import counter_pv as _counter
from trainstamp.detector._caputil import guarded as _guarded
from trainstamp.detector._caputil import text_pv as _text
from trainstamp.detector._protocol import FRAME_COLS, FRAME_ROWS
from trainstamp.detector._recovery import recover_abandoned
from trainstamp.detector._regclient import check_exposure_mode, check_trigger_mode, integration_us
from trainstamp.detector._si570 import solve

#: Seconds CAPTURE:OPEN 0 waits for a cancelled capture to end before closing its file.
CLOSE_WAIT_S = 5.0

log = logging.getLogger(__name__)
MAX_IDS = 4096


class Team1kIOC(PVGroup):
    __doc__ = __doc__

    status = pvproperty(name=PV.STATUS, value="STARTING", dtype=ChannelType.STRING, read_only=True,
                        doc="Server status")
    acquiring = pvproperty(name=PV.ACQUIRING, value=0, read_only=True, doc="DAQ running (0/1)")
    frame_rate = pvproperty(name=PV.FRAME_RATE, value=0.0, read_only=True, units="Hz", precision=2,
                            doc="Frames received per second")
    frame_count = pvproperty(name=PV.FRAME_COUNT, value=0, read_only=True, doc="Total frames acquired")
    exposure_mode = pvproperty(name=PV.EXPOSURE_MODE, value=3, read_only=True, doc="Exposure mode 0-3")
    trigger_mode = pvproperty(name=PV.TRIGGER_MODE, value=0, read_only=True,
                              doc="Trigger mode: 0 internal, 1 external (one frame per train)")
    integration_time = pvproperty(name=PV.INTEGRATION_TIME, value=6.0, read_only=True, units="ms",
                                  precision=3, doc="Integration time")
    capture_status = pvproperty(name=PV.CAPTURE_STATUS, value=CaptureState.IDLE, dtype=ChannelType.STRING,
                                read_only=True, doc="IDLE / CAPTURING / READY / ERROR")
    capture_progress = pvproperty(name=PV.CAPTURE_PROGRESS, value=0, read_only=True,
                                  doc="Frames captured so far")
    capture_total = pvproperty(name=PV.CAPTURE_TOTAL, value=0, read_only=True, doc="Frames requested")
    image = pvproperty(name=PV.IMAGE, value=[0], dtype=ChannelType.LONG,
                       max_length=FRAME_ROWS * FRAME_COLS, read_only=True,
                       doc="Throttled, binned live preview (row-major IMAGE:HEIGHT x IMAGE:WIDTH)")

    cmd_exposure_mode = long_pv(name=PV.CMD_EXPOSURE_MODE, value=3, doc="Set exposure mode 0-3")
    cmd_trigger_mode = long_pv(name=PV.CMD_TRIGGER_MODE, value=0, doc="Set trigger mode 0/1")
    cmd_integration_time = float_pv(name=PV.CMD_INTEGRATION_TIME, value=6.0, units="ms", precision=3,
                                      doc="Set integration time")
    cmd_start_daq = long_pv(name=PV.CMD_START_DAQ, value=0, doc="1=start, 0=stop")
    cmd_capture = long_pv(name=PV.CMD_CAPTURE, value=0, doc="Capture N frames to HDF5")
    cmd_adc_clock_freq = float_pv(name=PV.CMD_ADC_CLOCK_FREQ, value=100.0, units="MHz", precision=3,
                                    doc="Set ADC clock (Si570)")
    cmd_adc_data_delay = long_pv(name=PV.CMD_ADC_DATA_DELAY, value=0x1A7, doc="Set ADC data delay")
    cmd_parameter_file = _text(name=PV.CMD_PARAMETER_FILE, doc="Apply parameter file")
    cmd_reset = long_pv(name=PV.CMD_RESET, value=0, doc="1=reset connection")
    cmd_test_mode = long_pv(name=PV.CMD_TEST_MODE, value=0, doc="1=enable FPGA test data")

    adc_clock_freq = pvproperty(name=PV.ADC_CLOCK_FREQ, value=0.0, read_only=True, units="MHz",
                                precision=6, doc="ADC clock read back from the Si570 registers")
    adc_data_delay = pvproperty(name=PV.ADC_DATA_DELAY, value=0, read_only=True, doc="ADC data delay")
    test_mode = pvproperty(name=PV.TEST_MODE, value=0, read_only=True, doc="FPGA test data on")

    capture_root = _text(name=PV.CAPTURE_ROOT, read_only=True, doc="Data directory (all files under it)")
    capture_dir = _text(name=PV.CAPTURE_DIR, value=".", doc="Capture directory, relative to the root")
    capture_name = _text(value="team1k", length=255, name=PV.CAPTURE_NAME, doc="Capture file stem")
    capture_number = long_pv(name=PV.CAPTURE_NUMBER, value=1, doc="Next file number")
    capture_full_path = _text(name=PV.CAPTURE_FULL_PATH, read_only=True, doc="File being/last written")
    capture_open = long_pv(name=PV.CAPTURE_OPEN, value=0,
                              doc="1=open a file that later captures append to, 0=close it")
    capture_file_frames = pvproperty(name=PV.CAPTURE_FILE_FRAMES, value=0, read_only=True,
                                     doc="Frames in the current file")
    capture_first_index = pvproperty(name=PV.CAPTURE_FIRST_INDEX, value=0, read_only=True,
                                     doc="Index in the file of the last capture's first frame")
    capture_finished = pvproperty(name=PV.CAPTURE_FINISHED, value=0, read_only=True,
                                  doc="Captures finished (READY or ERROR) since start")
    capture_message = _text(name=PV.CAPTURE_MESSAGE, length=255, read_only=True, doc="Why a capture failed")
    capture_train_ids = pvproperty(name=PV.CAPTURE_TRAIN_IDS, value=[0.0], max_length=MAX_IDS,
                                   read_only=True, doc="Train IDs of the last capture (first 4096)")
    capture_frame_numbers = pvproperty(name=PV.CAPTURE_FRAME_NUMBERS, value=[0.0], max_length=MAX_IDS,
                                       read_only=True, doc="Frame numbers of the last capture")
    capture_overruns = pvproperty(name=PV.CAPTURE_OVERRUNS, value=0, read_only=True,
                                  doc="Frames the writer missed because it fell behind the ring")
    capture_cancel = long_pv(name=PV.CAPTURE_CANCEL, value=0,
                             doc="1=cancel the capture in progress (it ends ERROR 'cancelled')")
    capture_bad_train_ids = pvproperty(name=PV.CAPTURE_BAD_TRAIN_IDS, value=0, read_only=True,
                                       doc="Frames of the last capture without a train ID "
                                           "although external trigger was configured")
    capture_timeout = float_pv(name=PV.CAPTURE_TIMEOUT, value=10.0, units="s",
                                 doc="A capture fails after this long without a frame")

    last_train_id = pvproperty(name=PV.LAST_TRAIN_ID, value=0.0, read_only=True, precision=0,
                               doc="Train ID in the newest frame's header (exact below 2**53)")
    last_frame_number = pvproperty(name=PV.LAST_FRAME_NUMBER, value=0.0, read_only=True, precision=0,
                                   doc="Frame number of the newest frame")
    last_complete = pvproperty(name=PV.LAST_COMPLETE, value=0, read_only=True,
                               doc="Newest frame had every packet")

    rx_complete = _counter(PV.RX_COMPLETE, "Frames with every packet")
    rx_incomplete = _counter(PV.RX_INCOMPLETE, "Frames with missing packets (padded 0xFFFF)")
    rx_dropped = _counter(PV.RX_DROPPED, "Frames never seen (frame-number gaps)")
    rx_lost = _counter(PV.RX_LOST, "Packets missing from published frames")
    rx_duplicate = _counter(PV.RX_DUPLICATE, "Duplicate packets")
    rx_malformed = _counter(PV.RX_MALFORMED, "Truncated/oversized/bad magic/bad index packets")
    rx_foreign = _counter(PV.RX_FOREIGN, "Packets from an address other than the detector's")
    rx_late = _counter(PV.RX_LATE, "Packets for frames already published")
    rx_backwards = _counter(PV.RX_BACKWARDS, "Frame number jumped backwards (re-anchored)")
    rx_implausible = _counter(PV.RX_IMPLAUSIBLE, "Packets whose frame number is far from the sequence")
    rx_inconsistent = _counter(PV.RX_INCONSISTENT, "Packets whose train ID/timestamp differs from their frame's")
    rx_packets = _counter(PV.RX_PACKETS, "Good packets")
    rx_rcvbuf = pvproperty(name=PV.RX_RCVBUF, value=0, read_only=True, units="B",
                           doc="SO_RCVBUF the OS granted")
    rx_alive = pvproperty(name=PV.RX_ALIVE, value=0, read_only=True, doc="Receiver process running")
    rx_local = _text(name=PV.RX_LOCAL, length=64, read_only=True, doc="host:port the data socket binds")
    reg_local = _text(name=PV.REG_LOCAL, length=64, read_only=True, doc="host:port the register client binds")
    reg_timeouts = _counter(PV.REG_TIMEOUTS, "Register requests that got no reply")
    reg_retries = _counter(PV.REG_RETRIES, "Register requests resent")
    reg_errors = _counter(PV.REG_ERRORS, "Register error replies")
    reg_stray = _counter(PV.REG_STRAY, "Register replies with a wrong sequence number")
    reg_restores = _counter(PV.REG_RESTORES, "Times the configuration was re-applied to a restarted FPGA")
    err_bad_puts = _counter(PV.ERR_BAD_PUTS, "Refused CA puts")
    err_message = _text(name=PV.ERR_MESSAGE, length=255, read_only=True, doc="Last refused put or error")

    image_width = pvproperty(name=PV.IMAGE_WIDTH, value=FRAME_COLS // 4, read_only=True, doc="Preview width")
    image_height = pvproperty(name=PV.IMAGE_HEIGHT, value=FRAME_ROWS // 4, read_only=True, doc="Preview height")
    image_binning = long_pv(name=PV.IMAGE_BINNING, value=4, doc="Preview binning: 1, 2, 4 or 8")
    image_period = float_pv(name=PV.IMAGE_PERIOD, value=0.5, units="s", doc="Preview period (>= 0.5 s)")
    image_train_id = pvproperty(name=PV.IMAGE_TRAIN_ID, value=0.0, read_only=True, precision=0,
                                doc="Train ID of the frame in IMAGE")

    bellow_insert = long_pv(name=PV.BELLOW_INSERT, value=0, doc="1=insert detector, 0=retract")
    bellow_position = pvproperty(name=PV.BELLOW_POSITION, value=0.0, read_only=True, units="mm", precision=3,
                                 doc="Bellow stage position")
    bellow_moving = pvproperty(name=PV.BELLOW_MOVING, value=0, read_only=True, doc="Bellow stage moving")
    bellow_status = pvproperty(name=PV.BELLOW_STATUS, value="NOT CONFIGURED", dtype=ChannelType.STRING,
                               read_only=True, doc="Bellow stage link")
    power_on = long_pv(name=PV.POWER_ON, value=0, doc="1=power on, 0=off")
    power_status = pvproperty(name=PV.POWER_STATUS, value="NOT CONFIGURED", dtype=ChannelType.STRING,
                              read_only=True, doc="ON / OFF / link state")
    power_voltage = pvproperty(name=PV.POWER_VOLTAGE, value=0.0, read_only=True, units="V", precision=3,
                               doc="Supply voltage")
    power_current = pvproperty(name=PV.POWER_CURRENT, value=0.0, read_only=True, units="A", precision=3,
                               doc="Supply current")

    def __init__(self, *args, server: Team1kServer, config: str | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.server = server
        self.config = config
        # one pool per kind of blocking work: a dead detector (register puts waiting out
        # their retries) never delays a capture-file put, nor a slow file either of them
        self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="team1k-reg")
        self._file_pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="team1k-file")
        self._param_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="team1k-param")
        self._reported_job = None
        self._image_seq = 0  # receiver sequence of the frame in IMAGE
        self._restored_until = 0.0  # STATUS says RESTORED until then

    # ------------------------------------------------------------ helpers
    async def _io(self, fn, *args):
        """Register or serial I/O on its worker pool."""
        return await asyncio.get_running_loop().run_in_executor(self._pool, functools.partial(fn, *args))

    async def _file_io(self, fn, *args):
        """Capture-file work (HDF5, disk) on its own pool."""
        return await asyncio.get_running_loop().run_in_executor(self._file_pool, functools.partial(fn, *args))

    async def _next_path(self):
        """The capture path for CAPTURE:NUMBER, moving the number past files that exist."""
        number = int(self.capture_number.value)
        for n in range(number, 100_000):
            path = self.server.capture_path(self.capture_dir.value, self.capture_name.value, n)
            if not path.exists():
                if n != number:
                    await self.capture_number.write(n)
                return path
        raise ValueError(f"no free file number for {self.capture_name.value!r} below 100000")

    async def _refuse(self, exc: BaseException) -> None:
        if getattr(exc, COUNTED, False):
            return
        with contextlib.suppress(AttributeError):
            setattr(exc, COUNTED, True)  # once per refusal, however many layers see it
        await self.err_bad_puts.write(self.err_bad_puts.value + 1)
        await self.err_message.write(f"{type(exc).__name__}: {exc}"[:250])
        log.warning("refused: %s", exc)

    # ------------------------------------------------------------ commands
    @cmd_exposure_mode.putter
    @_guarded
    async def cmd_exposure_mode(self, instance, value):
        mode = check_exposure_mode(value)
        await self._io(self.server.config.set, "exposure_mode", int(mode))
        await self.exposure_mode.write(int(mode))
        return int(mode)

    @cmd_trigger_mode.putter
    @_guarded
    async def cmd_trigger_mode(self, instance, value):
        mode = check_trigger_mode(value)
        await self._io(self.server.config.set, "trigger_mode", int(mode))
        await self.trigger_mode.write(int(mode))
        return int(mode)

    @cmd_integration_time.putter
    @_guarded
    async def cmd_integration_time(self, instance, value):
        integration_us(value)
        await self._io(self.server.config.set, "integration_time", float(value))
        await self.integration_time.write(value)
        return value

    @cmd_start_daq.putter
    @_guarded
    async def cmd_start_daq(self, instance, value):
        value = check_switch("CMD:START_DAQ", value, "1 (start) or 0 (stop)")
        lost = await self._io(self.server.start_daq if value else self.server.stop_daq)
        if lost:
            await self._restored(lost)
        await self.acquiring.write(int(value))
        return value

    @cmd_capture.putter
    @_guarded
    async def cmd_capture(self, instance, value):
        put_ns = time.time_ns()  # the capture starts with the train in force now
        srv = self.server
        srv.capture_timeout = float(self.capture_timeout.value)
        path = None if srv.file is not None else await self._next_path()
        job = await self._file_io(srv.capture, value, path, put_ns)
        if path is not None:
            await self.capture_number.write(self.capture_number.value + 1)
        await self.capture_full_path.write(str(job.path))
        await self.capture_total.write(job.total)
        await self.capture_progress.write(0)
        await self.capture_first_index.write(job.first_index)
        await self.capture_message.write("")
        await self.capture_bad_train_ids.write(0)
        await self.capture_status.write(CaptureState.CAPTURING)
        return value

    @capture_cancel.putter
    @_guarded
    async def capture_cancel(self, instance, value):
        if check_switch("CAPTURE:CANCEL", value, "1 (cancel) or 0") and not self.server.cancel_capture():
            raise ValueError("no capture in progress")
        return 0

    @cmd_adc_clock_freq.putter
    @_guarded
    async def cmd_adc_clock_freq(self, instance, value):
        solve(value * 1e6)
        await self._io(self.server.config.set, "adc_clock_freq", float(value))
        await self.adc_clock_freq.write(await self._io(self.server.cmd.get_adc_clock_freq))
        return value

    @cmd_adc_data_delay.putter
    @_guarded
    async def cmd_adc_data_delay(self, instance, value):
        await self._io(self.server.config.set, "adc_data_delay", int(value))
        await self.adc_data_delay.write(value)
        return value

    @cmd_parameter_file.putter
    @_guarded
    async def cmd_parameter_file(self, instance, value):
        srv = self.server
        loop = asyncio.get_running_loop()
        # reading the file never holds the register workers (nor they it)
        settings = await loop.run_in_executor(self._param_pool, srv.read_parameter_file, value)
        await self._io(srv.apply_settings, settings)
        await self._sync_settings()
        return value

    @cmd_reset.putter
    @_guarded
    async def cmd_reset(self, instance, value):
        if check_switch("CMD:RESET", value, "1 (reset) or 0"):
            await self._io(self.server.reset)
            await self.acquiring.write(0)
            await self._sync_settings()
        return 0

    @cmd_test_mode.putter
    @_guarded
    async def cmd_test_mode(self, instance, value):
        value = check_switch("CMD:TEST_MODE", value, "0 or 1")
        await self._io(self.server.config.set, "test_mode", value)
        await self.test_mode.write(value)
        return value

    @capture_dir.putter
    @_guarded
    async def capture_dir(self, instance, value):
        confine(self.server.data_dir, value, "probe")
        return value

    @capture_name.putter
    @_guarded
    async def capture_name(self, instance, value):
        confine(self.server.data_dir, self.capture_dir.value, f"{value}_00000.h5")
        return value

    @capture_number.putter
    @_guarded
    async def capture_number(self, instance, value):
        if not 0 <= check_whole("CAPTURE:NUMBER", value) <= 99999:
            raise ValueError(f"capture number {value} outside 0..99999")
        return value

    @capture_timeout.putter
    @_guarded
    async def capture_timeout(self, instance, value):
        if not 0.1 <= value <= 3600:
            raise ValueError(f"capture timeout {value} s outside 0.1..3600 s")
        return value

    @capture_open.putter
    @_guarded
    async def capture_open(self, instance, value):
        srv = self.server
        if check_switch("CAPTURE:OPEN", value, "0 or 1"):
            path = await self._next_path()
            await self._file_io(srv.open_file, path)
            await self.capture_number.write(self.capture_number.value + 1)
            await self.capture_full_path.write(str(path))
            await self.capture_file_frames.write(0)
        else:
            if srv.busy:
                # Closing the file ends the capture in it (a plan that failed mid-capture
                # closes it while unstaging): cancel it, wait for the writer, then close.
                srv.cancel_capture("cancelled: the capture file was closed")
                if not await self._file_io(srv.wait_idle, CLOSE_WAIT_S):
                    raise ValueError(f"a capture is in progress and did not stop within "
                                     f"{CLOSE_WAIT_S:g} s of its cancel")
            await self._file_io(srv.close_file)
        return value

    @image_binning.putter
    @_guarded
    async def image_binning(self, instance, value):
        if value not in (1, 2, 4, 8):
            raise ValueError(f"IMAGE:BINNING {value} not one of 1, 2, 4, 8")
        await self.image_width.write(FRAME_COLS // value)
        await self.image_height.write(FRAME_ROWS // value)
        return value

    @image_period.putter
    @_guarded
    async def image_period(self, instance, value):
        if not 0.5 <= value <= 3600:
            raise ValueError(f"IMAGE:PERIOD {value} s outside 0.5..3600 s")
        return value

    @bellow_insert.putter
    @_guarded
    async def bellow_insert(self, instance, value):
        if self.server.bellow is None:
            raise ValueError("no bellow stage configured (--bellow-port)")
        value = check_switch("BELLOW:INSERT", value, "1 (insert) or 0 (retract)")
        await self._io(self.server.bellow.insert if value else self.server.bellow.retract)
        return value

    @power_on.putter
    @_guarded
    async def power_on(self, instance, value):
        if self.server.power is None:
            raise ValueError("no power supply configured (--power-port)")
        value = check_switch("POWER:ON", value, "1 or 0")
        await self._io(self.server.power.set_output, bool(value))
        return value

    # ------------------------------------------------------------ background
    async def _sync_settings(self) -> None:
        """Read the detector's registers into the readback PVs and their setpoints.

        A setpoint is written without its putter (nothing goes to the device): it shows
        what the device holds, at connect and after a reset or restore.
        """
        c = self.server.cmd
        for pv, setpoint, getter in (
                (self.exposure_mode, self.cmd_exposure_mode, c.get_exposure_mode),
                (self.trigger_mode, self.cmd_trigger_mode, c.get_trigger_mode),
                (self.integration_time, self.cmd_integration_time, c.get_integration_time),
                (self.adc_data_delay, self.cmd_adc_data_delay, c.get_adc_data_delay),
                (self.test_mode, self.cmd_test_mode, c.get_test_mode),
                (self.adc_clock_freq, self.cmd_adc_clock_freq, c.get_adc_clock_freq),
                (self.acquiring, self.cmd_start_daq, c.is_running)):
            value = await self._io(getter)
            await pv.write(type(pv.value)(value))
            if setpoint.value != type(setpoint.value)(value):
                await setpoint.write(type(setpoint.value)(value), verify_value=False)

    async def _restored(self, lost: list[str]) -> None:
        """Say that a restarted FPGA got its configuration back."""
        text = f"FPGA lost its configuration ({', '.join(lost)}): restarted? Re-applied at " \
               f"{time.strftime('%H:%M:%S')}"
        log.warning("%s", text)
        await self.err_message.write(text[:250])
        await self.reg_restores.write(float(self.server.restores))
        await self.status.write("RESTORED: FPGA RESTARTED")
        self._restored_until = time.monotonic() + 10.0
        await self._sync_settings()

    @status.startup
    async def status(self, instance, async_lib):
        srv = self.server
        try:
            await self._io(srv.start)
        except Exception as exc:  # the IOC stays up and says why
            log.exception("receiver start failed")
            await self.err_message.write(f"receiver start: {exc}"[:250])
            await self.status.write("RECEIVER FAILED")
        await self.capture_root.write(str(srv.data_dir))
        for path, outcome in await self._io(recover_abandoned, srv.data_dir):
            if isinstance(outcome, str):
                log.error("capture %s was left open by a writer that died; cannot recover "
                          "it: %s", path, outcome)
            else:
                log.warning("recovered capture %s, left open by a writer that died "
                            "(%d frames without a train ID, flagged)", path, outcome)
        await self.rx_rcvbuf.write(srv.rx.rcvbuf_granted)
        await self.rx_local.write(f"{srv.rx.local_address}:{srv.rx.local_port}")
        reg_host, reg_port = srv.regs.local_address
        await self.reg_local.write(f"{reg_host}:{reg_port}")
        try:
            await self._io(srv.config.adopt)  # the configuration is what the device holds
            await self._sync_settings()
            if self.config:
                await self._io(srv.apply_parameter_file, self.config, False)
                await self._sync_settings()
            await self.status.write("OK")
        except Exception as exc:
            log.error("detector start-up: %s", exc)
            await self.err_message.write(f"start-up: {exc}"[:250])
            await self.status.write("DETECTOR NOT RESPONDING" if isinstance(exc, TimeoutError) else "ERROR")
        tick = 0
        last = (time.monotonic(), srv.rx.head)
        next_image = 0.0
        while True:
            await asyncio.sleep(0.1)
            tick += 1
            try:
                await self._update_capture()
                if tick % 5 == 0:
                    last = await self._update_counters(last)
                if tick % 20 == 0:
                    await self._poll_hardware()
                now = time.monotonic()
                if now >= next_image:
                    next_image = now + max(0.5, float(self.image_period.value))
                    await self._update_image()
            except Exception:  # a status update must never take the IOC down
                if tick % 100 == 0 or tick < 100:
                    log.exception("status update failed")

    async def _update_capture(self) -> None:
        job = self.server.job
        if job is None:
            return
        if job.progress != self.capture_progress.value:
            await self.capture_progress.write(job.progress)
        if job.done.is_set() and self._reported_job is not job:
            self._reported_job = job
            f = self.server.file
            await self.capture_file_frames.write(job.first_index + job.progress if f is None else f.count)
            await self.capture_train_ids.write([float(t) for t in job.train_ids[:MAX_IDS]] or [0.0])
            await self.capture_frame_numbers.write([float(t) for t in job.frame_numbers[:MAX_IDS]] or [0.0])
            await self.capture_overruns.write(self.capture_overruns.value + job.overruns)
            await self.capture_bad_train_ids.write(job.bad_train_ids)
            await self.capture_message.write(job.message)
            await self.capture_status.write(job.status)
            await self.capture_finished.write(self.capture_finished.value + 1)

    async def _update_counters(self, last):
        rx, regs = self.server.rx, self.server.regs
        counts = rx.counters()
        for suffix, key in PV.RX_COUNTERS.items():
            pv = self.pvdb[self.prefix + suffix]
            if pv.value != counts[key]:
                await pv.write(float(counts[key]))
        head = counts["head"]
        now = time.monotonic()
        await self.frame_rate.write((head - last[1]) / max(now - last[0], 1e-3))
        if head != self.frame_count.value:
            await self.frame_count.write(head)
            fn, train_id, _, complete = rx.frame_info(head)
            await self.last_train_id.write(float(train_id))
            await self.last_frame_number.write(float(fn))
            await self.last_complete.write(int(complete))
        await self.rx_alive.write(int(rx.alive))
        s = regs.stats
        for pv, v in ((self.reg_timeouts, s.timeouts), (self.reg_retries, s.retries),
                      (self.reg_errors, s.errors), (self.reg_stray, s.stray_replies)):
            if pv.value != v:
                await pv.write(float(v))
        return now, head

    async def _poll_hardware(self) -> None:
        srv = self.server
        try:
            running = await self._io(srv.cmd.is_running)
            if running != self.acquiring.value:
                await self.acquiring.write(int(running))
            if srv.config.values:
                lost = await self._io(srv.restore_if_restarted)
                if lost:
                    await self._restored(lost)
            if self.status.value != "OK" and time.monotonic() >= self._restored_until:
                await self.status.write("OK")
        except Exception as exc:
            await self.status.write("DETECTOR NOT RESPONDING")
            log.debug("status poll: %s", exc)
        if not srv.rx.alive:
            await self.status.write("RECEIVER DIED")
        if srv.bellow is not None:
            try:
                await self.bellow_position.write(await self._io(srv.bellow.position))
                moving = await self._io(srv.bellow.moving)
                await self.bellow_moving.write(int(moving))
                await self.bellow_status.write("MOVING" if moving else "IDLE")
            except Exception as exc:
                await self.bellow_status.write("NOT RESPONDING")
                log.debug("bellow poll: %s", exc)
        if srv.power is not None:
            try:
                on = await self._io(srv.power.output)
                await self.power_status.write("ON" if on else "OFF")
                await self.power_voltage.write(await self._io(srv.power.voltage))
                await self.power_current.write(await self._io(srv.power.current))
            except Exception as exc:
                await self.power_status.write("NOT RESPONDING")
                log.debug("power poll: %s", exc)

    async def _update_image(self) -> None:
        """Post the newest frame, only if it is newer than the one IMAGE shows."""
        head = self.server.rx.head
        if not preview_due(head, self._image_seq):
            return
        latest = self.server.latest_frame()
        if latest is None:
            return
        frame, train_id, _ = latest
        self._image_seq = head
        binning = int(self.image_binning.value)
        img = await self._io(bin_image, frame, binning)
        value = np.ascontiguousarray(img, dtype=np.int32).reshape(-1)
        value.flags.writeable = False
        await self.image_train_id.write(float(train_id))
        await self.image.write(value)


def preview_due(head: int, shown: int) -> bool:
    """Whether IMAGE should be posted: a frame newer than the one shown exists.

    While the DAQ is stopped (the receiver's head does not move) nothing is posted, so
    a viewer never shows an old frame as live.
    """
    return head > 0 and head != shown
