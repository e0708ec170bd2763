"""A tiny IOC whose putters refuse some values, for testing how clients report refusals.

PVs (prefix ``--prefix``, e.g. ``RF3f9a1c:``):

- ``VALUE`` (DOUBLE): refuses a negative value ("VALUE -1.0 refused: must be >= 0").
- ``SLOW`` (DOUBLE): a put completes 0.3 s after it is made (put completion); a negative
  value is refused at once.
- ``TEXT`` (STRING): refuses an empty string.
- ``FIXED`` (DOUBLE, read-only).
- ``LAST_REFUSAL`` (CHAR waveform, read-only): the message of the last refused put,
  written before the refusal is sent (as the detector IOC's ``ERR:MESSAGE``).

Run it with ``python -m trainstamp.testing._refusing_ioc --prefix RF: --list-pvs``, or
through :class:`RefusingIOCProcess` in a test.
"""

from __future__ import annotations

import asyncio
import sys
from textwrap import dedent

from caproto import ChannelType
from caproto.server import PVGroup, ioc_arg_parser, pvproperty, run

from trainstamp.testing._process import Subprocess

__all__ = ["RefusingIOC", "RefusingIOCProcess"]

#: Seconds a SLOW put takes to complete.
SLOW_S = 0.3


class RefusingIOC(PVGroup):
    """Refuses negative VALUE and SLOW, and an empty TEXT; FIXED is read-only."""

    value = pvproperty(name="VALUE", value=0.0, doc="refuses < 0")
    slow = pvproperty(name="SLOW", value=0.0, doc=f"completes {SLOW_S} s after the put")
    text = pvproperty(name="TEXT", value="start", dtype=ChannelType.STRING,
                      doc="refuses an empty string")
    fixed = pvproperty(name="FIXED", value=1.0, read_only=True, doc="read-only")
    last_refusal = pvproperty(name="LAST_REFUSAL", value="", dtype=ChannelType.CHAR,
                              max_length=255, report_as_string=True, read_only=True,
                              doc="message of the last refused put")

    async def _refuse(self, message: str) -> None:
        await self.last_refusal.write(message)
        raise ValueError(message)

    @value.putter
    async def value(self, instance, value):
        if value < 0:
            await self._refuse(f"VALUE {value} refused: must be >= 0")
        return value

    @slow.putter
    async def slow(self, instance, value):
        if value < 0:
            await self._refuse(f"SLOW {value} refused: must be >= 0")
        await asyncio.sleep(SLOW_S)
        return value

    @text.putter
    async def text(self, instance, value):
        if not str(value).strip():
            await self._refuse("TEXT refused: an empty string")
        return value


class RefusingIOCProcess(Subprocess):
    """:class:`RefusingIOC` as a subprocess on one of ``pool``'s CA ports (a context
    manager), ready once ``VALUE`` answers a read."""

    def __init__(self, pool, prefix: str, timeout: float = 30.0) -> None:
        from caproto.sync.client import read

        self.prefix = prefix
        self.port = pool.next_port()

        def ready() -> bool:
            read(prefix + "VALUE", timeout=0.5, repeater=False)
            return True

        super().__init__([sys.executable, "-m", "trainstamp.testing._refusing_ioc",
                          "--prefix", prefix, "--interfaces", "127.0.0.1"],
                         env=pool.env(server_port=self.port), ready=ready, timeout=timeout,
                         python_module=False)


def main() -> None:
    ioc_options, run_options = ioc_arg_parser(default_prefix="RF:",
                                              desc=dedent(RefusingIOC.__doc__))
    run(RefusingIOC(**ioc_options).pvdb, **run_options)


if __name__ == "__main__":
    main()
