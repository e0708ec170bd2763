"""team1k's README client examples, run against the IOC with only the import line changed.

Each example below is the README's text. Before it runs, three things are replaced, and
nothing else: the import line (``from team1k import ...`` becomes trainstamp's; the
README writes it once, each example here starts with it), the placeholder host
``detector-machine`` (the IOC's host here, ``localhost``), the placeholder
``/path/to/params.txt`` (a real parameter file), and the monitoring example's
``# ... later``, which becomes a wait for the first image. The IOC serves the default
prefix ``TEAM1K:`` on this test's own CA port, so ``Client()`` finds it, and its frames
reach the client over the ZMQ data-transfer port only: the client is never told the
data directory.
"""

from __future__ import annotations

import contextlib
import io
import socket
import textwrap

import numpy as np
import pytest
from test_detector_ioc import start_emulator

from trainstamp.testing import Subprocess, SubprocessIOC, free_port, wait_until

pytestmark = pytest.mark.system

IMPORT = "from team1k import Client, ExposureModes"
OURS = "from trainstamp.detector import Client, ExposureModes, TriggerModes"

ACQUIRE = """
from team1k import Client, ExposureModes
client = Client(data_host="detector-machine")
# Configure
client.set_exposure_mode(ExposureModes.GLOBAL_SHUTTER_CDS)
client.set_integration_time(6.0) # ms
# One-shot: start DAQ, capture 100 frames, stop DAQ
frames = client.acquire_frames(100)
print(frames.shape) # (100, 1024, 1024)
print(frames.dtype) # uint16
client.close()
"""

MANUAL = """
from team1k import Client, ExposureModes
client = Client(data_host="detector-machine")
client.start_daq()
# Grab frames from the running stream
batch1 = client.get_frames(50)
batch2 = client.get_frames(50)
client.stop_daq()
client.close()
"""

MONITOR = """
from team1k import Client, ExposureModes
client = Client()
def on_frame(image):
    print(f"Frame received: {image.shape}")
client.monitor_image(on_frame)
# ... later
wait_for_a_frame()
client.stop_monitor("IMAGE")
client.close()
"""

STATUS = """
from team1k import Client, ExposureModes
client = Client()
print(client.get_status())
print(client.is_acquiring())
print(client.get_frame_rate())
print(client.get_exposure_mode())
print(client.get_integration_time())
client.close()
"""

# "Other commands" and "Peripherals" use the client of the examples before them.
OTHER = """
from team1k import Client, ExposureModes
client = Client()
client.set_trigger_mode(TriggerModes.EXTERNAL)
client.set_adc_clock_freq(60.0) # MHz
client.set_adc_data_delay(0x1A7)
client.load_parameter_file("/path/to/params.txt")
client.set_test_mode(True) # FPGA test pattern
client.reset_connection()
"""

PERIPHERALS = """
client.insert_detector()
client.retract_detector()
client.power_on()
client.power_off()
client.close()
"""


def tcp_up(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=0.5):
        return True


@pytest.fixture(scope="module")
def beamline(tmp_path_factory, ca_ports):
    """trains -> emulator (+ bellow and power on ptys) -> IOC on TEAM1K:; yields the
    parameter file and the data directory."""
    tmp = tmp_path_factory.mktemp("team1k-readme")
    tp = free_port()
    links = (str(tmp / "bellow"), str(tmp / "power"))
    params = tmp / "params" / "params.txt"
    params.parent.mkdir()
    params.write_text("exposure_mode GLOBAL_SHUTTER_CDS\nintegration_time 6.0\n")
    with contextlib.ExitStack() as stack:
        trains = Subprocess(["emulate", "trains", "--port", str(tp), "--period", "20"],
                            ready=lambda: tcp_up(tp)).start()
        stack.callback(trains.stop)
        emu, rp, dp = start_emulator(["--rate", "20"], trains=tp, links=links)
        stack.callback(emu.stop)
        args = ["ioc", "detector", "--pv-prefix", "TEAM1K:", "--detector-ip", "127.0.0.1",
                "--register-port", str(rp), "--data-port", str(dp), "--data-dir",
                str(tmp / "data"), "--interfaces", "127.0.0.1", "--ring-slots", "64",
                "--zmq-port", str(free_port()), "--param-dir", str(params.parent),
                "--bellow-port", links[0], "--power-port", links[1]]
        ioc = SubprocessIOC(args, ca_ports, ready_pv="TEAM1K:STATUS", timeout=60).start()
        stack.callback(ioc.stop)
        yield params, tmp / "data"


def run_example(text: str, beamline, namespace: dict | None = None) -> tuple[str, dict]:
    params, _ = beamline
    assert IMPORT in text
    code = (textwrap.dedent(text).replace(IMPORT, OURS)
            .replace('"detector-machine"', '"localhost"')
            .replace("/path/to/params.txt", str(params)))
    ns = {} if namespace is None else namespace
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "<team1k README example>", "exec"), ns)
    return out.getvalue(), ns


def test_acquire_frames(beamline):
    out, ns = run_example(ACQUIRE, beamline)
    assert out.splitlines() == ["(100, 1024, 1024)", "uint16"]
    assert ns["frames"].dtype == np.uint16
    numbers = ns["client"].last_frame_numbers.astype(np.int64)
    assert (np.diff(numbers) >= 1).all()  # frames of the stream, in order
    # a frame missing here was counted, never hidden: lost on the link, or overtaken
    # in the ring before the writer kept it
    from trainstamp.detector import Client

    with Client() as check:
        counted = check.get("CAPTURE:OVERRUNS") + check.get("RX:DROPPED")
    assert int((np.diff(numbers) - 1).sum()) <= counted


def test_manual_daq_control(beamline):
    _, ns = run_example(MANUAL, beamline)
    a, b = ns["batch1"], ns["batch2"]
    assert a.shape == b.shape == (50, 1024, 1024)
    assert not np.array_equal(a[-1], b[0])


def test_live_image_monitoring(beamline):
    from trainstamp.detector import Client

    runner = Client()  # the example shows a running stream: start it beside it
    runner.start_daq()
    out = io.StringIO()

    def wait_for_a_frame():
        wait_until(lambda: "Frame received" in out.getvalue(), timeout=20,
                   message="a preview image")

    try:
        with contextlib.redirect_stdout(out):
            exec(compile(MONITOR.replace(IMPORT, OURS), "<team1k README example>", "exec"),
                 {"wait_for_a_frame": wait_for_a_frame})
    finally:
        runner.stop_daq()
        runner.close()
    assert out.getvalue().splitlines()[0] == "Frame received: (256, 256)"


def test_status(beamline):
    out, _ = run_example(STATUS, beamline)
    lines = out.splitlines()
    assert lines[0] == "OK" and lines[1] in ("True", "False")
    float(lines[2])
    assert int(lines[3]) in range(4) and float(lines[4]) > 0  # an IntEnum prints its value


def test_other_commands_and_peripherals(beamline):
    _, ns = run_example(OTHER, beamline)
    client = ns["client"]
    # the reset kept the configured registers: external trigger, test mode, the file's mode
    assert int(client.get_trigger_mode()) == 1
    assert client.get("TEST_MODE") == 1
    assert client.get("ADC_DATA_DELAY") == 0x1A7
    assert client.get_adc_clock_freq() == pytest.approx(60.0, rel=1e-8)
    assert client.get_exposure_mode().name == "GLOBAL_SHUTTER_CDS"
    exec(compile(textwrap.dedent(PERIPHERALS), "<team1k README example>", "exec"), ns)
    with contextlib.suppress(Exception):
        client.close()
