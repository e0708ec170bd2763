"""The value types of the beamline configuration's keys (pydantic annotated types).

Each type takes TOML's value as it is (no coercion: ``true`` is not a port, ``"5164"``
is not a number) and refuses with a reason that says the limit; the configuration adds
the file, the section, the key and the value (:func:`trainstamp.config._explain`).
A refusal is a :class:`pydantic_core.PydanticCustomError` of kind ``"trainstamp"``, or
``"core"`` when the reason comes from a timing-core check that already quotes the value.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Annotated, Any

from pydantic import PlainValidator
from pydantic_core import PydanticCustomError

from trainstamp.timing._core import check_period_ms, parse_source

__all__ = ["TRIGGER_MODES", "Flag", "Host", "Name", "PeriodMs", "Port", "Prefix", "SourceUri",
           "Strings", "Text", "TriggerMode", "number", "refuse"]

#: EPICS record names allow these characters; prefixes are limited to them.
_PREFIX_RE = re.compile(r"^[A-Za-z0-9_\-+:\[\]<>;.]{1,60}$")
_HOST_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.\-]{0,252}$")
TRIGGER_MODES = ("INTERNAL", "EXTERNAL")
#: Names whose data keys collide with the columns TiledWriter adds: it stores the
#: timestamps of key ``k`` as ``ts_k``, and renames ``time`` and ``seq_num``.
_RESERVED_NAMES = ("ts", "time", "seq_num")


# --- value types (each refuses with the reason; the key and value are added later) -------


def refuse(reason: str, kind: str = "trainstamp") -> PydanticCustomError:
    # the reason goes in through the context, so braces in a quoted value stay literal
    return PydanticCustomError(kind, "{reason}", {"reason": reason})


def _rule(ok: Callable[[Any], bool], reason: str, convert: Callable[[Any], Any] = lambda v: v):
    """A pydantic validator: ``convert(value)`` if ``ok(value)``, else refuse with ``reason``
    (no coercion: TOML's types are taken as they are, ``true`` is not a port)."""

    def check(value: Any) -> Any:
        if not ok(value):
            raise refuse(reason)
        return convert(value)

    return PlainValidator(check)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any, lo: float, hi: float) -> bool:
    return (isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
            and lo <= v <= hi)


def number(lo: float, hi: float, unit: str):
    return _rule(lambda v: _is_number(v, lo, hi),
                 f"expected a number in {lo:g}..{hi:g} {unit}", float)


def _check_name(value: Any) -> str:
    if not isinstance(value, str) or not value.isidentifier() or value.startswith("_"):
        raise refuse("a device name must be a Python identifier not starting with '_' "
                      "(it becomes a variable in the session)")
    if value in _RESERVED_NAMES or value.startswith("ts_"):
        raise refuse("reserved; the catalog stores the timestamps of data key K as ts_K, "
                      "so device names may not be 'ts', 'ts_...', 'time' or 'seq_num'")
    return value


def _core(check: Callable[[Any], Any]):
    """A validator from a timing-core check whose ``ValueError`` already quotes the value."""

    def run(value: Any) -> Any:
        try:
            return check(value)
        except ValueError as exc:
            raise refuse(str(exc), "core") from None

    return PlainValidator(run)


def _period(value: Any) -> float:
    if not _is_number(value, 0, math.inf):
        raise ValueError(f"period_ms = {value!r}: expected a number in 0..inf ms")
    return check_period_ms(value)


def _source(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"source = {value!r}: expected a string")
    parse_source(value)
    return value


Port = Annotated[int, _rule(lambda v: _is_int(v) and 1 <= v <= 65535,
                            "a port must be an integer in 1..65535")]
Prefix = Annotated[str, _rule(lambda v: isinstance(v, str) and bool(_PREFIX_RE.match(v)),
                              "a PV prefix is 1..60 characters of A-Z a-z 0-9 _ - + : [ ] < > ; . "
                              "(e.g. 'TS:')")]
Host = Annotated[str, _rule(lambda v: isinstance(v, str) and bool(_HOST_RE.match(v)),
                            "expected a host name or IPv4 address")]
Name = Annotated[str, PlainValidator(_check_name)]
Flag = Annotated[bool, _rule(lambda v: isinstance(v, bool), "expected true or false")]
Text = Annotated[str, _rule(lambda v: isinstance(v, str), "expected a string")]
Strings = Annotated[tuple[str, ...], _rule(
    lambda v: isinstance(v, list | tuple) and all(isinstance(s, str) for s in v),
    "expected a list of strings", tuple)]
TriggerMode = Annotated[str, _rule(lambda v: v in TRIGGER_MODES,
                                   f"expected one of {', '.join(TRIGGER_MODES)}")]


#: A train period setpoint in ms (the TimeServer's limits).
PeriodMs = Annotated[float, _core(_period)]
#: A train-ID source URI (``local:internal``, ``tcp://host:port``, ``ca://PV``).
SourceUri = Annotated[str, _core(_source)]
