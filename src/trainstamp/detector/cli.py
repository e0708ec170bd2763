"""Command-line entry points: ``trainstamp ioc detector`` and ``trainstamp emulate detector``."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence
from textwrap import dedent

from trainstamp._cli_types import (
    finite_float,
    non_negative_int,
    port,
    port_or_zero,
    positive_float,
    positive_int,
)
from trainstamp.detector._protocol import (
    DEFAULT_BELLOW_PORT,
    DEFAULT_DATA_PORT,
    DEFAULT_DETECTOR_IP,
    DEFAULT_REGISTER_PORT,
    DEFAULT_ZMQ_PORT,
    JUMBO_PAYLOAD,
    PAYLOAD_SIZES,
)


def ioc(argv: Sequence[str] | None = None) -> int:
    """Run the detector IOC (team1k-server's options plus caproto's)."""
    from caproto.server import run, template_arg_parser

    from trainstamp.detector._acquisition import Team1kServer
    from trainstamp.detector._ioc import Team1kIOC
    from trainstamp.detector._receiver import ReceiverConfig
    from trainstamp.detector._transfer import FrameTransferServer

    argv = list(sys.argv[1:] if argv is None else argv)
    parser, split_args = template_arg_parser(default_prefix="TEAM1K:", desc=dedent(Team1kIOC.__doc__ or ""),
                                             argv=argv)
    parser.add_argument("--detector-ip", default=DEFAULT_DETECTOR_IP,
                        help=f"detector IP address (default: {DEFAULT_DETECTOR_IP})")
    parser.add_argument("--register-port", type=port, default=DEFAULT_REGISTER_PORT,
                        help=f"detector register port (default: {DEFAULT_REGISTER_PORT})")
    parser.add_argument("--data-port", type=port, default=DEFAULT_DATA_PORT,
                        help=f"detector data port (default: {DEFAULT_DATA_PORT})")
    parser.add_argument("--config", help="parameter file to apply on startup")
    parser.add_argument("--param-dir", action="append", default=[],
                        help="directory CMD:PARAMETER_FILE may read from (repeatable; default: "
                             "the directory of --config, else none)")
    parser.add_argument("--data-dir", default="./data/team1k", help="directory for capture files")
    parser.add_argument("--pv-prefix", dest="prefix", default=argparse.SUPPRESS,
                        help="team1k's spelling of --prefix")
    parser.add_argument("--zmq-port", type=port_or_zero, default=DEFAULT_ZMQ_PORT,
                        help=f"ZMQ data-transfer port: captured frames to clients "
                             f"(default: {DEFAULT_ZMQ_PORT}; 0: none)")
    parser.add_argument("--zmq-bind", default="127.0.0.1",
                        help="address the data-transfer port listens on (default: 127.0.0.1; "
                             "0.0.0.0 for all interfaces, so clients on other hosts reach it)")
    parser.add_argument("--bellow-port", default=DEFAULT_BELLOW_PORT,
                        help=f"bellow stage serial port (default: {DEFAULT_BELLOW_PORT}; if the "
                             "default does not exist, there is no stage; 'none': no stage)")
    parser.add_argument("--power-port", help="power supply serial port")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    parser.add_argument("--payload-size", type=int, default=JUMBO_PAYLOAD, choices=PAYLOAD_SIZES,
                        help="data packet payload bytes (must match the detector)")
    parser.add_argument("--receive-host", default="",
                        help="local address of the data and register sockets (default: the "
                             "interface that routes to --detector-ip; never all interfaces)")
    parser.add_argument("--receive-port", type=port_or_zero, default=0, help="local port of the data socket (0 = any)")
    parser.add_argument("--ring-slots", type=positive_int, default=128, help="frame slots in the shared ring (2 MiB each)")
    parser.add_argument("--rcvbuf", type=positive_int, default=128 << 20, help="SO_RCVBUF to ask for, bytes")
    parser.add_argument("--receiver-rt-priority", type=int, default=0,
                        help="SCHED_FIFO priority 1..99 for the receive loop (root); 0 = normal")
    parser.add_argument("--frame-timeout", dest="frame_timeout_s", type=positive_float, default=0.1,
                        help="publish a frame incomplete after this many seconds without its packets")
    parser.add_argument("--register-timeout", type=positive_float, default=0.2, help="seconds per register try")
    parser.add_argument("--register-retries", type=non_negative_int, default=3, help="register resends")
    parser.add_argument("--pva", action=argparse.BooleanOptionalAction, default=True,
                        help="also serve every PV over PV Access (p4p; EPICS_PVA* variables "
                             "apply), IMAGE as a full-frame NTNDArray (default: on)")
    args = parser.parse_args(argv)
    ioc_options, run_options = split_args(args)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    bellow = None if args.bellow_port in ("", "none") else args.bellow_port
    if bellow == DEFAULT_BELLOW_PORT and not os.path.exists(bellow):
        logging.getLogger(__name__).info("no bellow stage: %s does not exist", bellow)
        bellow = None
    transfer = None
    try:
        if args.zmq_port:
            transfer = FrameTransferServer(args.data_dir, args.zmq_bind, args.zmq_port)
        rx = ReceiverConfig(detector_ip=args.detector_ip, data_port=args.data_port, bind_host=args.receive_host,
                            bind_port=args.receive_port, payload_size=args.payload_size, n_slots=args.ring_slots,
                            rcvbuf=args.rcvbuf, frame_timeout_s=args.frame_timeout_s,
                            realtime_priority=args.receiver_rt_priority)
        server = Team1kServer(args.detector_ip, args.register_port, args.data_port, args.data_dir, rx,
                              args.register_timeout, args.register_retries, bellow, args.power_port,
                              param_dirs=args.param_dir or ([os.path.dirname(os.path.abspath(args.config))]
                                                            if args.config else []),
                              transfer=transfer)
    except (ValueError, OSError) as exc:
        if transfer is not None:
            transfer.close()
        print(f"trainstamp ioc detector: {exc}", file=sys.stderr)
        return 2
    ioc_obj = Team1kIOC(server=server, config=args.config, **ioc_options)

    def _terminate(*_: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        if args.pva:
            run_options["startup_hook"] = ioc_obj.pva_mirror().start
        run(ioc_obj.pvdb, **run_options)
    finally:
        if ioc_obj.pva is not None:
            ioc_obj.pva.stop()
        server.close()
    return 0


def emulate(argv: Sequence[str] | None = None) -> int:
    """Run the FPGA emulator (and optionally the peripheral emulators) until interrupted."""
    from trainstamp.detector._emulator import Faults, FpgaEmulator
    from trainstamp.detector._peripherals import BellowStageEmulator, PowerSupplyEmulator
    from trainstamp.detector._registers import Reg

    p = argparse.ArgumentParser(prog="trainstamp emulate detector", description=FpgaEmulator.__doc__)
    p.add_argument("--bind", default="127.0.0.1")
    p.add_argument("--host", default="127.0.0.1",
                   help="the DAQ host: the only address whose registration is accepted")
    p.add_argument("--register-port", type=port, default=DEFAULT_REGISTER_PORT)
    p.add_argument("--data-port", type=port, default=DEFAULT_DATA_PORT)
    p.add_argument("--trains", help="train-ID feed for external trigger, tcp://host:port")
    p.add_argument("--rate", type=positive_float, help="internal-trigger frame rate (sets the frame period register)")
    p.add_argument("--frames", type=non_negative_int, help="frames per DAQ start (0 = until stopped)")
    p.add_argument("--payload-size", type=int, default=JUMBO_PAYLOAD, choices=PAYLOAD_SIZES)
    p.add_argument("--test-mode", action="store_true", help="start with the test pattern on")
    p.add_argument("--seed", type=int, default=0, help="seed of the fault injector")
    g = p.add_argument_group("fault injection (fractions 0..1)")
    for name in ("drop", "reorder", "duplicate", "corrupt", "truncate", "oversize", "bad-index", "foreign",
                 "stall", "reply-drop", "reply-wrong-seq"):
        g.add_argument(f"--{name}", type=finite_float, default=0.0)
    g.add_argument("--stall-ms", type=positive_float, default=200.0, help="length of a stall")
    g.add_argument("--rewind", type=non_negative_int, default=0, help="every N-th frame also resend frame N-2")
    p.add_argument("--bellow-link", help="emulate the bellow stage on a pty, symlinked here")
    p.add_argument("--power-link", help="emulate the power supply on a pty, symlinked here")
    p.add_argument("--bellow-speed", type=positive_float, default=200.0, help="bellow stage speed, mm/s")
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    args = p.parse_args(list(sys.argv[1:] if argv is None else argv))
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    faults = Faults(**{k: getattr(args, k) for k in (
        "drop", "reorder", "duplicate", "corrupt", "truncate", "oversize", "bad_index", "foreign",
        "stall", "stall_ms", "rewind", "reply_drop", "reply_wrong_seq")})
    for name in ("drop", "reorder", "duplicate", "corrupt", "truncate", "oversize", "bad_index", "foreign",
                 "stall", "reply_drop", "reply_wrong_seq"):
        if not 0.0 <= getattr(faults, name) <= 1.0:
            p.error(f"--{name.replace('_', '-')} {getattr(faults, name)} outside 0..1")
    try:
        emu = FpgaEmulator(args.bind, args.register_port, args.data_port, args.trains, faults, args.rate,
                           args.frames, args.payload_size, args.seed, args.host)
    except (ValueError, OSError) as exc:
        print(f"trainstamp emulate detector: {exc}", file=sys.stderr)
        return 2
    if args.test_mode:
        emu.regs[Reg.TEST_MODE] = 1
    peripherals = []
    if args.bellow_link:
        peripherals.append(BellowStageEmulator(args.bellow_link, args.bellow_speed).start())
    if args.power_link:
        peripherals.append(PowerSupplyEmulator(args.power_link).start())
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: done.set())
    signal.signal(signal.SIGINT, lambda *a: done.set())
    emu.start()
    print(f"team1k emulator ready: registers {args.bind}:{emu.register_port}, data {args.bind}:{emu.data_port}"
          + "".join(f", {type(d).__name__} {d.path}" for d in peripherals), flush=True)
    try:
        done.wait()
    finally:
        emu.stop()
        for d in peripherals:
            d.stop()
        print(f"team1k emulator stopped: {emu.stats}", flush=True)
    return 0
