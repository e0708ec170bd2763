"""The detector IOC under faults: stale previews, resets, a restarted FPGA, frames
without train IDs, hostile parameter files, a dead detector, and failed plans.

Each test starts its own emulator and IOC subprocesses (the faults change their state).
"""

import contextlib
import os
import threading
import time

import numpy as np
import pytest
from test_detector_ioc import TRAIN0, start_emulator, start_ioc, tcp_up

from trainstamp.detector import _pvnames as PV
from trainstamp.detector._capture import read_capture
from trainstamp.detector._regclient import DetectorCommands, RegisterClient
from trainstamp.detector.client import Client
from trainstamp.testing import Subprocess, free_port, wait_until

pytestmark = pytest.mark.system


@contextlib.contextmanager
def line(ca_ports, tmp_path, emu_args=("--rate", "20"), trains=False, ioc_args=(), before_ioc=None):
    """(trains ->) emulator -> IOC; yields (client, emulator, ports, stack)."""
    with contextlib.ExitStack() as stack:
        tp = None
        if trains:
            tp = free_port()
            feed = Subprocess(["emulate", "trains", "--port", str(tp), "--period", "50", "--start",
                               str(TRAIN0)], ready=lambda: tcp_up(tp)).start()
            stack.callback(feed.stop)
        emu, rp, dp = start_emulator(list(emu_args), trains=tp)
        box = {"emu": emu}
        stack.callback(lambda: box["emu"].stop())
        if before_ioc is not None:
            before_ioc(rp)
        ioc, prefix = start_ioc(ca_ports, rp, dp, tmp_path / "data", ioc_args)
        stack.callback(ioc.stop)
        client = stack.enter_context(Client(prefix, timeout=20))
        wait_until(lambda: client.get_status() == "OK", timeout=20, message="IOC status OK")
        yield client, box, (rp, dp, tp), stack


def settled(read, quiet_s: float, timeout: float = 20.0):
    """``read()``'s value once it has not changed for ``quiet_s`` seconds."""
    last = {"value": read(), "since": time.monotonic()}

    def still() -> bool:
        value = read()
        if value != last["value"]:
            last.update(value=value, since=time.monotonic())
            return False
        return time.monotonic() - last["since"] >= quiet_s

    wait_until(still, timeout=timeout, interval=0.1, message=f"no change for {quiet_s} s")
    return last["value"]


def test_image_is_posted_only_when_a_new_frame_exists(ca_ports, tmp_path):
    with line(ca_ports, tmp_path) as (client, *_):
        images = []
        client.start_daq()
        client.monitor_image(images.append)
        wait_until(lambda: len(images) >= 2, timeout=10, message="previews while running")
        client.stop_daq()
        wait_until(lambda: not client.is_acquiring(), timeout=5)
        # Stopped: FRAME_COUNT still for a second. FRAME_RATE read 0 once under load while
        # two frames of the stream still waited in the receive buffer.
        count = settled(lambda: client.get(PV.FRAME_COUNT), quiet_s=1.0)
        seen = len(images)
        threading.Event().wait(2.0)  # four preview periods with no new frame
        assert client.get(PV.FRAME_COUNT) == count
        assert len(images) - seen <= 1  # at most the last frame, once; never re-posted
        client.stop_monitor()


def test_setpoints_show_the_device_state_at_connect_and_a_reset_restores_the_configuration(
        ca_ports, tmp_path):
    def external_before_the_ioc(rp):
        regs = RegisterClient("127.0.0.1", rp)
        DetectorCommands(regs).set_trigger_mode(1)
        regs.close()

    with line(ca_ports, tmp_path, before_ioc=external_before_the_ioc) as (client, *_):
        assert client.get(PV.TRIGGER_MODE) == 1 and client.get(PV.CMD_TRIGGER_MODE) == 1
        client.set_exposure_mode(1)
        client.put(PV.CMD_ADC_DATA_DELAY, 0x1B3)
        client.put(PV.CMD_RESET, 1)
        assert client.get(PV.TRIGGER_MODE) == 1 and client.get(PV.CMD_TRIGGER_MODE) == 1
        assert client.get(PV.EXPOSURE_MODE) == 1 and client.get(PV.ADC_DATA_DELAY) == 0x1B3
        assert client.get(PV.CMD_EXPOSURE_MODE) == 1
        assert client.get_status() == "OK"


