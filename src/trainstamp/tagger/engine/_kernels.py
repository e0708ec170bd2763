"""numba kernels: the only code that touches every tag.

All kernels are ``@njit(cache=True, nogil=True)`` so they run on the stream thread
without holding the GIL. They are pure functions over int64 time arrays (ps) and int32
channel arrays and have no knowledge of measurements or locks.

The pair kernels (:func:`cross_stream`, :func:`auto_pairs`) are the hot path of
Correlation and Histogram. They split the channels once and carry a short history of
earlier tags in front of the new ones, so a block boundary never changes the result.
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
    ``lut[ch - lut_lo]`` is true for channels the tagger knows; stream events
    (type != 0) are counted as special, not as unknown channels.
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


SENTINEL = -(1 << 62)
"""Time of the guard tag in front of every pair buffer; real tag times are >= 0."""

CHUNK = 16384
"""Tags per chunk in :func:`cross_stream`, so a chunk's buffers stay in L2."""


@njit(**_NJ)
def _room(a, n, need):
    """``a`` if it has room for ``need`` more entries after ``n``, else a copy twice as big."""
    if n + need <= a.shape[0]:
        return a
    b = np.empty(2 * (n + need), a.dtype)
    b[:n] = a[:n]
    return b


@njit(**_NJ)
def _pack_range(t, out, i0, i1, shift, bw, inv, sh):
    """``out[i] = (q << sh) + r`` with ``q, r = divmod(t[i] + shift, bw)``, all >= 0.

    With ``2**sh >= bw`` the bin of a pair is then a subtraction and a shift:
    ``((q1 << sh) + r1 - (q0 << sh) - r0) >> sh == q1 - q0 - (r1 < r0)``. The quotient
    uses a float reciprocal with one exact integer correction while the values stay
    below 2**52 (where it is off by at most one), else integer division.
    """
    if i1 <= i0:
        return
    if t[i1 - 1] + shift < (1 << 52):
        for i in range(i0, i1):
            d = t[i] + shift
            q = np.int64(d * inv)
            r = d - q * bw
            if r < 0:
                q -= 1
                r += bw
            elif r >= bw:
                q += 1
                r -= bw
            out[i] = (q << sh) + r
    else:
        for i in range(i0, i1):
            d = t[i] + shift
            q = d // bw
            out[i] = (q << sh) + d - q * bw


_PACK_GUARD = -(1 << 61)
_REBASE_AFTER = 1 << 60  # packed values stay below 2**62 while t - base < this


@njit(**_NJ)
def _pack(t_first, t_last, xt, xk, nx0, nx, yt, yk, ny0, ny, off, bw, inv, sh, st):
    """Bring the packed values of both buffers up to date (see :func:`cross_stream`).

    Packs only the new tags while the packing is valid and its origin ``st[6]`` is
    recent enough; otherwise repacks the whole buffer from a new origin.
    """
    base = st[6]
    if st[7] == 0 or t_last + off - base > _REBASE_AFTER:
        base = t_first
        if nx > 1:
            base = min(base, xt[1])
        if ny > 1:
            base = min(base, yt[1])
        st[6] = base
        nx0 = 1
        ny0 = 1
    _pack_range(xt, xk, nx0, nx, -base, bw, inv, sh)
    _pack_range(yt, yk, ny0, ny, off - base, bw, inv, sh)
    st[7] = 1


