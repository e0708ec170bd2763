"""numba kernels: the only code that touches every tag.

All kernels are ``@njit(cache=True, nogil=True)`` so they run on the stream thread
without holding the GIL. They are pure functions over int64 time arrays (ps) and int32
channel arrays and have no knowledge of measurements or locks.

The pair kernels of Correlation and Histogram live in :mod:`._pairs` and are
re-exported here.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from trainstamp.tagger.engine._pairs import (  # noqa: F401 (re-exported)
    CHUNK,
    SENTINEL,
    auto_pairs,
    cross_stream,
)

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