def test_a_restarted_fpga_gets_its_configuration_back_and_no_id_0_is_stored_as_valid(
        ca_ports, tmp_path):
    with line(ca_ports, tmp_path, trains=True) as (client, box, (rp, dp, tp), _):
        client.set_trigger_mode(1)
        client.put(PV.CMD_TEST_MODE, 1)
        # Counted before the kill: the IOC's own poll may find the restarted FPGA (and
        # restore it) before START_DAQ does, and either must count.
        restores = client.get(PV.REG_RESTORES)
        box["emu"].kill()  # the FPGA loses power: every register back to its default
        box["emu"].stop()
        box["emu"] = Subprocess(["emulate", "detector", "--register-port", str(rp), "--data-port", str(dp),
                                 "--trains", f"tcp://127.0.0.1:{tp}"])
        box["emu"].ready = lambda: "emulator ready" in box["emu"].output()
        box["emu"].start()
        client.start_daq()
        wait_until(lambda: client.get(PV.REG_RESTORES) > restores, timeout=20,
                   message="the configuration to be restored")
        assert "FPGA lost its configuration" in client.get(PV.ERR_MESSAGE)
        assert client.get(PV.TRIGGER_MODE) == 1 and client.get(PV.TEST_MODE) == 1
        path, first = client.capture(5)
        got = read_capture(path)
        ids = got["train_id"][first:first + 5]
        assert (ids > TRAIN0).all() and got["train_id_valid"][first:first + 5].all()
        assert client.get(PV.CAPTURE_BAD_TRAIN_IDS) == 0
        client.stop_daq()


def test_the_poll_finds_a_restarted_fpga_without_a_put(ca_ports, tmp_path):
    with line(ca_ports, tmp_path) as (client, box, (rp, dp, _), _):
        client.set_integration_time(2.0)
        restores = client.get(PV.REG_RESTORES)
        regs = RegisterClient("127.0.0.1", rp)
        DetectorCommands(regs).reset()  # as a power cycle does, behind the IOC's back
        regs.close()
        wait_until(lambda: client.get(PV.REG_RESTORES) > restores, timeout=20, message="a restore")
        assert client.get(PV.INTEGRATION_TIME) == pytest.approx(2.0)
        wait_until(lambda: client.get_status() in ("RESTORED: FPGA RESTARTED", "OK"), timeout=5)


def test_frames_without_train_ids_in_external_trigger_are_flagged(tmp_path):
    """The server is configured for external trigger, but the FPGA sends internal-trigger
    frames (train ID 0), as right after a restart: every such frame is flagged."""
    from trainstamp.detector._acquisition import CaptureState, Team1kServer
    from trainstamp.detector._emulator import FpgaEmulator
    from trainstamp.detector._receiver import ReceiverConfig
    from trainstamp.detector._registers import Reg

    with contextlib.ExitStack() as stack:
        emu = FpgaEmulator("127.0.0.1", free_port("udp"), free_port("udp"), rate=50).start()
        stack.callback(emu.stop)
        emu.regs[Reg.TEST_MODE] = 1
        srv = Team1kServer("127.0.0.1", emu.register_port, emu.data_port, str(tmp_path / "data"),
                           ReceiverConfig(detector_ip="127.0.0.1", data_port=emu.data_port, n_slots=8))
        srv.start()
        stack.callback(srv.close)
        srv.config.adopt()
        srv.config.values["trigger_mode"] = 1  # configured external; the FPGA lost it
        srv.cmd.start_daq()  # behind the restore, as a frame in flight before it
        job = srv.capture(3, srv.capture_path(".", "noid", 1))
        assert job.done.wait(30)
        srv.cmd.stop_daq()
        assert job.status == CaptureState.READY and job.bad_train_ids == 3
        assert "3 of 3 frames without a train ID" in job.message
        got = read_capture(job.path)
        assert (got["train_id"] == 0).all() and not got["train_id_valid"].any()


def test_hostile_parameter_files_never_leak_or_block(ca_ports, tmp_path):
    params = tmp_path / "params"
    params.mkdir()
    secret = tmp_path / "secret.txt"
    secret.write_text("root:x:0:0:root:/root:/bin/bash\n")
    (params / "secret").symlink_to(secret)
    (params / "wrong.txt").write_text("s3cr3t-token\n")
    fifos = [params / "fifo1", params / "fifo2"]
    for f in fifos:
        os.mkfifo(f)
    (params / "zero").symlink_to("/dev/zero")
    with line(ca_ports, tmp_path, ioc_args=["--param-dir", str(params)]) as (client, *_):
        for name, why in ((str(secret), "outside the parameter directories"),
                          ("../secret.txt", "outside the parameter directories"),
                          ("secret", "outside the parameter directories"),
                          ("fifo1", "not a regular file"), ("fifo2", "not a regular file"),
                          ("zero", "outside the parameter directories"),  # -> /dev/zero
                          ("wrong.txt", "wrong.txt:1: unknown parameter")):
            with pytest.raises(ValueError, match="refused") as err:
                client.put(PV.CMD_PARAMETER_FILE, name)
            message = client.get(PV.ERR_MESSAGE)
            assert why in message
            for leak in ("root:x", "s3cr3t"):
                assert leak not in message and leak not in str(err.value)
        client.put(PV.CMD_ADC_DATA_DELAY, 0x1A9)  # the workers are free
        assert client.get(PV.ADC_DATA_DELAY) == 0x1A9


