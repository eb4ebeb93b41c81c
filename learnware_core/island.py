"""The base kernel of a new island, computed identically by the market and every client.

A new island starts from the per-feature scales its first publisher declares (the SDK states a
robust spread of each of the developer's own features: an aggregate, never a row) and
``gamma = 1 / (2 d)``: for standardised features ``||x - y||^2`` is about ``2 d`` between two
random points, so typical kernel values sit near ``exp(-1)`` rather than at 0 or 1. The market
may refine the kernel later from the island's own models (``market_server.island_kernel``);
specs keep their reduced points in raw feature units, so they stay comparable under any kernel.
"""
from __future__ import annotations

import numpy as np

MIN_SCALE = 1e-6


def base_kernel(declared_scales, n_features: int) -> tuple[float, np.ndarray]:
    if declared_scales is None:
        scales = np.ones(n_features)
    else:
        scales = np.asarray(declared_scales, dtype=np.float64).reshape(-1)
        if scales.shape != (n_features,):
            raise ValueError(f"declared scales have {scales.size} values; {n_features} needed")
        scales = np.maximum(scales, MIN_SCALE)
    return 1.0 / (2.0 * n_features), scales


def robust_scales(X: np.ndarray) -> np.ndarray:
    """Per-feature spread a first publisher declares: IQR/1.349 (a robust std), else std, else 1.

    Rounded to 2 significant digits so the declaration says little about the exact data.
    """
    X = np.asarray(X, dtype=np.float64)
    q75, q25 = np.percentile(X, [75, 25], axis=0)
    s = (q75 - q25) / 1.349
    std = X.std(axis=0)
    s = np.where(s > 0, s, std)
    s = np.where(s > 0, s, 1.0)
    exp = np.floor(np.log10(s))
    return np.round(s / 10 ** exp, 1) * 10 ** exp
