"""The ``trainstamp`` command: one entry point, subcommands owned by their subsystems.

The dispatcher only routes. Each subcommand is a ``main(argv) -> int`` function in the
subsystem that owns it, with its own argparse parser (caproto's ``ioc_arg_parser`` for the
IOCs), so ``trainstamp ioc detector --help`` shows the detector's own options.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

#: (command, target) -> "module:function"; the function takes the remaining argv.
COMMANDS: dict[tuple[str, ...], tuple[str, str]] = {
    ("up",): ("trainstamp.beamline:main", "start the simulated beamline: emulators + 3 IOCs"),
    ("demo",): ("trainstamp.demo:main", "the main job: run, store and check a stamped scan"),
    ("session",): ("trainstamp.session:main", "open the IPython Bluesky profile"),
    ("serve",): ("trainstamp.storage._serve:main",
                 "serve the run catalog with Tiled on PostgreSQL (many writers)"),
    ("replay",): ("trainstamp.storage._replay:main",
                  "store spooled runs (that the catalog could not take) in a catalog"),
    ("bridge",): ("trainstamp.bridge.cli:main",
                  "serve each train as a karabo-bridge message (REQ/REP, protocol 2.2)"),
    ("export", "euxfel"): ("trainstamp.storage._euxfel_write:main",
                           "write a stored run as a EuXFEL run directory (EXtra-data)"),
    ("ioc", "timeserver"): ("trainstamp.timing.cli:ioc", "TimeServer IOC"),
    ("ioc", "detector"): ("trainstamp.detector.cli:ioc", "TEAM1k detector IOC"),
    ("ioc", "tagger"): ("trainstamp.tagger.cli:ioc", "time tagger IOC + Pyro5 server"),
    ("emulate", "trains"): ("trainstamp.timing.cli:emulate", "train-ID TCP server"),
    ("emulate", "detector"): ("trainstamp.detector.cli:emulate", "TEAM1k FPGA emulator"),
    ("emulate", "tagger"): ("trainstamp.tagger.cli:emulate", "time tagger emulator"),
}


def usage() -> str:
    lines = ["usage: trainstamp COMMAND [TARGET] [options]", "", "commands:"]
    for words, (_, text) in COMMANDS.items():
        lines.append(f"  {' '.join(words):<22} {text}")
    lines += ["", "Each command takes --help for its own options."]
    return "\n".join(lines)


def resolve(argv: Sequence[str]) -> tuple[str, list[str]]:
    """Find the longest command prefix of ``argv``; return its target and the rest."""
    for n in (2, 1):
        key = tuple(argv[:n])
        if len(key) == n and key in COMMANDS:
            return COMMANDS[key][0], list(argv[n:])
    raise LookupError(" ".join(argv[:2]))


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    try:
        target, rest = resolve(argv)
    except LookupError as exc:
        print(f"trainstamp: unknown command {exc.args[0]!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module_name, func_name = target.split(":")
    func = getattr(importlib.import_module(module_name), func_name)
    try:
        return int(func(rest) or 0)
    except KeyboardInterrupt:
        return 130
