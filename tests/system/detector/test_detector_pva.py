"""The detector IOC over PV Access, read with p4p's client, beside Channel Access.

trains feed -> emulator -> IOC subprocesses, the IOC's PVA server confined to two
loopback ports the test chose (:class:`~trainstamp.testing.PVAPorts`). Every team1k
seed PV is read over PVA with its seed type; puts over PVA go through the IOC's checks;
IMAGE, monitored during an externally triggered capture, carries the very frames of
the HDF5 file, with their frame numbers and train IDs.
"""

import contextlib
import threading

import numpy as np
import pytest
from p4p.client.thread import Context, RemoteError
from test_detector_ioc import TRAIN0, start_emulator, start_ioc, tcp_up

from trainstamp.detector import _pvnames as PV
from trainstamp.detector._capture import read_capture
from trainstamp.detector.client import Client
from trainstamp.testing import PVAPorts, Subprocess, free_port, wait_until

pytestmark = pytest.mark.system

#: team1k's PVA types (its README), as p4p type codes of the NTScalar value field
SEED_TYPES = {
    PV.STATUS: "as", PV.ACQUIRING: "?", PV.FRAME_RATE: "d", PV.FRAME_COUNT: "i",
    PV.EXPOSURE_MODE: "i", PV.TRIGGER_MODE: "i", PV.INTEGRATION_TIME: "d",
    PV.CAPTURE_STATUS: "s", PV.CAPTURE_PROGRESS: "i", PV.CAPTURE_TOTAL: "i",
    PV.CMD_EXPOSURE_MODE: "i", PV.CMD_TRIGGER_MODE: "i", PV.CMD_INTEGRATION_TIME: "d",
    PV.CMD_START_DAQ: "i", PV.CMD_CAPTURE: "i", PV.CMD_ADC_CLOCK_FREQ: "d",
    PV.CMD_ADC_DATA_DELAY: "i", PV.CMD_PARAMETER_FILE: "s", PV.CMD_RESET: "i",
    PV.CMD_TEST_MODE: "i",
}


@pytest.fixture(scope="module")
def pva_line(tmp_path_factory, ca_ports):
    """trains -> emulator -> IOC with PVA; yields (CA client, PVA context, raw PVA
    context, prefix, data dir)."""
    tmp = tmp_path_factory.mktemp("team1k-pva")
    ports = PVAPorts()
    tp = free_port()
    with contextlib.ExitStack() as stack:
        trains = Subprocess(["emulate", "trains", "--port", str(tp), "--period", "50",
                             "--start", str(TRAIN0)], ready=lambda: tcp_up(tp)).start()
        stack.callback(trains.stop)
        emu, rp, dp = start_emulator(["--rate", "20"], trains=tp)
        stack.callback(emu.stop)
        ioc, prefix = start_ioc(ca_ports, rp, dp, tmp / "data", env=ports.server_env())
        stack.callback(ioc.stop)
        client = Client(prefix, timeout=20)
        stack.callback(client.close)
        ctx = stack.enter_context(Context("pva", conf=ports.client_conf(), useenv=False))
        raw = stack.enter_context(Context("pva", conf=ports.client_conf(), useenv=False, nt=False))
        wait_until(lambda: client.get_status() == "OK", timeout=20, message="IOC status OK")
        yield client, ctx, raw, prefix, tmp / "data"


def test_every_seed_pv_has_its_seed_type_over_pva(pva_line):
    client, ctx, raw, prefix, _ = pva_line
    assert set(SEED_TYPES) | {PV.IMAGE} == set(PV.SEED_PVS)
    names = [prefix + s for s in PV.SEED_PVS]
    values = dict(zip(PV.SEED_PVS, raw.get(names, timeout=10), strict=True))
    for suffix, code in SEED_TYPES.items():
        v = values[suffix]
        assert v.getID() == ("epics:nt/NTScalarArray:1.0" if code.startswith("a")
                             else "epics:nt/NTScalar:1.0"), suffix
        assert v.type()["value"] == code, suffix
    assert values[PV.IMAGE].getID() == "epics:nt/NTNDArray:1.0"
    wait_until(lambda: list(ctx.get(prefix + PV.STATUS)) == ["OK"], timeout=10,
               message="STATUS ['OK'] over PVA")
    assert bool(ctx.get(prefix + PV.ACQUIRING)) is False
    # the same values as over CA
    assert ctx.get(prefix + PV.INTEGRATION_TIME) == pytest.approx(client.get_integration_time())
    assert ctx.get(prefix + PV.EXPOSURE_MODE) == int(client.get_exposure_mode())
    assert ctx.get(prefix + PV.CAPTURE_STATUS) == client.get_capture_status()


