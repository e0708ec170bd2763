"""The Pyro5 face of the tagger server: Swabian's API, one engine, many clients.

``TimeTagger`` (the object a client reaches at ``PYRO:TimeTagger@host:23000``) offers
``scanTimeTagger``, ``createTimeTagger``, ``freeTimeTagger`` and one factory per
measurement and virtual channel (``Correlation(tagger, 1, 2, binwidth=..., n_bins=...)``,
``DelayedChannel(...)``, ...). Factories return adapters registered with the daemon,
which Pyro turns into proxies on the client.

Adapters are generated from the engine classes: every public method of, say,
:class:`~trainstamp.tagger.engine.Correlation` becomes a remote method that converts
numpy results into lists (serpent, the default serializer, cannot send arrays), so the
Swabian tutorial's client runs unchanged. ``fetchArray(name, *args)`` is the opt-in
fast path: it returns an array as raw bytes + dtype + shape; use it through
:func:`trainstamp.tagger.fast_path`.

Resources are owned by the client *connection* that created them (Pyro's
``current_context.client``). When that connection closes (``Daemon.clientDisconnect``)
its taggers, measurements and virtual channels are freed. ``freeTimeTagger`` refuses
taggers created by another connection; an object's own ``free()`` needs its proxy,
whose URI carries an unguessable id that only its creator was given. Each ``createTimeTagger`` makes its own
engine tagger fed from the shared stream, so freeing one client's tagger never touches
another client's. Hardware settings (test signal, trigger level, ...) are global to
the instrument, as on a real tagger, and are forwarded over the tag link.

Errors reach the client as builtin exceptions (ValueError for bad arguments,
RuntimeError for freed objects, PermissionError for another client's objects), because
Pyro's serializers only rebuild builtin exception types.
"""

from __future__ import annotations

import functools
import logging
import select
import socket
import threading
import time
from collections.abc import Callable

import numpy as np
import Pyro5.api
import Pyro5.client
import Pyro5.server
from Pyro5.callcontext import current_context

log = logging.getLogger(__name__)

MEASUREMENTS = ("Correlation", "Histogram", "StartStop", "Countrate", "Counter",
                "CountBetweenMarkers")
VIRTUAL_CHANNELS = ("DelayedChannel", "GatedChannel", "Coincidence", "Coincidences",
                    "Combiner")
#: Live taggers on one server, and live objects of one client connection: beyond these,
#: creating more is refused (each tagger processes the whole stream; each object holds
#: memory up to the engine's MAX_BINS).
MAX_TAGGERS = 32
MAX_OBJECTS_PER_CLIENT = 256
#: Largest Pyro5 message the server accepts or sends (Pyro's default is 1 GiB).
MAX_MESSAGE_SIZE = 256 << 20
#: Engine methods never served: feeding tags is the stream's job, freeing has its own rules.
_HIDDEN = {"process", "free", "isFreed"}
#: Tagger methods forwarded to the instrument over the tag link: name -> (op, kind).
HARDWARE_SETTINGS = {
    "TestSignal": ("set_test_signal", "test_signal"),
    "TriggerLevel": ("set_trigger_level", "trigger_level"),
    "InputDelay": ("set_input_delay", "input_delay"),
    "Deadtime": ("set_dead_time", "dead_time"),
    "EventDivider": ("set_event_divider", "event_divider"),
}


def _engine():
    from trainstamp.tagger import engine

    return engine


def _client_key() -> int | None:
    conn = current_context.client
    return None if conn is None else id(conn)


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


