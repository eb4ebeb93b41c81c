"""The pure steps of an island's RKME ranking, shared by the market's index and private search.

The market's :class:`market_server.search.IslandIndex` and the client's private search
(:mod:`client_sdk.private_search`, which ranks on the user's machine from what the island
publishes) call the same functions, so the two rank identically:

* :func:`coarse_mmd`: the sketch estimate of the squared MMD to every learnware;
* :func:`coarse_candidates`: which learnwares the exact MMD re-ranks, from those estimates;
* :func:`sparse_mixture`: the greedy-then-QP sparse mixture over the best singles.

Pure numpy; no I/O and no state.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from .simplex import simplex_qp

__all__ = ["coarse_mmd", "coarse_candidates", "sparse_mixture", "fit_label", "MIXTURE_RTOL",
           "MIXTURE_MIN_WEIGHT"]

#: parsimony of the recommended mixture: a learnware joins it only if it lowers the
#: mixture's squared MMD by at least ``MIXTURE_RTOL`` of it and takes at least
#: ``MIXTURE_MIN_WEIGHT`` of the weight (far learnwares would otherwise join with weights ~1e-3
#: that shave a fraction of a percent off the MMD and only add models to download and run).
MIXTURE_RTOL = 1e-3
MIXTURE_MIN_WEIGHT = 0.05


def fit_label(mmd: float, baseline: float | None) -> tuple[float, str]:
    """Absolute fit: the squared MMD relative to the island's typical between-learnware MMD
    (``baseline``), as a score in [0, 1] and a word."""
    if baseline is None:
        return float(max(0.0, 1.0 - mmd / 2.0)), "unknown"
    ratio = mmd / baseline
    label = "good" if ratio < 0.3 else "fair" if ratio < 0.7 else "poor"
    return float(max(0.0, 1.0 - ratio)), label


def coarse_mmd(q_self: float, self_inner: np.ndarray, S: np.ndarray,
               s: np.ndarray) -> np.ndarray:
    """Sketch estimate of the squared MMD to every learnware: exact self inner products
    (``q_self``, ``self_inner``) and the sketch's estimate ``S @ s`` of the cross term only."""
    cross = (S @ np.asarray(s).astype(np.float32)).astype(np.float64)
    # the true cross term is >= 0 (positive kernel, weights >= 0): clipping the estimate
    # removes half its noise for the many learnwares far from the requirement
    np.maximum(cross, 0.0, out=cross)
    return q_self + np.asarray(self_inner, dtype=np.float64) - 2.0 * cross


def coarse_candidates(coarse: np.ndarray, top: int, m: int, *, sketch_err: float,
                      margin_sigmas: float, wide: int, widen: bool = True) -> np.ndarray:
    """The learnwares (sorted indices) whose exact MMD re-ranks the sketch estimates ``coarse``
    (``inf`` marks learnwares known to be outside the top).

    The best ``m`` by the estimate, widened (``widen``) to every learnware whose estimate is
    within the sketch's noise (``margin_sigmas`` rms errors ``sketch_err`` of the MMD estimate)
    of the ``top``-th best estimate, at most ``wide`` x m of them: where many learnwares are
    about as far from the requirement, the noise could otherwise push true top ones out."""
    n = coarse.shape[0]
    kth = float(np.partition(coarse, top - 1)[top - 1]) if top < n else float(coarse.max())
    within = np.flatnonzero(coarse <= kth + margin_sigmas * 2.0 * sketch_err)
    m_max = min(n, wide * m) if widen else m
    if within.size <= m:
        cand = np.argpartition(coarse, m - 1)[:m] if m < n else np.arange(n)
    elif within.size <= m_max:
        cand = within
    else:
        cand = np.argpartition(coarse, m_max - 1)[:m_max] if m_max < n else np.arange(n)
    cand = cand[np.isfinite(coarse[cand])]
    cand.sort()  # ties then resolve to the lower index, as in the exact path
    return cand


