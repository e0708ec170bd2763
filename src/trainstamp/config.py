"""The beamline configuration: which IOCs exist, where they are, and how to reach them.

One TOML file names the prefixes, hosts and ports of the three IOCs (TimeServer, TEAM1k
detector, time tagger with its Pyro5 server) and of the hardware or emulators behind
them. The same configuration drives ``trainstamp up`` (what to start), the IPython
profile (:func:`make_devices`, :func:`client_env`) and ``trainstamp demo``.

Where it comes from (:func:`load_config`): the path given, else ``$TRAINSTAMP_CONFIG``,
else the default shipped in the package (``trainstamp/beamline.toml``). A file only
needs the keys it changes; every other key keeps its default. Unknown sections or keys,
bad ports, bad prefixes and clashes are refused with a ``ValueError`` that names the
file, the key, the value and the limit. The format is documented in ``docs/beamline.md``.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import socket
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any

from trainstamp.timing._core import check_period_ms, parse_source

__all__ = [
    "ENV_CONFIG",
    "BeamlineConfig",
    "DetectorConfig",
    "TaggerConfig",
    "TimeServerConfig",
    "client_env",
    "default_config",
    "load_config",
    "make_devices",
    "parse_config",
]

#: Environment variable naming the beamline configuration file.
ENV_CONFIG = "TRAINSTAMP_CONFIG"
#: EPICS record names allow these characters; prefixes are limited to them.
_PREFIX_RE = re.compile(r"^[A-Za-z0-9_\-+:\[\]<>;.]{1,60}$")
_HOST_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.\-]{0,252}$")
TRIGGER_MODES = ("INTERNAL", "EXTERNAL")


# --- checks (raise ValueError quoting the value and the limit) --------------------------


def _port(key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise ValueError(f"{key} = {value!r}: a port must be an integer in 1..65535")
    return value


def _prefix(key: str, value: Any) -> str:
    if not isinstance(value, str) or not _PREFIX_RE.match(value):
        raise ValueError(f"{key} = {value!r}: a PV prefix is 1..60 characters of "
                         "A-Z a-z 0-9 _ - + : [ ] < > ; . (e.g. 'TS:')")
    return value


def _host(key: str, value: Any) -> str:
    if not isinstance(value, str) or not _HOST_RE.match(value):
        raise ValueError(f"{key} = {value!r}: expected a host name or IPv4 address")
    return value


#: Names whose data keys collide with the columns TiledWriter adds: it stores the
#: timestamps of key ``k`` as ``ts_k``, and renames ``time`` and ``seq_num``.
_RESERVED_NAMES = ("ts", "time", "seq_num")


def _name(key: str, value: Any) -> str:
    if not isinstance(value, str) or not value.isidentifier() or value.startswith("_"):
        raise ValueError(f"{key} = {value!r}: a device name must be a Python identifier "
                         "not starting with '_' (it becomes a variable in the session)")
    if value in _RESERVED_NAMES or value.startswith("ts_"):
        raise ValueError(f"{key} = {value!r}: reserved; the catalog stores the timestamps of "
                         "data key K as ts_K, so device names may not be 'ts', 'ts_...', "
                         "'time' or 'seq_num'")
    return value


def _bool(key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{key} = {value!r}: expected true or false")
    return value


def _number(key: str, value: Any, lo: float, hi: float, unit: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) \
            or not lo <= value <= hi:
        raise ValueError(f"{key} = {value!r}: expected a number in {lo:g}..{hi:g} {unit}")
    return float(value)


def _str(key: str, value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{key} = {value!r}: expected a string")
    return value


def _strings(key: str, value: Any) -> tuple[str, ...]:
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{key} = {value!r}: expected a list of strings")
    return tuple(value)


# --- the sections -------------------------------------------------------------------------


@dataclass(frozen=True)
class TimeServerConfig:
    """``[timeserver]``: the TimeServer IOC and its tick broadcaster."""

    name: str = "timeserver"  #: device name in the session (and data-key prefix)
    prefix: str = "TS:"  #: PV prefix
    host: str = "127.0.0.1"  #: host of the IOC (CA server and broadcaster)
    ca_port: int = 5164  #: CA server port of the IOC
    source: str = "local:internal"  #: train-ID source URI
    period_ms: float = 100.0  #: train period setpoint, ms
    broadcast_port: int = 5055  #: TCP port re-broadcasting every tick

    def check(self, where: str) -> None:
        _name(f"{where}.name", self.name)
        _prefix(f"{where}.prefix", self.prefix)
        _host(f"{where}.host", self.host)
        _port(f"{where}.ca_port", self.ca_port)
        _port(f"{where}.broadcast_port", self.broadcast_port)
        try:
            parse_source(_str(f"{where}.source", self.source))
            check_period_ms(_number(f"{where}.period_ms", self.period_ms, 0, math.inf, "ms"))
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None

    @property
    def broadcast_uri(self) -> str:
        """Where train-ID consumers (emulators, the tagger IOC) subscribe."""
        return f"tcp://{self.host}:{self.broadcast_port}"


@dataclass(frozen=True)
class DetectorConfig:
    """``[detector]``: the TEAM1k detector IOC and its FPGA (real or emulated)."""

    name: str = "det"
    prefix: str = "TEAM1K:"
    host: str = "127.0.0.1"  #: host of the IOC
    ca_port: int = 5165
    detector_ip: str = "127.0.0.1"  #: the FPGA (or emulator) address
    register_port: int = 42000  #: FPGA register port, UDP
    data_port: int = 41000  #: FPGA data port, UDP
    data_dir: str = ""  #: capture directory; "" = <storage data dir>/detector
    emulate: bool = True  #: ``trainstamp up`` starts the FPGA emulator
    trigger_mode: str = "EXTERNAL"  #: one frame per train tick, exact train IDs
    test_mode: bool = False  #: test pattern instead of the simulated image
    integration_time_ms: float = 6.0

    def check(self, where: str) -> None:
        _name(f"{where}.name", self.name)
        _prefix(f"{where}.prefix", self.prefix)
        _host(f"{where}.host", self.host)
        _host(f"{where}.detector_ip", self.detector_ip)
        for key in ("ca_port", "register_port", "data_port"):
            _port(f"{where}.{key}", getattr(self, key))
        _str(f"{where}.data_dir", self.data_dir)
        _bool(f"{where}.emulate", self.emulate)
        _bool(f"{where}.test_mode", self.test_mode)
        if self.trigger_mode not in TRIGGER_MODES:
            raise ValueError(f"{where}.trigger_mode = {self.trigger_mode!r}: expected one of "
                             f"{', '.join(TRIGGER_MODES)}")
        _number(f"{where}.integration_time_ms", self.integration_time_ms, 0.001, 10000, "ms")


#: Emulated tagger sources of the default beamline: an antibunched emitter on 1/2
#: (a g2 dip at zero delay), a correlated pair on 3/4 and the test signal on 5.
DEFAULT_TAGGER_SOURCES = ("--antibunched", "1:2:400000:3000", "--pair", "3:4:100000:2000:50",
                          "--test-signal", "5")


@dataclass(frozen=True)
class TaggerConfig:
    """``[tagger]``: the time-tagger IOC with its Pyro5 server, and the tagger."""

    name: str = "tagger"
    prefix: str = "TT:"
    host: str = "127.0.0.1"  #: host of the IOC and the Pyro5 server
    ca_port: int = 5166
    pyro_port: int = 23000  #: Pyro5 server port
    tagger_host: str = "127.0.0.1"  #: the tagger (or emulator) tag-stream address
    tag_port: int = 41101  #: tag-stream TCP port
    emulate: bool = True  #: ``trainstamp up`` starts the tagger emulator
    emulator_args: tuple[str, ...] = DEFAULT_TAGGER_SOURCES  #: signals of the emulator

    def check(self, where: str) -> None:
        _name(f"{where}.name", self.name)
        _prefix(f"{where}.prefix", self.prefix)
        _host(f"{where}.host", self.host)
        _host(f"{where}.tagger_host", self.tagger_host)
        for key in ("ca_port", "pyro_port", "tag_port"):
            _port(f"{where}.{key}", getattr(self, key))
        _bool(f"{where}.emulate", self.emulate)
        _strings(f"{where}.emulator_args", self.emulator_args)

    @property
    def pyro_uri(self) -> str:
        return f"PYRO:TimeTagger@{self.host}:{self.pyro_port}"


_SECTIONS = {"timeserver": TimeServerConfig, "detector": DetectorConfig, "tagger": TaggerConfig}


@dataclass(frozen=True)
class BeamlineConfig:
    """The whole beamline: one section per IOC, plus the supervisor's ready timeout.

    Immutable; change it with :func:`dataclasses.replace` or :meth:`with_free_ports`.
    """

    timeserver: TimeServerConfig = field(default_factory=TimeServerConfig)
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    tagger: TaggerConfig = field(default_factory=TaggerConfig)
    ready_timeout: float = 60.0  #: s each service may take to become ready in ``up``
    origin: str = field(default="<defaults>", compare=False)  #: where it was loaded from

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        """Validate every field and the cross-section rules; ``ValueError`` if bad."""
        where = self.origin
        for section in _SECTIONS:
            getattr(self, section).check(f"{where}: [{section}]")
        _number(f"{where}: ready_timeout", self.ready_timeout, 1, 3600, "s")
        sections = [(s, getattr(self, s)) for s in _SECTIONS]
        for attr in ("name", "prefix"):
            seen: dict[str, str] = {}
            for section, cfg in sections:
                value = getattr(cfg, attr)
                if value in seen:
                    raise ValueError(f"{where}: [{section}].{attr} = {value!r} is also "
                                     f"[{seen[value]}].{attr}; each IOC needs its own")
                seen[value] = section
        used: dict[tuple[str, int], str] = {}
        for key, (host, port) in self.listening_ports().items():
            if (host, port) in used:
                raise ValueError(f"{where}: {key} = {port} on {host} is also "
                                 f"{used[host, port]}; every port on a host must differ")
            used[host, port] = key

    def listening_ports(self) -> dict[str, tuple[str, int]]:
        """Every port something listens on, as ``{"[section].key": (host, port)}``."""
        ts, det, tt = self.timeserver, self.detector, self.tagger
        return {
            "[timeserver].ca_port": (ts.host, ts.ca_port),
            "[timeserver].broadcast_port": (ts.host, ts.broadcast_port),
            "[detector].ca_port": (det.host, det.ca_port),
            "[detector].register_port": (det.detector_ip, det.register_port),
            "[detector].data_port": (det.detector_ip, det.data_port),
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
        ports = iter(free_ports(8))
        loop = "127.0.0.1"
        return dataclasses.replace(
            self,
            timeserver=dataclasses.replace(self.timeserver, host=loop, ca_port=next(ports),
                                           broadcast_port=next(ports)),
            detector=dataclasses.replace(self.detector, host=loop, detector_ip=loop,
                                         ca_port=next(ports), register_port=next(ports),
                                         data_port=next(ports)),
            tagger=dataclasses.replace(self.tagger, host=loop, tagger_host=loop,
                                       ca_port=next(ports), pyro_port=next(ports),
                                       tag_port=next(ports)),
        )

    def replace_section(self, section: str, **changes: Any) -> BeamlineConfig:
        """A copy with ``changes`` applied to ``[section]`` (validated)."""
        if section not in _SECTIONS:
            raise ValueError(f"unknown section [{section}]; expected one of {', '.join(_SECTIONS)}")
        known = [f.name for f in fields(_SECTIONS[section])]
        if unknown := sorted(set(changes) - set(known)):
            raise ValueError(f"unknown key(s) {', '.join(unknown)} in [{section}]; "
                             f"known keys: {', '.join(known)}")
        if "emulator_args" in changes:
            changes["emulator_args"] = _strings(f"[{section}].emulator_args",
                                                changes["emulator_args"])
        return dataclasses.replace(self, **{section: dataclasses.replace(getattr(self, section),
                                                                         **changes)})


def free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    """``n`` distinct ports free for both TCP and UDP on ``host`` right now."""
    ports: list[int] = []
    while len(ports) < n:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind((host, 0))
            port = tcp.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind((host, port))
                except OSError:
                    continue
        if port not in ports:
            ports.append(port)
    return ports


# --- loading ----------------------------------------------------------------------------


def _section(where: str, name: str, table: Any) -> Any:
    cls = _SECTIONS[name]
    if not isinstance(table, dict):
        raise ValueError(f"{where}: [{name}] must be a table, got {table!r}")
    known = [f.name for f in fields(cls)]
    unknown = sorted(set(table) - set(known))
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {', '.join(unknown)} in [{name}]; "
                         f"known keys: {', '.join(known)}")
    values = dict(table)
    if "emulator_args" in values:
        values["emulator_args"] = _strings(f"{where}: [{name}].emulator_args",
                                           values["emulator_args"])
    return cls(**values)


def parse_config(data: Mapping[str, Any], origin: str = "<mapping>") -> BeamlineConfig:
    """A validated :class:`BeamlineConfig` from parsed TOML (missing keys: defaults)."""
    top = {"ready_timeout"}
    unknown = sorted(set(data) - set(_SECTIONS) - top)
    if unknown:
        raise ValueError(f"{origin}: unknown section(s) or key(s) {', '.join(unknown)}; "
                         f"expected [{'], ['.join(_SECTIONS)}] and {', '.join(sorted(top))}")
    kwargs: dict[str, Any] = {s: _section(origin, s, data[s]) for s in _SECTIONS if s in data}
    if "ready_timeout" in data:
        kwargs["ready_timeout"] = _number(f"{origin}: ready_timeout", data["ready_timeout"],
                                          1, 3600, "s")
    return BeamlineConfig(**kwargs, origin=origin)


def default_config() -> BeamlineConfig:
    """The configuration shipped in the package (``trainstamp/beamline.toml``).

    The file spells out the dataclass defaults (a test keeps the two equal), so a build
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
    endpoints = dict.fromkeys(f"{h}:{p}" for h, p in config.ca_endpoints().values())
    return {
        "EPICS_CA_AUTO_ADDR_LIST": "NO",
        "EPICS_CA_ADDR_LIST": " ".join(endpoints),
        "OPHYD_CONTROL_LAYER": "caproto",
    }


def make_devices(config: BeamlineConfig | None = None) -> dict[str, Any]:
    """The ophyd devices of the beamline, by the names users type.

    Returns ``{timeserver.name: TimeServer, detector.name: Team1k, tagger.name:
    TimeTagger}`` (by default ``timeserver``, ``det``, ``tagger``), not yet connected. The CA client environment
    (:func:`client_env`) must already be in place, since ophyd reads it when the first
    signal connects.
    """
    from trainstamp.detector import Team1k
    from trainstamp.tagger import TimeTagger
    from trainstamp.timing.device import TimeServer

    config = config or load_config()
    ts, det, tt = config.timeserver, config.detector, config.tagger
    return {
        ts.name: TimeServer(ts.prefix, name=ts.name),
        det.name: Team1k(det.prefix, name=det.name),
        tt.name: TimeTagger(tt.prefix, name=tt.name),
    }
