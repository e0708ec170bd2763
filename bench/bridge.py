"""karabo-bridge benchmark: trains/s and message latency of ``trainstamp.bridge`` against a
plain ZeroMQ REQ/REP of the same bytes, on loopback.

Each train is what a fly run sends: the TimeServer tick, a 1024 x 1024 uint16 detector
frame (2 MiB) and the tagger's counts. Three servers answer ``next`` from a client that
asks as fast as it can:

- ``plain``: a REP socket replying with the train's multipart message encoded once in
  advance, read by a REQ socket that only receives (transport alone);
- ``plain+decode``: the same server, read by ``karabo_bridge.Client`` (adds the
  client's decoding);
- ``bridge``: :class:`trainstamp.bridge.BridgeServer` (a queued train per request: the
  frame read through its lazy part, the message encoded per train), read by
  ``karabo_bridge.Client``.

Latency is from the request to the decoded reply (p50, p99). It also times the
producer's side (``Bridge.add`` of the three parts of a train, no client): what the
capture path pays per train.

Usage: .venv/bin/python bench/bridge.py [--trains 2000] [--repeats 3] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import threading
import time

import numpy as np
import zmq
from karabo_bridge import Client

from trainstamp.bridge import Bridge, BridgeServer, Part, Train, encode
from trainstamp.bridge._core import resolve

TS, DET, TT = ("TRAINSTAMP/TIMESERVER/timeserver", "TRAINSTAMP/DET/team1k:daqOutput",
               "TRAINSTAMP/TAGGER/tagger:output")
FRAME = np.random.default_rng(1).integers(0, 4096, (1024, 1024), dtype=np.uint16)


def train(tid: int) -> Train:
    t = 1_800_000_000_000_000_000 + tid * 100_000_000
    return Train(tid, {
        TS: Part({"trainId": tid, "tickTime": t / 1e9}, t),
        DET: Part({"data.trainId": tid, "data.frameNumber": tid, "data.complete": True}, t,
                  {"data.image": lambda: FRAME}),
        TT: Part({"counts.counts": 5000, "counts.width": 100_000_000_000,
                  "counts.firstTrainId": tid, "counts.lastTrainId": tid}, t),
    })


def _plain_server(ctx: zmq.Context, message: list, stop: threading.Event) -> tuple[int, threading.Thread]:
    sock = ctx.socket(zmq.REP)
    sock.setsockopt(zmq.LINGER, 0)
    port = sock.bind_to_random_port("tcp://127.0.0.1")

    def run() -> None:
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        while not stop.is_set():
            if poller.poll(100):
                sock.recv()
                sock.send_multipart(message, copy=False)
        sock.close(linger=0)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return port, thread


def _summary(name: str, n: int, elapsed: float, lat: list[float]) -> dict:
    lat_ms = sorted(x * 1e3 for x in lat)
    return {"name": name, "trains": n, "trains_per_s": n / elapsed,
            "MB_per_s": n * FRAME.nbytes / elapsed / 1e6,
            "p50_ms": statistics.median(lat_ms), "p99_ms": lat_ms[int(0.99 * (len(lat_ms) - 1))]}


def run_plain(n: int, decode: bool) -> dict:
    sources, times, _ = resolve(train(1))
    message = encode(1, sources, times)
    ctx = zmq.Context()
    stop = threading.Event()
    port, thread = _plain_server(ctx, message, stop)
    lat = []
    try:
        if decode:
            with Client(f"tcp://127.0.0.1:{port}", timeout=10) as client:
                t0 = time.perf_counter()
                for _ in range(n):
                    t = time.perf_counter()
                    data, _ = client.next()
                    lat.append(time.perf_counter() - t)
                elapsed = time.perf_counter() - t0
        else:
            req = ctx.socket(zmq.REQ)
            req.setsockopt(zmq.LINGER, 0)
            req.connect(f"tcp://127.0.0.1:{port}")
            t0 = time.perf_counter()
            for _ in range(n):
                t = time.perf_counter()
                req.send(b"next")
                req.recv_multipart(copy=False)
                lat.append(time.perf_counter() - t)
            elapsed = time.perf_counter() - t0
            req.close(linger=0)
    finally:
        stop.set()
        thread.join(5)
        ctx.term()
    return _summary("plain+decode" if decode else "plain", n, elapsed, lat)


def run_bridge(n: int) -> dict:
    lat = []
    with BridgeServer(queue_depth=n) as server:
        for tid in range(1, n + 1):
            server.feed(train(tid))
        with Client(server.endpoint, timeout=10) as client:
            t0 = time.perf_counter()
            for tid in range(1, n + 1):
                t = time.perf_counter()
                data, meta = client.next()
                lat.append(time.perf_counter() - t)
                assert meta[DET]["timestamp.tid"] == tid
            elapsed = time.perf_counter() - t0
    out = _summary("bridge", n, elapsed, lat)
    assert server.queue.skipped == 0
    return out


def run_producer(n: int) -> dict:
    """µs per train for Bridge.add of its three parts, with the server idle (no client)."""
    with BridgeServer(queue_depth=1) as server:
        bridge = Bridge(server, [TS, DET, TT])
        trains = [train(tid) for tid in range(1, n + 1)]
        t0 = time.perf_counter()
        for tr in trains:
            for src, part in tr.parts.items():
                bridge.add(src, tr.train_id, part)
        elapsed = time.perf_counter() - t0
        stats = bridge.stats()
    return {"name": "producer", "trains": n, "us_per_train": elapsed / n * 1e6,
            "skipped": stats.skipped}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trains", type=int, default=2000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    results: dict[str, list[dict]] = {}
    run_plain(100, False), run_plain(100, True), run_bridge(100)  # warm up
    for _ in range(args.repeats):
        for name, fn in (("plain", lambda: run_plain(args.trains, False)),
                         ("plain+decode", lambda: run_plain(args.trains, True)),
                         ("bridge", lambda: run_bridge(args.trains)),
                         ("producer", lambda: run_producer(args.trains * 10))):
            results.setdefault(name, []).append(fn())
    print(f"{args.trains} trains of {FRAME.nbytes / 2**20:.0f} MiB frames, best of {args.repeats}:")
    best = {}
    for name, runs in results.items():
        if name == "producer":
            r = min(runs, key=lambda r: r["us_per_train"])
            print(f"  {name:<13} {r['us_per_train']:.1f} us per train (3 parts), "
                  f"{r['skipped']} skipped of {r['trains']}")
        else:
            r = max(runs, key=lambda r: r["trains_per_s"])
            print(f"  {name:<13} {r['trains_per_s']:7.0f} trains/s {r['MB_per_s']:7.0f} MB/s  "
                  f"latency p50 {r['p50_ms']:.2f} ms  p99 {r['p99_ms']:.2f} ms")
        best[name] = r
    print(f"  bridge / plain+decode: {best['bridge']['trains_per_s'] / best['plain+decode']['trains_per_s']:.2f}"
          f", bridge / plain: {best['bridge']['trains_per_s'] / best['plain']['trains_per_s']:.2f}")
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
