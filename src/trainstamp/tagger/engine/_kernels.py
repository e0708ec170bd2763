"""numba kernels: the only code that touches every tag.

All kernels are ``@njit(cache=True, nogil=True)`` so they run on the stream thread
without holding the GIL. They are pure functions over int64 time arrays (ps) and int32
channel arrays and have no knowledge of measurements or locks.

The pair kernels (:func:`cross_pairs`, :func:`auto_pairs`) are the hot path of
Correlation and Histogram. They work on one channel's times at a time ("split once")
and carry a short history of earlier tags in front of the new ones, so a block boundary
never changes the result. Per pair they do no division: every tag is written once as
``t = q * binwidth + r`` and the bin of a pair is ``q_y - q_x - (r_y < r_x)``.
"""

from __future__ import annotations

import numpy as np
from numba import njit

_NJ = {"cache": True, "nogil": True}


@njit(**_NJ)
def check_block(times, chans, types, last_time, lut, lut_lo):
    """One pass over a block: ordering, unknown channels and stream events.

    Returns ``(bad_index, n_unknown, n_special)``. ``bad_index`` is the first index
    whose time is below its predecessor (or below ``last_time`` for index 0), or -1.
    ``lut[ch - lut_lo]`` is true for channels the tagger knows.
    """
    n = times.shape[0]
    prev = last_time
    n_unknown = 0
    n_special = 0
    nlut = lut.shape[0]
    for i in range(n):
        t = times[i]
        if t < prev:
            return i, n_unknown, n_special
        prev = t
        if types[i] != 0:
            n_special += 1
        else:
            k = chans[i] - lut_lo
            if k < 0 or k >= nlut or not lut[k]:
                n_unknown += 1
    return -1, n_unknown, n_special


@njit(**_NJ)
def select_times(times, chans, ch, tail):
    """Return ``tail`` followed by the times of ``chans == ch`` (a new contiguous array)."""
    n = times.shape[0]
    m = 0
    for i in range(n):
        if chans[i] == ch:
            m += 1
    nt = tail.shape[0]
    out = np.empty(nt + m, np.int64)
    out[:nt] = tail
    j = nt
    for i in range(n):
        if chans[i] == ch:
            out[j] = times[i]
            j += 1
    return out


@njit(**_NJ)
def select_two(times, chans, ch1, ch2, tail1, tail2):
    """Like :func:`select_times` for two channels in one pass over the block."""
    n = times.shape[0]
    n1 = tail1.shape[0]
    n2 = tail2.shape[0]
    a = np.empty(n1 + n, np.int64)
    b = np.empty(n2 + n, np.int64)
    a[:n1] = tail1
    b[:n2] = tail2
    i1 = n1
    i2 = n2
    for i in range(n):
        c = chans[i]
        t = times[i]
        a[i1] = t
        b[i2] = t
        i1 += c == ch1
        i2 += c == ch2
    return a[:i1], b[:i2]


@njit(**_NJ)
def _quot_rem(t, t0, bw):
    """Split ``t - t0`` (all >= 0) into quotient and remainder by ``bw``."""
    n = t.shape[0]
    q = np.empty(n, np.int64)
    r = np.empty(n, np.int64)
    for i in range(n):
        d = t[i] - t0
        qi = d // bw
        q[i] = qi
        r[i] = d - qi * bw
    return q, r