def test_puts_over_pva_run_the_ioc_checks(pva_line):
    client, ctx, _, prefix, _ = pva_line
    before = int(client.get(PV.ERR_BAD_PUTS))
    ctx.put(prefix + PV.CMD_INTEGRATION_TIME, 2.5, timeout=10)
    assert client.get_integration_time() == pytest.approx(2.5)  # through the registers
    wait_until(lambda: ctx.get(prefix + PV.INTEGRATION_TIME) == pytest.approx(2.5), timeout=5,
               message="INTEGRATION_TIME 2.5 over PVA")
    with pytest.raises(RemoteError, match="unknown exposure mode 7"):
        ctx.put(prefix + PV.CMD_EXPOSURE_MODE, 7, timeout=10)
    assert int(client.get(PV.ERR_BAD_PUTS)) == before + 1
    with pytest.raises(RemoteError):
        ctx.put(prefix + PV.STATUS, ["HACKED"], timeout=10)  # read-only
    assert client.get_status() == "OK"
    ctx.put(prefix + PV.CMD_INTEGRATION_TIME, 6.0, timeout=10)


N_CAPTURED = 24


def test_image_during_a_capture_is_the_hdf5_frame(pva_line):
    client, ctx, raw, prefix, _ = pva_line
    ctx.put(prefix + PV.IMAGE_PVA_PERIOD, 0.02, timeout=10)
    images, lock, seen = [], threading.Lock(), threading.Event()

    def on_image(img):
        if isinstance(img, Exception) or img.size == 0:
            return
        with lock:
            images.append((img.raw["uniqueId"], img.attrib, np.array(img), img.raw_stamp))
        seen.set()

    client.set_trigger_mode(1)
    sub = ctx.monitor(prefix + PV.IMAGE, on_image)
    client.start_daq()
    try:
        assert ctx.get(prefix + PV.ACQUIRING)
        # The stream is flowing over PVA before the capture starts (its first post can
        # lag a DAQ start by several frames: a capture of the first 8 frames once saw no
        # IMAGE); then a capture of 24 frames (about 0.5 s) spans many posts.
        assert seen.wait(10)
        path, first = client.capture(N_CAPTURED)
    finally:
        client.stop_daq()
        client.set_trigger_mode(0)
    wait_until(lambda: not ctx.get(prefix + PV.ACQUIRING), timeout=10, message="ACQUIRING false")
    sub.close()
    got = read_capture(path)
    by_number = {int(n): i for i, n in
                 enumerate(got["frame_number"][first:first + N_CAPTURED], first)}
    with lock:
        shown = list(images)
    ids = [u for u, *_ in shown]
    assert ids == sorted(set(ids)), "an IMAGE was posted twice, or out of order"
    matched = 0
    for uid, attrib, img, stamp in shown:
        assert img.shape == (1024, 1024) and img.dtype == np.uint16
        assert attrib["FrameNumber"] == uid
        i = by_number.get(uid)
        if i is None:
            continue
        matched += 1
        np.testing.assert_array_equal(img, got["data"][i])
        assert attrib["TrainID"] == int(got["train_id"][i]) > TRAIN0
        assert attrib["Timestamp"] == stamp[0] * 10**9 + stamp[1]
    assert matched >= 1, f"no IMAGE among the capture's frames {sorted(by_number)}: {ids}"
    # the capture's train IDs over PVA: uint64, exactly the file's
    listed = raw.get(prefix + PV.CAPTURE_TRAIN_IDS)
    assert listed.type()["value"] == "aL"
    assert listed["value"].tolist() == got["train_id"][first:first + N_CAPTURED].tolist()
    assert raw.get(prefix + PV.LAST_TRAIN_ID).type()["value"] == "L"
