"""The detector's serial peripherals: the bellow stage (BELLOW:*) and the power supply
(POWER:*), each polled every :data:`PERIPHERAL_POLL_S` when configured.

Without ``--bellow-port`` / ``--power-port`` their STATUS says NOT CONFIGURED and their
setpoints refuse every put.
"""

from __future__ import annotations

import logging

from caproto import ChannelType
from caproto.server import pvproperty

from trainstamp.detector import _pvnames as PV
from trainstamp.detector._caputil import long_pv, switch
from trainstamp.detector._ioc._base import DetectorGroup, polled

log = logging.getLogger("trainstamp.detector._ioc")

#: Seconds between polls of a peripheral.
PERIPHERAL_POLL_S = 2.0


class Bellow(DetectorGroup):
    """BELLOW:INSERT, POSITION, MOVING, STATUS."""

    insert = long_pv(name=PV.BELLOW_INSERT, value=0, doc="1=insert detector, 0=retract")
    position = pvproperty(name=PV.BELLOW_POSITION, value=0.0, read_only=True, units="mm", precision=3,
                          doc="Bellow stage position")
    moving = pvproperty(name=PV.BELLOW_MOVING, value=0, read_only=True, doc="Bellow stage moving")
    status = pvproperty(name=PV.BELLOW_STATUS, value="NOT CONFIGURED", dtype=ChannelType.STRING,
                        read_only=True, doc="Bellow stage link")

    @insert.putter
    @switch("1 (insert) or 0 (retract)")
    async def insert(self, instance, value):
        stage = self.server.bellow
        if stage is None:
            raise ValueError("no bellow stage configured (--bellow-port)")
        await self._io(stage.insert if value else stage.retract)
        return value

    @position.scan(period=PERIPHERAL_POLL_S)
    @polled("bellow poll")
    async def position(self, instance, async_lib):
        """Position and motion of the stage; NOT RESPONDING if it does not answer."""
        stage = self.server.bellow
        if stage is None:
            return
        try:
            await self.position.write(await self._io(stage.position))
            moving = await self._io(stage.moving)
            await self.moving.write(int(moving))
            await self.status.write("MOVING" if moving else "IDLE")
        except Exception as exc:
            await self.status.write("NOT RESPONDING")
            log.debug("bellow poll: %s", exc)


class Power(DetectorGroup):
    """POWER:ON, STATUS, VOLTAGE, CURRENT."""

    on = long_pv(name=PV.POWER_ON, value=0, doc="1=power on, 0=off")
    status = pvproperty(name=PV.POWER_STATUS, value="NOT CONFIGURED", dtype=ChannelType.STRING,
                        read_only=True, doc="ON / OFF / link state")
    voltage = pvproperty(name=PV.POWER_VOLTAGE, value=0.0, read_only=True, units="V", precision=3,
                         doc="Supply voltage")
    current = pvproperty(name=PV.POWER_CURRENT, value=0.0, read_only=True, units="A", precision=3,
                         doc="Supply current")

    @on.putter
    @switch("1 or 0")
    async def on(self, instance, value):
        supply = self.server.power
        if supply is None:
            raise ValueError("no power supply configured (--power-port)")
        await self._io(supply.set_output, bool(value))
        return value

    @status.scan(period=PERIPHERAL_POLL_S)
    @polled("power poll")
    async def status(self, instance, async_lib):
        """Output state, voltage and current; NOT RESPONDING if the supply does not answer."""
        supply = self.server.power
        if supply is None:
            return
        try:
            on = await self._io(supply.output)
            await self.status.write("ON" if on else "OFF")
            await self.voltage.write(await self._io(supply.voltage))
            await self.current.write(await self._io(supply.current))
        except Exception as exc:
            await self.status.write("NOT RESPONDING")
            log.debug("power poll: %s", exc)