@njit(**_NJ)
def cross_pairs(x, nx_old, y, ny_old, bw, off, n_bins, hist):
    """Add every pair (x_i, y_j) not yet counted to ``hist`` by ``dt = y_j - x_i``.

    ``x`` and ``y`` are sorted tag times of two different channels; the first
    ``nx_old``/``ny_old`` entries are history already paired with each other, the rest
    are new. A pair lands in bin ``(dt + off) // bw`` when that is in ``0..n_bins-1``.
    History tags all precede new ones in the stream, so an old y at the same time as a
    new x counts as "before" it. Each pair is counted exactly once, so any split of
    a stream into blocks gives the same histogram.
    """
    nx = x.shape[0]
    ny = y.shape[0]
    if nx == 0 or ny == 0:
        return
    span = n_bins * bw
    dmax = span - 1 - off  # largest dt that lands in a bin
    dmin = -off  # smallest dt that lands in a bin
    t0 = min(x[0], y[0])
    xq, xr = _quot_rem(x, t0, bw)
    yq, yr = _quot_rem(y, t0 - off, bw)  # y + off, so yq - xq - (yr < xr) is the bin
    # Pass 1: each new y looks back at x in [y - dmax, y] (dt >= 0, ties included).
    if dmax >= 0:
        lo = 0
        hi = 0
        for j in range(ny_old, ny):
            yj = y[j]
            while lo < nx and x[lo] < yj - dmax:
                lo += 1
            if hi < lo:
                hi = lo
            while hi < nx and x[hi] <= yj:
                hi += 1
            qj = yq[j]
            rj = yr[j]
            for i in range(lo, hi):
                k = qj - xq[i] - (rj < xr[i])
                hist[k] += 1
    # Pass 2: each new x looks back at y in [x + dmin, x): dt < 0. Old y's equal to x
    # are also "before" it; all old y's are <= every new x.
    if dmin < 0 or ny_old > 0:
        lo = 0
        hi = 0
        for i in range(nx_old, nx):
            xi = x[i]
            while lo < ny and y[lo] < xi + dmin:
                lo += 1
            if hi < ny_old:
                hi = ny_old
            while hi < ny and y[hi] < xi:
                hi += 1
            qi = xq[i]
            ri = xr[i]
            for j in range(lo, hi):
                k = yq[j] - qi - (yr[j] < ri)
                if k >= 0 and k < n_bins:
                    hist[k] += 1


@njit(**_NJ)
def auto_pairs(x, n_old, bw, off, n_bins, hist, symmetric):
    """Add pairs of distinct tags of one channel (``x`` sorted, first ``n_old`` history).

    For each new tag j and each earlier tag i (index order) with ``d = x_j - x_i``, the
    pair adds bin ``(d + off) // bw`` and, if ``symmetric``, bin ``(-d + off) // bw``
    (the same pair seen from the other side, as in an auto-correlation).
    """
    n = x.shape[0]
    if n == 0:
        return
    span = n_bins * bw
    dmax = span - 1 - off
    reach = dmax
    if symmetric and off > reach:
        reach = off
    if reach < 0:
        return
    t0 = x[0]
    q, r = _quot_rem(x, t0, bw)
    qn, rn = _quot_rem(x, t0 - off, bw)  # x + off
    lo = 0
    for j in range(max(n_old, 1), n):
        xj = x[j]
        while x[lo] < xj - reach:
            lo += 1
        for i in range(lo, j):
            k = qn[j] - q[i] - (rn[j] < r[i])  # (+d + off) // bw
            if k < n_bins:
                hist[k] += 1
            if symmetric:
                k2 = qn[i] - q[j] - (rn[i] < r[j])  # (-d + off) // bw
                if k2 >= 0:
                    hist[k2] += 1


@njit(**_NJ)
def start_stop(times, chans, click, start, have, pend, bw, out):
    """StartStop: the first click after a start records ``(click - start) // bw``.

    ``have``/``pend`` carry a pending start from earlier blocks. Writes bin numbers to
    ``out`` and returns ``(n_written, have, pend)``. A tag on a channel that is both
    click and start first closes the pending pair, then opens a new one.
    """
    n = times.shape[0]
    m = 0
    for i in range(n):
        c = chans[i]
        if c == click and have:
            out[m] = (times[i] - pend) // bw
            m += 1
            have = False
        if c == start:
            pend = times[i]
            have = True
    return m, have, pend


@njit(**_NJ)
def count_channels(chans, lut, lut_lo, counts):
    """Add to ``counts[lut[ch - lut_lo]]`` for every tag whose lut entry is >= 0."""
    nlut = lut.shape[0]
    for i in range(chans.shape[0]):
        k = chans[i] - lut_lo
        if k >= 0 and k < nlut:
            s = lut[k]
            if s >= 0:
                counts[s] += 1