@njit(**_NJ)
def cross_stream(times, chans, x_ch, y_ch, bw, off, n_bins, hist, xt, xp, xk, yt, yp, yk, act, st):
    """Count every pair (x, y) of two channels by ``dt = t_y - t_x`` into ``hist``.

    A pair lands in bin ``(dt + off) // bw`` when that is in ``0..n_bins-1``; it is
    counted once, by whichever of its two tags comes later in the stream, so the result
    is the same however the stream is cut into blocks. The stream is taken in chunks of
    :data:`CHUNK` tags:

    1. one branch-free pass splits the chunk into the x and y buffers (``xt``, ``yt``)
       and records, for every tag, how many tags of the other channel precede it
       (``xp``, ``yp``), so the partners of a tag are the run of the other buffer just
       before that index;
    2. each new tag walks back over that run until the time difference leaves the
       window. When pairs are rare (< 2 per tag in the last chunk) the walk goes
       breadth first: one branch-free sweep keeps only the tags that have a first
       partner, the next sweep their second partner, and so on, which avoids a
       mispredicted loop exit per tag. Otherwise each tag walks its run depth first,
       and every tag is written once in bin units (``xk``, ``yk``, see
       :func:`_pack_range`, y shifted by ``off``) so a pair's bin is one subtraction
       and one shift, with no division per pair;
    3. the buffers keep only tags still within reach of later ones.

    The buffers start with one :data:`SENTINEL` guard tag. ``st`` is int64[8]: buffer
    fill of x and y, tags counted on x and y, pairs and tags of the last chunk, the
    time origin of the packed values and whether they are valid for the whole buffer.
    Returns the (possibly grown) buffers in argument order.
    """
    nx = st[0]
    ny = st[1]
    if nx == 0 or ny == 0:
        xt[0] = SENTINEL
        yt[0] = SENTINEL
        xk[0] = _PACK_GUARD
        yk[0] = _PACK_GUARD
        nx = 1
        ny = 1
        st[7] = 0
    span = bw * n_bins
    dmax = span - 1 - off
    ubw = np.uint64(bw)
    inv = 1.0 / bw
    sh = 0
    while (1 << sh) < bw:
        sh += 1
    n = times.shape[0]
    s = 0
    while s < n:
        e = min(n, s + CHUNK)
        m = e - s
        xt = _room(xt, nx, m)
        xp = _room(xp, nx, m)
        xk = _room(xk, nx, m)
        yt = _room(yt, ny, m)
        yp = _room(yp, ny, m)
        yk = _room(yk, ny, m)
        if act.shape[0] < m:
            act = np.empty(m, np.int64)
        nx0 = nx
        ny0 = ny
        for i in range(s, e):  # 1. split, branch-free
            c = chans[i]
            t = times[i]
            xt[nx] = t
            xp[nx] = ny
            yt[ny] = t
            yp[ny] = nx
            nx += c == x_ch
            ny += c == y_ch
        pairs = 0
        if 2 * st[4] < 4 * st[5] or st[5] == 0:  # < 2 pairs per tag: breadth first
            st[7] = 0  # packed values are not kept up to date here
            # 2a. new y with earlier x: dt >= 0, in range while x > y + off - span
            cnt = 0
            for j in range(ny0, ny):
                act[cnt] = j
                cnt += xt[yp[j] - 1] > yt[j] + off - span
            d = 1
            while cnt > 0:
                pairs += cnt
                c2 = 0
                for a in range(cnt):
                    j = act[a]
                    y = yt[j] + off
                    k = yp[j] - d
                    hist[np.uint64(y - xt[k]) // ubw] += 1
                    act[c2] = j
                    c2 += xt[k - 1] > y - span
                cnt = c2
                d += 1
            # 2b. new x with earlier y: dt <= 0, in range while y >= x - off
            cnt = 0
            for i in range(nx0, nx):
                act[cnt] = i
                cnt += yt[xp[i] - 1] >= xt[i] - off
            d = 1
            while cnt > 0:
                pairs += cnt
                c2 = 0
                for a in range(cnt):
                    i = act[a]
                    x = xt[i] - off
                    k = xp[i] - d
                    hist[np.uint64(yt[k] - x) // ubw] += 1
                    act[c2] = i
                    c2 += yt[k - 1] >= x
                cnt = c2
                d += 1
        else:  # depth first, bins from packed values
            _pack(times[s], times[e - 1], xt, xk, nx0, nx, yt, yk, ny0, ny, off, bw, inv, sh, st)
            for j in range(ny0, ny):
                y = yk[j]
                k = yp[j] - 1
                while True:
                    b = (y - xk[k]) >> sh
                    if b >= n_bins:
                        break
                    hist[b] += 1
                    k -= 1
                pairs += yp[j] - 1 - k
            for i in range(nx0, nx):
                x = xk[i]
                k = xp[i] - 1
                while True:
                    b = (yk[k] - x) >> sh
                    if b < 0:
                        break
                    hist[b] += 1
                    k -= 1
                pairs += xp[i] - 1 - k
        st[2] += nx - nx0
        st[3] += ny - ny0
        st[4] = pairs
        st[5] = m
        # 3. keep what later tags can still pair with (they are all >= tref)
        tref = times[e - 1]
        kx = np.searchsorted(xt[1:nx], tref - dmax)
        if kx > 0:
            nx -= kx
            xt[1:nx] = xt[1 + kx : kx + nx]
            xk[1:nx] = xk[1 + kx : kx + nx]
        ky = np.searchsorted(yt[1:ny], tref - off)
        if ky > 0:
            ny -= ky
            yt[1:ny] = yt[1 + ky : ky + ny]
            yk[1:ny] = yk[1 + ky : ky + ny]
        s = e
    st[0] = nx
    st[1] = ny
    return xt, xp, xk, yt, yp, yk, act


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
