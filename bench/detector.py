"""Detector data path benchmark: emulator -> receiver process -> HDF5, at paced rates.

Prints the highest frame rate with zero loss (no lost, incomplete or dropped frame, and
no frame the HDF5 writer missed) over ``--seconds`` (30 by default), its MB/s, and the
ratio to the loopback's raw UDP capacity measured in the same run by a minimal C
receiver (plain ``recv`` loop) fed by a flat-out C sender (``sendmmsg``) with the same
packet size. The emulator's internal trigger runs with a 0.1 ms integration time so that
the frame-period register, not the exposure, sets the pace.

The HDF5 writer rolls over to a new file every ``--frames-per-file`` frames and deletes
each closed file (in a temp dir, on disk), so a 30 s run does not need 25 GB of disk: the
files are gone before the kernel writes them back, so this measures writing into the page
cache. Sustained rates to a real disk are bounded by that disk (reported by
``--disk-check``). CPU seconds of each process are printed to show where the time goes.

Usage: .venv/bin/python bench/detector.py [--seconds 30] [--rates 100,200,...] [--quick]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from trainstamp.detector import _protocol as P
from trainstamp.detector._capture import CaptureFile
from trainstamp.detector._receiver import Receiver, ReceiverConfig
from trainstamp.detector._regclient import DetectorCommands, RegisterClient
from trainstamp.detector._registers import Reg
from trainstamp.testing import free_port

C_REFERENCE = r"""
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec * 1e-9; }
static double cpu(void) { struct rusage u; getrusage(RUSAGE_SELF, &u);
    return u.ru_utime.tv_sec + u.ru_stime.tv_sec + (u.ru_utime.tv_usec + u.ru_stime.tv_usec) * 1e-6; }
