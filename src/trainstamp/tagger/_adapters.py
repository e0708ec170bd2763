"""Pyro5 adapters: one remote object per engine object, generated from the engine classes.

:func:`adapter_class` builds (once per engine class) an adapter exposing every public
method of the class; results are converted to plain Python (:func:`to_plain`) so the
default serpent serializer can send them, or, for adapters made through the
``TimeTaggerRPC`` object (``numpy=True``), numpy arrays go in that package's NPY form
(:func:`trainstamp.tagger._ttrpcwire.to_wire`); non-builtin exceptions become
RuntimeError so any client can rebuild them. :class:`Adapter` adds ``free``,
``fetchArray`` (the numpy fast path) and a ``waitUntilFinished`` that gives up when the
calling client has gone. :class:`TaggerAdapter` adds the instrument's settings,
forwarded over the tag link. The RPC object (:mod:`trainstamp.tagger._pyro`) owns the
bookkeeping of who created what.
"""

from __future__ import annotations

import functools
import logging
import select
import socket
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import Pyro5.api
from Pyro5.callcontext import current_context

if TYPE_CHECKING:
    from trainstamp.tagger._pyro import TaggerRPC

log = logging.getLogger(__name__)

#: Engine methods never served: feeding tags is the stream's job, freeing has its own rules.
_HIDDEN = {"process", "free", "isFreed"}


def engine_module():
    from trainstamp.tagger import engine

    return engine


def client_key() -> object:
    """The calling client: its token (see _pyrodaemon), or None outside a Pyro call."""
    conn = current_context.client
    if conn is None:
        return None
    token = getattr(conn, "trainstamp_token", None)
    return id(conn) if token is None else token


def client_gone() -> bool:
    """True if the client of the current call has closed its connection."""
    conn = current_context.client
    sock = getattr(conn, "sock", None)
    if sock is None:
        return False
    try:
        readable, _, _ = select.select([sock], [], [], 0)
        return bool(readable) and sock.recv(1, socket.MSG_PEEK) == b""
    except (OSError, ValueError):
        return True


def to_plain(value: object) -> object:
    """numpy and enum values as plain Python, so serpent and friends can send them."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, tuple | list):
        return [to_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k) if not isinstance(k, str | int) else k: to_plain(v)
                for k, v in value.items()}
    if isinstance(value, int) and not isinstance(value, bool):
        return int(value)  # IntEnum and friends travel as plain ints
    return value


def encode_array(value: object) -> dict:
    """The fast-path envelope: raw bytes, dtype and shape (or a plain value)."""
    if isinstance(value, np.ndarray):
        arr = np.ascontiguousarray(value)
        return {"ndarray": True, "dtype": arr.dtype.str, "shape": list(arr.shape),
                "data": arr.tobytes()}
    return {"ndarray": False, "value": to_plain(value)}


def builtin_errors(fn: Callable) -> Callable:
    """Re-raise non-builtin exceptions as RuntimeError so any client can rebuild them."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            if type(exc).__module__ == "builtins" and not isinstance(exc, AttributeError):
                raise
            raise RuntimeError(f"{type(exc).__name__}: {exc}") from None

    return wrapper


