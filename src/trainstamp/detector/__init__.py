"""The TEAM1k X-ray detector: UDP wire protocol, FPGA emulator, receiver, IOC and device.

Public names:

- :class:`Team1k`: the ophyd device; :class:`Client`: team1k's client API over CA;
- :class:`FrameCollector`: the ``detector`` stream of a fly scan (the capture file);
- :class:`FpgaEmulator`, :class:`Faults`: the emulated FPGA and its fault injection;
- :class:`Receiver`, :class:`ReceiverConfig`: the acquisition process and shared ring;
- :class:`RegisterClient`, :class:`DetectorCommands`: the register port;
- :class:`ExposureModes`, :class:`TriggerModes`; :func:`read_capture`.
"""

from trainstamp.detector._capture import read_capture
from trainstamp.detector._emulator import Faults, FpgaEmulator
from trainstamp.detector._receiver import Receiver, ReceiverConfig
from trainstamp.detector._regclient import DetectorCommands, RegisterClient, RegisterError
from trainstamp.detector._registers import ExposureModes, TriggerModes

__all__ = [
    "Client",
    "DetectorCommands",
    "ExposureModes",
    "Faults",
    "FpgaEmulator",
    "FrameCollector",
    "Receiver",
    "ReceiverConfig",
    "RegisterClient",
    "RegisterError",
    "Team1k",
    "TriggerModes",
    "read_capture",
]


def __getattr__(name: str):
    # ophyd and the CA client are imported only when asked for
    if name == "Team1k":
        from trainstamp.detector.device import Team1k

        return Team1k
    if name == "FrameCollector":
        from trainstamp.detector._collector import FrameCollector

        return FrameCollector
    if name == "Client":
        from trainstamp.detector.client import Client

        return Client
    raise AttributeError(name)
