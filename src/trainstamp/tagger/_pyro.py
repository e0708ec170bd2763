"""The Pyro5 face of the tagger server: Swabian's API, one engine, many clients.

:class:`TaggerRPC` is ``TimeTagger`` (the object a client reaches at
``PYRO:TimeTagger@host:23000``) and keeps the books for it and for the
``TimeTaggerRPC`` object of :mod:`trainstamp.tagger._ttrpc` (the same API with numpy
arrays, for the ``timetaggerrpc`` package's client). ``TimeTagger`` offers
``scanTimeTagger``, ``createTimeTagger``, ``freeTimeTagger`` and one factory per
measurement and virtual channel (``Correlation(tagger, 1, 2, binwidth=..., n_bins=...)``,
``DelayedChannel(...)``, ...). Factories return adapters registered with the daemon,
which Pyro turns into proxies on the client.

Adapters (:mod:`trainstamp.tagger._adapters`) are generated from the engine classes;
they return lists, so the Swabian tutorial's client runs unchanged, and offer
``fetchArray`` for the numpy fast path (:func:`trainstamp.tagger.fast_path`).

Resources are owned by the *client*: the token its first connection was given, which
every proxy handed back carries (see :mod:`trainstamp.tagger._pyrodaemon`). Every
call on an object checks the caller's token; another client's call is refused with
``PermissionError``, whatever object ID it has learnt. When the client's first
connection closes, its taggers, measurements and virtual channels are freed. Each
``createTimeTagger`` makes its own engine tagger fed from the shared stream, so
freeing one client's tagger never touches another client's. Hardware settings (test
signal, trigger level, ...) are global to the instrument, as on a real tagger, and are
forwarded over the tag link.

Budgets: at most :data:`MAX_TAGGERS` taggers on the server, :data:`MAX_OBJECTS_PER_CLIENT`
live objects per client, and :data:`MAX_CLIENT_BYTES` of measurement arrays per client
and :data:`MAX_TOTAL_BYTES` over all clients (measured on the object just made, which
is freed again if it breaks a budget; objects are made one at a time, so the transient
is one object's worth, at most the engine's MAX_BINS).

Errors reach the client as builtin exceptions (ValueError for bad arguments,
RuntimeError for freed objects, PermissionError for another client's objects), because
Pyro's serializers only rebuild builtin exception types.
"""

from __future__ import annotations

import collections
import logging
import threading
from collections.abc import Callable
from typing import Any

import numpy as np
import Pyro5.api
import Pyro5.client
import Pyro5.server

from trainstamp.tagger._adapters import (
    Adapter,
    TaggerAdapter,
    adapter_class,
    builtin_errors,
    client_key,
    engine_module,
)

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
#: Freed objects kept registered (to answer "has been freed") before being forgotten.
MAX_TOMBSTONES = 4096
#: Bytes of measurement arrays one client, and all clients together, may hold.
MAX_CLIENT_BYTES = 256 << 20
MAX_TOTAL_BYTES = 1 << 30


def footprint(obj: object) -> int:
    """Bytes of the numpy arrays an engine object holds (and its direct parts)."""
    total, seen = 0, set()

    def walk(o: object, depth: int) -> None:
        nonlocal total
        for v in getattr(o, "__dict__", {}).values():
            if isinstance(v, np.ndarray):
                if id(v) not in seen:
                    seen.add(id(v))
                    total += v.nbytes
            elif depth < 1 and hasattr(v, "__dict__") and not isinstance(v, type):
                walk(v, depth + 1)

    walk(obj, 0)
    return total


