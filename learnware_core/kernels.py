"""The one kernel that client and server share, and the embedding arithmetic built on it.

``k(x, y) = exp(-gamma * ||(x - y) / scales||^2)`` (``scales=None`` means all ones). A reduced
kernel mean embedding (RKME) is a weighted point set ``(z, b)`` standing for
``sum_i b_i k(z_i, .)``; its points stay in raw feature units, so any (gamma, scales) can be
evaluated on it.

Two precisions:

* float64 everywhere the result is a single number or a small matrix (:func:`gaussian_kernel`,
  :func:`embedding_inner`, :func:`mmd2`);
* the market's search hot path (``market_server/embedding_stack.py``) evaluates its big kernel
  block in float32 by default, because on CPUs without AVX-512 float64 ``exp`` is scalar and
  several times slower (docs/RESULTS.md, "Numeric kernels"). Coordinates are centred and scaled
  first and every block is one matrix product of
  "augmented" rows ``[x, 1, -gamma|x|^2 + log w]`` and columns
  ``[2 gamma z; -gamma|z|^2 + log b; 1]`` (:func:`augmented_rows`, :func:`augmented_cols`), whose
  product is the log of the weighted kernel value and is never positive, so nothing overflows.
  Sums are accumulated in float64; a squared MMD is off by about 1e-7 (``precision="double"``
  gives the exact value). The fit of an RKME (client side) uses the same blocks.

Blocks are computed in chunks of about ``BLOCK_ELEMENTS`` entries so memory stays flat whatever
the number of points.
"""
from __future__ import annotations

import numpy as np

__all__ = [
    "BLOCK_ELEMENTS", "check_kernel", "gaussian_kernel", "embedding_inner", "mmd2",
    "augmented_rows", "augmented_cols", "herd", "as_points", "scaled", "rows_per_block",
    "neg_sqdist", "safe_log",
]

BLOCK_ELEMENTS = 1 << 17  # ~1 MiB of float64 per kernel block: stays in cache
_LOG_ZERO = -1.0e4  # log of a zero weight: exp() of it is exactly 0 in float32 and float64


# ----------------------------------------------------------------------------------- checks
def check_kernel(gamma, scales, n_features: int | None = None):
    """Validated ``(gamma, scales)``: gamma a positive finite float, scales None or positive finite
    of length ``n_features``. Raises ValueError (callers wrap it in their own error type)."""
    try:
        g = float(gamma)
    except (TypeError, ValueError):
        raise ValueError(f"gamma must be a number, got {gamma!r}") from None
    if not np.isfinite(g) or g <= 0:
        raise ValueError(f"gamma must be positive and finite, got {gamma!r}")
    if scales is None:
        return g, None
    s = np.asarray(scales, dtype=np.float64)
    if s.ndim == 0 and n_features is not None:
        s = np.full(n_features, float(s))
    if s.ndim != 1:
        raise ValueError("scales must be a 1-D array (one scale per feature)")
    if n_features is not None and s.shape[0] != n_features:
        raise ValueError(f"scales has {s.shape[0]} entries but the data has {n_features} features")
    if not np.all(np.isfinite(s)) or np.any(s <= 0):
        raise ValueError("scales must be positive and finite")
    return g, s


def as_points(X, name: str) -> np.ndarray:
    X = np.asarray(X, dtype=np.float64)
    if X.ndim == 1:
        X = X[None, :]
    if X.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array of points")
    return X


def scaled(X: np.ndarray, scales) -> np.ndarray:
    return X if scales is None else X / scales