int main(int argc, char **argv) {
    int s = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in a; memset(&a, 0, sizeof a); a.sin_family = AF_INET;
    a.sin_port = htons(atoi(argv[2])); a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    double secs = atof(argv[3]);
    static char buf[65536];
    if (!strcmp(argv[1], "recv")) {
        int sz = atoi(argv[4]);
        if (setsockopt(s, SOL_SOCKET, SO_RCVBUFFORCE, &sz, sizeof sz)) setsockopt(s, SOL_SOCKET, SO_RCVBUF, &sz, sizeof sz);
        struct timeval tv = {0, 300000}; setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        if (bind(s, (struct sockaddr *)&a, sizeof a)) { perror("bind"); return 1; }
        printf("ready\n"); fflush(stdout);
        long n = 0, bytes = 0; double t0 = 0, t1 = 0;
        for (;;) {
            ssize_t r = recv(s, buf, sizeof buf, 0);
            if (r < 0) { if (n) break; continue; }
            t1 = now(); if (!n) t0 = t1;
            n++; bytes += r;
            if (t1 - t0 > secs) break;
        }
        printf("%ld %ld %.6f %.3f\n", n, bytes, t1 - t0, cpu());
    } else {
        /* as fast as the kernel takes them: sendmmsg batches of 64, a big send buffer */
        int size = atoi(argv[4]); long n = 0; double t0 = now();
        int sz = 8 << 20;
        if (setsockopt(s, SOL_SOCKET, SO_SNDBUFFORCE, &sz, sizeof sz)) setsockopt(s, SOL_SOCKET, SO_SNDBUF, &sz, sizeof sz);
        struct iovec iov[64]; struct mmsghdr mm[64]; memset(mm, 0, sizeof mm);
        for (int k = 0; k < 64; k++) {
            iov[k].iov_base = buf; iov[k].iov_len = size;
            mm[k].msg_hdr.msg_name = &a; mm[k].msg_hdr.msg_namelen = sizeof a;
            mm[k].msg_hdr.msg_iov = &iov[k]; mm[k].msg_hdr.msg_iovlen = 1;
        }
        while (now() - t0 < secs) { int r = sendmmsg(s, mm, 64, 0); if (r > 0) n += r; }
        printf("%ld %.3f\n", n, cpu());
    }
    return 0;
}
"""


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (and its reaped children) from /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    tick = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / tick


def raw_reference(seconds: float, payload: int, workdir: Path) -> dict:
    """Loopback capacity: flat-out C sender (sendmmsg) -> minimal C receiver (one recv per
    datagram), same packet size."""
    if not shutil.which("gcc"):
        raise SystemExit("gcc is needed for the raw UDP reference (apt-get install gcc)")
    src, exe = workdir / "udpref.c", workdir / "udpref"
    src.write_text(C_REFERENCE)
    subprocess.run(["gcc", "-O2", "-o", str(exe), str(src)], check=True)
    port = free_port("udp")
    rx = subprocess.Popen([str(exe), "recv", str(port), str(seconds), str(128 << 20)], stdout=subprocess.PIPE, text=True)
    assert rx.stdout is not None and rx.stdout.readline().strip() == "ready"
    tx = subprocess.run([str(exe), "send", str(port), str(seconds), str(P.HEADER_SIZE + payload)],
                        capture_output=True, text=True, check=True)
    n, nbytes, dt, rx_cpu = rx.communicate(timeout=seconds + 10)[0].split()
    sent, tx_cpu = tx.stdout.split()
    sent, n, nbytes, dt = int(sent), int(n), int(nbytes), float(dt)
    return {"sent": sent, "received": n, "pps": n / dt, "MBps": nbytes / dt / 1e6,
            "fps": n / dt / P.packets_per_frame(payload), "loss": 1 - n / max(sent, 1),
            "rx_us_per_packet": float(rx_cpu) / n * 1e6, "tx_us_per_packet": float(tx_cpu) / max(sent, 1) * 1e6}


def pipeline(rate: float, seconds: float, payload: int, workdir: Path, frames_per_file: int,
             slots: int = 256, rcvbuf: int = 512 << 20, rt_priority: int = 0) -> dict:
    """One paced run: emulator subprocess -> receiver process -> rolling HDF5 files."""
    rp, dp = free_port("udp"), free_port("udp")
    n_frames = int(rate * seconds)
    emu = subprocess.Popen([sys.executable, "-m", "trainstamp", "emulate", "detector", "--register-port", str(rp),
                            "--data-port", str(dp), "--rate", str(rate), "--frames", str(n_frames),
                            "--payload-size", str(payload), "--test-mode", "--log-level", "WARNING"],
                           stdout=subprocess.PIPE, text=True)
    assert emu.stdout is not None
    emu.stdout.readline()  # "team1k emulator ready ..."
    rx = Receiver(ReceiverConfig(detector_ip="127.0.0.1", data_port=dp, bind_host="127.0.0.1",
                                 payload_size=payload, n_slots=slots, rcvbuf=rcvbuf,
                                 realtime_priority=rt_priority)).start()
    regs = RegisterClient("127.0.0.1", rp)
    cmd = DetectorCommands(regs)
    try:
        rx.register()
        deadline = time.monotonic() + 5
        while not regs.read(Reg.STATUS) & 0x4:
            if time.monotonic() > deadline:
                raise RuntimeError("emulator never saw the registration")
            time.sleep(0.01)
        # the frame time is max(period, integration + readout): keep the integration short so
        # that the period register (the asked rate) sets the pace
        cmd.set_integration_time(0.1)
        cmd.set_exposure_mode(2)
        cpu0 = {"receiver": cpu_seconds(rx._proc.pid), "emulator": cpu_seconds(emu.pid)}  # type: ignore[union-attr]
        wcpu0 = time.process_time()
        cmd.start_daq()
        t_start = time.monotonic()
        seq, written, overruns, f, files = 1, 0, 0, None, 0
        first_ts = last_ts = 0
        last_progress = time.monotonic()
        while written + overruns < n_frames and time.monotonic() - last_progress < 2.0:
            head = rx.head
            if head < seq:
                time.sleep(0.0005)
                continue
            if head - seq > rx.cfg.n_slots - 2:
                overruns += head - seq - (rx.cfg.n_slots - 2)
                seq = head - (rx.cfg.n_slots - 2)
            if f is None:
                f = CaptureFile(workdir / f"bench_{files:05d}.h5", flush_interval=0.5)
                files += 1
            fn, train_id, ts, complete = rx.frame_info(seq)
            index = f.append(rx.frame_raw(seq), fn, train_id, complete)
            if rx.valid(seq):
                written += 1
                first_ts = first_ts or ts
                last_ts = ts
            else:
                f.truncate(index)
                overruns += 1
            seq += 1
            last_progress = time.monotonic()
            if f.count >= frames_per_file:
                f.close()
                os.unlink(f.path)  # keep the run off the disk: page cache only
                f = None
        elapsed = time.monotonic() - t_start
        if f is not None:
            f.close()
            os.unlink(f.path)
        cpu = {"receiver": cpu_seconds(rx._proc.pid) - cpu0["receiver"],  # type: ignore[union-attr]
               "emulator": cpu_seconds(emu.pid) - cpu0["emulator"], "writer": time.process_time() - wcpu0}
        c = rx.counters()
        rcvbuf = rx.rcvbuf_granted
    finally:
        regs.close()
        rx.stop()
        emu.terminate()
        emu.wait(10)
    span = (last_ts - first_ts) / 1e9
    achieved = (written - 1) / span if span > 0 else float("nan")
    zero_loss = (c["lost"] == c["incomplete"] == c["dropped"] == 0 and overruns == 0 and written == n_frames)
    return {"rate": rate, "frames": n_frames, "written": written, "overruns": overruns, "lost": c["lost"],
            "incomplete": c["incomplete"], "dropped": c["dropped"], "achieved_fps": achieved,
            "MBps": achieved * P.FRAME_BYTES / 1e6, "elapsed": elapsed, "cpu": cpu, "zero_loss": zero_loss,
            "rcvbuf": rcvbuf, "ppf": P.packets_per_frame(payload)}


def load() -> str:
    return "load average " + " ".join(f"{x:.1f}" for x in os.getloadavg())


def show(r: dict) -> str:
    packets = r["written"] * r["ppf"]
    cpu = ", ".join(f"{k} {v:.1f} s ({v / max(packets, 1) * 1e6:.1f} us/packet)" for k, v in r["cpu"].items())
    return (f"  asked {r['rate']:6.0f} fps: achieved {r['achieved_fps']:6.1f} fps ({r['MBps']:6.0f} MB/s), "
            f"written {r['written']}/{r['frames']}, lost pkts {r['lost']}, incomplete {r['incomplete']}, "
            f"dropped {r['dropped']}, writer overruns {r['overruns']} -> {'ZERO LOSS' if r['zero_loss'] else 'LOSS'}"
            f"\n      CPU over {r['elapsed']:.1f} s: {cpu}; {load()}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=30.0, help="length of the confirming run")
    ap.add_argument("--scan-seconds", type=float, default=4.0, help="length of each scan run")
    ap.add_argument("--rates", default="200,300,400,500,600,700,800,1000", help="scan ladder, fps")
    ap.add_argument("--payload-size", type=int, default=P.JUMBO_PAYLOAD, choices=P.PAYLOAD_SIZES)
    ap.add_argument("--frames-per-file", type=int, default=200)
    ap.add_argument("--workdir", default=None,
                    help="where the rolling HDF5 files go (default: a new temp dir)")
    ap.add_argument("--ring-slots", type=int, default=256, help="receiver ring slots (2 MiB each)")
    ap.add_argument("--rcvbuf", type=int, default=512 << 20, help="SO_RCVBUF to ask for, bytes")
    ap.add_argument("--rt-priority", type=int, default=0,
                    help="SCHED_FIFO priority of the receive loop (root), 0 = normal scheduling")
    ap.add_argument("--quick", action="store_true", help="short runs only (5 s confirm)")
    args = ap.parse_args(argv)
    if args.quick:
        args.seconds = 5.0
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="team1k-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        return run(args, workdir)
    finally:
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)


def run(args: argparse.Namespace, workdir: Path) -> int:
    print(f"HDF5 files in {workdir}; receiver ring {args.ring_slots} slots, SO_RCVBUF asked {args.rcvbuf >> 20} MiB, "
          f"receiver {'SCHED_FIFO ' + str(args.rt_priority) if args.rt_priority else 'normal scheduling'}")
    print(f"TEAM1k detector data path; payload {args.payload_size} B, {P.packets_per_frame(args.payload_size)} "
          f"packets/frame, frame {P.FRAME_BYTES} B; {os.cpu_count()} CPUs (shared, timings are noisy); {load()}")
    ref = raw_reference(5.0, args.payload_size, workdir)
    print(f"raw UDP reference (C sendmmsg flat out -> C recv loop, 5 s): {ref['pps'] / 1e3:.0f} k packets/s, "
          f"{ref['MBps']:.0f} MB/s = {ref['fps']:.0f} frames/s equivalent (sender loss {ref['loss']:.1%}); "
          f"CPU per packet: receiver {ref['rx_us_per_packet']:.1f} us, sender {ref['tx_us_per_packet']:.1f} us")
    print(f"scan ({args.scan_seconds:g} s per rate):")
    best = None
    for rate in (float(x) for x in args.rates.split(",")):
        for _attempt in range(2):  # the machine is shared: one retry before calling it a loss
            r = pipeline(rate, args.scan_seconds, args.payload_size, workdir, args.frames_per_file,
                         args.ring_slots, args.rcvbuf, args.rt_priority)
            print(show(r), flush=True)
            if r["zero_loss"]:
                break
        if not r["zero_loss"]:
            break
        best = r
    if best is None:
        print("no zero-loss rate found")
        return 1
    rate = best["rate"]
    confirmed = None
    for _ in range(4):
        print(f"confirm {rate:g} fps for {args.seconds:g} s:")
        r = pipeline(rate, args.seconds, args.payload_size, workdir, args.frames_per_file, args.ring_slots,
                     args.rcvbuf, args.rt_priority)
        print(show(r), flush=True)
        if r["zero_loss"]:
            confirmed = r
            break
        rate = round(rate * 0.85, -1)
    if confirmed is None:
        print("RESULT: no rate held zero loss for the full run")
        return 1
    ratio = confirmed["MBps"] / ref["MBps"]
    print(f"RESULT: {confirmed['achieved_fps']:.0f} frames/s with zero loss over {args.seconds:g} s = "
          f"{confirmed['MBps']:.0f} MB/s; raw UDP {ref['MBps']:.0f} MB/s; ratio {ratio:.2f} "
          f"(targets: >= 400 fps / 840 MB/s, ratio >= 0.7)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