class TaggerRPC:
    """Remote ``TimeTagger`` module: factories and the tagger life cycle.

    Also the bookkeeping (owners, budgets, tombstones) of every object on the daemon,
    whichever public object made it.
    """

    def __init__(self, service, settings) -> None:
        self.service = service
        self.settings = settings
        self._lock = threading.RLock()
        self._objects: dict[str, Adapter] = {}
        self._tombstones: collections.deque[Adapter] = collections.deque()
        self._by_client: dict[int | None, list[Adapter]] = {}
        self._daemon: Pyro5.server.Daemon | None = None
        self._create_lock = threading.Lock()  # one object made at a time: bounded transient
        self._bytes: dict[object, int] = {}  # owner -> bytes held
        self.max_client_bytes = MAX_CLIENT_BYTES
        self.max_total_bytes = MAX_TOTAL_BYTES

    def attach(self, daemon: Pyro5.server.Daemon) -> None:
        self._daemon = daemon

    # -- bookkeeping -------------------------------------------------------------------
    def _check_budget(self, tagger: bool = False) -> None:
        key = client_key()
        with self._lock:
            mine = sum(1 for a in self._by_client.get(key, []) if not a._freed)
            if mine >= MAX_OBJECTS_PER_CLIENT:
                raise ValueError(f"this client connection already holds {mine} objects "
                                 f"(limit {MAX_OBJECTS_PER_CLIENT}); free some first")
        if tagger and self.taggers() >= MAX_TAGGERS:
            raise ValueError(f"the server already runs {MAX_TAGGERS} taggers "
                             f"(limit {MAX_TAGGERS}); free one first")

    def _check_bytes(self, owner: object, obj: object) -> int:
        """Refuse (and free) ``obj`` if it breaks the client's or the server's budget."""
        size = footprint(obj)
        with self._lock:
            mine = self._bytes.get(owner, 0)
            total = sum(self._bytes.values())
            ok = mine + size <= self.max_client_bytes and total + size <= self.max_total_bytes
            if ok:
                self._bytes[owner] = mine + size
        if not ok:
            free = getattr(obj, "free", None)
            if free is not None:
                free()
            raise ValueError(
                f"this object would hold {size / 2**20:.1f} MiB; this client holds "
                f"{mine / 2**20:.1f} MiB (limit {self.max_client_bytes / 2**20:.0f} MiB) and "
                f"the server {total / 2**20:.1f} MiB (limit "
                f"{self.max_total_bytes / 2**20:.0f} MiB); "
                "free something or ask for fewer bins")
        return size

    def _register(self, adapter: Adapter, size: int = 0):
        """Register ``adapter``; return a proxy that carries its owner's token."""
        from trainstamp.tagger._pyrodaemon import token_proxy

        assert self._daemon is not None
        adapter._bytes = size
        self._daemon.register(adapter)
        with self._lock:
            self._objects[adapter._pyroId] = adapter
            self._by_client.setdefault(adapter._owner, []).append(adapter)
        return token_proxy(self._daemon, adapter, adapter._owner
                           if isinstance(adapter._owner, str) else None)

    def _uncount(self, adapters) -> None:
        with self._lock:
            for a in adapters:
                size, a._bytes = getattr(a, "_bytes", 0), 0
                if size and a._owner in self._bytes:
                    self._bytes[a._owner] -= size
                    if self._bytes[a._owner] <= 0:
                        del self._bytes[a._owner]

    def owners(self) -> set:
        """Clients that hold live objects (their connections are never parked)."""
        with self._lock:
            return {a._owner for a in self._objects.values() if not a._freed}

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
        adapter = adapter_class(type(value))(self, value, parent._owner, tagger,
                                             numpy=parent._numpy)
        if tagger is not None:
            tagger._children.append(adapter)
        return self._register(adapter)

    def check_owner(self, adapter: Adapter) -> None:
        if adapter._owner != client_key():
            raise PermissionError(f"this {adapter.kind} belongs to another client connection; "
                                  "only its creator can free it")

    def release(self, adapter: Adapter) -> None:
        """Free ``adapter`` (and a tagger's children); keep tombstones, boundedly.

        Freed objects stay registered so that later calls get a clear "has been freed"
        error; beyond MAX_TOMBSTONES the oldest are forgotten (Pyro then answers
        "unknown object").
        """
        freed = adapter._release()
        self._uncount(freed)
        with self._lock:
            self._tombstones.extend(freed)
            evicted = []
            while len(self._tombstones) > MAX_TOMBSTONES:
                evicted.append(self._tombstones.popleft())
        for old in evicted:
            self._forget(old)

    def _forget(self, adapter: Adapter) -> None:
        with self._lock:
            self._objects.pop(getattr(adapter, "_pyroId", ""), None)
            owned = self._by_client.get(adapter._owner)
            if owned is not None and adapter in owned:
                owned.remove(adapter)
        if self._daemon is not None:
            try:
                self._daemon.unregister(adapter)
            except Exception:  # already gone
                log.debug("unregister", exc_info=True)

    def release_client(self, key: object) -> None:
        """Free everything a closed client connection created, and forget it."""
        with self._lock:
            owned = self._by_client.pop(key, [])
            for adapter in owned:
                self._objects.pop(getattr(adapter, "_pyroId", ""), None)
            if owned:
                self._tombstones = collections.deque(
                    a for a in self._tombstones if a._owner != key)
        for adapter in owned:
            adapter._release()
        self._uncount(owned)
        for adapter in owned:
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
    @builtin_errors
    def scanTimeTagger(self) -> list[str]:
        """Serial numbers of the taggers this server can reach (one, when connected)."""
        return [self.settings.serial()] if self.settings.connected() else []

    @Pyro5.api.expose
    @builtin_errors
    def createTimeTagger(self, serial: object = "", *args: object, **kwargs: object):
        """A tagger for this client, fed by the shared tag stream."""
        return self.create_tagger(serial)

    def create_tagger(self, serial: object, numpy: bool = False):
        """A tagger for the calling client; ``numpy``: its results in NPY form."""
        if not isinstance(serial, str):
            raise ValueError(f"serial must be a string, got {serial!r}")
        self._check_budget(tagger=True)
        self.settings.wait_connected()
        if serial and serial != self.settings.serial():
            raise ValueError(f"no tagger with serial {serial!r}; "
                             f"available: {self.scanTimeTagger()}")
        engine_tagger = self.settings.make_engine_tagger()
        adapter = adapter_class(type(engine_tagger), TaggerAdapter)(
            self, engine_tagger, client_key(), numpy=numpy)
        self.service.add_sink(engine_tagger)
        return self._register(adapter)

    @Pyro5.api.expose
    @builtin_errors
    def freeTimeTagger(self, tagger: object) -> bool:
        """Free one of *your* taggers with its measurements; others are untouched."""
        adapter = self.lookup(tagger)
        if not isinstance(adapter, TaggerAdapter):
            raise ValueError(f"expected a tagger, got a {adapter.kind}")
        self.check_owner(adapter)
        self.release(adapter)
        return True

    @Pyro5.api.expose
    def getVersion(self) -> str:
        from importlib.metadata import version

        return f"trainstamp {version('trainstamp')}"

    def create_object(self, name: str, tagger: object, args: tuple, kwargs: dict,
                      numpy: bool = False) -> Adapter:
        """Make engine class ``name`` on ``tagger`` for the calling client, within budget."""
        parent = self.lookup(tagger)
        root = parent if isinstance(parent, TaggerAdapter) else parent._parent
        if root is None:
            raise ValueError(f"{name} needs a tagger, got a {parent.kind}")
        self._check_budget()
        engine_cls = getattr(engine_module(), name)
        args = tuple(self.unwrap(a) for a in args)
        kwargs = {k: self.unwrap(v) for k, v in kwargs.items()}
        owner = client_key()
        with self._create_lock:
            obj = engine_cls(parent._target(), *args, **kwargs)
            size = self._check_bytes(owner, obj)
        adapter = adapter_class(engine_cls)(self, obj, owner, root, numpy=numpy)
        root._children.append(adapter)
        return self._register(adapter, size)


