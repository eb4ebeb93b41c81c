"""Differentially private kernel mean embeddings (issue #19): the math, pure numpy.

A published RKME summarises its training rows; here the summary is made (epsilon, delta)-DP
with respect to one row (replace-one neighbours; the row count n is treated as public), in the
way DP-MERF does (Harder et al. 2021):

1. **Bounded features without looking at the data.** Random Fourier features of the island's
   Gaussian kernel as cosine/sine pairs, ``phi(x) = [cos(W'x), sin(W'x)] / sqrt(D)`` with
   ``W = omega / scales``, ``omega ~ N(0, 2 gamma I)``: ``phi(x) . phi(y) ~ k(x, y)`` and
   ``||phi(x)|| = 1`` for *every* x, so no clipping range has to be learnt from the rows.
2. **The Gaussian mechanism.** The mean embedding ``m = (1/n) sum_i phi(x_i)`` moves by at most
   ``||phi(x) - phi(x')|| / n <= 2 / n`` when one row is replaced (L2 sensitivity), and
   ``m + N(0, sigma^2 I)`` is (epsilon, delta)-DP for the smallest sigma of the *analytic*
   Gaussian mechanism (Balle & Wang 2018, Theorem 8): the exact privacy profile
   ``delta(sigma) = Phi(D/(2s) - e s/D) - e^eps Phi(-D/(2s) - e s/D)`` is solved for sigma by
   bisection (it is decreasing in sigma), tighter than the classical
   ``sqrt(2 ln(1.25/delta)) D / eps`` and valid for every epsilon.
3. **Reduced points fitted to the noisy embedding only** (post-processing, so free of further
   privacy cost): candidates drawn in a declared box (public: not derived from the rows),
   kernel herding against the noisy embedding, a second round of candidates around the chosen
   points, then the simplex weights minimising ``||sum_j beta_j phi(z_j) - m_noisy||``.

The noise in any inner product ``<phi(c), m_noisy>`` is ``N(0, sigma^2)`` whatever D is, so D
only sets the random-feature error (~1/sqrt(D)).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .simplex import simplex_qp

__all__ = ["feature_width", "gaussian_delta", "gaussian_sigma", "classical_sigma",
           "embedding_sensitivity",
           "DPFeatures", "noisy_mean_embedding", "fit_to_embedding", "DEFAULT_FEATURES"]

#: frequencies of the DP random features (2 x this many coordinates)
DEFAULT_FEATURES = 1000


def feature_width(n_rows: int, epsilon: float) -> float:
    """Factor on the island's gamma for the DP features: ``clip(n epsilon / 400, 1/4, 1)``.

    With little data the noise (std ~7.5 / (n epsilon) in every inner product at delta 1e-5)
    peaks somewhere in a box many kernel widths wide; a wider kernel (gamma / 4: twice the
    length) leaves the noise fewer places to peak and found a 30-row developer among 40 four
    times as often at epsilon = 1 (benchmarks/dp_bench.py). With more data the island's own
    kernel keeps the detail."""
    return float(min(1.0, max(0.25, n_rows * epsilon / 400.0)))


def _Phi(x: float) -> float:
    return 0.5 * math.erfc(-x / math.sqrt(2.0))


def gaussian_delta(sigma: float, epsilon: float, sensitivity: float) -> float:
    """The exact delta of the Gaussian mechanism with noise ``sigma`` at ``epsilon``
    (Balle & Wang 2018, Theorem 8)."""
    if sigma <= 0:
        return 1.0
    a = sensitivity / (2.0 * sigma)
    b = epsilon * sigma / sensitivity
    # e^eps Phi(-a - b): both factors in log space (large epsilon, far tails)
    tail = 0.5 * math.erfc((a + b) / math.sqrt(2.0))
    second = math.exp(epsilon + math.log(tail)) if tail > 0 else 0.0
    return max(0.0, _Phi(a - b) - second)


def gaussian_sigma(epsilon: float, delta: float, sensitivity: float) -> float:
    """The smallest noise scale for which the Gaussian mechanism is (epsilon, delta)-DP."""
    if not (epsilon > 0 and math.isfinite(epsilon)):
        raise ValueError("epsilon must be positive and finite")
    if not 0 < delta < 1:
        raise ValueError("delta must be in (0, 1)")
    if not sensitivity > 0:
        raise ValueError("sensitivity must be positive")
    lo, hi = 1e-12 * sensitivity, sensitivity
    while gaussian_delta(hi, epsilon, sensitivity) > delta:
        hi *= 2.0
    for _ in range(200):  # bisection in log space: delta(sigma) decreases in sigma
        mid = math.sqrt(lo * hi)
        if gaussian_delta(mid, epsilon, sensitivity) > delta:
            lo = mid
        else:
            hi = mid
        if hi / lo < 1 + 1e-12:
            break
    return hi


def classical_sigma(epsilon: float, delta: float, sensitivity: float) -> float:
    """The textbook bound ``sqrt(2 ln(1.25 / delta)) sensitivity / epsilon`` (valid for
    epsilon < 1; for comparison: the analytic sigma is never larger)."""
    return math.sqrt(2.0 * math.log(1.25 / delta)) * sensitivity / epsilon


def embedding_sensitivity(n_rows: int) -> float:
    """L2 sensitivity of the mean of unit-norm features under replacing one of n rows."""
    return 2.0 / int(n_rows)


@dataclass
class DPFeatures:
    """Unit-norm random Fourier features of ``k(x, y) = exp(-gamma ||(x - y) / scales||^2)``."""

    gamma: float
    scales: np.ndarray
    n_freq: int = DEFAULT_FEATURES
    seed: int = 0

    def __post_init__(self):
        self.scales = np.asarray(self.scales, dtype=np.float64).ravel()
        rng = np.random.default_rng([int(self.seed), int(self.n_freq), self.scales.size])
        omega = rng.standard_normal((self.scales.size, int(self.n_freq)))
        self.W = omega * np.sqrt(2.0 * self.gamma) / self.scales[:, None]

    def __call__(self, X: np.ndarray) -> np.ndarray:
        """``phi(X)``: (n, 2 n_freq), each row of norm 1."""
        P = np.asarray(X, dtype=np.float64) @ self.W
        return np.hstack([np.cos(P), np.sin(P)]) / np.sqrt(self.n_freq)


def noisy_mean_embedding(X: np.ndarray, features: DPFeatures, epsilon: float, delta: float,
                         rng: np.random.Generator) -> tuple[np.ndarray, float]:
    """``(m + N(0, sigma^2 I), sigma)``: the (epsilon, delta)-DP mean embedding of the rows."""
    n = X.shape[0]
    sigma = gaussian_sigma(epsilon, delta, embedding_sensitivity(n))
    m = np.zeros(2 * features.n_freq)
    for s in range(0, n, 4096):
        m += features(X[s:s + 4096]).sum(axis=0)
    m /= n
    return m + sigma * rng.standard_normal(m.shape), sigma


def _herd(F_cand: np.ndarray, target: np.ndarray, k: int) -> list[int]:
    """Kernel herding in feature space: k candidates whose running mean follows ``target``."""
    score = F_cand @ target
    acc = np.zeros(F_cand.shape[0])
    chosen: list[int] = []
    for t in range(k):
        crit = score - acc / (t + 1)
        if chosen:
            crit[chosen] = -np.inf
        j = int(np.argmax(crit))
        chosen.append(j)
        acc += F_cand @ F_cand[j]
    return chosen


def fit_to_embedding(target: np.ndarray, features: DPFeatures, lo: np.ndarray, hi: np.ndarray,
                     k: int, rng: np.random.Generator, n_candidates: int = 4096,
                     rounds: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Reduced points (in the box ``[lo, hi]``) and simplex weights whose feature mean is
    closest to ``target``; uses nothing but ``target`` and public parameters."""
    lo, hi = np.asarray(lo, float), np.asarray(hi, float)
    cand = lo + (hi - lo) * rng.random((n_candidates, lo.size))
    # the kernel's length per feature in raw units: new candidates jitter around chosen ones
    length = features.scales / np.sqrt(2.0 * features.gamma)
    chosen_pts = np.zeros((0, lo.size))
    for r in range(rounds):
        pool = np.vstack([cand, chosen_pts])
        F = features(pool)
        idx = _herd(F, target, k)
        chosen_pts = pool[idx]
        if r + 1 < rounds:
            per = max(1, n_candidates // max(1, k))
            jitter = rng.standard_normal((k, per, lo.size)) * (0.3 * length)
            cand = np.clip((chosen_pts[:, None, :] + jitter).reshape(-1, lo.size), lo, hi)
    Fz = features(chosen_pts)
    beta, _ = simplex_qp(Fz @ Fz.T, Fz @ target)
    keep = beta > 1e-9
    return chosen_pts[keep], beta[keep] / beta[keep].sum()