@njit(**_NJ)
def counter_bins(times, chans, lut, lut_lo, t0, bw, base, counts):
    """Counter: add tags to ``counts[slot, (t - t0) // bw - base]`` where in range."""
    nlut = lut.shape[0]
    nb = counts.shape[1]
    for i in range(chans.shape[0]):
        k = chans[i] - lut_lo
        if k >= 0 and k < nlut:
            s = lut[k]
            if s >= 0:
                b = (times[i] - t0) // bw - base
                if b >= 0 and b < nb:
                    counts[s, b] += 1


@njit(**_NJ)
def between_markers(times, chans, click, begin, end, state, data, widths, starts):
    """CountBetweenMarkers state machine over one block.

    ``state`` is int64[4]: [bins filled, bin open (0/1), open bin start time, open
    count]. With ``end`` unused (``end == begin``) a begin closes the open bin and
    opens the next. Stops filling when ``data`` is full.
    """
    nv = data.shape[0]
    filled = state[0]
    is_open = state[1]
    t_open = state[2]
    cnt = state[3]
    separate_end = end != begin
    for i in range(times.shape[0]):
        if filled >= nv:
            break
        c = chans[i]
        t = times[i]
        if c == begin:
            if is_open == 1 and not separate_end:
                data[filled] = cnt
                widths[filled] = t - t_open
                starts[filled] = t_open
                filled += 1
                if filled >= nv:
                    is_open = 0
                    break
            is_open = 1
            t_open = t
            cnt = 0
        elif separate_end and c == end and is_open == 1:
            data[filled] = cnt
            widths[filled] = t - t_open
            starts[filled] = t_open
            filled += 1
            is_open = 0
            cnt = 0
        if c == click and is_open == 1:
            cnt += 1
    state[0] = filled
    state[1] = is_open
    state[2] = t_open
    state[3] = cnt


@njit(**_NJ)
def gate(times, chans, inp, g_open, g_close, is_open):
    """GatedChannel: times of ``inp`` tags while the gate is open; returns (out, state)."""
    n = times.shape[0]
    out = np.empty(n, np.int64)
    m = 0
    st = is_open
    for i in range(n):
        c = chans[i]
        if c == g_open:
            st = True
        elif c == g_close:
            st = False
        if c == inp and st:
            out[m] = times[i]
            m += 1
    return out[:m], st


@njit(**_NJ)
def coincidences(times, chans, lut, lut_lo, groups, group_len, window, latest):
    """Coincidences with the timestamp of the last tag.

    ``groups[g, :group_len[g]]`` are slot numbers (``lut`` maps channel to slot);
    ``latest[slot]`` is the latest time seen on the slot (or a large negative number).
    A tag on a group's channel at time t makes a coincidence of that group when every
    other channel of the group has its latest tag within ``t - window``. Returns
    (times, group) of the coincidences in time order.
    """
    n = times.shape[0]
    ng = groups.shape[0]
    out_t = np.empty(n, np.int64)
    out_g = np.empty(n, np.int32)
    m = 0
    nlut = lut.shape[0]
    for i in range(n):
        k = chans[i] - lut_lo
        if k < 0 or k >= nlut:
            continue
        s = lut[k]
        if s < 0:
            continue
        t = times[i]
        latest[s] = t
        for g in range(ng):
            member = False
            ok = True
            for e in range(group_len[g]):
                gs = groups[g, e]
                if gs == s:
                    member = True
                elif t - latest[gs] > window:
                    ok = False
            if member and ok:
                if m >= out_t.shape[0]:
                    grow_t = np.empty(2 * out_t.shape[0], np.int64)
                    grow_g = np.empty(2 * out_g.shape[0], np.int32)
                    grow_t[:m] = out_t[:m]
                    grow_g[:m] = out_g[:m]
                    out_t = grow_t
                    out_g = grow_g
                out_t[m] = t
                out_g[m] = g
                m += 1
    return out_t[:m], out_g[:m]
