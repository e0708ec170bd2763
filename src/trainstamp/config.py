"""The beamline configuration: which IOCs exist, where they are, and how to reach them.

One TOML file names the prefixes, hosts and ports of the three IOCs (TimeServer, TEAM1k
detector, time tagger with its Pyro5 server) and of the hardware or emulators behind
them. The same configuration drives ``trainstamp up`` (what to start), the IPython
profile (:func:`client_env`, and :func:`trainstamp.session.make_devices`) and
``trainstamp demo``.

Where it comes from (:func:`load_config`): the path given, else ``$TRAINSTAMP_CONFIG``,
else the default shipped in the package (``trainstamp/beamline.toml``). A file only
needs the keys it changes; every other key keeps its default. The sections are frozen
pydantic models with ``extra="forbid"``: unknown sections or keys, bad ports, bad
prefixes and clashes are refused with a ``ValueError`` that names the file, the key,
the value and the limit (pydantic's ``ValidationError`` is rewritten into that text).
This module imports no device classes. The format is documented in ``docs/beamline.md``.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from trainstamp._ca_env import ca_client_env
from trainstamp._config_types import (
    Flag,
    Host,
    Name,
    PeriodMs,
    Port,
    Prefix,
    SourceUri,
    Strings,
    Text,
    TriggerMode,
    number,
    refuse,
)
from trainstamp._readiness import free_ports

__all__ = [
    "ENV_CONFIG",
    "BeamlineConfig",
    "DetectorConfig",
    "TaggerConfig",
    "TimeServerConfig",
    "client_env",
    "default_config",
    "load_config",
    "parse_config",
]

#: Environment variable naming the beamline configuration file.
ENV_CONFIG = "TRAINSTAMP_CONFIG"
class _Section(BaseModel):
    """A configuration section: frozen, every key typed, unknown keys refused."""

    model_config = ConfigDict(extra="forbid", frozen=True)


# --- the sections -------------------------------------------------------------------------


class TimeServerConfig(_Section):
    """``[timeserver]``: the TimeServer IOC and its tick broadcaster."""

    name: Name = "timeserver"  #: device name in the session (and data-key prefix)
    prefix: Prefix = "TS:"  #: PV prefix
    host: Host = "127.0.0.1"  #: host of the IOC (CA server and broadcaster)
    ca_port: Port = 5164  #: CA server port of the IOC
    source: SourceUri = "local:internal"  #: train-ID source URI
    period_ms: PeriodMs = 100.0  #: train period setpoint, ms
    broadcast_port: Port = 5055  #: TCP port re-broadcasting every tick

    @property
    def broadcast_uri(self) -> str:
        """Where train-ID consumers (emulators, the tagger IOC) subscribe."""
        return f"tcp://{self.host}:{self.broadcast_port}"


class DetectorConfig(_Section):
    """``[detector]``: the TEAM1k detector IOC and its FPGA (real or emulated)."""

    name: Name = "det"
    prefix: Prefix = "TEAM1K:"
    host: Host = "127.0.0.1"  #: host of the IOC
    ca_port: Port = 5165
    detector_ip: Host = "127.0.0.1"  #: the FPGA (or emulator) address
    # the detector's defaults (DEFAULT_REGISTER_PORT, DEFAULT_DATA_PORT in
    # trainstamp.detector._protocol), repeated because this module imports nothing of
    # the detector; tests/unit/detector/test_detector_protocol.py pins that they agree
    register_port: Port = 42000  #: FPGA register port, UDP
    data_port: Port = 41000  #: FPGA data port, UDP
    zmq_port: Port = 42005  #: the IOC's data-transfer port (ZMQ over TCP), on ``host``
    data_dir: Text = ""  #: capture directory; "" = <storage data dir>/detector
    emulate: Flag = True  #: ``trainstamp up`` starts the FPGA emulator
    trigger_mode: TriggerMode = "EXTERNAL"  #: one frame per train tick, exact train IDs
    test_mode: Flag = False  #: test pattern instead of the simulated image
    integration_time_ms: Annotated[float, number(0.001, 10000, "ms")] = 6.0


#: Emulated tagger sources of the default beamline: an antibunched emitter on 1/2
#: (a g2 dip at zero delay), a correlated pair on 3/4 and the test signal on 5.
DEFAULT_TAGGER_SOURCES = ("--antibunched", "1:2:400000:3000", "--pair", "3:4:100000:2000:50",
                          "--test-signal", "5")


class TaggerConfig(_Section):
    """``[tagger]``: the time-tagger IOC with its Pyro5 server, and the tagger."""

    name: Name = "tagger"
    prefix: Prefix = "TT:"
    host: Host = "127.0.0.1"  #: host of the IOC and the Pyro5 server
    ca_port: Port = 5166
    pyro_port: Port = 23000  #: Pyro5 server port
    tagger_host: Host = "127.0.0.1"  #: the tagger (or emulator) tag-stream address
    tag_port: Port = 41101  #: tag-stream TCP port
    emulate: Flag = True  #: ``trainstamp up`` starts the tagger emulator
    emulator_args: Strings = DEFAULT_TAGGER_SOURCES  #: signals of the emulator

    @property
    def pyro_uri(self) -> str:
        return f"PYRO:TimeTagger@{self.host}:{self.pyro_port}"


_SECTIONS: dict[str, type[_Section]] = {
    "timeserver": TimeServerConfig, "detector": DetectorConfig, "tagger": TaggerConfig}
_TOP_KEYS = ("ready_timeout",)


class BeamlineConfig(BaseModel):
    """The whole beamline: one section per IOC, plus the supervisor's ready timeout.

    Immutable; change it with :meth:`replace_section` or :meth:`with_free_ports` (both
    validate the result). Two configurations are equal when every key is, wherever
    they were loaded from (``origin`` is not compared). A bad value raises
    ``ValueError`` naming ``origin``, the section, the key, the value and the limit.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    timeserver: TimeServerConfig = TimeServerConfig()
    detector: DetectorConfig = DetectorConfig()
    tagger: TaggerConfig = TaggerConfig()
    ready_timeout: Annotated[float, number(1, 3600, "s")] = 60.0  #: s per service in ``up``
    origin: str = "<defaults>"  #: where it was loaded from (not compared)

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise ValueError(_explain(exc, str(data.get("origin", "<defaults>")))) from None

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, BeamlineConfig):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def _key(self) -> tuple:
        return (self.timeserver, self.detector, self.tagger, self.ready_timeout)

    @model_validator(mode="after")
    def _no_clashes(self) -> BeamlineConfig:
        """Names, prefixes and listening ports must differ between the sections."""
        sections = [(s, getattr(self, s)) for s in _SECTIONS]
        for attr in ("name", "prefix"):
            seen: dict[str, str] = {}
            for section, cfg in sections:
                value = getattr(cfg, attr)
                if value in seen:
                    raise refuse(f"[{section}].{attr} = {value!r} is also "
                                  f"[{seen[value]}].{attr}; each IOC needs its own")
                seen[value] = section
        used: dict[tuple[str, int], str] = {}
        for key, (host, port) in self.listening_ports().items():
            if (host, port) in used:
                raise refuse(f"{key} = {port} on {host} is also {used[host, port]}; "
                              "every port on a host must differ")
            used[host, port] = key
        return self

    def listening_ports(self) -> dict[str, tuple[str, int]]:
        """Every port something listens on, as ``{"[section].key": (host, port)}``."""
        ts, det, tt = self.timeserver, self.detector, self.tagger
        return {
            "[timeserver].ca_port": (ts.host, ts.ca_port),
            "[timeserver].broadcast_port": (ts.host, ts.broadcast_port),
            "[detector].ca_port": (det.host, det.ca_port),
            "[detector].register_port": (det.detector_ip, det.register_port),
            "[detector].data_port": (det.detector_ip, det.data_port),
            "[detector].zmq_port": (det.host, det.zmq_port),
            "[tagger].ca_port": (tt.host, tt.ca_port),
            "[tagger].pyro_port": (tt.host, tt.pyro_port),
            "[tagger].tag_port": (tt.tagger_host, tt.tag_port),
        }

    def ca_endpoints(self) -> dict[str, tuple[str, int]]:
        """``{section: (host, CA port)}`` of the three IOCs, in start order."""
        return {s: (getattr(self, s).host, getattr(self, s).ca_port) for s in _SECTIONS}

    def client_env(self) -> dict[str, str]:
        """The ``EPICS_CA_*`` environment a client of this beamline needs (and ophyd's
        control layer); set it before the first ophyd signal is created."""
        return client_env(self)

    def with_free_ports(self) -> BeamlineConfig:
        """A copy on loopback with every port replaced by a free one (for the demo and
        tests, so they never collide with a running ``trainstamp up``)."""
        ports = iter(free_ports(9))
        loop = "127.0.0.1"
        return self._changed({
            "timeserver": dict(host=loop, ca_port=next(ports), broadcast_port=next(ports)),
            "detector": dict(host=loop, detector_ip=loop, ca_port=next(ports),
                             register_port=next(ports), data_port=next(ports),
                             zmq_port=next(ports)),
            "tagger": dict(host=loop, tagger_host=loop, ca_port=next(ports),
                           pyro_port=next(ports), tag_port=next(ports)),
        })

    def replace_section(self, section: str, **changes: Any) -> BeamlineConfig:
        """A copy with ``changes`` applied to ``[section]`` (validated)."""
        if section not in _SECTIONS:
            raise ValueError(f"unknown section [{section}]; expected one of {', '.join(_SECTIONS)}")
        return self._changed({section: changes})

    def _changed(self, changes: Mapping[str, Mapping[str, Any]]) -> BeamlineConfig:
        """A new, fully validated configuration with ``{section: {key: value}}`` changed."""
        data: dict[str, Any] = {s: dict(getattr(self, s)) for s in _SECTIONS}
        for section, keys in changes.items():
            data[section].update(keys)
        return BeamlineConfig(**data, ready_timeout=self.ready_timeout, origin=self.origin)


