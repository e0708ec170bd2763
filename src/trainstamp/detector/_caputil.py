"""PV building blocks of the detector IOC: text PVs, counters, refusing putters.

:class:`WholeNumber` is the one integer type of every LONG setpoint: caproto would turn
1.5 into 1 and NaN into -2147483648 before a putter saw the value, so the check runs on
the value as the client sent it, and the refusal says why (see :func:`check_whole`).
Every 0/1 switch (CMD:START_DAQ, CAPTURE:OPEN, POWER:ON ...) is a :func:`long_pv` whose
putter is wrapped by :func:`switch`, the one place that refuses anything but 0 and 1.
"""

from __future__ import annotations

import functools
import math

from caproto import ChannelType
from caproto._dbr import native_type
from caproto.server import pvproperty
from caproto.server.server import PvpropertyChar, PvpropertyDouble, PvpropertyInteger

INT32 = (-(2**31), 2**31 - 1)


def text_pv(value: str = "", length: int = 1024, **kw):
    """A CHAR-array PV holding UTF-8 text of at most ``length`` bytes."""
    return pvproperty(value=value, dtype=CountedChar, max_length=length,
                      string_encoding="utf-8", **kw)


def float_pv(**kw):
    """A DOUBLE setpoint whose every refusal is counted (see :class:`Counted`)."""
    return pvproperty(dtype=CountedDouble, **kw)


def counter_pv(name: str, doc: str):
    return pvproperty(name=name, value=0.0, read_only=True, doc=doc, precision=0)


def guarded(putter):
    """Wrap a putter: any failure is counted in ERR:BAD_PUTS, described in ERR:MESSAGE,
    then re-raised so the client sees the refusal."""

    @functools.wraps(putter)
    async def wrapper(self, instance, value):
        try:
            return await putter(self, instance, value)
        except Exception as exc:
            await self._refuse(exc)
            raise

    return wrapper


def switch(meaning: str = "1 or 0"):
    """Decorate the putter of a 0/1 PV: it gets the value checked by :func:`check_switch`.

    ``meaning`` is what the refusal says the two values do ("1 (start) or 0 (stop)").
    The wrapped putter is :func:`guarded`, so a refusal is counted and described.
    """

    def decorate(action):
        @functools.wraps(action)
        async def putter(self, instance, value):
            return await action(self, instance, check_switch(instance.pvspec.name, value, meaning))

        return guarded(putter)

    return decorate


def _as_str(value: object) -> str:
    if isinstance(value, bytes | bytearray):
        return value.decode("utf-8", "replace").rstrip("\0")
    return str(value).rstrip("\0")


def check_whole(name: str, value: object) -> int:
    """``value`` as a whole number in the LONG range; ``ValueError`` saying why not."""
    if isinstance(value, bytes | bytearray | str):
        text = _as_str(value).strip()
        try:
            number = int(text, 0) if text.lstrip("+-").isalnum() else float(text)
        except ValueError:
            raise ValueError(f"{name} refused: {text[:40]!r} is not a whole number") from None
    else:
        number = value.item() if hasattr(value, "item") else value
    if isinstance(number, float):
        if not math.isfinite(number) or not number.is_integer():
            raise ValueError(f"{name} refused: {number!r} is not a whole number")
        number = int(number)
    if not isinstance(number, int) or not INT32[0] <= number <= INT32[1]:
        raise ValueError(f"{name} refused: {number!r} is not a whole number in the LONG range")
    return number


def check_switch(name: str, value: object, meaning: str = "1 or 0") -> int:
    """A 0/1 switch value; ``ValueError`` naming ``meaning`` otherwise."""
    number = check_whole(name, value)
    if number not in (0, 1):
        raise ValueError(f"{name} {number} must be {meaning}")
    return number


COUNTED = "_trainstamp_counted"


class Counted:
    """Counts every refused put, also those caproto refuses before any putter runs (a
    string that is no number, too many elements): ``group._refuse`` once per refusal."""

    async def write_from_dbr(self, data, data_type, metadata, *, flags=0):
        try:
            return await super().write_from_dbr(data, data_type, metadata, flags=flags)
        except Exception as exc:
            if not getattr(exc, COUNTED, False):
                await self.group._refuse(exc)
            raise


class CountedDouble(Counted, PvpropertyDouble):
    pass


class CountedChar(Counted, PvpropertyChar):
    pass


class WholeNumber(Counted, PvpropertyInteger):
    """A LONG PV that refuses, rather than truncates, a value that is not a whole number.

    The refusal is counted and described through the group's ``_refuse`` and raised, so
    the client's put fails at once with the reason.
    """

    async def write_from_dbr(self, data, data_type, metadata, *, flags=0):
        native = native_type(data_type)
        if native in (ChannelType.DOUBLE, ChannelType.FLOAT, ChannelType.STRING, ChannelType.CHAR):
            values = [data] if native == ChannelType.CHAR else list(data)
            for value in values:
                try:
                    check_whole(self.pvspec.name, value)
                except ValueError as exc:
                    await self.group._refuse(exc)
                    raise
        return await super().write_from_dbr(data, data_type, metadata, flags=flags)


def long_pv(**kw):
    """A LONG setpoint of type :class:`WholeNumber`."""
    return pvproperty(dtype=WholeNumber, **kw)
