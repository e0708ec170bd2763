"""The detector's settings and commands: CMD:* setpoints and their readbacks.

Each setpoint's putter validates the value, writes it to the detector through the
held configuration (:mod:`trainstamp.detector._config`) on the register worker pool,
and updates its readback. :meth:`DetectorSettings.sync` reads the registers back into
readbacks and setpoints, at connect and after every reset or restore.
"""

from __future__ import annotations

from caproto.server import pvproperty

from trainstamp.detector import _pvnames as PV
from trainstamp.detector._caputil import float_pv, guarded, long_pv, switch, text_pv
from trainstamp.detector._ioc._base import DetectorGroup
from trainstamp.detector._regclient import check_exposure_mode, check_trigger_mode, integration_us
from trainstamp.detector._si570 import solve


class DetectorSettings(DetectorGroup):
    """Setpoints CMD:EXPOSURE_MODE, TRIGGER_MODE, INTEGRATION_TIME, START_DAQ,
    ADC_CLOCK_FREQ, ADC_DATA_DELAY, PARAMETER_FILE, RESET, TEST_MODE; readbacks
    ACQUIRING, EXPOSURE_MODE, TRIGGER_MODE, INTEGRATION_TIME, ADC_CLOCK_FREQ,
    ADC_DATA_DELAY, TEST_MODE."""

    acquiring = pvproperty(name=PV.ACQUIRING, value=0, read_only=True, doc="DAQ running (0/1)")
    exposure_mode = pvproperty(name=PV.EXPOSURE_MODE, value=3, read_only=True, doc="Exposure mode 0-3")
    trigger_mode = pvproperty(name=PV.TRIGGER_MODE, value=0, read_only=True,
                              doc="Trigger mode: 0 internal, 1 external (one frame per train)")
    integration_time = pvproperty(name=PV.INTEGRATION_TIME, value=6.0, read_only=True, units="ms",
                                  precision=3, doc="Integration time")
    adc_clock_freq = pvproperty(name=PV.ADC_CLOCK_FREQ, value=0.0, read_only=True, units="MHz",
                                precision=6, doc="ADC clock read back from the Si570 registers")
    adc_data_delay = pvproperty(name=PV.ADC_DATA_DELAY, value=0, read_only=True, doc="ADC data delay")
    test_mode = pvproperty(name=PV.TEST_MODE, value=0, read_only=True, doc="FPGA test data on")

    cmd_exposure_mode = long_pv(name=PV.CMD_EXPOSURE_MODE, value=3, doc="Set exposure mode 0-3")
    cmd_trigger_mode = long_pv(name=PV.CMD_TRIGGER_MODE, value=0, doc="Set trigger mode 0/1")
    cmd_integration_time = float_pv(name=PV.CMD_INTEGRATION_TIME, value=6.0, units="ms", precision=3,
                                    doc="Set integration time")
    cmd_start_daq = long_pv(name=PV.CMD_START_DAQ, value=0, doc="1=start, 0=stop")
    cmd_adc_clock_freq = float_pv(name=PV.CMD_ADC_CLOCK_FREQ, value=100.0, units="MHz", precision=3,
                                  doc="Set ADC clock (Si570)")
    cmd_adc_data_delay = long_pv(name=PV.CMD_ADC_DATA_DELAY, value=0x1A7, doc="Set ADC data delay")
    cmd_parameter_file = text_pv(name=PV.CMD_PARAMETER_FILE, doc="Apply parameter file")
    cmd_reset = long_pv(name=PV.CMD_RESET, value=0, doc="1=reset connection")
    cmd_test_mode = long_pv(name=PV.CMD_TEST_MODE, value=0, doc="1=enable FPGA test data")

    @cmd_exposure_mode.putter
    @guarded
    async def cmd_exposure_mode(self, instance, value):
        mode = check_exposure_mode(value)
        await self._io(self.server.config.set, "exposure_mode", int(mode))
        await self.exposure_mode.write(int(mode))
        return int(mode)

    @cmd_trigger_mode.putter
    @guarded
    async def cmd_trigger_mode(self, instance, value):
        mode = check_trigger_mode(value)
        await self._io(self.server.config.set, "trigger_mode", int(mode))
        await self.trigger_mode.write(int(mode))
        return int(mode)

    @cmd_integration_time.putter
    @guarded
    async def cmd_integration_time(self, instance, value):
        integration_us(value)
        await self._io(self.server.config.set, "integration_time", float(value))
        await self.integration_time.write(value)
        return value

    @cmd_start_daq.putter
    @switch("1 (start) or 0 (stop)")
    async def cmd_start_daq(self, instance, value):
        lost = await self._io(self.server.start_daq if value else self.server.stop_daq)
        if lost:
            await self.ioc.restored(lost)
        await self.acquiring.write(value)
        return value

    @cmd_adc_clock_freq.putter
    @guarded
    async def cmd_adc_clock_freq(self, instance, value):
        solve(value * 1e6)
        await self._io(self.server.config.set, "adc_clock_freq", float(value))
        await self.adc_clock_freq.write(await self._io(self.server.cmd.get_adc_clock_freq))
        return value

    @cmd_adc_data_delay.putter
    @guarded
    async def cmd_adc_data_delay(self, instance, value):
        await self._io(self.server.config.set, "adc_data_delay", int(value))
        await self.adc_data_delay.write(value)
        return value

    @cmd_parameter_file.putter
    @guarded
    async def cmd_parameter_file(self, instance, value):
        # reading the file never holds the register workers (nor they it)
        settings = await self.ioc._param_io(self.server.read_parameter_file, value)
        await self._io(self.server.apply_settings, settings)
        await self.sync()
        return value

    @cmd_reset.putter
    @switch("1 (reset) or 0")
    async def cmd_reset(self, instance, value):
        if value:
            await self._io(self.server.reset)
            await self.acquiring.write(0)
            await self.sync()
        return 0

    @cmd_test_mode.putter
    @switch("0 or 1")
    async def cmd_test_mode(self, instance, value):
        await self._io(self.server.config.set, "test_mode", value)
        await self.test_mode.write(value)
        return value

    async def sync(self) -> None:
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