def _explain(exc: ValidationError, origin: str) -> str:
    """``exc`` as lines ``origin: [section].key = value: reason`` (one per problem)."""
    problems: list[str] = []
    unknown: dict[tuple, list[str]] = {}
    for error in exc.errors():
        loc, value = error["loc"], error.get("input")
        if error["type"] == "extra_forbidden":
            unknown.setdefault(loc[:-1], []).append(str(loc[-1]))
        elif len(loc) == 1 and loc[0] in _SECTIONS:
            problems.append(f"[{loc[0]}] must be a table, got {value!r}")
        elif len(loc) == 2 and error["type"] == "core":
            problems.append(f"[{loc[0]}]: {error['msg']}")
        elif len(loc) == 2:
            problems.append(f"[{loc[0]}].{loc[1]} = {value!r}: {error['msg']}")
        elif len(loc) == 1:
            problems.append(f"{loc[0]} = {value!r}: {error['msg']}")
        else:  # the cross-section rules: the message names the keys
            problems.append(error["msg"])
    for where, keys in unknown.items():
        if where:
            known = ", ".join(_SECTIONS[str(where[0])].model_fields)
            problems.insert(0, f"unknown key(s) {', '.join(sorted(keys))} in [{where[0]}]; "
                               f"known keys: {known}")
        else:
            problems.insert(0, _unknown_top(keys))
    return "\n".join(f"{origin}: {p}" for p in problems)


