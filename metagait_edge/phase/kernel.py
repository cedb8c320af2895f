"""The per-sample path of ``model.StreamingPhaseEstimator``, compiled (numba): one call per IMU sample.

``estimate``: the row's mirror image, every layer of every member on both (``cached_step``, the layout of
``model.CachedPhaseNet``), the mean over members and mirror, and its decoding (``combine_decode``). At the IMU's
pace (one sample every 17 ms) each numpy call and Python line of that path ran from a cold cache: the network's
four dozen numpy calls alone cost 0.32 ms p50 / 0.82 ms p99 per sample for the shipped ensemble on the 2-vCPU VM,
one compiled call 0.16 / 0.38 ms (docs/BENCHMARKS.md). The arithmetic is the same float32 dot products; inputs
that a ReLU zeroed are skipped, so their weight rows are not even read.

Compiled on first use (about 8 s on the 2-vCPU VM) and cached beside this file (in the user's cache directory
where the package is read-only; ``NUMBA_CACHE_DIR`` overrides both); ``StreamingPhaseEstimator`` makes that first
call when it is built, never on the first real sample.
"""

from __future__ import annotations

import math

from numba import njit


@njit(cache=True, nogil=True)
def _dense(x, w, b, member, relu, out):  # pragma: no cover  (compiled: covered through CachedPhaseNet's tests)
    """out = x @ w[member] + b[member, 0] (ReLU if ``relu``); rows of w for a zero input are not read."""
    n_out = out.shape[0]
    for o in range(n_out):
        out[o] = b[member, 0, o]
    for i in range(x.shape[0]):
        xi = x[i]
        if xi != 0.0:
            for o in range(n_out):
                out[o] += xi * w[member, i, o]
    if relu:
        for o in range(n_out):
            if out[o] < 0.0:
                out[o] = 0.0


@njit(cache=True, nogil=True)
def cached_step(rows, rings, spans, taps, dilations, conv_w, conv_b, conv_out, lin_w, lin_b, lin_out, x, t,
                out):  # pragma: no cover  (compiled: covered through CachedPhaseNet's tests)
    """One sample through the cached network (the layout of ``CachedPhaseNet``).

    rows [1, streams, C] the newest input row of each stream; rings[j] [2 * spans[j], 1 or members, streams, C_j]
    layer j's input history (the head's is the last), each row written at i and i + span so that the newest
    spans[j] rows are contiguous; taps[j] rows read, dilations[j] apart; conv_w[j] [members, taps * C_j, out],
    conv_b[j] [members, 1, out], conv_out[j] [members, streams, out] its output; lin_* the head's linear layers,
    the same way; x a scratch vector; t the sample's index (0: the past is this row repeated);
    out [streams, members x (4 + M)]."""
    n_layers = len(conv_w)
    members = conv_w[0].shape[0]
    streams = rows.shape[1]
    h = rows
    for j in range(n_layers + 1):
        ring = rings[j]
        span, k, dil = spans[j], taps[j], dilations[j]
        channels = ring.shape[3]
        shared = ring.shape[1] == 1  # the network's input: one row per stream for every member
        direct = span == 1 and j < n_layers  # a 1x1 layer reads only the newest row: no history
        i = t % span
        if not direct:
            if t == 0:
                for r in range(2 * span):
                    ring[r] = h
            else:
                ring[i] = h
                ring[i + span] = h
        oldest = i + span - (k - 1) * dil  # the first tap's row; the newest is i + span
        n_in = k * channels
        for e in range(members):
            g = 0 if shared else e
            for s in range(streams):
                if direct:
                    for c in range(channels):
                        x[c] = h[g, s, c]
                else:
                    for q in range(k):
                        r = oldest + q * dil
                        for c in range(channels):
                            x[q * channels + c] = ring[r, g, s, c]
                if j < n_layers:
                    _dense(x[:n_in], conv_w[j], conv_b[j], e, True, conv_out[j][e, s])
                else:
                    _dense(x[:n_in], lin_w[0], lin_b[0], e, len(lin_w) > 1, lin_out[0][e, s])
                    for m in range(1, len(lin_w)):
                        _dense(lin_out[m - 1][e, s], lin_w[m], lin_b[m], e, m < len(lin_w) - 1, lin_out[m][e, s])
                    last = lin_out[len(lin_w) - 1][e, s]
                    n_out = last.shape[0]
                    for o in range(n_out):
                        out[s, e * n_out + o] = last[o]
        if j < n_layers:
            h = conv_out[j]


@njit(cache=True, nogil=True)
def combine_decode(out, n_members, order, result):  # pragma: no cover  (compiled: see StreamingPhaseEstimator's tests)
    """The mean of the members' outputs ``out`` [streams, members x (4 + M)] (a second stream: the mirror image,
    its columns put back in the legs' order by ``order``), decoded like ``model.decode`` into ``result``
    [4 + M]: phase of each leg in % of the cycle, their confidences (the (cos, sin) vector's length, at most 1),
    the mode probabilities (softmax of the mean logits)."""
    n_out = order.shape[0]
    streams = out.shape[0]
    for j in range(n_out):
        acc = 0.0
        for e in range(n_members):
            acc += out[0, e * n_out + j]
            if streams == 2:
                acc += out[1, e * n_out + order[j]]
        result[j] = acc / (n_members * streams)
    c0, s0, c1, s1 = result[0], result[1], result[2], result[3]
    result[0] = math.degrees(math.atan2(s0, c0)) / 3.6 % 100.0
    result[1] = math.degrees(math.atan2(s1, c1)) / 3.6 % 100.0
    result[2] = min(math.hypot(c0, s0), 1.0)
    result[3] = min(math.hypot(c1, s1), 1.0)
    top = result[4]
    for j in range(5, n_out):
        top = max(top, result[j])
    z = 0.0
    for j in range(4, n_out):
        result[j] = math.exp(result[j] - top)
        z += result[j]
    for j in range(4, n_out):
        result[j] /= z


@njit(cache=True, nogil=True)
def estimate(row, mirror_src, mirror_sign, order, rows, rings, spans, taps, dilations, conv_w, conv_b, conv_out,
             lin_w, lin_b, lin_out, x, t, out, result):  # pragma: no cover  (compiled: see the estimator's tests)
    """One feature row -> ``result`` (``combine_decode``): the row and, with a second stream, its mirror image
    (``rows[0, 1, c] = row[mirror_src[c]] * mirror_sign[c]``, ``phase.dataset.mirror_map``) through
    ``cached_step`` (its arguments as there), averaged and decoded."""
    for c in range(row.shape[0]):
        rows[0, 0, c] = row[c]
    if rows.shape[1] == 2:
        for c in range(row.shape[0]):
            rows[0, 1, c] = row[mirror_src[c]] * mirror_sign[c]
    cached_step(rows, rings, spans, taps, dilations, conv_w, conv_b, conv_out, lin_w, lin_b, lin_out, x, t, out)
    combine_decode(out, conv_w[0].shape[0], order, result)
