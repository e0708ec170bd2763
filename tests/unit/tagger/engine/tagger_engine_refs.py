"""Brute-force references for the tagger engine tests, written from the documented
conventions with plain Python loops, independent of the engine's kernels."""

from __future__ import annotations

import numpy as np


def correlation_ref(t1, t2, bw, nb, auto=False):
    """Bin i holds pairs with 2*dt in [(2i - (nb-1))*bw - bw, (2i - (nb-1))*bw + bw)."""
    h = np.zeros(nb, np.int64)
    if auto:
        pairs = [(t1[i], t1[j]) for i in range(len(t1)) for j in range(len(t1)) if i != j]
    else:
        pairs = [(a, b) for a in t1 for b in t2]
    for a, b in pairs:
        dt2 = 2 * (int(b) - int(a))
        for i in range(nb):
            centre2 = (2 * i - (nb - 1)) * bw
            if centre2 - bw <= dt2 < centre2 + bw:
                h[i] += 1
    return h


def histogram_ref(starts, clicks, bw, nb, same=False):
    """Pairs (start, click) with 0 <= click - start < nb*bw; same channel: i < j."""
    h = np.zeros(nb, np.int64)
    if same:
        pairs = [
            (starts[i], starts[j]) for i in range(len(starts)) for j in range(i + 1, len(starts))
        ]
    else:
        pairs = [(s, c) for s in starts for c in clicks]
    for s, c in pairs:
        dt = int(c) - int(s)
        if 0 <= dt < nb * bw:
            h[dt // bw] += 1
    return h


def startstop_ref(times, chans, click, start, bw):
    out: dict[int, int] = {}
    pending = None
    for t, c in zip(times, chans, strict=True):
        if c == click and pending is not None:
            k = (int(t) - pending) // bw
            out[k] = out.get(k, 0) + 1
            pending = None
        if c == start:
            pending = int(t)
    keys = sorted(out)
    return np.array([[k * bw, out[k]] for k in keys], np.int64).reshape(-1, 2)


def counter_ref(times, chans, channels, t0, now, bw, nv):
    done = (now - t0) // bw
    data = np.zeros((len(channels), nv), np.int64)
    for row, ch in enumerate(channels):
        for k in range(max(0, done - nv), done):
            n = sum(
                1
                for t, c in zip(times, chans, strict=True)
                if c == ch and t0 + k * bw <= t < t0 + (k + 1) * bw
            )
            data[row, nv - (done - k)] = n
    return data


def between_markers_ref(times, chans, click, begin, end, nv):
    data, widths, starts = [], [], []
    open_at = None
    count = 0
    for t, c in zip(times, chans, strict=True):
        if len(data) >= nv:
            break
        if c == begin:
            if open_at is not None and end is None:
                data.append(count)
                widths.append(int(t) - open_at)
                starts.append(open_at)
                if len(data) >= nv:
                    open_at = None
                    break
            open_at = int(t)
            count = 0
        elif end is not None and c == end and open_at is not None:
            data.append(count)
            widths.append(int(t) - open_at)
            starts.append(open_at)
            open_at = None
        if c == click and open_at is not None:
            count += 1
    pad = nv - len(data)
    filled = len(data)
    return (
        filled,
        np.array(data + [0] * pad, np.int64),
        np.array(widths + [0] * pad, np.int64),
        np.array(starts + [0] * pad, np.int64),
    )


def merge_virtual(times, chans, vtimes, vchan, now):
    """The stream after a virtual channel: its tags released if earlier than ``now``,
    placed after every tag of equal time."""
    items = [(int(t), 0, i, int(c)) for i, (t, c) in enumerate(zip(times, chans, strict=True))]
    items += [(int(t), 1, i, vchan) for i, t in enumerate(vtimes) if t < now]
    items.sort()
    return [x[0] for x in items], [x[3] for x in items]


def coincidence_ref(times, chans, group, window):
    latest = {c: None for c in group}
    out = []
    for t, c in zip(times, chans, strict=True):
        if c not in latest:
            continue
        latest[c] = int(t)
        if all(v is not None and int(t) - v <= window for k, v in latest.items() if k != c):
            out.append(int(t))
    return out


def gated_ref(times, chans, inp, g_open, g_close):
    state = False
    out = []
    for t, c in zip(times, chans, strict=True):
        if c == g_open:
            state = True
        elif c == g_close:
            state = False
        if c == inp and state:
            out.append(int(t))
    return out


def correlation_np(a, b, bw, nb):
    """All pairs of two sorted time arrays with searchsorted: dt = b - a binned by
    (dt + (nb*bw)//2) // bw (same convention as correlation_ref, for long streams)."""
    a = np.asarray(a, np.int64)
    b = np.asarray(b, np.int64)
    off = (nb * bw) // 2
    lo = np.searchsorted(a, b - (nb * bw - 1 - off), "left")
    hi = np.searchsorted(a, b + off, "right")
    cnt = hi - lo
    rep = np.repeat(np.arange(b.size), cnt)
    ia = (
        np.concatenate([np.arange(x, y) for x, y in zip(lo, hi, strict=True)])
        if cnt.sum()
        else np.zeros(0, int)
    )
    dt = b[rep] - a[ia]
    return np.bincount((dt + off) // bw, minlength=nb)[:nb]