def rows_per_block(width: int, block_elements: int | None = None) -> int:
    return max(1, (block_elements or BLOCK_ELEMENTS) // max(1, width))


def neg_sqdist(Xc: np.ndarray, Yc: np.ndarray, ysq: np.ndarray) -> np.ndarray:
    """-||x - y||^2 for centred float64 coordinates, clipped at 0 from above."""
    G = Xc @ Yc.T
    G *= 2.0
    G -= np.einsum("ij,ij->i", Xc, Xc)[:, None]
    G -= ysq[None, :]
    np.minimum(G, 0.0, out=G)
    return G


# ------------------------------------------------------------------------------ float64 core
def gaussian_kernel(X, Y, gamma, scales=None, *, block_elements: int | None = None) -> np.ndarray:
    """The kernel matrix ``K[i, j] = k(X[i], Y[j])`` in float64, computed block by block."""
    X, Y = as_points(X, "X"), as_points(Y, "Y")
    if X.shape[1] != Y.shape[1]:
        raise ValueError(f"X has {X.shape[1]} features, Y has {Y.shape[1]}")
    gamma, scales = check_kernel(gamma, scales, X.shape[1])
    Xs, Ys = scaled(X, scales), scaled(Y, scales)
    center = Ys.mean(axis=0) if len(Ys) else 0.0
    Yc = Ys - center
    ysq = np.einsum("ij,ij->i", Yc, Yc)
    out = np.empty((X.shape[0], Y.shape[0]))
    step = rows_per_block(Y.shape[0], block_elements)
    for s in range(0, X.shape[0], step):
        G = neg_sqdist(Xs[s:s + step] - center, Yc, ysq)
        G *= gamma
        np.exp(G, out=out[s:s + step])
    return out


def _weighted_kernel_sums(X, Y, w, gamma, scales) -> np.ndarray:
    """``K(X, Y) @ w`` in float64 without holding K (chunks over X)."""
    X, Y = as_points(X, "X"), as_points(Y, "Y")
    Xs, Ys = scaled(X, scales), scaled(Y, scales)
    center = Ys.mean(axis=0)
    Yc = Ys - center
    ysq = np.einsum("ij,ij->i", Yc, Yc)
    out = np.empty(X.shape[0])
    step = rows_per_block(Y.shape[0])
    for s in range(0, X.shape[0], step):
        G = neg_sqdist(Xs[s:s + step] - center, Yc, ysq)
        G *= gamma
        np.exp(G, out=G)
        out[s:s + step] = G @ w
    return out


def embedding_inner(z1, b1, z2, b2, gamma, scales=None) -> float:
    """``<mu1, mu2> = sum_ij b1_i b2_j k(z1_i, z2_j)`` in float64."""
    z1, z2 = as_points(z1, "z1"), as_points(z2, "z2")
    if z1.shape[1] != z2.shape[1]:
        raise ValueError(f"the embeddings live in {z1.shape[1]} and {z2.shape[1]} dimensions")
    gamma, scales = check_kernel(gamma, scales, z1.shape[1])
    b1 = np.asarray(b1, dtype=np.float64).ravel()
    b2 = np.asarray(b2, dtype=np.float64).ravel()
    if b1.shape[0] != z1.shape[0] or b2.shape[0] != z2.shape[0]:
        raise ValueError("each embedding needs one weight per point")
    if z1.shape[0] < z2.shape[0]:  # chunk over the larger set; the smaller one stays whole
        z1, b1, z2, b2 = z2, b2, z1, b1
    return float(b1 @ _weighted_kernel_sums(z1, z2, b2, gamma, scales))


def mmd2(z1, b1, z2, b2, gamma, scales=None) -> float:
    """Squared maximum mean discrepancy ``||mu1 - mu2||^2`` in the RKHS, clipped at 0."""
    v = (embedding_inner(z1, b1, z1, b1, gamma, scales)
         + embedding_inner(z2, b2, z2, b2, gamma, scales)
         - 2.0 * embedding_inner(z1, b1, z2, b2, gamma, scales))
    return max(v, 0.0)


# --------------------------------------------------------------------------- float32 blocks
def augmented_rows(Xc, gamma: float, log_w=None, dtype=np.float32) -> np.ndarray:
    """``[x, 1, -gamma|x|^2 + log w]`` for centred, scaled points x (see :func:`augmented_cols`)."""
    Xc = np.asarray(Xc, dtype=np.float64)
    n, d = Xc.shape
    A = np.empty((n, d + 2), dtype=dtype)
    A[:, :d] = Xc
    A[:, d] = 1.0
    last = -gamma * np.einsum("ij,ij->i", Xc, Xc)
    if log_w is not None:
        last += log_w
    A[:, d + 1] = last
    return A


def augmented_cols(Zc, gamma: float, log_b=None, dtype=np.float32) -> np.ndarray:
    """``[2 gamma z; -gamma|z|^2 + log b; 1]`` so that ``augmented_rows(X) @ augmented_cols(Z)``
    is ``log(w_i b_j k(x_i, z_j))`` in a single matrix product."""
    Zc = np.asarray(Zc, dtype=np.float64)
    k, d = Zc.shape
    Q = np.empty((d + 2, k), dtype=dtype)
    Q[:d] = (2.0 * gamma) * Zc.T
    row = -gamma * np.einsum("ij,ij->i", Zc, Zc)
    if log_b is not None:
        row += log_b
    Q[d] = row
    Q[d + 1] = 1.0
    return Q


def safe_log(w: np.ndarray) -> np.ndarray:
    out = np.full(w.shape, _LOG_ZERO)
    pos = w > 0
    out[pos] = np.log(w[pos])
    return out


# ------------------------------------------------------------------------- many embeddings
# ----------------------------------------------------------------------------------- herding
def herd(z, beta, gamma, scales=None, t: int = 100, random_state=0, *,
         n_candidates: int | None = None) -> np.ndarray:
    """``t`` points (raw units) whose empirical embedding tracks ``sum_i beta_i k(z_i, .)``.

    Kernel herding over a candidate pool: the reduced points themselves plus draws from Gaussians
    around each ``z_i`` (chosen with probability ``beta_i``) whose width is half the typical
    spacing of the reduced set, capped by the kernel's own bandwidth. Each step takes the candidate
    that most reduces the MMD of the sample so far (Chen, Welling & Smola 2010); a candidate is used
    at most once, so the sample has no duplicates.
    """
    z = as_points(z, "z")
    beta = np.asarray(beta, dtype=np.float64).ravel()
    if beta.shape[0] != z.shape[0]:
        raise ValueError("herd needs one weight per reduced point")
    if np.any(beta < 0) or not np.isclose(beta.sum(), 1.0, atol=1e-6):
        raise ValueError("beta must be non-negative and sum to 1")
    gamma, scales = check_kernel(gamma, scales, z.shape[1])
    t = int(t)
    if t < 1:
        raise ValueError("t must be at least 1")
    rng = np.random.default_rng(random_state)
    k, d = z.shape
    zs = scaled(z, scales)
    center = zs.mean(axis=0)
    zc = zs - center
    bandwidth = 1.0 / np.sqrt(2.0 * gamma)  # per-coordinate std of the kernel's Gaussian
    sigma = bandwidth
    if k > 1:
        D = -neg_sqdist(zc, zc, np.einsum("ij,ij->i", zc, zc))
        np.fill_diagonal(D, np.inf)
        spacing = float(np.median(np.sqrt(D.min(axis=1))))
        if spacing > 0:
            sigma = min(bandwidth, 0.5 * spacing / np.sqrt(d))
    m = max(int(n_candidates), t) if n_candidates else max(10 * t, 2000)
    comp = rng.choice(k, size=m, p=beta / beta.sum())
    cc = np.vstack([zc[beta > 0], zc[comp] + sigma * rng.standard_normal((m, d))])
    csq = np.einsum("ij,ij->i", cc, cc)
    mu = _weighted_kernel_sums(cc, zc, beta, gamma, None)  # <k(c, .), mu> for every candidate
    acc = np.zeros(cc.shape[0])
    chosen = np.empty(t, dtype=np.intp)
    score = np.empty_like(acc)
    for s in range(t):  # herding is sequential by nature: one vectorised update per sample
        np.divide(acc, s + 1, out=score)
        np.subtract(mu, score, out=score)  # used candidates have acc = inf: score -inf
        i = int(np.argmax(score))
        chosen[s] = i
        diff = cc @ cc[i]
        diff *= 2.0
        diff -= csq
        diff -= csq[i]
        np.minimum(diff, 0.0, out=diff)
        diff *= gamma
        np.exp(diff, out=diff)
        acc += diff
        acc[i] = np.inf
    out = cc[chosen] + center
    return out if scales is None else out * scales
