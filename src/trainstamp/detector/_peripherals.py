"""Detector peripherals on serial lines: the camera bellow stage and the power supply.

Both are driven with pyserial over a real serial port. Their emulators sit behind a
pseudo-terminal (``os.openpty``), so the IOC's serial code path is the one used with
hardware; an emulator can publish its pty under a fixed path with a symlink.

Protocols (ASCII; commands end in CR, replies in CR LF; an error reply is ``ERR <text>``):

- bellow stage: ``POS?`` -> ``POS <mm>``; ``MOVE <mm>`` -> ``OK``; ``STATE?`` ->
  ``IDLE``/``MOVING``; ``STOP`` -> ``OK``. Retracted is 0 mm, inserted 100 mm.
- power supply: ``*IDN?``; ``OUTP ON``/``OUTP OFF`` -> ``OK``; ``OUTP?`` -> ``1``/``0``;
  ``MEAS:VOLT?`` / ``MEAS:CURR?`` -> volts / amperes.
"""

from __future__ import annotations

import contextlib
import os
import select
import threading
import time
import tty

import serial

INSERTED_MM = 100.0
RETRACTED_MM = 0.0
TRAVEL_MM = (0.0, 100.0)


class SerialLine:
    """One request/reply serial line (thread-safe)."""

    def __init__(self, port: str, baudrate: int = 115200, timeout: float = 1.0) -> None:
        self.port = port
        self.ser = serial.Serial(port, baudrate=baudrate, timeout=timeout)
        self._lock = threading.Lock()

    def query(self, command: str) -> str:
        with self._lock:
            self.ser.reset_input_buffer()
            self.ser.write(command.encode("ascii") + b"\r")
            reply = self.ser.read_until(b"\n", 256)
        if not reply.endswith(b"\n"):
            raise TimeoutError(f"no reply from {self.port} to {command!r}")
        text = reply.decode("ascii", "replace").strip()
        if text.startswith("ERR"):
            raise ValueError(f"{self.port} refused {command!r}: {text[4:]}")
        return text

    def close(self) -> None:
        self.ser.close()


class BellowStage:
    """Client for the camera bellow stage."""

    def __init__(self, port: str, timeout: float = 1.0) -> None:
        self.line = SerialLine(port, timeout=timeout)

    def position(self) -> float:
        reply = self.line.query("POS?")
        if not reply.startswith("POS "):
            raise ValueError(f"bad position reply {reply!r}")
        return float(reply[4:])

    def moving(self) -> bool:
        return self.line.query("STATE?") == "MOVING"

    def move(self, mm: float) -> None:
        if not TRAVEL_MM[0] <= mm <= TRAVEL_MM[1]:
            raise ValueError(f"bellow position {mm} mm outside {TRAVEL_MM[0]}..{TRAVEL_MM[1]} mm")
        self.line.query(f"MOVE {mm:.3f}")

    def insert(self) -> None:
        self.move(INSERTED_MM)

    def retract(self) -> None:
        self.move(RETRACTED_MM)

    def stop(self) -> None:
        self.line.query("STOP")

    def close(self) -> None:
        self.line.close()


class PowerSupply:
    """Client for the detector power supply."""

    def __init__(self, port: str, timeout: float = 1.0) -> None:
        self.line = SerialLine(port, timeout=timeout)

    def identify(self) -> str:
        return self.line.query("*IDN?")

    def set_output(self, on: bool) -> None:
        self.line.query("OUTP ON" if on else "OUTP OFF")

    def output(self) -> bool:
        return self.line.query("OUTP?") == "1"

    def voltage(self) -> float:
        return float(self.line.query("MEAS:VOLT?"))

    def current(self) -> float:
        return float(self.line.query("MEAS:CURR?"))

    def close(self) -> None:
        self.line.close()


