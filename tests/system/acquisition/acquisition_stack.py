"""The whole simulated beamline for acquisition tests and the benchmark.

TimeServer IOC (internal source, re-broadcasting its ticks) -> detector FPGA emulator
(external trigger from the broadcaster) + detector IOC; tagger emulator (marker channel
fed by the same broadcaster) + tagger IOC (train feed from the broadcaster, Pyro5 on a
free port). Every child is a real subprocess on loopback, stopped on exit.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trainstamp.testing import Subprocess, SubprocessIOC, free_port, random_prefix, wait_until

CLICK_CHANNEL = 1
CLICK_RATE_HZ = 50_000
#: photon pairs on channels 3 and 4: a g2 peak at +PAIR_DELAY_PS
PAIR_CHANNELS = (3, 4)
PAIR_DELAY_PS = 1000


def _tcp_up(port: int):
    def check() -> bool:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    return check


@dataclass
class Stack:
    ts_prefix: str
    det_prefix: str
    tt_prefix: str
    pyro_uri: str
    feed: str  # the TimeServer's tick broadcaster
    data_dir: Path
    period_ms: float
    children: list[Subprocess] = field(default_factory=list)

    def dead(self) -> list[str]:
        return [" ".join(c.args[2:5]) + ":\n" + c.output()[-2000:]
                for c in self.children if not c.alive]


@contextlib.contextmanager
def acquisition_stack(ca_ports: Any, data_dir: Path, period_ms: float = 100.0,
                      timeserver_args: tuple[str, ...] = ()) -> Iterator[Stack]:
    """Start the beamline; ``data_dir`` is the catalog's data directory (the detector
    writes under ``data_dir/detector``, so the catalog may read its files);
    ``timeserver_args`` go to the TimeServer IOC."""
    det_dir = Path(data_dir) / "detector"
    det_dir.mkdir(parents=True, exist_ok=True)
    bport = free_port()
    feed = f"tcp://127.0.0.1:{bport}"
    ts_prefix, det_prefix, tt_prefix = (random_prefix(p) for p in ("ACQTS", "ACQDET", "ACQTT"))
    rp, dp = free_port("udp"), free_port("udp")
    tport, pyro_port = free_port(), free_port()
    with contextlib.ExitStack() as stack:
        children: list[Subprocess] = []

        def start(child: Subprocess) -> Subprocess:
            child.start()
            stack.callback(child.stop)
            children.append(child)
            return child

        start(SubprocessIOC(["ioc", "timeserver", "--prefix", ts_prefix, "--period", str(period_ms),
                             "--broadcast-port", str(bport), "--interfaces", "127.0.0.1",
                             *timeserver_args],
                            ca_ports, ready_pv=ts_prefix + "ID"))
        wait_until(_tcp_up(bport), timeout=20, message="TimeServer broadcaster")
        emu = Subprocess(["emulate", "detector", "--bind", "127.0.0.1", "--register-port", str(rp),
                          "--data-port", str(dp), "--test-mode", "--trains", feed])
        emu.ready = lambda: "emulator ready" in emu.output()
        start(emu)
        start(SubprocessIOC(["ioc", "detector", "--prefix", det_prefix, "--detector-ip", "127.0.0.1",
                             "--register-port", str(rp), "--data-port", str(dp),
                             "--data-dir", str(det_dir), "--interfaces", "127.0.0.1",
                             "--ring-slots", "32", "--zmq-port", str(free_port())],
                            ca_ports, ready_pv=det_prefix + "STATUS", timeout=60))
        start(Subprocess(["emulate", "tagger", "--bind", "127.0.0.1", "--port", str(tport),
                          "--trains", feed, "--seed", "5",
                          "--poisson", f"{CLICK_CHANNEL}:{CLICK_RATE_HZ}",
                          "--pair", f"{PAIR_CHANNELS[0]}:{PAIR_CHANNELS[1]}:20000:{PAIR_DELAY_PS}:20"],
                         ready=_tcp_up(tport)))
        start(SubprocessIOC(["ioc", "tagger", "--prefix", tt_prefix,
                             "--tagger", f"tcp://127.0.0.1:{tport}", "--trains", feed,
                             "--pyro-port", str(pyro_port), "--interfaces", "127.0.0.1"],
                            ca_ports, ready_pv=tt_prefix + "CONNECTED", timeout=60))
        yield Stack(ts_prefix, det_prefix, tt_prefix, f"PYRO:TimeTagger@127.0.0.1:{pyro_port}",
                    feed, Path(data_dir), period_ms, children)


def connect_devices(stack: Stack) -> tuple[Any, Any, Any]:
    """TimeServer, Team1k (external trigger) and TimeTagger devices, connected and ready:
    the TimeServer ticking, the detector OK, the tagger's markers paired."""
    from caproto.sync.client import read

    from trainstamp.detector import Team1k
    from trainstamp.tagger import TimeTagger
    from trainstamp.timing.device import TimeServer

    ts = TimeServer(stack.ts_prefix, name="timeserver")
    det = Team1k(stack.det_prefix, name="team1k")
    tt = TimeTagger(stack.tt_prefix, name="tt")
    for dev in (ts, det, tt):
        dev.wait_for_connection(timeout=20)
    wait_until(lambda: ts.last_tick is not None, timeout=10, message="first tick")
    wait_until(lambda: det.status.get() == "OK", timeout=30, message="detector status OK")
    det.trigger_mode.set(1).wait(10)
    wait_until(lambda: read(stack.tt_prefix + "MARKERS_PAIRED", repeater=False).data[0] >= 3,
               timeout=30, message="tagger markers paired")
    return ts, det, tt