class Adapter:
    """Base of the generated adapters: one remote object wrapping one engine object."""

    kind = "object"
    methods: frozenset[str] = frozenset()

    def __init__(self, rpc: TaggerRPC, target: object, owner: int | None,
                 tagger: TaggerAdapter | None, *, numpy: bool = False) -> None:
        self._rpc = rpc
        self._target_obj = target
        self._owner = owner
        self._parent = tagger
        self._freed = False
        self._numpy = numpy  # results as TimeTaggerRPC's NPY dicts instead of lists

    def _check_caller(self) -> None:
        """Every call: only the owning client may use this object."""
        caller = client_key()
        if caller is not None and caller != self._owner:
            raise PermissionError(f"this {self.kind} belongs to another client")

    def _target(self) -> object:
        self._check_caller()
        if self._freed or (self._parent is not None and self._parent._freed):
            raise RuntimeError(f"this {self.kind} has been freed")
        return self._target_obj

    def _call(self, name: str, args: tuple, kwargs: dict) -> object:
        args = tuple(self._rpc.unwrap(a) for a in args)
        kwargs = {k: self._rpc.unwrap(v) for k, v in kwargs.items()}
        return getattr(self._target(), name)(*args, **kwargs)

    def _release(self) -> list[Adapter]:
        """Free the engine object and drop it; return the adapters freed by this call."""
        if self._freed:
            return []
        self._freed = True
        free = getattr(self._target_obj, "free", None)
        if free is not None:
            try:
                free()
            except Exception:  # already detached with its tagger
                log.debug("freeing %s", self.kind, exc_info=True)
        self._target_obj = None  # what stays registered is a small tombstone
        return [self]

    @Pyro5.api.expose
    @builtin_errors
    def free(self) -> bool:
        """Free this measurement or virtual channel.

        Holding this object's proxy (its unguessable URI) is what allows it: the
        proxy has its own connection, which carries its owner's token.
        """
        self._check_caller()
        self._rpc.release(self)
        return True

    @Pyro5.api.expose
    @builtin_errors
    def fetchArray(self, method: str, *args: object) -> dict:
        """Fast path: call ``method`` and return its array as bytes + dtype + shape."""
        if not isinstance(method, str) or method not in self.methods:
            raise ValueError(f"{method!r} is not a method of {self.kind}; "
                             f"known: {sorted(self.methods)}")
        return encode_array(self._call(method, args, {}))

    @Pyro5.api.expose
    @builtin_errors
    def waitUntilFinished(self, timeout: object = -1) -> bool:
        """Swabian's wait (ms, negative = forever), abandoned if the client goes away."""
        if (isinstance(timeout, bool) or not isinstance(timeout, int | float)
                or timeout != timeout or timeout in (float("inf"), float("-inf"))):
            raise ValueError(f"timeout must be a finite number of ms, got {timeout!r}")
        t = int(timeout)
        deadline = None if t < 0 else time.monotonic() + t / 1000.0
        target = self._target()
        while True:
            step = 200 if deadline is None else max(0, min(200, int(
                (deadline - time.monotonic()) * 1000)))
            if target.waitUntilFinished(step):
                return True
            if deadline is not None and time.monotonic() >= deadline:
                return False
            if client_gone() or self._freed:
                return False


def _forwarder(name: str) -> Callable:
    def method(self, *args, **kwargs):
        result = self._rpc.wrap(self._call(name, args, kwargs), self)
        if self._numpy:
            from trainstamp.tagger._ttrpcwire import to_wire

            return to_wire(result)
        return to_plain(result)

    method.__name__ = name
    wrapped = builtin_errors(method)
    wrapped._pyroExposed = True
    return wrapped


_ADAPTER_CLASSES: dict[type, type] = {}
_ADAPTER_LOCK = threading.Lock()


def adapter_class(engine_cls: type, base: type = Adapter) -> type:
    """Generate (once) an exposed adapter class forwarding ``engine_cls``'s public methods.

    A synchronized group's tagger stand-in delegates to the engine tagger, so its
    adapter forwards the tagger's methods (``sync.getTagger().getChannelList()``).
    """
    with _ADAPTER_LOCK:
        if (engine_cls, base) in _ADAPTER_CLASSES:
            return _ADAPTER_CLASSES[(engine_cls, base)]
        from trainstamp.tagger.engine._measurement import _SyncTaggerProxy

        source = engine_module().TimeTaggerVirtual if engine_cls is _SyncTaggerProxy else engine_cls
        names = {n for n in dir(source)
                 if not n.startswith("_") and callable(getattr(source, n))} - _HIDDEN
        ns: dict = {"kind": engine_cls.__name__, "methods": frozenset(names),
                    "__doc__": f"Remote {engine_cls.__name__} (see the engine's docs)."}
        for n in names:
            if n not in base.__dict__ and n not in Adapter.__dict__:
                ns[n] = _forwarder(n)
        cls = type(f"Remote{engine_cls.__name__}", (base,), ns)
        _ADAPTER_CLASSES[(engine_cls, base)] = cls
        return cls