def _builtin_errors(fn: Callable) -> Callable:
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

    def __init__(self, rpc: TimeTaggerRPC, target: object, owner: int | None,
                 tagger: TaggerAdapter | None) -> None:
        self._rpc = rpc
        self._target_obj = target
        self._owner = owner
        self._parent = tagger
        self._freed = False

    def _target(self) -> object:
        if self._freed or (self._parent is not None and self._parent._freed):
            raise RuntimeError(f"this {self.kind} has been freed")
        return self._target_obj

    def _call(self, name: str, args: tuple, kwargs: dict) -> object:
        args = tuple(self._rpc.unwrap(a) for a in args)
        kwargs = {k: self._rpc.unwrap(v) for k, v in kwargs.items()}
        return getattr(self._target(), name)(*args, **kwargs)

    def _release(self) -> None:
        if self._freed:
            return
        self._freed = True
        free = getattr(self._target_obj, "free", None)
        if free is not None:
            try:
                free()
            except Exception:  # already detached with its tagger
                log.debug("freeing %s", self.kind, exc_info=True)

    @Pyro5.api.expose
    @_builtin_errors
    def free(self) -> bool:
        """Free this measurement or virtual channel.

        Holding this object's proxy (its unguessable URI) is what allows it: the
        proxy has its own connection, so the creator's connection cannot be required.
        """
        self._rpc.release(self)
        return True

    @Pyro5.api.expose
    @_builtin_errors
    def fetchArray(self, method: str, *args: object) -> dict:
        """Fast path: call ``method`` and return its array as bytes + dtype + shape."""
        if not isinstance(method, str) or method not in self.methods:
            raise ValueError(f"{method!r} is not a method of {self.kind}; "
                             f"known: {sorted(self.methods)}")
        return encode_array(self._call(method, args, {}))

    @Pyro5.api.expose
    @_builtin_errors
    def waitUntilFinished(self, timeout: object = -1) -> bool:
        """Swabian's wait (ms, negative = forever), abandoned if the client goes away."""
        if isinstance(timeout, bool) or not isinstance(timeout, int | float):
            raise ValueError(f"timeout must be a number of ms, got {timeout!r}")
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
        return to_plain(self._rpc.wrap(self._call(name, args, kwargs), self))

    method.__name__ = name
    wrapped = _builtin_errors(method)
    wrapped._pyroExposed = True
    return wrapped


_ADAPTER_CLASSES: dict[type, type] = {}
_ADAPTER_LOCK = threading.Lock()


def adapter_class(engine_cls: type, base: type = Adapter) -> type:
    """Generate (once) an exposed adapter class forwarding ``engine_cls``'s public methods."""
    with _ADAPTER_LOCK:
        if (engine_cls, base) in _ADAPTER_CLASSES:
            return _ADAPTER_CLASSES[(engine_cls, base)]
        names = {n for n in dir(engine_cls)
                 if not n.startswith("_") and callable(getattr(engine_cls, n))} - _HIDDEN
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

    def __init__(self, rpc, target, owner, tagger=None) -> None:
        super().__init__(rpc, target, owner, None)
        self._children: list[Adapter] = []

    def _release(self) -> None:
        if self._freed:
            return
        for child in self._children:
            child._release()
        self._rpc.service.remove_sink(self._target_obj)
        super()._release()

    def _hw(self, op: str, *args: object) -> object:
        self._target()  # refuse on a freed tagger
        return self._rpc.settings.apply(op, *args)

    @Pyro5.api.expose
    @_builtin_errors
    def getSerial(self) -> str:
        self._target()
        return self._rpc.settings.serial()

    @Pyro5.api.expose
    @_builtin_errors
    def getModel(self) -> str:
        self._target()
        return self._rpc.settings.model()

    @Pyro5.api.expose
    @_builtin_errors
    def setTestSignal(self, channels: object, state: object = True) -> None:
        chans = channels if isinstance(channels, list | tuple) else [channels]
        if not isinstance(state, bool | int):
            raise ValueError(f"test signal state must be a bool, got {state!r}")
        for ch in chans:
            self._hw("set_test_signal", ch, bool(state))

    @Pyro5.api.expose
    @_builtin_errors
    def getTestSignal(self, channel: object) -> bool:
        self._target()
        return bool(self._rpc.settings.get(channel, "test_signal"))

    @Pyro5.api.expose
    @_builtin_errors
    def setTriggerLevel(self, channel: object, voltage: object) -> float:
        return self._hw("set_trigger_level", channel, voltage)

    @Pyro5.api.expose
    @_builtin_errors
    def getTriggerLevel(self, channel: object) -> float:
        self._target()
        return self._rpc.settings.get(channel, "trigger_level")

    @Pyro5.api.expose
    @_builtin_errors
    def setInputDelay(self, channel: object, delay: object) -> int:
        return self._hw("set_input_delay", channel, delay)

    @Pyro5.api.expose
    @_builtin_errors
    def getInputDelay(self, channel: object) -> int:
        self._target()
        return self._rpc.settings.get(channel, "input_delay")

    @Pyro5.api.expose
    @_builtin_errors
    def setDeadtime(self, channel: object, deadtime: object) -> int:
        return self._hw("set_dead_time", channel, deadtime)

    @Pyro5.api.expose
    @_builtin_errors
    def getDeadtime(self, channel: object) -> int:
        self._target()
        return self._rpc.settings.get(channel, "dead_time")

    @Pyro5.api.expose
    @_builtin_errors
    def setEventDivider(self, channel: object, divider: object) -> int:
        return self._hw("set_event_divider", channel, divider)

    @Pyro5.api.expose
    @_builtin_errors
    def getEventDivider(self, channel: object) -> int:
        self._target()
        return self._rpc.settings.get(channel, "event_divider")

    @Pyro5.api.expose
    @_builtin_errors
    def setSource(self, channel: object, source: object) -> dict:
        """Emulator only: set the signal source of an input (see docs/tagger.md)."""
        return self._hw("set_source", channel, source)

    @Pyro5.api.expose
    @_builtin_errors
    def getConfiguration(self) -> dict:
        """The instrument's description and every channel's settings."""
        self._target()
        return to_plain(self._rpc.settings.describe())

    @Pyro5.api.expose
    @_builtin_errors
    def sync(self) -> None:
        """Return once every earlier setting has reached the instrument."""
        self._hw("describe")


