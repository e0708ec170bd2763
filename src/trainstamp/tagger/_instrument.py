"""The instrument as the server sees it: identity, channel settings, engine taggers.

:class:`Instrument` sits between the Pyro5 adapters / IOC and the tag link. It keeps a
cache of every channel's settings (from the tagger's hello and from each confirmed
change), forwards changes over the link's control channel, and builds engine taggers
with the instrument's channel list and marker channel. Settings are the instrument's,
shared by every client, like the knobs of a real tagger.
"""

from __future__ import annotations

import threading

from trainstamp.tagger._stream import TagService

#: Longest a settings change waits for the tag stream to reach it (see Instrument.apply).
EFFECT_TIMEOUT_S = 10.0

#: control operation -> settings key it changes
_OP_KEYS = {"set_test_signal": "test_signal", "set_trigger_level": "trigger_level",
            "set_input_delay": "input_delay", "set_dead_time": "dead_time",
            "set_event_divider": "event_divider", "set_source": "source"}


class Instrument:
    """Settings cache and control forwarding for the tagger behind a :class:`TagService`."""

    def __init__(self, service: TagService, connect_timeout: float = 5.0,
                 effect_timeout: float = EFFECT_TIMEOUT_S) -> None:
        self.service = service
        self.connect_timeout = connect_timeout
        self.effect_timeout = effect_timeout
        self._lock = threading.Lock()
        self._settings: dict[int, dict] = {}
        #: Incremented on every confirmed change, so the IOC can refresh its PVs.
        self.version = 0
        service.link.on_hello = self._on_hello

    def _on_hello(self, message: dict | None) -> None:
        self.service._on_hello(message)
        with self._lock:
            self._settings = {int(c): dict(v) for c, v in
                              (message or {}).get("settings", {}).items()}
            self.version += 1

    # -- identity ------------------------------------------------------------------------
    def connected(self) -> bool:
        return self.service.link.connected and self.service.link.hello is not None

    def wait_connected(self) -> None:
        if not self.service.hello_event.wait(self.connect_timeout) or not self.connected():
            raise RuntimeError(f"no tagger connected at {self.service.link.uri}")

    def serial(self) -> str:
        hello = self.service.link.hello or {}
        return str(hello.get("serial", ""))

    def model(self) -> str:
        hello = self.service.link.hello or {}
        return str(hello.get("model", "Time Tagger emulator (trainstamp)"))

    def channels(self) -> list[int]:
        return self.service.channels

    def input_channels(self) -> list[int]:
        mc = self.service.marker_channel
        return [c for c in self.channels() if c != mc]

    def describe(self) -> dict:
        hello = dict(self.service.link.hello or {})
        with self._lock:
            hello["settings"] = {str(c): dict(v) for c, v in self._settings.items()}
        return hello

    # -- settings ------------------------------------------------------------------------
    def check_channel(self, channel: object) -> int:
        if isinstance(channel, bool) or not isinstance(channel, int):
            raise ValueError(f"channel must be an integer, got {channel!r}")
        if channel not in self.channels():
            raise ValueError(f"unknown channel {channel}; channels are {self.channels()}")
        return channel

    def get(self, channel: object, key: str) -> object:
        c = self.check_channel(channel)
        with self._lock:
            return self._settings.get(c, {}).get(key)

    def apply(self, op: str, *args: object) -> object:
        """Send one control operation; update the cache from the confirmed value.

        Returns once the change is in effect for every measurement: the tagger names
        the stream time from which its tags carry it (``effective_ps``), and this waits
        until the service has processed the stream that far. A measurement started
        afterwards (or after :meth:`sync`, which is a no-op operation) sees no tag made
        with the old settings, however far behind real time the stream runs.
        """
        if args:
            self.check_channel(args[0])
        reply = self.service.link.request_reply(op, *args)
        result = reply.get("result")
        key = _OP_KEYS.get(op)
        if key is not None:
            with self._lock:
                self._settings.setdefault(int(args[0]), {})[key] = result
                self.version += 1
        effective = reply.get("effective_ps")
        known = isinstance(effective, int) and not isinstance(effective, bool)
        if known and not self.service.wait_delivered(effective, self.effect_timeout):
            raise TimeoutError(
                f"{op}: the tagger applied it, but the tag stream did not reach the "
                f"change within {self.effect_timeout:g} s (the server is behind: see "
                "BACKLOG and STATUS)")
        return result

    def make_engine_tagger(self):
        from trainstamp.tagger.engine import TimeTaggerVirtual

        return TimeTaggerVirtual(channels=self.channels(),
                                 marker_channel=self.service.marker_channel,
                                 serial=self.serial())
