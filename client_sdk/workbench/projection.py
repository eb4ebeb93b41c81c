"""The picture of a specification: the user's rows and the RKME's reduced points on the first
two principal axes of the rows (under the kernel's feature scales), as SVG coordinates.

Pure numeric code; the template draws it. Rows are subsampled to ``MAX_DOTS`` for drawing."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Projection", "project"]

MAX_DOTS = 1_500


@dataclass
class Projection:
    """Points in SVG user units: ``rows`` (x, y), ``reduced`` (x, y, radius) and the share of
    the variance the two axes explain."""

    width: int
    height: int
    rows: list[tuple[float, float]]
    reduced: list[tuple[float, float, float]]
    explained: float
    n_rows: int


def project(X: np.ndarray, Z: np.ndarray, beta: np.ndarray, scales: np.ndarray | None = None,
            *, width: int = 560, height: int = 360, margin: int = 16,
            seed: int = 0) -> Projection:
    X = np.asarray(X, dtype=np.float64)
    Z = np.asarray(Z, dtype=np.float64)
    s = np.ones(X.shape[1]) if scales is None else np.asarray(scales, dtype=np.float64)
    s = np.where(s > 0, s, 1.0)
    Xs, Zs = X / s, Z / s
    mu = Xs.mean(axis=0)
    C = Xs - mu
    _, sv, vt = np.linalg.svd(C, full_matrices=False)
    axes = vt[:2].T if vt.shape[0] >= 2 else np.hstack([vt[:1].T, np.zeros((X.shape[1], 1))])
    var = sv ** 2
    explained = float(var[:2].sum() / var.sum()) if var.sum() > 0 else 1.0
    P, Q = C @ axes, (Zs - mu) @ axes
    if len(P) > MAX_DOTS:
        P = P[np.random.default_rng(seed).choice(len(P), MAX_DOTS, replace=False)]
    both = np.vstack([P, Q])
    lo, hi = both.min(axis=0), both.max(axis=0)
    span = np.where(hi - lo > 0, hi - lo, 1.0)

    def to_svg(A):
        x = margin + (A[:, 0] - lo[0]) / span[0] * (width - 2 * margin)
        y = height - margin - (A[:, 1] - lo[1]) / span[1] * (height - 2 * margin)
        return np.round(x, 1), np.round(y, 1)

    px, py = to_svg(P)
    qx, qy = to_svg(Q)
    b = np.asarray(beta, dtype=np.float64)
    r = np.round(3.0 + 9.0 * np.sqrt(np.clip(b, 0, None) / max(b.max(), 1e-300)), 1)
    return Projection(width, height, list(zip(px.tolist(), py.tolist())),
                      list(zip(qx.tolist(), qy.tolist(), r.tolist())), explained, len(X))