class RpcDaemon(Pyro5.server.Daemon):
    """A Pyro daemon that tells the RPC object when a client connection closes."""

    rpc: TimeTaggerRPC | None = None

    def clientDisconnect(self, conn) -> None:
        if self.rpc is not None:
            self.rpc.release_client(id(conn))


class TimeTaggerRPC:
    """Remote ``TimeTagger`` module: factories and the tagger life cycle."""

    def __init__(self, service, settings) -> None:
        self.service = service
        self.settings = settings
        self._lock = threading.RLock()
        self._objects: dict[str, Adapter] = {}
        self._by_client: dict[int | None, list[Adapter]] = {}
        self._daemon: Pyro5.server.Daemon | None = None

    def attach(self, daemon: Pyro5.server.Daemon) -> None:
        self._daemon = daemon

    # -- bookkeeping -------------------------------------------------------------------
    def _check_budget(self, tagger: bool = False) -> None:
        key = _client_key()
        with self._lock:
            mine = sum(1 for a in self._by_client.get(key, []) if not a._freed)
            if mine >= MAX_OBJECTS_PER_CLIENT:
                raise ValueError(f"this client connection already holds {mine} objects "
                                 f"(limit {MAX_OBJECTS_PER_CLIENT}); free some first")
        if tagger and self.taggers() >= MAX_TAGGERS:
            raise ValueError(f"the server already runs {MAX_TAGGERS} taggers "
                             f"(limit {MAX_TAGGERS}); free one first")

    def _register(self, adapter: Adapter) -> Adapter:
        assert self._daemon is not None
        self._daemon.register(adapter)
        with self._lock:
            self._objects[adapter._pyroId] = adapter
            self._by_client.setdefault(adapter._owner, []).append(adapter)
        return adapter

    def lookup(self, ref: object) -> Adapter:
        if isinstance(ref, Pyro5.client.Proxy):
            key = ref._pyroUri.object
        elif isinstance(ref, Adapter):
            return ref
        else:
            raise ValueError(f"expected a proxy of an object of this server, got {ref!r}")
        with self._lock:
            adapter = self._objects.get(key)
        if adapter is None:
            raise ValueError(f"unknown or released object {key!r}")
        return adapter

    def unwrap(self, value: object) -> object:
        """Proxies of our own objects become the engine objects behind them."""
        if isinstance(value, Pyro5.client.Proxy):
            return self.lookup(value)._target()
        if isinstance(value, list):
            return [self.unwrap(v) for v in value]
        return value

    def wrap(self, value: object, parent: Adapter) -> object:
        """Engine objects returned by a method become new adapters of the same owner."""
        if isinstance(value, int | float | str | bool | type(None) | np.ndarray | np.generic
                      | list | tuple | dict):
            return value
        tagger = parent if isinstance(parent, TaggerAdapter) else parent._parent
        adapter = adapter_class(type(value))(self, value, parent._owner, tagger)
        if tagger is not None:
            tagger._children.append(adapter)
        return self._register(adapter)

    def check_owner(self, adapter: Adapter) -> None:
        if adapter._owner != _client_key():
            raise PermissionError(f"this {adapter.kind} belongs to another client connection; "
                                  "only its creator can free it")

    def release(self, adapter: Adapter) -> None:
        adapter._release()

    def release_client(self, key: int) -> None:
        """Free everything a closed client connection created, and forget it."""
        with self._lock:
            owned = self._by_client.pop(key, [])
            for adapter in owned:
                self._objects.pop(getattr(adapter, "_pyroId", ""), None)
        for adapter in owned:
            adapter._release()
            if self._daemon is not None:
                try:
                    self._daemon.unregister(adapter)
                except Exception:  # already gone
                    log.debug("unregister", exc_info=True)
        if owned:
            log.info("client connection closed: freed %d objects", len(owned))

    def client_objects(self) -> int:
        with self._lock:
            return sum(1 for a in self._objects.values() if not a._freed)

    def taggers(self) -> int:
        with self._lock:
            return sum(1 for a in self._objects.values()
                       if isinstance(a, TaggerAdapter) and not a._freed)

    # -- the Swabian module functions --------------------------------------------------
    @Pyro5.api.expose
    @_builtin_errors
    def scanTimeTagger(self) -> list[str]:
        """Serial numbers of the taggers this server can reach (one, when connected)."""
        return [self.settings.serial()] if self.settings.connected() else []

    @Pyro5.api.expose
    @_builtin_errors
    def createTimeTagger(self, serial: object = "", *args: object, **kwargs: object):
        """A tagger for this client, fed by the shared tag stream."""
        if not isinstance(serial, str):
            raise ValueError(f"serial must be a string, got {serial!r}")
        self._check_budget(tagger=True)
        self.settings.wait_connected()
        if serial and serial != self.settings.serial():
            raise ValueError(f"no tagger with serial {serial!r}; "
                             f"available: {self.scanTimeTagger()}")
        engine_tagger = self.settings.make_engine_tagger()
        adapter = adapter_class(type(engine_tagger), TaggerAdapter)(
            self, engine_tagger, _client_key())
        self.service.add_sink(engine_tagger)
        return self._register(adapter)

    @Pyro5.api.expose
    @_builtin_errors
    def freeTimeTagger(self, tagger: object) -> bool:
        """Free one of *your* taggers with its measurements; others are untouched."""
        adapter = self.lookup(tagger)
        if not isinstance(adapter, TaggerAdapter):
            raise ValueError(f"expected a tagger, got a {adapter.kind}")
        self.check_owner(adapter)
        adapter._release()
        return True

    @Pyro5.api.expose
    def getVersion(self) -> str:
        from importlib.metadata import version

        return f"trainstamp {version('trainstamp')}"

    def _create(self, name: str, tagger: object, args: tuple, kwargs: dict) -> Adapter:
        parent = self.lookup(tagger)
        root = parent if isinstance(parent, TaggerAdapter) else parent._parent
        if root is None:
            raise ValueError(f"{name} needs a tagger, got a {parent.kind}")
        self._check_budget()
        engine_cls = getattr(_engine(), name)
        args = tuple(self.unwrap(a) for a in args)
        kwargs = {k: self.unwrap(v) for k, v in kwargs.items()}
        obj = engine_cls(parent._target(), *args, **kwargs)
        adapter = adapter_class(engine_cls)(self, obj, _client_key(), root)
        root._children.append(adapter)
        return self._register(adapter)