def _unknown_top(keys: list[str]) -> str:
    return (f"unknown section(s) or key(s) {', '.join(sorted(keys))}; "
            f"expected [{'], ['.join(_SECTIONS)}] and {', '.join(_TOP_KEYS)}")


# --- loading ----------------------------------------------------------------------------


def parse_config(data: Mapping[str, Any], origin: str = "<mapping>") -> BeamlineConfig:
    """A validated :class:`BeamlineConfig` from parsed TOML (missing keys: defaults)."""
    if "origin" in data:  # a field of the model, but not a key of the file
        raise ValueError(f"{origin}: {_unknown_top(['origin'])}")
    return BeamlineConfig(**{str(k): v for k, v in data.items()}, origin=origin)


def default_config() -> BeamlineConfig:
    """The configuration shipped in the package (``trainstamp/beamline.toml``).

    The file spells out the model defaults (a test keeps the two equal), so a build
    that left the file out still gets the same configuration.
    """
    try:
        text = resources.files("trainstamp").joinpath("beamline.toml").read_text(encoding="utf-8")
    except (FileNotFoundError, OSError):
        return BeamlineConfig()
    return parse_config(tomllib.loads(text), origin="trainstamp/beamline.toml")


def load_config(path: str | os.PathLike | None = None,
                *, environ: Mapping[str, str] | None = None) -> BeamlineConfig:
    """Load the beamline configuration.

    Parameters
    ----------
    path : path, optional
        A TOML file. Without it, ``$TRAINSTAMP_CONFIG`` if set, else the packaged default.
    environ : mapping, optional
        Environment to read ``TRAINSTAMP_CONFIG`` from (``os.environ`` by default).

    Raises
    ------
    ValueError
        The file is missing, unreadable, not TOML, or holds a bad key or value.
    """
    env = os.environ if environ is None else environ
    if path is None:
        path = env.get(ENV_CONFIG) or None
    if path is None:
        return default_config()
    file = Path(path).expanduser()
    try:
        raw = file.read_bytes()
    except OSError as exc:
        raise ValueError(f"beamline configuration {str(file)!r}: {exc.strerror or exc}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ValueError(f"beamline configuration {str(file)!r} is not valid TOML: {exc}") from None
    return parse_config(data, origin=str(file))


# --- clients ----------------------------------------------------------------------------


def client_env(config: BeamlineConfig) -> dict[str, str]:
    """The client environment for ``config``: CA searches go to exactly its IOCs."""
    env = ca_client_env(f"{h}:{p}" for h, p in config.ca_endpoints().values())
    env["OPHYD_CONTROL_LAYER"] = "caproto"
    return env