def sparse_mixture(G: np.ndarray, need: Callable, c: np.ndarray, r: float, max_size: int, *,
                   rtol: float = MIXTURE_RTOL, min_weight: float = MIXTURE_MIN_WEIGHT):
    """Sparse simplex mixture of ``m`` candidate embeddings closest to the requirement:
    ``(positions among the candidates, weights, squared MMD)``, weights in decreasing order.

    ``G``: the candidates' Gram matrix, of which only the diagonal must be filled at first;
    ``need(j)`` (j an index or an index array) fills column(s) j before they are read (the
    market computes them lazily; a full ``G`` takes a no-op). ``c``: the requirement's inner
    products with the candidates; ``r``: its own.

    Greedy forward selection first (exact line search for every candidate at once, then the QP
    on the chosen set, warm-started); a learnware is kept only when it lowers the squared MMD
    by ``rtol`` of it and takes at least ``min_weight``. Then, only if greedy filled all
    ``max_size`` places and the Frank-Wolfe gap of its mixture over all candidates says a
    mixture of them could be better by more than ``rtol``, the full QP over the candidates,
    pruned to ``max_size`` and re-solved; it replaces the greedy answer when it is better by
    that fraction too."""
    m = len(c)

    def value(sel, w):
        return max(float(w @ G[np.ix_(sel, sel)] @ w - 2 * w @ c[sel] + r), 0.0)

    def solve(sel, b0=None):
        # warm starts (a vertex, a pruned or extended solution) let the active set finish
        # in a few face solves instead of starting from the full support
        w, _ = simplex_qp(G[np.ix_(sel, sel)], c[sel], b0=b0)
        return w, value(sel, w)

    def fw_gap(sel, w):
        """Bound on how much any mixture of the candidates lowers the squared MMD."""
        g = G[:, sel] @ w - c  # gradient of 0.5 w'Gw - c'w over all candidates
        return 2.0 * max(float(g[sel] @ w - g.min()), 0.0)

    diag = np.diag(G).copy()
    first = int(np.argmin(diag - 2 * c))  # the best single learnware
    need(first)
    sel, w = [first], np.array([1.0])
    v_b = value(np.array(sel), w)
    while len(sel) < min(max_size, m) and fw_gap(sel, w) > rtol * v_b:
        full = np.zeros(m)
        full[sel] = w
        Gw = G[:, sel] @ w
        wGw, cw = float(full @ Gw), float(full @ c)
        # mixture (1 - t) w + t e_j: quadratic in t with these coefficients
        A = wGw - 2 * Gw + diag
        B = -2 * wGw + 2 * Gw + 2 * cw - 2 * c
        t = np.clip(np.where(A > 1e-15, -B / (2 * np.maximum(A, 1e-15)), 1.0), 0.0, 1.0)
        gain = A * t ** 2 + B * t
        gain[sel] = np.inf
        j = int(np.argmin(gain))
        # the line search alone must promise the required gain (the QP can only add to it
        # when re-weighting the chosen ones; for a pair it is exact)
        if not np.isfinite(gain[j]) or -gain[j] < rtol * v_b:
            break
        need(j)
        sel.append(j)
        w_prev = w
        w, v_new = solve(np.array(sel), np.append((1.0 - t[j]) * w, t[j]))
        if v_new > v_b * (1.0 - rtol) or w[-1] < min_weight:  # not worth it: keep the previous
            sel.pop()
            w = w_prev
            break
        v_b = v_new
    keep, w_a, v_a = np.array(sel), w, v_b
    # Greedy stops short of max_size when no single addition is worth it; when it filled
    # every place, a better set of max_size may exist: the full QP over the candidates
    # (if the Frank-Wolfe gap leaves room for it), pruned to max_size and re-solved.
    if len(sel) == max_size < m and fw_gap(sel, w) > rtol * v_b:
        need(np.arange(m))
        start = np.zeros(m)
        start[sel] = w
        w_all, _ = solve(np.arange(m), start)
        top = np.argsort(-w_all, kind="stable")[:max_size]
        top = top[w_all[top] > 1e-9] if (w_all[top] > 1e-9).any() else top[:1]
        w_q, v_q = solve(top, w_all[top])
        if v_q < v_a * (1.0 - rtol):
            keep, w_a, v_a = top, w_q, v_q
    nz = w_a > 1e-9
    keep, w_a = keep[nz], w_a[nz] / w_a[nz].sum()
    order = np.argsort(-w_a, kind="stable")
    return keep[order], w_a[order], v_a
