"""Client-side numpy fast path for the Pyro5 tagger server.

Plain clients get lists, which is what the Swabian tutorial's client expects, but a
1,000,000-bin histogram as a serpent list costs seconds. :func:`fast_path` wraps a
measurement proxy: array getters (``getData``, ``getIndex``, ``getDataNormalized``,
...) go through the server's ``fetchArray`` and come back as numpy arrays built from
raw bytes, over a separate connection that uses Pyro5's ``marshal`` serializer (which
sends bytes as they are; serpent would base64 them). Everything else is forwarded to
the original proxy unchanged.

    hist = TimeTagger.Correlation(tagger, 1, 2, binwidth=2, n_bins=2000)
    fast = fast_path(hist)
    y = fast.getData()          # numpy int32 array
"""

from __future__ import annotations

import base64

import numpy as np
import Pyro5.api

#: Methods that return arrays and are fetched as raw bytes.
ARRAY_METHODS = frozenset({"getData", "getIndex", "getDataNormalized", "getCountsTotal",
                           "getDataTotalCounts", "getBinWidths", "getBinTrainIds"})


def decode_array(envelope: dict) -> object:
    """Rebuild what ``fetchArray`` sent: a numpy array, or the plain value."""
    if not envelope.get("ndarray"):
        return envelope.get("value")
    data = envelope["data"]
    if isinstance(data, dict):  # serpent's form of bytes
        data = base64.b64decode(data["data"])
    arr = np.frombuffer(data, dtype=np.dtype(envelope["dtype"]))
    return arr.reshape(envelope["shape"])


class FastPath:
    """A measurement proxy whose array getters return numpy arrays (see module doc)."""

    def __init__(self, proxy: Pyro5.api.Proxy, serializer: str = "marshal") -> None:
        self._proxy = proxy
        self._fast = Pyro5.api.Proxy(proxy._pyroUri)
        self._fast._pyroSerializer = serializer
        self._fast._pyroHandshake = proxy._pyroHandshake  # the owner's token

    def __getattr__(self, name: str):
        if name in ARRAY_METHODS:
            def call(*args):
                return decode_array(self._fast.fetchArray(name, *args))

            call.__name__ = name
            return call
        return getattr(self._proxy, name)

    def close(self) -> None:
        self._fast._pyroRelease()

    def __enter__(self) -> FastPath:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def fast_path(proxy: Pyro5.api.Proxy, serializer: str = "marshal") -> FastPath:
    """Wrap a measurement proxy so its array getters return numpy arrays."""
    return FastPath(proxy, serializer)
