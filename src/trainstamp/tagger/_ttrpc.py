"""``PYRO:TimeTaggerRPC@host:port``: the root object of Swabian's ``timetaggerrpc`` client.

The ``timetaggerrpc`` package (``from TimeTaggerRPC import client``) connects to an
object named ``TimeTaggerRPC``, builds Swabian's enums from its ``enum_definitions()``
and expects numpy arrays in NPY-over-base64 form (:mod:`trainstamp.tagger._ttrpcwire`).
:class:`LibraryRPC` is that object, served by the same daemon beside ``TimeTagger``:

- ``enum_definitions()``, ``scanTimeTagger()``, ``createTimeTagger(serial="",
  resolution=Resolution.Standard)``, ``freeTimeTagger(tagger)``, ``getVersion()``;
- one constructor per measurement and virtual channel trainstamp has (the same as on
  ``TimeTagger``) and ``SynchronizedMeasurements``, whose ``getTagger()`` proxy the
  constructors accept.

It is a thin face: every object is made and booked by the :class:`TaggerRPC` it wraps,
so ownership by token, the tagger/object/memory budgets, tombstones and freeing on
disconnect are exactly those of ``TimeTagger`` (see :mod:`trainstamp.tagger._pyro`).
The only difference is the results: the objects made here (and the objects they
return) send numpy arrays as NPY dicts, where ``TimeTagger``'s send lists.
"""

from __future__ import annotations

import Pyro5.api

from trainstamp.tagger._adapters import builtin_errors
from trainstamp.tagger._pyro import TaggerRPC, add_constructors
from trainstamp.tagger._ttrpcwire import Resolution, enum_definitions
from trainstamp.tagger.engine._tags import as_int

#: The Pyro5 object ID the client connects to.
OBJECT_ID = "TimeTaggerRPC"


class LibraryRPC:
    """Remote Time Tagger library for the ``timetaggerrpc`` client (see module doc)."""

    def __init__(self, core: TaggerRPC) -> None:
        self.core = core
        self._enums = enum_definitions()

    @Pyro5.api.expose
    def enum_definitions(self) -> dict:
        """Swabian's enums, as the client rebuilds them: ``{name: (kind, members)}``."""
        return self._enums

    @Pyro5.api.expose
    @builtin_errors
    def scanTimeTagger(self) -> list[str]:
        return self.core.scanTimeTagger()

    @Pyro5.api.expose
    @builtin_errors
    def createTimeTagger(self, serial: object = "", resolution: object = 0):
        """A tagger for this client; only ``Resolution.Standard`` exists here."""
        res = as_int(resolution, "resolution")
        if res != Resolution.Standard:
            raise ValueError(f"resolution {resolution!r} is not available: this tagger has "
                             f"Standard ({int(Resolution.Standard)}) resolution only")
        return self.core.create_tagger(serial, numpy=True)

    @Pyro5.api.expose
    @builtin_errors
    def freeTimeTagger(self, tagger: object) -> bool:
        return self.core.freeTimeTagger(tagger)

    @Pyro5.api.expose
    def getVersion(self) -> str:
        return self.core.getVersion()


add_constructors(LibraryRPC, lambda self, name, tagger, args, kwargs:
                 self.core.create_object(name, tagger, args, kwargs, numpy=True))