class PtyDevice:
    """A line-oriented device emulator behind a pseudo-terminal.

    ``path`` is the pty's slave device; pass ``link`` to also publish it as a symlink.
    Subclasses implement :meth:`handle` (one command -> one reply line).
    """

    def __init__(self, link: str | None = None) -> None:
        self.master, self._slave = os.openpty()
        tty.setraw(self._slave)  # no echo, no CR/LF translation
        self.path = os.ttyname(self._slave)
        self.link = link
        if link:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(link)
            os.symlink(self.path, link)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=type(self).__name__, daemon=True)
        self.commands = 0
        self.bad_commands = 0

    def start(self) -> PtyDevice:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2)
        if self.link:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.link)
        for fd in (self.master, self._slave):
            with contextlib.suppress(OSError):
                os.close(fd)

    def _run(self) -> None:
        buf = b""
        while not self._stop.is_set():
            r, _, _ = select.select([self.master], [], [], 0.1)
            if not r:
                continue
            try:
                buf += os.read(self.master, 1024)
            except OSError:
                continue
            if len(buf) > 4096:
                buf = b""  # hostile line: forget it
                self.bad_commands += 1
            while True:
                cut = min((i for i in (buf.find(b"\r"), buf.find(b"\n")) if i >= 0), default=-1)
                if cut < 0:
                    break
                line, buf = buf[:cut], buf[cut + 1:]
                text = line.decode("ascii", "replace").strip()
                if not text:
                    continue
                self.commands += 1
                try:
                    reply = self.handle(text)
                except ValueError as exc:
                    self.bad_commands += 1
                    reply = f"ERR {exc}"
                os.write(self.master, reply.encode("ascii") + b"\r\n")

    def handle(self, command: str) -> str:
        raise NotImplementedError


class BellowStageEmulator(PtyDevice):
    """Bellow stage that moves at ``speed`` mm/s between 0 and 100 mm."""

    def __init__(self, link: str | None = None, speed: float = 200.0) -> None:
        super().__init__(link)
        self.speed = speed
        self._from = self._to = RETRACTED_MM
        self._t0 = time.monotonic()

    def position(self) -> float:
        dt = time.monotonic() - self._t0
        dist = self._to - self._from
        if abs(dist) <= self.speed * dt:
            return self._to
        return self._from + (self.speed * dt if dist > 0 else -self.speed * dt)

    def handle(self, command: str) -> str:
        word, _, arg = command.partition(" ")
        word = word.upper()
        if word == "POS?":
            return f"POS {self.position():.3f}"
        if word == "STATE?":
            return "MOVING" if self.position() != self._to else "IDLE"
        if word == "STOP":
            self._from = self._to = self.position()
            return "OK"
        if word == "MOVE":
            try:
                target = float(arg)
            except ValueError:
                raise ValueError(f"bad position {arg!r}") from None
            if not TRAVEL_MM[0] <= target <= TRAVEL_MM[1]:
                raise ValueError(f"position {target} outside travel")
            self._from, self._to, self._t0 = self.position(), target, time.monotonic()
            return "OK"
        raise ValueError(f"unknown command {command!r}")


class PowerSupplyEmulator(PtyDevice):
    """A 12 V detector supply drawing 1.25 A when on."""

    def __init__(self, link: str | None = None) -> None:
        super().__init__(link)
        self.on = False

    def handle(self, command: str) -> str:
        c = command.upper()
        if c == "*IDN?":
            return "TRAINSTAMP,TEAM1K-PSU-EMULATOR,0,1.0"
        if c in ("OUTP ON", "OUTP 1"):
            self.on = True
            return "OK"
        if c in ("OUTP OFF", "OUTP 0"):
            self.on = False
            return "OK"
        if c == "OUTP?":
            return "1" if self.on else "0"
        if c == "MEAS:VOLT?":
            return f"{12.0 if self.on else 0.0:.3f}"
        if c == "MEAS:CURR?":
            return f"{1.25 if self.on else 0.0:.3f}"
        raise ValueError(f"unknown command {command!r}")
