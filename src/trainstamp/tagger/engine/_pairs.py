"""numba pair kernels: the hot path of Correlation and Histogram.

:func:`cross_stream` counts the pairs of two channels (and, with both channels the
same, a symmetric auto-correlation); :func:`auto_pairs` the pairs of distinct tags of
one channel for a same-channel Histogram. Both split the channels once and carry a
short history of earlier tags in front of the new ones, so a block boundary never
changes the result. ``@njit(cache=True, nogil=True)``: no GIL while they run.
"""

from __future__ import annotations

import numpy as np
from numba import njit

_NJ = {"cache": True, "nogil": True}


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