def test_file_puts_do_not_wait_behind_register_puts_to_a_dead_detector(ca_ports, tmp_path):
    with line(ca_ports, tmp_path, ioc_args=["--register-timeout", "0.5", "--register-retries", "3"]) as (
            client, box, _, _):
        from caproto.threading.client import Context

        box["emu"].kill()  # every register put now waits out 4 tries of 0.5 s
        done = []
        ctx = Context()
        (delay,) = ctx.get_pvs(client.prefix + PV.CMD_ADC_DATA_DELAY, timeout=10)
        delay.wait_for_connection(timeout=10)

        def register_put(k):
            with contextlib.suppress(Exception):  # refused: no reply from the detector
                delay.write([0x1A0 + k], wait=True, timeout=60)
            done.append(k)

        threads = [threading.Thread(target=register_put, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        wait_until(lambda: client.get(PV.REG_RETRIES) >= 2, timeout=10, message="register puts under way")
        client.put(PV.CAPTURE_OPEN, 1)  # a file put: its own workers
        pending = 4 - len(done)
        client.put(PV.CAPTURE_OPEN, 0)
        for t in threads:
            t.join(60)
        ctx.disconnect()
        assert pending > 0, "the file put waited until every register put had timed out"
        assert os.path.exists(client.get(PV.CAPTURE_FULL_PATH))


def test_a_capture_can_be_cancelled(ca_ports, tmp_path):
    with line(ca_ports, tmp_path) as (client, *_):
        client.start_daq()
        client.put(PV.CMD_CAPTURE, 1000)
        wait_until(lambda: client.get(PV.CAPTURE_PROGRESS) >= 2, timeout=20)
        n0 = client.get(PV.CAPTURE_FINISHED)
        client.put(PV.CAPTURE_CANCEL, 1)
        wait_until(lambda: client.get(PV.CAPTURE_FINISHED) > n0, timeout=10)
        assert client.get(PV.CAPTURE_STATUS) == "ERROR" and client.get(PV.CAPTURE_MESSAGE) == "cancelled"
        client.put(PV.CMD_CAPTURE, 1000)
        wait_until(lambda: client.get(PV.CAPTURE_PROGRESS) >= 1, timeout=20)
        client.put(PV.CMD_RESET, 1)  # a reset cancels too
        wait_until(lambda: client.get(PV.CAPTURE_STATUS) == "ERROR", timeout=10)
        assert "CMD:RESET" in client.get(PV.CAPTURE_MESSAGE)
        # Closing the file cancels the capture in it (a plan that failed mid-capture
        # unstages): the close is accepted, not refused as "a capture is in progress".
        client.put(PV.CAPTURE_OPEN, 1)
        client.start_daq()
        client.put(PV.CMD_CAPTURE, 1000)
        wait_until(lambda: client.get(PV.CAPTURE_PROGRESS) >= 1, timeout=20)
        client.put(PV.CAPTURE_OPEN, 0)  # accepted: before, "a capture is in progress"
        wait_until(lambda: client.get(PV.CAPTURE_STATUS) == "ERROR", timeout=10)
        assert "the capture file was closed" in client.get(PV.CAPTURE_MESSAGE)


def test_a_failed_plan_leaves_the_detector_unstaged(ca_ports, tmp_path):
    from bluesky import RunEngine
    from bluesky.plans import count

    from trainstamp.detector import Team1k

    with line(ca_ports, tmp_path) as (client, *_):
        det = Team1k(client.prefix, name="team1k")
        det.wait_for_connection(timeout=10)
        client.put(PV.CAPTURE_DIR, "sub")
        blocker = tmp_path / "data" / "sub"
        blocker.write_text("a file where the capture directory should be")
        RE = RunEngine({})
        with pytest.raises(RuntimeError, match="team1k: stage failed"):
            RE(count([det], 1))
        assert det._staged.name != "yes" and det._datum_factory is None
        blocker.unlink()
        (uid,) = RE(count([det], 2))  # no RedundantStaging
        assert uid
        assert not np.asarray(client.get(PV.CAPTURE_OPEN)).any()
