"""Benchmark the time tagger. Each section prints its figures and ratios against
references measured in the same run.

Sections (``--sections`` picks some; default all):

- ``correlation``: Correlation throughput in tags/s (both channels counted) of the
  engine (``TimeTaggerVirtual.process`` with 2**20-tag blocks, and the bare kernels),
  against (a) the classic streaming two-pointer in C (``bench/c/corr_ref.c``, built
  here with ``gcc -O2``), (b) the same two-pointer loop in numba, and (c) whole-array
  numpy (``searchsorted`` + ``bincount``), at 0.1, 1 and 10 pairs per tag. All
  implementations must produce the same histogram; the script checks that.

Usage: ``python bench/tagger.py [--sections correlation] [--tags 8000000] [--repeat 5]``.
The machine is shared (2 cores, other jobs running), so figures are noisy. Rates are
per CPU second of the measuring thread (``time.thread_time``), which waiting for a core
does not inflate; the best of ``--repeat`` interleaved rounds is reported, with the
median and the wall-clock rate alongside.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import pathlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
from numba import njit

from trainstamp.tagger.engine import Correlation, TimeTaggerVirtual, make_tags
from trainstamp.tagger.engine import _kernels as K

HERE = pathlib.Path(__file__).resolve().parent
BINWIDTH = 1000  # ps
N_BINS = 1000  # window 1 µs
BLOCK = 1 << 20


# --------------------------------------------------------------------- stream
def poisson_pair_stream(n_tags: int, pairs_per_tag: float, seed: int = 0):
    """Two independent Poisson channels (1 and 2) giving ``pairs_per_tag`` in the window.

    With per-channel rate R and window H = binwidth * n_bins, each tag sees R*H tags of
    the other channel in the window, and each pair is seen once from one of its two
    tags, so pairs per tag = R*H/2 and the merged mean gap is H / (4 * pairs_per_tag).
    """
    rng = np.random.default_rng(seed)
    mean_gap = BINWIDTH * N_BINS / (4.0 * pairs_per_tag)
    gaps = rng.exponential(mean_gap, n_tags).astype(np.int64)
    times = np.cumsum(gaps) + 1_000_000
    chans = rng.integers(1, 3, n_tags).astype(np.int32)
    return times, chans


# ----------------------------------------------------------------- references
def build_c_reference(build_dir: pathlib.Path):
    """Compile bench/c/corr_ref.c with gcc -O2 into ``build_dir``; return the function."""
    gcc = shutil.which("gcc")
    if gcc is None:
        raise SystemExit("gcc is needed for the C reference (Debian: apt-get install gcc)")
    lib = build_dir / "corr_ref.so"
    subprocess.run(
        [gcc, "-O2", "-shared", "-fPIC", "-o", str(lib), str(HERE / "c" / "corr_ref.c")],
        check=True,
    )
    so = ctypes.CDLL(str(lib))
    fn = so.corr_two_pointer
    p64 = np.ctypeslib.ndpointer(np.int64, flags="C_CONTIGUOUS")
    p32 = np.ctypeslib.ndpointer(np.int32, flags="C_CONTIGUOUS")
    i64, i32 = ctypes.c_int64, ctypes.c_int32
    fn.argtypes = [p64, p32, i64, i32, i32, i64, i64, p64, p64, p64, i64]
    fn.restype = i64
    ring = 1 << 16

    def run(times, chans):
        hist = np.zeros(N_BINS, np.int64)
        r1 = np.empty(ring, np.int64)
        r2 = np.empty(ring, np.int64)
        fn(times, chans, times.size, 1, 2, BINWIDTH, N_BINS, hist, r1, r2, ring - 1)
        return hist

    return run


@njit(cache=True, nogil=True)
def _numba_two_pointer(t, c, ch1, ch2, bw, nb, hist, ring1, ring2, mask):
    """The same loop as corr_ref.c, compiled by numba (per-pair division)."""
    span = bw * nb
    off = span // 2
    dmax = span - 1 - off
    n1 = 0
    n2 = 0
    for i in range(t.shape[0]):
        ti = t[i]
        ci = c[i]
        if ci == ch2:
            k = n1 - 1
            while k >= 0 and k > n1 - 1 - (mask + 1):
                dt = ti - ring1[k & mask]
                if dt > dmax:
                    break
                hist[(dt + off) // bw] += 1
                k -= 1
            ring2[n2 & mask] = ti
            n2 += 1
        elif ci == ch1:
            k = n2 - 1
            while k >= 0 and k > n2 - 1 - (mask + 1):
                dt = ring2[k & mask] - ti
                if dt < -off:
                    break
                hist[(dt + off) // bw] += 1
                k -= 1
            ring1[n1 & mask] = ti
            n1 += 1


def numba_two_pointer(times, chans):
    hist = np.zeros(N_BINS, np.int64)
    ring = 1 << 16
    _numba_two_pointer(
        times,
        chans,
        1,
        2,
        BINWIDTH,
        N_BINS,
        hist,
        np.empty(ring, np.int64),
        np.empty(ring, np.int64),
        ring - 1,
    )
    return hist


def numpy_whole_array(times, chans, chunk: int = 1 << 20):
    """All pairs via searchsorted on the split channels, binned with bincount."""
    a = times[chans == 1]
    b = times[chans == 2]
    span = BINWIDTH * N_BINS
    off = span // 2
    dmax = span - 1 - off
    hist = np.zeros(N_BINS, np.int64)
    for s in range(0, b.size, chunk):
        bj = b[s : s + chunk]
        lo = np.searchsorted(a, bj - dmax, "left")
        hi = np.searchsorted(a, bj + off, "right")
        cnt = hi - lo
        total = int(cnt.sum())
        if total == 0:
            continue
        rep = np.repeat(np.arange(bj.size), cnt)
        first = np.repeat(lo - np.concatenate([[0], np.cumsum(cnt)[:-1]]), cnt)
        ia = first + np.arange(total)
        dt = bj[rep] - a[ia]
        # ties (dt == 0) belong to this side only once; both sides are covered by b's view
        hist += np.bincount((dt + off) // BINWIDTH, minlength=N_BINS)
    return hist


# --------------------------------------------------------------------- engine
def engine_process(times, chans):
    """The full engine path: TAG_DTYPE blocks through TimeTaggerVirtual.process."""
    tags = make_tags(times, chans)
    t = TimeTaggerVirtual(channels=(1, 2))
    corr = Correlation(t, 1, 2, binwidth=BINWIDTH, n_bins=N_BINS)

    def run():
        corr.clear()
        for s in range(0, tags.size, BLOCK):
            t.process(tags[s : s + BLOCK])
        return corr._hist.copy()

    # the tagger keeps its stream time; replay the same stream shifted each time
    state = {"shift": 0}

    def timed():
        shift = state["shift"]
        tags["time"] += shift
        c0, w0 = time.thread_time(), time.perf_counter()
        h = run()
        cpu, wall = time.thread_time() - c0, time.perf_counter() - w0
        tags["time"] -= shift
        state["shift"] += int(times[-1] - times[0]) + 10 * BINWIDTH * N_BINS
        return h, cpu, wall

    return timed


def engine_kernel(times, chans):
    """The bare kernel on the whole stream as one contiguous block."""
    hist = np.zeros(N_BINS, np.int64)
    bufs = tuple(np.empty(2 * K.CHUNK, np.int64) for _ in range(7))
    K.cross_stream(
        times,
        chans,
        1,
        2,
        BINWIDTH,
        N_BINS * BINWIDTH // 2,
        N_BINS,
        hist,
        *bufs,
        np.zeros(8, np.int64),
    )
    return hist


# ------------------------------------------------------------------- sections
def bench_correlation(args) -> dict:
    results = {}
    with tempfile.TemporaryDirectory(prefix="trainstamp-bench-") as tmp:
        c_ref = build_c_reference(pathlib.Path(tmp))
        # warm up every jit before timing
        wt, wc = poisson_pair_stream(10_000, 1.0)
        numba_two_pointer(wt, wc)
        engine_kernel(wt, wc)
        engine_process(wt, wc)()
        print(
            f"correlation: binwidth {BINWIDTH} ps, n_bins {N_BINS}, {args.tags:,} tags, best of {args.repeat}"
        )
        header = (
            f"{'pairs/tag':>9} {'impl':<26} {'M tags/s':>9} {'median':>8} {'ratio vs C':>10}"
            f" {'wall M/s':>9} {'wall ratio':>9}"
        )
        print(header)
        for ppt in args.pairs:
            times, chans = poisson_pair_stream(args.tags, ppt, seed=int(ppt * 10))
            n = times.size
            timed = engine_process(times, chans)
            impls = {
                "c_two_pointer_gcc_O2": lambda t=times, c=chans: c_ref(t, c),
                "numba_two_pointer": lambda t=times, c=chans: numba_two_pointer(t, c),
                "engine_kernel": lambda t=times, c=chans: engine_kernel(t, c),
                "engine_process_blocks": timed,
                "numpy_searchsorted": lambda t=times, c=chans: numpy_whole_array(t, c),
            }
            runs = {name: [] for name in impls}  # CPU seconds of this thread
            walls = {name: [] for name in impls}
            hists = {}
            # Interleave the implementations round by round so that load from other
            # jobs on the shared machine hits them all alike.
            for r in range(args.repeat):
                for name, fn in impls.items():
                    if name == "numpy_searchsorted" and r >= 2:
                        continue  # slow; two runs are enough for its order of magnitude
                    if name == "engine_process_blocks":
                        h, cpu, wall = fn()
                    else:
                        c0, w0 = time.thread_time(), time.perf_counter()
                        h = fn()
                        cpu, wall = time.thread_time() - c0, time.perf_counter() - w0
                    runs[name].append(cpu)
                    walls[name].append(wall)
                    hists[name] = h
            href = hists["c_two_pointer_gcc_O2"]
            for name, h in hists.items():
                if not np.array_equal(h, href):
                    raise SystemExit(
                        f"{name} histogram differs from the C reference at {ppt} pairs/tag"
                    )
            actual_ppt = href.sum() / n
            c_best = min(runs["c_two_pointer_gcc_O2"])
            res = {"pairs_per_tag_measured": float(actual_ppt)}
            c_wall = min(walls["c_two_pointer_gcc_O2"])
            for name, r in runs.items():
                best, med, wall = min(r), statistics.median(r), min(walls[name])
                res[name] = {
                    "best_Mtags_per_cpu_s": n / best / 1e6,
                    "median_Mtags_per_cpu_s": n / med / 1e6,
                    "ratio_vs_c": c_best / best,
                    "best_Mtags_per_wall_s": n / wall / 1e6,
                    "wall_ratio_vs_c": c_wall / wall,
                }
                print(
                    f"{ppt:>9} {name:<26} {n / best / 1e6:9.1f} {n / med / 1e6:8.1f} {c_best / best:10.2f}"
                    f" {n / wall / 1e6:9.1f} {c_wall / wall:10.2f}"
                )
            print(f"{'':>9} (measured pairs/tag {actual_ppt:.3f}; all histograms identical)")
            results[str(ppt)] = res
    return results


SECTIONS = {"correlation": bench_correlation}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sections", nargs="*", default=list(SECTIONS), choices=list(SECTIONS))
    p.add_argument("--tags", type=int, default=8_000_000, help="tags per correlation stream")
    p.add_argument("--pairs", type=float, nargs="*", default=[0.1, 1.0, 10.0], help="pairs per tag")
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--json", help="write all results to this file")
    args = p.parse_args(argv)
    out = {}
    for name in args.sections:
        out[name] = SECTIONS[name](args)
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