#: The engine constructors every RPC object serves, by their Swabian names.
CONSTRUCTORS = MEASUREMENTS + VIRTUAL_CHANNELS + ("SynchronizedMeasurements",)


def add_constructors(cls: type, make: Callable[[Any, str, object, tuple, dict], object]) -> None:
    """Give ``cls`` one exposed Pyro5 method per name in :data:`CONSTRUCTORS`, each
    calling ``make(self, name, tagger, args, kwargs)``."""

    def constructor(name: str) -> Callable:
        def create(self, tagger: object, *args: object, **kwargs: object):
            return make(self, name, tagger, args, kwargs)

        create.__name__ = name
        create.__doc__ = f"Create a {name} on ``tagger`` with Swabian's arguments."
        wrapped = builtin_errors(create)
        wrapped._pyroExposed = True
        return wrapped

    for name in CONSTRUCTORS:
        setattr(cls, name, constructor(name))


add_constructors(TaggerRPC, lambda self, name, tagger, args, kwargs:
                 self.create_object(name, tagger, args, kwargs))


from trainstamp.tagger._pyrodaemon import (  # noqa: E402  (re-exported for the CLI)
    MAX_MESSAGE_SIZE,
    RpcDaemon,
    start_daemon,
)

__all__ = ["MAX_MESSAGE_SIZE", "RpcDaemon", "TaggerRPC", "footprint", "start_daemon"]
