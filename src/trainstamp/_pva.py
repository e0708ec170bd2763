"""PV Access beside Channel Access: a p4p server that mirrors an IOC's caproto PVs.

Facility viewers and p4p clients speak PV Access; the IOCs are caproto (Channel Access)
servers. :class:`PVAMirror` serves every PV of a caproto ``pvdb`` over PVA under the
same name, from p4p's own server threads beside the caproto asyncio loop:

- a PV's value is posted to PVA each time caproto publishes it (every write), so PVA
  and CA never disagree for longer than one post;
- a put over PVA runs the caproto PV's own putter (with its checks and refusal
  counting) in the IOC's loop; a refused put fails the PVA put with the reason;
  read-only PVs refuse puts;
- the PVA type of a PV follows its CA type (DOUBLE -> ``double``, LONG -> ``int``, text
  -> ``string``, bool -> ``bool``, arrays -> arrays), unless the IOC names another
  (team1k's STATUS is ``string[]``, ACQUIRING ``bool``; the TimeServer's ID and every
  train-ID PV, :func:`train_id_codes`, are ``ulong``);
- PVs the IOC feeds itself (the detector's NTNDArray IMAGE) are added with
  :meth:`PVAMirror.add` and posted by the IOC.

The server honours the usual ``EPICS_PVA*`` variables (``EPICS_PVA_SERVER_PORT``,
``EPICS_PVA_BROADCAST_PORT``, ``EPICS_PVAS_INTF_ADDR_LIST``, ``EPICS_PVA_ADDR_LIST``,
``EPICS_PVA_AUTO_ADDR_LIST`` ...); see :func:`trainstamp._ca_env.pva_server_env`.

The pure functions (:func:`pva_code`, :func:`to_pva`, :func:`from_pva`,
:func:`ntndarray_value`, :func:`unique_id`) hold no I/O and are unit-tested.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from caproto import AccessRights, AlarmStatus, ChannelType
from caproto._constants import EPICS2UNIX_EPOCH

log = logging.getLogger("trainstamp.pva")

__all__ = ["PVAMirror", "alarm_of", "from_pva", "ntndarray_value", "pva_code", "stamp_of",
           "to_pva", "train_id_codes", "unique_id"]

#: CA type -> NTScalar type code (p4p's: d double, i int32, s string, ? bool, L uint64)
_CODES = {
    ChannelType.DOUBLE: "d", ChannelType.FLOAT: "d", ChannelType.LONG: "i",
    ChannelType.INT: "i", ChannelType.STRING: "s", ChannelType.ENUM: "s",
}
#: array type code -> numpy dtype of its elements
_ARRAY_DTYPES = {"ad": np.float64, "ai": np.int32, "aL": np.uint64, "aB": np.uint8}
#: NTNDArray's uniqueId is an int32: frame numbers are given modulo this.
UNIQUE_ID_MODULUS = 2**31


def pva_code(data_type: ChannelType, max_length: int, text: bool, boolean: bool = False) -> str:
    """The NTScalar/NTScalarArray type code of a CA PV.

    ``text``: a CHAR array holding text (caproto's ``string_encoding``), served as one
    ``string``. ``boolean``: an ENUM holding a Python bool (caproto's bool PVs), served
    as a ``bool``. Other arrays (``max_length`` > 1) become arrays of their element type.
    """
    if boolean:
        return "?"
    if data_type == ChannelType.CHAR:
        return "s" if text else "aB"
    code = _CODES[data_type]
    return "a" + code if max_length > 1 else code


def to_pva(code: str, value: Any) -> Any:
    """A caproto PV value as a value of PVA type ``code``."""
    if code == "?":
        return bool(value)
    if code == "s":
        return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
    if code == "as":
        items = value if isinstance(value, list | tuple) else [value]
        return [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in items]
    if code in ("i", "L"):
        return int(value)
    if code == "d":
        return float(value)
    if code in _ARRAY_DTYPES:
        return np.asarray(value).reshape(-1).astype(_ARRAY_DTYPES[code])
    raise ValueError(f"no PVA type {code!r}")


def from_pva(code: str, value: Any) -> Any:
    """A value put over PVA, as the caproto PV of PVA type ``code`` takes it."""
    if code == "?":
        return int(bool(value))
    if code == "as":
        items = list(value)
        if len(items) != 1:
            raise ValueError(f"expected one string, got {len(items)}")
        return str(items[0])
    if code == "s":
        return str(value)
    if code.startswith("a"):
        return list(np.asarray(value).reshape(-1))
    return value


def train_id_codes(names) -> dict[str, str]:
    """PVA types of the train-ID PVs among ``names``: ``ulong`` for ``...TRAIN_ID`` and
    ``...START_TRAIN``, ``ulong[]`` for a ``...:TRAIN_IDS`` list (not a count such as
    ``BAD_TRAIN_IDS``), as the TimeServer's ID. Over CA they are DOUBLEs (exact to 2**53)."""
    codes = {}
    for name in names:
        if name.endswith(("TRAIN_ID", "START_TRAIN")):
            codes[name] = "L"
        elif name.endswith(":TRAIN_IDS"):
            codes[name] = "aL"
    return codes


def stamp_of(seconds_since_epics_epoch: int, ns: int) -> tuple[int, int]:
    """A CA timestamp (EPICS epoch, 1990) as PVA's (seconds since 1970, ns), exactly."""
    return int(seconds_since_epics_epoch) + int(EPICS2UNIX_EPOCH), int(ns)


def alarm_of(severity: int, status: int) -> tuple[int, str]:
    """A CA alarm as PVA's (severity, message): the message is the CA status's name
    (``UDF``, ``COMM``, ``TIMEOUT`` ...), empty without an alarm."""
    return int(severity), ("" if int(severity) == 0 and int(status) == 0
                           else AlarmStatus(int(status)).name)


def unique_id(frame_number: int) -> int:
    """NTNDArray ``uniqueId`` of a frame: its frame number (modulo 2**31, as the field is
    an int32; the attribute ``FrameNumber`` holds it whole)."""
    return int(frame_number) % UNIQUE_ID_MODULUS


def ntndarray_value(frame: np.ndarray, frame_number: int, train_id: int, timestamp_ns: int):
    """One detector frame as an NTNDArray ``Value``.

    The array keeps its dtype and shape (``dimension`` lists the fastest axis first,
    as areaDetector does); ``uniqueId`` is the frame number; the attributes
    ``TrainID`` (uint64), ``FrameNumber`` and ``Timestamp`` (the frame header's,
    ns since the epoch) carry the header; ``timeStamp`` and ``dataTimeStamp`` are the
    header's timestamp too.
    """
    from p4p.nt import NTNDArray

    sec, ns = divmod(int(timestamp_ns), 1_000_000_000)
    stamp = {"secondsPastEpoch": sec, "nanoseconds": ns}
    value = NTNDArray().wrap(np.ascontiguousarray(frame))
    value["uniqueId"] = unique_id(frame_number)
    value["timeStamp"] = stamp
    value["dataTimeStamp"] = stamp
    # ("L", v): a variant holding a uint64 (a plain int would be sent as an int64)
    value["attribute"] = [
        {"name": "ColorMode", "value": ("i", 0)},
        {"name": "TrainID", "value": ("L", int(train_id)), "descriptor": "train ID of the frame"},
        {"name": "FrameNumber", "value": ("L", int(frame_number)), "descriptor": "frame number"},
        {"name": "Timestamp", "value": ("L", int(timestamp_ns)),
         "descriptor": "frame header timestamp, ns since 1970-01-01 UTC"},
    ]
    return value


class PVAMirror:
    """The PVA server of one IOC: every PV of its caproto ``pvdb`` under the same name.

    ``codes`` names the PVA type of PVs whose type is not their CA type (by full name);
    ``values`` gives, for some PVs, a function of the caproto PV that returns the value
    to post (the TimeServer's exact integer ID, which its CA DOUBLE may not hold);
    ``alarms`` likewise a function that returns the CA (severity, status) to post (the
    TimeServer's "inexact as a DOUBLE" alarm does not hold for an exact ``ulong``);
    ``skip`` names PVs the mirror leaves alone (the IOC adds and feeds its own PV of
    that name with :meth:`add`). Each post carries the CA timestamp and alarm.
    Call :meth:`start` in the IOC's running loop (caproto's ``startup_hook``);
    ``conf`` (EPICS_PVA* keys) is used beside the environment.
    """

    def __init__(self, pvdb: Mapping[str, Any], codes: Mapping[str, str] | None = None,
                 skip: set[str] | frozenset[str] = frozenset(),
                 conf: Mapping[str, str] | None = None,
                 values: Mapping[str, Callable[[Any], Any]] | None = None,
                 alarms: Mapping[str, Callable[[Any], tuple[int, int]]] | None = None) -> None:
        self.pvdb = pvdb
        self.alarms = dict(alarms or {})
        self.codes = dict(codes or {})
        self.values = dict(values or {})
        self.skip = set(skip)
        self.conf = dict(conf or {})
        self.pvs: dict[str, Any] = {}  # name -> p4p SharedPV
        self._extra: dict[str, Any] = {}  # name -> initial Value
        self.server = None

    def add(self, name: str, initial) -> None:
        """Serve ``name``, starting with the p4p ``Value`` ``initial`` (its type is the
        PV's: e.g. :func:`ntndarray_value`), fed by the IOC through :meth:`post`.
        Call before :meth:`start`."""
        self._extra[name] = initial

    def post(self, name: str, value) -> None:
        """Post a new ``Value`` of a PV added with :meth:`add` (if the server runs)."""
        pv = self.pvs.get(name)
        if pv is not None:
            pv.post(value)

    def code(self, name: str) -> str:
        """The PVA type code of a mirrored PV."""
        if name in self.codes:
            return self.codes[name]
        ch = self.pvdb[name]
        return pva_code(ch.data_type, ch.max_length, getattr(ch, "string_encoding", None) is not None,
                        isinstance(ch.value, bool))

    async def start(self, async_lib=None) -> None:
        """Create the PVs and start the server (in the running loop: puts are handled
        there). Usable as caproto's ``startup_hook``."""
        from p4p.nt import NTScalar
        from p4p.server import Server, StaticProvider
        from p4p.server.asyncio import SharedPV

        provider = StaticProvider("trainstamp")
        for name, channel in self.pvdb.items():
            if name in self.skip or "." in name:
                continue
            code = self.code(name)
            writable = bool(channel.check_access("pva", "pva") & AccessRights.WRITE)
            pv = SharedPV(nt=NTScalar(code), initial=to_pva(code, channel.value),
                          handler=_PutHandler(channel, code) if writable else None)
            self.pvs[name] = pv
            provider.add(name, pv)
            self._follow(channel, pv, code, self.values.get(name), self.alarms.get(name))
        for name, initial in self._extra.items():
            pv = SharedPV(initial=initial)
            self.pvs[name] = pv
            provider.add(name, pv)
        self._provider = provider  # p4p needs it kept alive while the server runs
        self.server = Server(providers=[provider], conf=self.conf, useenv=True)
        conf = self.server.conf()
        log.info("PV Access on %s (UDP %s), %d PVs", conf.get("EPICS_PVAS_INTF_ADDR_LIST"),
                 conf.get("EPICS_PVAS_BROADCAST_PORT"), len(self.pvs))

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None

    @staticmethod
    def _follow(channel, pv, code: str, value_of=None, alarm=None) -> None:
        """Post to ``pv`` now and after every publish of the caproto ``channel`` (each
        write, and each change of its alarm)."""
        publish = channel.publish

        def post() -> None:
            ts = channel.epics_timestamp
            severity, message = alarm_of(*(alarm(channel) if alarm is not None
                                           else (channel.severity, channel.status)))
            value = channel.value if value_of is None else value_of(channel)
            pv.post(to_pva(code, value), timestamp=stamp_of(ts.secondsSinceEpoch, ts.nanoSeconds),
                    severity=severity, message=message)

        async def publish_and_post(*args, **kwargs):
            await publish(*args, **kwargs)
            try:
                post()
            except Exception:  # a mirror must never fail a CA write
                log.exception("PVA post of %s failed", channel)

        post()
        channel.publish = publish_and_post


class _PutHandler:
    """A put over PVA: the caproto PV's write (its putter) in the IOC's loop."""

    def __init__(self, channel, code: str) -> None:
        self.channel = channel
        self.code = code

    async def put(self, pv, op) -> None:
        try:
            value = from_pva(self.code, op.value().raw["value"])
            await self.channel.write(value)
        except Exception as exc:
            op.done(error=f"{type(exc).__name__}: {exc}" if not str(exc) else str(exc))
            return
        op.done()
