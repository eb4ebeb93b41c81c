"""Ball bounds on RKME inner products: an exact search that need not touch every reduced point.

Each learnware's reduced points ``z_ij`` (scaled units) lie in a ball ``B(c_i, r_i)``. For a
requirement point ``x``, every ``||x - z_ij||`` lies in ``[max(0, ||x - c_i|| - r_i),
||x - c_i|| + r_i]``; with non-negative weights (every spec and requirement of the market has
them: simplex weights are checked at publish and search) the Gaussian kernel is decreasing in
the distance, so

    <mu_q, mu_i> <= w_i * sum_a b_a exp(-gamma * max(0, ||x_a - c_i|| - r_i)^2)   (w_i = sum_j beta_ij)

and the squared MMD is bounded below by ``<mu_q, mu_q> + <mu_i, mu_i> - 2 * that``. The bound costs
``k_q`` kernel values per learnware instead of ``k_q * k_i``; a search evaluates the exact MMD of
the learnwares in order of their bound and stops as soon as the bound of the next one exceeds
the best exact values found (:meth:`market_server.search.IslandIndex.rank`). Where learnwares'
balls lie far apart relative to the kernel width the bound prunes almost all of them; where
they overlap (one region, many models) it prunes little and the search falls back to the full
vectorised scan, so the answer is exact either way.

Pure numpy; the exponentials run in float32 (faster than float64: docs/RESULTS.md) with a relative
safety margin far above float32's error, so the bound stays a bound.
"""
from __future__ import annotations

import numpy as np

__all__ = ["balls", "cross_upper", "cross_bounds_of_balls"]

#: relative margin on the float32 upper bound (float32 exp of arguments up to ~100 is off by
#: < 1e-5 relative; the distances carry a separate absolute slack)
_MARGIN = 1e-4
#: per-chunk entries of the (k_q x N) bound matrix (~4 MiB of float32)
_CHUNK = 1 << 20


def balls(Zs: np.ndarray, B: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, ...]:
    """Enclosing balls of embeddings stored back to back: rows ``Zs`` (scaled units, float64),
    weights ``B``, embedding j owning the next ``counts[j]`` rows (each at least one).

    Returns ``(centers (N x d), radii (N,), weight sums (N,))``; the centre is the mean of the
    embedding's points (not weighted: the radius is what matters), the radius the largest
    distance from it."""
    counts = np.asarray(counts, dtype=np.intp)
    if counts.size == 0:
        return np.zeros((0, Zs.shape[1])), np.zeros(0), np.zeros(0)
    if counts.min() < 1:
        raise ValueError("every embedding needs at least one point")
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    centers = np.add.reduceat(Zs, starts, axis=0) / counts[:, None]
    owner = np.repeat(np.arange(counts.size), counts)
    diff = Zs - centers[owner]
    dist = np.sqrt(np.einsum("ij,ij->i", diff, diff))
    radii = np.maximum.reduceat(dist, starts)
    wsum = np.add.reduceat(np.asarray(B, dtype=np.float64), starts)
    return centers, radii, wsum


def cross_upper(xs: np.ndarray, b: np.ndarray, centers: np.ndarray, radii: np.ndarray,
                wsum: np.ndarray, gamma: float) -> np.ndarray:
    """Upper bounds on ``<mu_q, mu_i>`` for every ball (see the module docstring).

    ``xs``: the requirement's points in the same scaled (and, if any, centred) coordinates as
    ``centers``; ``b`` its weights (non-negative). float64 result, a valid bound despite the
    float32 exponentials."""
    xs = np.asarray(xs, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    keep = b > 0
    xs, b = xs[keep], b[keep]
    n = centers.shape[0]
    out = np.zeros(n)
    if n == 0 or xs.shape[0] == 0:
        return out
    xsq = np.einsum("ij,ij->i", xs, xs)
    csq = np.einsum("ij,ij->i", centers, centers)
    # what the distance to the ball may lose to rounding: |x|^2 + |c|^2 - 2x.c in float64
    # (~1e-16 of the squares), then float32 for the square root and the subtraction (~2e-7 of
    # |x| + |c| + r): 1e-6 of that, per ball, covers both with room to spare
    gap = (radii + 1e-6 * (1.0 + np.sqrt(csq + xsq.max()) + radii)).astype(np.float32)
    b32 = b.astype(np.float32)
    step = max(1, _CHUNK // xs.shape[0])
    for s in range(0, n, step):
        e = min(n, s + step)
        d2 = centers[s:e] @ xs.T  # (chunk x k_q), float64: no cancellation surprises
        d2 *= -2.0
        d2 += csq[s:e, None]
        d2 += xsq[None, :]
        g = d2.astype(np.float32)
        np.maximum(g, 0.0, out=g)
        np.sqrt(g, out=g)
        g -= gap[s:e, None]  # the gap from x to the nearest point of the ball
        np.maximum(g, 0.0, out=g)
        g *= g
        g *= np.float32(-gamma)
        np.exp(g, out=g)
        out[s:e] = (g @ b32).astype(np.float64)
    out *= wsum * (1.0 + _MARGIN)
    return out


def cross_bounds_of_balls(xs: np.ndarray, b: np.ndarray, centers: np.ndarray,
                          radii: np.ndarray, wsum: np.ndarray, gamma: float
                          ) -> tuple[np.ndarray, np.ndarray]:
    """Cheaper, looser bounds on ``<mu_q, mu_i>`` from the requirement's own ball too: one
    kernel value per learnware. Every pair of points is between ``max(0, D - r_q - r_i)`` and
    ``D + r_q + r_i`` apart (``D`` the distance of the centres), so with non-negative weights
    ``sum b * w_i * k(D + r_q + r_i) <= <mu_q, mu_i> <= sum b * w_i * k(D - r_q - r_i)``.
    Returns ``(lower, upper)`` (float64, each with a small margin for rounding)."""
    xs = np.asarray(xs, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    keep = b > 0
    xs, bsum = xs[keep], float(b[keep].sum())
    if xs.shape[0] == 0 or centers.shape[0] == 0:
        z = np.zeros(centers.shape[0])
        return z, z.copy()
    cq = xs.mean(axis=0)
    rq = float(np.sqrt(np.max(np.einsum("ij,ij->i", xs - cq, xs - cq))))
    diff = centers - cq
    dist = np.sqrt(np.einsum("ij,ij->i", diff, diff))
    slack = 1e-9 * (1.0 + dist + rq + radii)
    near = np.maximum(dist - rq - radii - slack, 0.0)
    far = dist + rq + radii + slack
    scale = bsum * wsum
    upper = scale * np.exp(-gamma * near * near) * (1.0 + 1e-12)
    lower = scale * np.exp(-gamma * far * far) * (1.0 - 1e-12)
    return lower, upper