def _factory(name: str) -> Callable:
    def create(self, tagger: object, *args: object, **kwargs: object):
        return self._create(name, tagger, args, kwargs)

    create.__name__ = name
    create.__doc__ = f"Create a {name} on ``tagger`` with Swabian's arguments."
    wrapped = _builtin_errors(create)
    wrapped._pyroExposed = True
    return wrapped


for _name in MEASUREMENTS + VIRTUAL_CHANNELS + ("SynchronizedMeasurements",):
    setattr(TimeTaggerRPC, _name, _factory(_name))


def start_daemon(rpc: TimeTaggerRPC, host: str = "127.0.0.1",
                 port: int = 23000) -> tuple[RpcDaemon, str, threading.Thread]:
    """Serve ``rpc`` as ``PYRO:TimeTagger@host:port`` on a daemon thread."""
    Pyro5.config.MAX_MESSAGE_SIZE = MAX_MESSAGE_SIZE  # process-wide: call in the server
    daemon = RpcDaemon(host=host, port=port)
    daemon.rpc = rpc
    rpc.attach(daemon)
    uri = str(daemon.register(rpc, "TimeTagger"))
    thread = threading.Thread(target=daemon.requestLoop, name="pyro-daemon", daemon=True)
    thread.start()
    return daemon, uri, thread