class TaggerAdapter(Adapter):
    """A client's tagger: the engine tagger plus the instrument's settings."""

    kind = "tagger"

    def __init__(self, rpc, target, owner, tagger=None, *, numpy: bool = False) -> None:
        super().__init__(rpc, target, owner, None, numpy=numpy)
        self._children: list[Adapter] = []

    def _release(self) -> list[Adapter]:
        if self._freed:
            return []
        freed = [a for child in self._children for a in child._release()]
        self._children.clear()
        self._rpc.service.remove_sink(self._target_obj)
        return freed + super()._release()

    def _hw(self, op: str, *args: object) -> object:
        self._target()  # refuse on a freed tagger
        return self._rpc.settings.apply(op, *args)

    @Pyro5.api.expose
    @builtin_errors
    def getSerial(self) -> str:
        self._target()
        return self._rpc.settings.serial()

    @Pyro5.api.expose
    @builtin_errors
    def getModel(self) -> str:
        self._target()
        return self._rpc.settings.model()

    @Pyro5.api.expose
    @builtin_errors
    def setTestSignal(self, channels: object, state: object = True) -> None:
        chans = channels if isinstance(channels, list | tuple) else [channels]
        if not isinstance(state, bool | int):
            raise ValueError(f"test signal state must be a bool, got {state!r}")
        for ch in chans:
            self._hw("set_test_signal", ch, bool(state))

    @Pyro5.api.expose
    @builtin_errors
    def getTestSignal(self, channel: object) -> bool:
        self._target()
        return bool(self._rpc.settings.get(channel, "test_signal"))

    @Pyro5.api.expose
    @builtin_errors
    def setTriggerLevel(self, channel: object, voltage: object) -> float:
        return self._hw("set_trigger_level", channel, voltage)

    @Pyro5.api.expose
    @builtin_errors
    def getTriggerLevel(self, channel: object) -> float:
        self._target()
        return self._rpc.settings.get(channel, "trigger_level")

    @Pyro5.api.expose
    @builtin_errors
    def setInputDelay(self, channel: object, delay: object) -> int:
        return self._hw("set_input_delay", channel, delay)

    @Pyro5.api.expose
    @builtin_errors
    def getInputDelay(self, channel: object) -> int:
        self._target()
        return self._rpc.settings.get(channel, "input_delay")

    @Pyro5.api.expose
    @builtin_errors
    def setDeadtime(self, channel: object, deadtime: object) -> int:
        return self._hw("set_dead_time", channel, deadtime)

    @Pyro5.api.expose
    @builtin_errors
    def getDeadtime(self, channel: object) -> int:
        self._target()
        return self._rpc.settings.get(channel, "dead_time")

    @Pyro5.api.expose
    @builtin_errors
    def setEventDivider(self, channel: object, divider: object) -> int:
        return self._hw("set_event_divider", channel, divider)

    @Pyro5.api.expose
    @builtin_errors
    def getEventDivider(self, channel: object) -> int:
        self._target()
        return self._rpc.settings.get(channel, "event_divider")

    @Pyro5.api.expose
    @builtin_errors
    def setSource(self, channel: object, source: object) -> dict:
        """Emulator only: set the signal source of an input (see docs/tagger.md)."""
        return self._hw("set_source", channel, source)

    @Pyro5.api.expose
    @builtin_errors
    def getConfiguration(self) -> dict:
        """The instrument's description and every channel's settings."""
        self._target()
        return to_plain(self._rpc.settings.describe())

    @Pyro5.api.expose
    @builtin_errors
    def sync(self) -> None:
        """Return once every earlier setting has reached the instrument."""
        self._hw("describe")
