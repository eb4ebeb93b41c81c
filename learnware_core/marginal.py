"""Marginals of an RKME on a subset of its features, and filling missing features from a spec.

With a product Gaussian kernel, ``k(x, y) = prod_j exp(-gamma ((x_j - y_j) / s_j)^2)``, the
embedding ``sum_i b_i k(z_i, .)`` restricted to the coordinates ``S`` is
``sum_i b_i k_S(z_i[S], .)``: the kernel mean embedding of the *marginal* distribution on ``S``.
So the MMD between two data sets on the features they share needs nothing but their reduced
points with the other coordinates dropped -- no new data from anyone. Both the market (search
across islands) and the client (filling a learnware's missing inputs) compute with this module.

Pure numerics: no I/O, no protocol objects.
"""
from __future__ import annotations

import numpy as np

from .island import MIN_SCALE
from .kernels import mmd2

__all__ = ["marginal_kernel", "marginal_mmd2", "conditional_fill", "spec_median_fill",
           "FILL_RULES", "fill_columns"]


def marginal_kernel(scales, n_features: int | None = None) -> tuple[float, np.ndarray]:
    """The kernel on a set of shared features: ``gamma = 1 / (2 |S|)`` (as a new island's base
    kernel, so a typical pair sits near ``exp(-1)`` whatever the number of shared features) and
    the given per-feature scales (floored at ``MIN_SCALE``)."""
    s = np.maximum(np.asarray(scales, dtype=np.float64).reshape(-1), MIN_SCALE)
    d = s.size if n_features is None else int(n_features)
    if d < 1 or s.size != d:
        raise ValueError("a marginal kernel needs one scale per shared feature (at least one)")
    return 1.0 / (2.0 * d), s


def marginal_mmd2(z1, b1, cols1, z2, b2, cols2, gamma, scales) -> float:
    """Squared MMD between the marginals of two embeddings: ``cols1[j]`` and ``cols2[j]`` are the
    columns of the same shared feature ``j`` in ``z1`` and ``z2``; ``scales[j]`` its scale."""
    z1 = np.asarray(z1, dtype=np.float64)[:, list(cols1)]
    z2 = np.asarray(z2, dtype=np.float64)[:, list(cols2)]
    return mmd2(z1, b1, z2, b2, gamma, scales)


def _weighted_median(values: np.ndarray, weights: np.ndarray) -> float:
    order = np.argsort(values, kind="stable")
    cw = np.cumsum(weights[order])
    return float(values[order][np.searchsorted(cw, 0.5 * cw[-1])])


def spec_median_fill(z, beta, missing, n_rows: int) -> np.ndarray:
    """Each missing feature at the beta-weighted median of the spec's reduced points: one
    constant per feature (the developer's typical value), ``n_rows x |missing|``."""
    z = np.asarray(z, dtype=np.float64)
    beta = np.clip(np.asarray(beta, dtype=np.float64), 0.0, None)
    vals = [_weighted_median(z[:, j], beta) for j in missing]
    return np.tile(np.asarray(vals, dtype=np.float64), (int(n_rows), 1))


def conditional_fill(z, beta, shared, missing, X_shared, scales_shared,
                     bandwidth: float = 0.3) -> np.ndarray:
    """Kernel-weighted conditional mean of the missing coordinates given the shared ones.

    The reduced points ``(z, beta)`` are a weighted sample of the developer's inputs; for each
    row ``x`` of ``X_shared`` (the user's values of the shared features, columns in the order of
    ``shared``), ``E[z_missing | z_shared ~ x]`` is estimated with weights
    ``beta_i k_S(x, z_i[shared])`` (Nadaraya-Watson on the spec). ``bandwidth`` multiplies the
    marginal kernel's width (0.3: a spec holds few points and a conditional relation is local;
    at the search kernel's width the mean is smoothed toward the spec's overall mean). Rows far
    from every reduced point get the nearest points' values (the weights are normalised in log
    space, so they never all vanish)."""
    z = np.asarray(z, dtype=np.float64)
    beta = np.clip(np.asarray(beta, dtype=np.float64), 0.0, None)
    X_shared = np.asarray(X_shared, dtype=np.float64)
    if not len(shared):  # nothing to condition on: the spec's weighted mean
        mean = beta @ z[:, list(missing)] / max(beta.sum(), 1e-300)
        return np.tile(mean, (X_shared.shape[0], 1))
    gamma, s = marginal_kernel(scales_shared, len(shared))
    gamma /= float(bandwidth) ** 2
    zs = z[:, list(shared)] / s
    xs = X_shared / s
    d2 = (np.einsum("ij,ij->i", xs, xs)[:, None] + np.einsum("ij,ij->i", zs, zs)[None, :]
          - 2.0 * xs @ zs.T)
    np.maximum(d2, 0.0, out=d2)
    with np.errstate(divide="ignore"):
        logw = -gamma * d2 + np.log(np.where(beta > 0, beta, 0.0))[None, :]
    logw -= logw.max(axis=1, keepdims=True)
    w = np.exp(logw)
    w /= w.sum(axis=1, keepdims=True)
    return w @ z[:, list(missing)]


#: the filling rules :func:`fill_columns` knows
FILL_RULES = ("conditional", "median")


def fill_columns(rule: str, z, beta, shared, missing, X_shared, scales_shared) -> np.ndarray:
    """The missing columns for the rows ``X_shared`` by ``rule`` (see :data:`FILL_RULES`)."""
    if rule == "conditional":
        return conditional_fill(z, beta, shared, missing, X_shared, scales_shared)
    if rule == "median":
        return spec_median_fill(z, beta, missing, np.asarray(X_shared).shape[0])
    raise ValueError(f"unknown fill rule {rule!r}; one of {FILL_RULES}")
