"""What the ``timetaggerrpc`` package's client expects on the wire (pure, no I/O).

Swabian's TimeTaggerRPC client (PyPI ``timetaggerrpc``, module ``TimeTaggerRPC``) does
two things of its own on top of plain Pyro5:

- At connect it calls ``enum_definitions()`` on ``PYRO:TimeTaggerRPC@host:port`` and
  builds each enum with the functional API, ``getattr(enum, kind)(name, members)``, so
  the answer is ``{name: (kind, ((member, value), ...))}`` with ``kind`` the name of a
  class of the :mod:`enum` module (``"IntEnum"``). :func:`enum_definitions` gives the
  enums of Swabian's library that mean something on this server, with Swabian's names
  and values (Time Tagger 2.16).
- It registers a Pyro5 converter for ``numpy.ndarray`` both ways: an array travels as
  ``{"__class__": "numpy.ndarray", "data": base64 of the NPY file}``, written and read
  with ``allow_pickle=False``. :func:`to_wire` turns results into that form (numpy
  scalars and enums become plain numbers), and :func:`decode_npy` reads arrays a client
  sends, refusing object arrays and headers that claim more data than came.
"""

from __future__ import annotations

import base64
import binascii
import enum
import io
import math

import numpy as np

from trainstamp.tagger.engine import (
    ChannelEdge,
    CoincidenceTimestamp,
    GatedChannelInitial,
    TagType,
)

#: The class name the client's converter is registered under.
NDARRAY_CLASS = "numpy.ndarray"


class Resolution(enum.IntEnum):
    """Swabian's input resolution modes for ``createTimeTagger`` (only Standard here)."""

    Standard = 0
    HighResA = 1
    HighResB = 2
    HighResC = 3


#: The enums served: the arguments the measurements, virtual channels and
#: ``createTimeTagger``/``getChannelList`` take, and the tag types of the stream.
SERVED_ENUMS: tuple[type[enum.IntEnum], ...] = (
    ChannelEdge, CoincidenceTimestamp, GatedChannelInitial, Resolution, TagType)


def enum_definitions() -> dict[str, tuple[str, tuple[tuple[str, int], ...]]]:
    """``{name: ("IntEnum", ((member, value), ...))}`` for every served enum."""
    return {cls.__name__: ("IntEnum", tuple((m.name, int(m.value)) for m in cls))
            for cls in SERVED_ENUMS}


def encode_npy(arr: np.ndarray) -> dict:
    """One array in the client's form: NPY bytes (no pickle), base64 text."""
    buf = io.BytesIO()
    np.save(buf, np.asarray(arr), allow_pickle=False)
    return {"__class__": NDARRAY_CLASS, "data": base64.b64encode(buf.getvalue()).decode("ascii")}


def to_wire(value: object) -> object:
    """A result as the client expects it: arrays as NPY dicts, the rest plain Python."""
    if isinstance(value, np.ndarray):
        return encode_npy(value)
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, tuple | list):
        return [to_wire(v) for v in value]
    if isinstance(value, dict):
        return {str(k) if not isinstance(k, str | int) else k: to_wire(v)
                for k, v in value.items()}
    if isinstance(value, int) and not isinstance(value, bool):
        return int(value)  # IntEnum and friends travel as plain ints
    return value


def decode_npy(classname: str, data: dict) -> np.ndarray:
    """An array a client sent in the NPY-over-base64 form (Pyro5 dict-to-class hook).

    ``allow_pickle=False``, so object arrays are refused; the header's shape is checked
    against the bytes that came before anything is allocated (a 100-byte message
    claiming 2**40 elements would otherwise reserve them).
    """
    if classname != NDARRAY_CLASS or not isinstance(data, dict):
        raise ValueError(f"not a {NDARRAY_CLASS}: {classname!r}")
    text = data.get("data")
    if not isinstance(text, str | bytes):
        raise ValueError(f"{NDARRAY_CLASS} data must be base64 text, got {type(text).__name__}")
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"{NDARRAY_CLASS} data is not valid base64") from None
    buf = io.BytesIO(raw)
    fmt = np.lib.format
    try:
        version = fmt.read_magic(buf)
        if version == (1, 0):
            shape, _, dtype = fmt.read_array_header_1_0(buf)
        elif version == (2, 0):
            shape, _, dtype = fmt.read_array_header_2_0(buf)
        else:
            raise ValueError(f"unsupported NPY version {version}")
    except Exception as exc:  # numpy's header parser also raises tokenize.TokenError
        raise ValueError(f"{NDARRAY_CLASS} data is not an NPY array: {exc}") from None
    if dtype.hasobject:
        raise ValueError("object arrays are refused (they would need pickle)")
    need = math.prod(shape) * dtype.itemsize
    have = len(raw) - buf.tell()
    if need != have:
        raise ValueError(f"NPY header claims {need} bytes of data, the message has {have}")
    buf.seek(0)
    try:
        return np.load(buf, allow_pickle=False)
    except Exception as exc:
        raise ValueError(f"{NDARRAY_CLASS} data is not an NPY array: {exc}") from None
