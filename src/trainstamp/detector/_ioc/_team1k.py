"""The TEAM1k detector IOC: team1k's PV table over Channel Access, served by caproto.

PVs (prefix ``TEAM1K:`` by default; suffixes in :mod:`trainstamp.detector._pvnames`):

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
- preview: IMAGE:WIDTH, HEIGHT, BINNING, PERIOD, TRAIN_ID; IMAGE:PVA_PERIOD
- peripherals: BELLOW:INSERT, POSITION, MOVING, STATUS; POWER:ON, STATUS, VOLTAGE, CURRENT

Every PV is also served over PV Access under the same name (``--pva``, the default;
:meth:`Team1kIOC.pva_mirror`), with team1k's types: there IMAGE is the full frame as an
NTNDArray, every IMAGE:PVA_PERIOD. Full frames never travel over CA: they go to HDF5. IMAGE is a binned preview posted at
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
import time
from concurrent.futures import ThreadPoolExecutor

from caproto import ChannelType
from caproto.server import PVGroup, SubGroup, pvproperty

from trainstamp.detector import _pvnames as PV
from trainstamp.detector._acquisition import Team1kServer
from trainstamp.detector._caputil import COUNTED, counter_pv, text_pv
from trainstamp.detector._ioc._base import FailureLog, log
from trainstamp.detector._ioc._capture import Capture
from trainstamp.detector._ioc._links import ReceiverCounters, RegisterLink
from trainstamp.detector._ioc._peripherals import Bellow, Power
from trainstamp.detector._ioc._preview import Preview
from trainstamp.detector._ioc._pva_image import PvaImage
from trainstamp.detector._ioc._settings import DetectorSettings
from trainstamp.detector._ioc._transfer import DataTransfer
from trainstamp.detector._recovery import recover_abandoned

#: Seconds between checks of the detector's health (DAQ running, configuration held,
#: receiver alive) once it is up.
HEALTH_POLL_S = 2.0
#: Seconds STATUS says RESTORED after the configuration was re-applied.
RESTORED_SHOWN_S = 10.0


class Team1kIOC(PVGroup):
    __doc__ = __doc__

    status = pvproperty(name=PV.STATUS, value="STARTING", dtype=ChannelType.STRING, read_only=True,
                        doc="Server status")
    err_bad_puts = counter_pv(PV.ERR_BAD_PUTS, "Refused CA puts")
    err_message = text_pv(name=PV.ERR_MESSAGE, length=255, read_only=True, doc="Last refused put or error")

    # every part holds its PVs' full suffixes, so none adds a prefix
    settings = SubGroup(DetectorSettings, prefix="")
    capture = SubGroup(Capture, prefix="")
    preview = SubGroup(Preview, prefix="")
    pva_image = SubGroup(PvaImage, prefix="")
    receiver = SubGroup(ReceiverCounters, prefix="")
    register_link = SubGroup(RegisterLink, prefix="")
    bellow = SubGroup(Bellow, prefix="")
    power = SubGroup(Power, prefix="")
    transfer = SubGroup(DataTransfer, prefix="")

    def __init__(self, *args, server: Team1kServer, config: str | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.server = server
        self.config = config
        #: the start-up is done: the parts' polls run from then on
        self.started = False
        # one pool per kind of blocking work: a dead detector (register puts waiting out
        # their retries) never delays a capture-file put, nor a slow file either of them
        self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="team1k-reg")
        self._file_pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="team1k-file")
        self._param_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="team1k-param")
        self._restored_until = 0.0  # STATUS says RESTORED until then
        #: the PV Access server beside CA (:meth:`pva_mirror`), None with ``--no-pva``
        self.pva = None

    def pva_mirror(self, conf=None):
        """The PV Access mirror of this IOC, with team1k's PVA types: STATUS
        ``string[]``, ACQUIRING ``bool``, IMAGE an NTNDArray of the full frame (fed by
        :class:`~trainstamp.detector._ioc._pva_image.PvaImage`); train IDs ``ulong``; the
        rest as over CA.
        Start it with its ``start`` in the IOC's loop (caproto's ``startup_hook``)."""
        import numpy as np

        from trainstamp._pva import PVAMirror, ntndarray_value, train_id_codes

        p = self.prefix
        codes = train_id_codes(self.pvdb) | {p + PV.STATUS: "as", p + PV.ACQUIRING: "?"}
        mirror = PVAMirror(self.pvdb, codes=codes, skip={p + PV.IMAGE}, conf=conf)
        mirror.add(p + PV.IMAGE, ntndarray_value(np.zeros((0, 0), dtype=np.uint16), 0, 0, 0))
        self.pva = mirror
        return mirror

    # ------------------------------------------------------------ worker pools
    async def _run(self, pool, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(pool, functools.partial(fn, *args))

    async def _io(self, fn, *args):
        """Register or serial I/O on its worker pool."""
        return await self._run(self._pool, fn, *args)

    async def _file_io(self, fn, *args):
        """Capture-file work (HDF5, disk) on its own pool."""
        return await self._run(self._file_pool, fn, *args)

    async def _param_io(self, fn, *args):
        """Parameter-file reads on their own pool."""
        return await self._run(self._param_pool, fn, *args)

    # ------------------------------------------------------------ refusals and restores
    async def _refuse(self, exc: BaseException) -> None:
        """Count a refused put in ERR:BAD_PUTS and describe it in ERR:MESSAGE, once."""
        if getattr(exc, COUNTED, False):
            return
        with contextlib.suppress(AttributeError):
            setattr(exc, COUNTED, True)  # once per refusal, however many layers see it
        await self.err_bad_puts.write(self.err_bad_puts.value + 1)
        await self.err_message.write(f"{type(exc).__name__}: {exc}"[:250])
        log.warning("refused: %s", exc)

    async def restored(self, lost: list[str]) -> None:
        """Say that a restarted FPGA got its configuration back."""
        text = f"FPGA lost its configuration ({', '.join(lost)}): restarted? Re-applied at " \
               f"{time.strftime('%H:%M:%S')}"
        log.warning("%s", text)
        await self.err_message.write(text[:250])
        await self.register_link.restores.write(float(self.server.restores))
        await self.status.write("RESTORED: FPGA RESTARTED")
        self._restored_until = time.monotonic() + RESTORED_SHOWN_S
        await self.settings.sync()

    # ------------------------------------------------------------ start-up and health
    @status.startup
    async def status(self, instance, async_lib):
        """Bring the detector up, then keep STATUS true to its health."""
        await self._start_up()
        self.started = True
        failures = FailureLog("health check")
        while True:
            await asyncio.sleep(HEALTH_POLL_S)
            try:
                await self._check_health()
            except Exception:  # a status update must never take the IOC down
                failures.failed()

    async def _start_up(self) -> None:
        """Start the receiver, recover abandoned captures, adopt the detector's
        configuration and apply ``--config``; STATUS says how it went."""
        srv = self.server
        try:
            await self._io(srv.start)
        except Exception as exc:  # the IOC stays up and says why
            log.exception("receiver start failed")
            await self.err_message.write(f"receiver start: {exc}"[:250])
            await self.status.write("RECEIVER FAILED")
        await self.transfer.show_uri()
        await self.capture.root.write(str(srv.data_dir))
        for path, outcome in await self._io(recover_abandoned, srv.data_dir):
            if isinstance(outcome, str):
                log.error("capture %s was left open by a writer that died; cannot recover "
                          "it: %s", path, outcome)
            else:
                log.warning("recovered capture %s, left open by a writer that died "
                            "(%d frames without a train ID, flagged)", path, outcome)
        await self.receiver.show_socket()
        await self.register_link.show_socket()
        try:
            await self._io(srv.config.adopt)  # the configuration is what the device holds
            await self.settings.sync()
            if self.config:
                await self._io(srv.apply_parameter_file, self.config, False)
                await self.settings.sync()
            await self.status.write("OK")
        except Exception as exc:
            log.error("detector start-up: %s", exc)
            await self.err_message.write(f"start-up: {exc}"[:250])
            await self.status.write("DETECTOR NOT RESPONDING" if isinstance(exc, TimeoutError) else "ERROR")

    async def _check_health(self) -> None:
        """DAQ running, configuration held (re-applied if the FPGA restarted), receiver alive."""
        srv = self.server
        acquiring = self.settings.acquiring
        try:
            running = await self._io(srv.cmd.is_running)
            if running != acquiring.value:
                await acquiring.write(int(running))
            if srv.config.values:
                lost = await self._io(srv.restore_if_restarted)
                if lost:
                    await self.restored(lost)
            if self.status.value != "OK" and time.monotonic() >= self._restored_until:
                await self.status.write("OK")
        except Exception as exc:
            await self.status.write("DETECTOR NOT RESPONDING")
            log.debug("status poll: %s", exc)
        if not srv.rx.alive:
            await self.status.write("RECEIVER DIED")
