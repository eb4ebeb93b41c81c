"""RKME specification: a private, compact summary of a data set's distribution.

A reduced kernel mean embedding ``mu = sum_j beta_j k(z_j, .)`` with ``k`` weighted points stands in
for the empirical embedding ``(1/n) sum_i k(x_i, .)`` of the rows X. The market compares such
specifications by squared MMD (:mod:`learnware_core.kernels`) without ever seeing X.

Kernel. ``k(x, y) = exp(-gamma ||(x - y) / scales||^2)``. In the market the island fixes gamma and
scales (every learnware of an island must use the same kernel for MMDs to be comparable); pass
them. For standalone use the defaults are: ``scales`` = per-feature standard deviation of X
(constant features get 1), and ``gamma = 1 / (d * mean per-feature variance of X / scales)``, which
is ``1 / d`` under the default scales -- scikit-learn's ``gamma="scale"`` on standardised features.
Reduced points are stored in raw feature units, so a spec can be evaluated under any kernel
(:meth:`RKMESpec.with_kernel`).

Fitting (``steps`` rounds after a k-means++ start):

1. k-means++ seeding (D^2 sampling) on a subsample of ``10 k`` rows. No Lloyd iterations: a
   centroid of ~10 rows is pulled toward each of them (membership AUC 0.63-0.79 at n <= 1000 in
   our measurements, against 0.54-0.59 from seeds), and it did not bring the spec closer to fresh
   data of the same distribution;
2. beta = the exact minimiser over the simplex of the RKHS distance to the data's embedding
   (:func:`learnware_core.simplex.simplex_qp`, active-set polish to a KKT residual below 1e-10);
3. every point moves along the gradient of the witness function ``<k(z, .), mu_X - mu>``,
   normalised like a mean-shift step; the step length comes from Armijo backtracking (with
   quadratic interpolation, and a longer first trial after a success), so each move provably lowers
   the objective. Points whose weight is zero move toward data the embedding still misses, ready
   for the next beta. Steps 2-3 use at most ``OPT_ROWS`` rows (a subsample's embedding is within
   about ``1/OPT_ROWS`` of the full one in squared MMD);
4. a last beta is solved against the embedding of *all* rows, after the privacy check below.
   Points with zero weight are dropped, so ``spec.k`` can be below the requested ``k``.

Kernel blocks are evaluated in float32 in chunks (see :mod:`learnware_core.kernels`), so memory grows
only with the data itself: n = 1,000,000 x d = 20 needs about 250 MiB beyond X.

Privacy by construction:

* at most one reduced point per ``ROWS_PER_POINT`` (= 10) rows: ``k_eff = min(k, n // 10)``, and
  data sets below ``MIN_ROWS`` (= 50) rows are refused; the error points to the anchor path
  ``MarketClient.localize``, which needs no RKME. (At 5 rows per point the attack below reached
  AUC 0.58-0.65; at 10, 0.54-0.59 for d = 2..50.)
* no reduced point lies closer to any training row than ``MIN_DISTANCE_FRACTION`` (= 0.25) of the
  median nearest-neighbour distance between rows (kernel metric; duplicate rows ignored). Points the
  optimiser left closer are pushed out along the line from the row and beta is re-solved.
  :func:`membership_inference_auc` measures what an attacker "x is within r of some z" achieves.
"""
from __future__ import annotations

import time
from typing import Any

import numpy as np

from protocol.encoding import encode_array
from protocol.errors import DataError, SchemaError
from protocol.limits import MAX_DP_DELTA, MAX_DP_EPSILON, MAX_SPEC_POINTS
from learnware_core import dp as dpmath
from learnware_core.kernels import (BLOCK_ELEMENTS, augmented_cols, augmented_rows, check_kernel,
                                    embedding_inner, gaussian_kernel, herd, mmd2)
from learnware_core.simplex import simplex_qp
from learnware_core.spec import check_spec, decode_spec

from .data import as_matrix

__all__ = ["RKMESpec", "dp_scales", "MIN_ROWS", "DP_MIN_ROWS", "DP_MAX_EPSILON_FOR_SMALL", "DP_MAX_POINTS",
           "ROWS_PER_POINT", "MIN_DISTANCE_FRACTION", "OPT_ROWS", "membership_inference_auc"]

MIN_ROWS = 50
#: differentially private specs (issue #19): the guarantee holds at any n, so the minimum is
#: one of usefulness: DP_MIN_ROWS rows at epsilon <= DP_MAX_EPSILON_FOR_SMALL, else MIN_ROWS
DP_MIN_ROWS = 20
DP_MAX_EPSILON_FOR_SMALL = 1.0
#: reduced points of a DP spec (post-processing of the noisy embedding: no privacy cost, but
#: beyond a few dozen they only fit the noise)
DP_MAX_POINTS = 30
#: n x epsilon per reduced point of a DP spec (at least 2 points)
DP_ROWS_PER_POINT = 10
ROWS_PER_POINT = 10
MIN_DISTANCE_FRACTION = 0.25
OPT_ROWS = 16384          # rows used for the beta/z alternation (all rows when fewer)
INIT_ROWS_PER_POINT = 10  # k-means++ seeding subsample: 10 rows per reduced point
NN_QUERIES = 64           # rows (at least) whose nearest neighbour gives the median NN distance
ARMIJO_SIGMA = 1e-4
ARMIJO_TRIALS = 8
ETA_GROWTH = 4.0          # after an accepted first trial the next step starts 4x longer
ETA_MAX = 256.0
QP_TOL = 1e-10

_LOCALIZE_HINT = ("Small data sets can still use the market through the anchor path, "
                  "MarketClient.localize, which needs no RKME specification.")


# ----------------------------------------------------------------------------- numeric core
def _sqdist_to(Xc: np.ndarray, P: np.ndarray) -> np.ndarray:
    """Exact float64 squared distances, rows of Xc to the points P (small), chunked by caller."""
    G = Xc @ P.T
    G *= -2.0
    G += np.einsum("ij,ij->i", Xc, Xc)[:, None]
    G += np.einsum("ij,ij->i", P, P)[None, :]
    return np.maximum(G, 0.0, out=G)


def _nearest_rows(Xc: np.ndarray, P: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each point of P: the squared distance to, and index of, its nearest row of Xc."""
    best = np.full(P.shape[0], np.inf)
    arg = np.zeros(P.shape[0], dtype=np.intp)
    step = max(1, BLOCK_ELEMENTS // max(1, P.shape[0]))
    for s in range(0, Xc.shape[0], step):
        D = _sqdist_to(Xc[s:s + step], P)
        i = np.argmin(D, axis=0)
        v = D[i, np.arange(P.shape[0])]
        better = v < best
        best[better] = v[better]
        arg[better] = i[better] + s
    return best, arg


def _kernel_pass(A: np.ndarray, Q: np.ndarray, d: int, *, want_kx: bool = True,
                 want_max: bool = False):
    """One chunked float32 pass over the augmented rows A against augmented columns Q.

    Returns ``c = mean_i k(x_i, z_j)``, ``KX = mean_i k(x_i, z_j) x_i`` and (optionally) the
    largest ``-gamma ||x_i - z_j||^2`` per column (a nearest-row screen). Column ``d`` of A is all
    ones, so ``K' A[:, :d+1]`` yields KX and c in one matrix product.
    """
    n, k = A.shape[0], Q.shape[1]
    acc = np.zeros((k, d + 1))
    mx = np.full(k, -np.inf, dtype=np.float32) if want_max else None
    step = max(1, BLOCK_ELEMENTS // k)
    G = np.empty((min(step, n), k), dtype=np.float32)
    ones = np.ones(min(step, n), dtype=np.float32)
    for s in range(0, n, step):
        e = min(n, s + step)
        g = G[:e - s]
        np.matmul(A[s:e], Q, out=g)
        if want_max:
            np.maximum(mx, g.max(axis=0), out=mx)
        np.exp(g, out=g)
        if want_kx:
            acc += g.T @ A[s:e, :d + 1]
        else:
            acc[:, d] += ones[:e - s] @ g
    acc /= n
    return acc[:, d].copy(), (acc[:, :d] if want_kx else None), mx


def _kmeans_pp(Xs: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k-means++ seeding (D^2 sampling): k rows of Xs, spread out."""
    s, d = Xs.shape
    xsq = np.einsum("ij,ij->i", Xs, Xs)
    idx = np.empty(k, dtype=np.intp)
    idx[0] = rng.integers(s)
    D = np.maximum(xsq - 2.0 * (Xs @ Xs[idx[0]]) + xsq[idx[0]], 0.0)
    u = rng.random(k)
    for j in range(1, k):  # sequential by definition: one vectorised distance update per seed
        cum = np.cumsum(D)
        i = int(np.searchsorted(cum, u[j] * cum[-1], side="right")) if cum[-1] > 0 else int(
            rng.integers(s))
        i = min(i, s - 1)
        idx[j] = i
        np.minimum(D, np.maximum(xsq - 2.0 * (Xs @ Xs[i]) + xsq[i], 0.0), out=D)
    return Xs[idx].copy()


def _median_nn_distance(Xc: np.ndarray, A: np.ndarray, gamma: float,
                        rng: np.random.Generator) -> float:
    """Median distance from a row to its nearest *distinct* row (kernel metric), estimated from
    random rows searched against all rows: ``NN_QUERIES`` of them, more for small data (up to
    ``2**18 / n``, every row below 512) where the search is cheap."""
    n = Xc.shape[0]
    q = min(n, max(NN_QUERIES, (1 << 18) // n))
    qi = rng.choice(n, size=q, replace=False)
    Q = augmented_cols(Xc[qi], gamma)
    best = np.full(q, -np.inf, dtype=np.float32)
    # float32 screen: -gamma d^2; entries above -dup are duplicates (or the query row itself)
    scale = 1.0 + float(np.max(np.einsum("ij,ij->i", Xc[qi], Xc[qi])))
    dup = np.float32(gamma * 1e-5 * scale)
    step = max(1, BLOCK_ELEMENTS // q)
    G = np.empty((min(step, n), q), dtype=np.float32)
    for s in range(0, n, step):
        e = min(n, s + step)
        g = G[:e - s]
        np.matmul(A[s:e], Q, out=g)
        g[g > -dup] = -np.inf
        np.maximum(best, g.max(axis=0), out=best)
    finite = np.isfinite(best)
    if not finite.any():
        return 0.0
    return float(np.median(np.sqrt(np.maximum(-best[finite].astype(np.float64), 0.0) / gamma)))


def _push_out(Xc: np.ndarray, z: np.ndarray, cand: np.ndarray, delta: float,
              rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Move the candidate points that lie within ``delta`` of a row to distance >= delta of every
    row; returns (new z, mask of moved points, exact squared distance of each candidate to its
    nearest row afterwards)."""
    z = z.copy()
    moved = np.zeros(z.shape[0], dtype=bool)
    todo = np.flatnonzero(cand)
    radius = 1.05 * delta
    for _ in range(50):  # rounds; each is vectorised over the offending points
        if todo.size == 0:
            break
        d2, nn = _nearest_rows(Xc, z[todo])
        bad = d2 < delta * delta
        todo = todo[bad]
        if todo.size == 0:
            break
        nn = nn[bad]
        v = z[todo] - Xc[nn]
        norm = np.linalg.norm(v, axis=1)
        rand = rng.standard_normal(v.shape)
        zero = norm <= 1e-12 * max(delta, 1e-300)
        v[zero] = rand[zero]
        v /= np.linalg.norm(v, axis=1)[:, None]
        z[todo] = Xc[nn] + radius * v
        moved[todo] = True
        radius *= 1.2  # crowded places: step further out each round
    d2, _ = _nearest_rows(Xc, z[cand])
    return z, moved, d2


def _objective(K: np.ndarray, c: np.ndarray, b: np.ndarray) -> float:
    """``||mu_b - mu_X||^2`` minus its constant ``||mu_X||^2``."""
    return float(b @ K @ b - 2.0 * c @ b)


def _fit_points(Xc: np.ndarray, k: int, gamma: float, steps: int, rng: np.random.Generator):
    """The fit on centred, scaled rows (kernel = plain Gaussian): returns (z, beta, info)."""
    n, d = Xc.shape
    A = augmented_rows(Xc, gamma)  # float32 [x, 1, -gamma|x|^2]
    A_opt = A[np.sort(rng.choice(n, size=OPT_ROWS, replace=False))] if n > OPT_ROWS else A
    t0 = time.perf_counter()
    # all rows in the loop: its last passes also screen for rows near the points
    screen = A_opt is A
    passes = 0

    def kpass(rows, zz, want_kx=True, want_max=False):
        nonlocal passes
        passes += 1
        return _kernel_pass(rows, augmented_cols(zz, gamma), d, want_kx=want_kx,
                            want_max=want_max)

    def kzz(zz):
        return gaussian_kernel(zz, zz, gamma)

    # -- 1. k-means++ seeding on a subsample
    s = min(n, max(INIT_ROWS_PER_POINT * k, 256))
    init_idx = rng.choice(n, size=s, replace=False) if s < n else np.arange(n)
    z = _kmeans_pp(Xc[init_idx], k, rng)
    t_init = time.perf_counter() - t0

    # -- 2. exact beta
    c, KX, mx = kpass(A_opt, z, want_max=screen and steps == 0)
    K = kzz(z)
    beta, qp = simplex_qp(K, c, tol=QP_TOL)
    history = [_objective(K, c, beta)]
    qp_infos = [qp]
    max_move = 2.0 / np.sqrt(gamma)  # k = e^-4 at that distance
    etas: list[float] = []
    eta_start = 1.0
    for step in range(steps):
        last = step == steps - 1
        # -- 3. witness-gradient step, mean-shift normalised, Armijo backtracking.
        # dF/dz_j = -4 gamma beta_j m_j with m_j = (mean_i k_ji (x_i - z_j))
        #                                          - sum_l beta_l k_jl (z_l - z_j)
        P = K * beta[None, :]
        m = (KX - c[:, None] * z) - (P @ z - P.sum(axis=1)[:, None] * z)
        delta = m / np.maximum(c, 1e-300)[:, None]
        length = np.linalg.norm(delta, axis=1)
        too_far = length > max_move
        delta[too_far] *= (max_move / length[too_far])[:, None]
        slope = -4.0 * gamma * float(np.sum(beta[:, None] * m * delta))  # <= 0
        eta, accepted = eta_start, False
        f0 = history[-1]
        for _trial in range(ARMIJO_TRIALS):
            z_try = z + eta * delta
            c_try, KX_try, mx_try = kpass(A_opt, z_try, want_max=screen and last)
            K_try = kzz(z_try)
            f1 = _objective(K_try, c_try, beta)
            # minimiser of the quadratic through f0, slope and f1: where to try next
            curv = f1 - f0 - slope * eta
            eta_q = -slope * eta * eta / (2.0 * curv) if curv > 0 else ETA_GROWTH * eta
            if f1 <= f0 + ARMIJO_SIGMA * eta * slope:
                accepted = True
                break
            eta = min(max(eta_q, 0.1 * eta), 0.5 * eta)
        etas.append(eta if accepted else 0.0)
        if not accepted:
            break
        eta_start = min(max(eta_q, 0.5 * eta), ETA_GROWTH * eta, ETA_MAX)
        z, c, KX, K, mx = z_try, c_try, KX_try, K_try, mx_try
        # -- 2'. exact beta for the moved points
        beta, qp = simplex_qp(K, c, tol=QP_TOL, b0=beta)
        qp_infos.append(qp)
        history.append(_objective(K, c, beta))
    t_opt = time.perf_counter() - t0 - t_init

    # -- 4. all rows: privacy distance, final beta
    t1 = time.perf_counter()
    if screen and mx is not None:
        c_full = c.copy()
    else:  # a subsample in the loop (or the last step was not taken): one pass over all rows
        c_full, _, mx = kpass(A, z, want_kx=False, want_max=True)
    nn_med = _median_nn_distance(Xc, A, gamma, rng)
    min_dist = MIN_DISTANCE_FRACTION * nn_med if nn_med > 0 else 0.1 / np.sqrt(2.0 * gamma)
    # float32 screen, then exact distances for every point that might be too close
    approx_d2 = -mx.astype(np.float64) / gamma
    slack = 1e-4 * (1.0 + float(np.max(np.einsum("ij,ij->i", z, z))))
    cand = approx_d2 < 1.21 * min_dist * min_dist + slack
    nearest_d2 = approx_d2
    n_pushed = 0
    if cand.any():
        z, moved, nearest_d2[cand] = _push_out(Xc, z, cand, min_dist, rng)
        n_pushed = int(moved.sum())
        if n_pushed:
            c_full[moved] = kpass(A, z[moved], want_kx=False)[0]
    K = kzz(z)
    beta, qp = simplex_qp(K, c_full, tol=QP_TOL, b0=beta)
    qp_infos.append(qp)
    keep = beta > 0
    info = {
        "k": int(keep.sum()), "opt_rows": int(A_opt.shape[0]), "init_rows": int(s),
        "steps": steps, "objective_history": history, "armijo_steps": etas, "passes": passes,
        "qp_kkt": float(qp["kkt"]), "qp_gap": float(qp["gap"]),
        "qp_kkt_max": float(max(q["kkt"] for q in qp_infos)),
        "qp_iterations": int(sum(q["iterations"] for q in qp_infos)),
        "median_nn_distance": nn_med, "min_distance_required": min_dist,
        "min_distance": float(np.sqrt(max(nearest_d2[keep].min(), 0.0))),
        "n_pushed": n_pushed, "init_seconds": t_init, "optimise_seconds": t_opt,
        "privacy_seconds": time.perf_counter() - t1,
    }
    return z[keep], beta[keep], info


def _secret_rng() -> np.random.Generator:
    """The generator of a DP spec's noise: seeded from the operating system's entropy, never
    from ``random_state`` (tests replace this function to make their draws repeatable)."""
    return np.random.default_rng()


def dp_scales(dp: dict, n_features: int) -> np.ndarray:
    """The feature scales a DP publisher declares for a new island: a quarter of each declared
    bound's width (public), rounded to 2 significant digits, never a statistic of the rows."""
    extra = set(dp) - {"epsilon", "delta", "bounds"}
    if extra:
        raise DataError(f"dp takes epsilon, delta and bounds; unknown {sorted(extra)}",
                        field="dp")
    bounds = dp.get("bounds")
    if bounds is None:
        raise DataError("a differentially private spec needs bounds=(lo, hi)", field="bounds")
    try:
        lo, hi = (np.broadcast_to(np.asarray(b, dtype=np.float64), (n_features,))
                  for b in bounds)
    except (TypeError, ValueError):
        raise DataError(f"bounds must be (lo, hi), each a number or {n_features} numbers",
                        field="bounds") from None
    s = (hi - lo) / 4.0
    s = np.where(np.isfinite(s) & (s > 0), s, 1.0)
    exp = np.floor(np.log10(s))
    return np.round(s / 10 ** exp, 1) * 10 ** exp


# ------------------------------------------------------------------------------- the spec
class RKMESpec:
    """A reduced kernel mean embedding ``sum_j beta_j k(z_j, .)`` with its kernel (gamma, scales).

    Build one with :meth:`fit`; ship it with :meth:`to_dict` / :meth:`from_dict`.
    """

    def __init__(self, z, beta, gamma, scales=None, *, fit_info: dict | None = None,
                 dp: dict | None = None):
        z, beta, gamma, scales = check_spec(z, beta, gamma, scales)
        self.z = z
        self.beta = beta / beta.sum()
        self.gamma = gamma
        self.scales = scales
        self.fit_info = dict(fit_info or {})
        #: the declared (epsilon, delta) budget of a differentially private spec, else None
        self.dp = dict(dp) if dp else None

    # ---------------------------------------------------------------------------- fitting
    @classmethod
    def fit(cls, X, k: int = 100, gamma: float | None = None, scales=None, steps: int = 3,
            random_state=0, *, n_features: int | None = None, epsilon: float | None = None,
            delta: float = 1e-5, bounds=None) -> "RKMESpec":
        """Fit an RKME of at most ``k`` points to the rows of X (method: module docstring).

        Parameters
        ----------
        X : 2-D array-like or pandas DataFrame, numeric, finite, at least ``MIN_ROWS`` rows.
        k : upper bound on the number of reduced points (at most
            ``protocol.limits.MAX_SPEC_POINTS``); the fit uses ``min(k, n // ROWS_PER_POINT)``
            and drops points whose weight is zero.
        gamma, scales : the kernel. In the market pass the island's. ``None`` means the
            standalone defaults: scales = per-feature std of X (1 for constant features),
            gamma = 1 / (d * mean variance of X / scales) (= 1/d under the default scales).
            A scalar ``scales`` applies to every feature.
        steps : rounds of (move points, re-solve beta); 0 keeps the k-means++ seeds.
        random_state : int, numpy Generator or None; a given int always gives the same spec.
        n_features : when given, X must have exactly this many columns.
        epsilon, delta : make the spec (epsilon, delta)-differentially private with respect to
            one row (:mod:`learnware_core.dp`; the budget is declared in the spec). Needs
            ``bounds``; data sets of ``DP_MIN_ROWS`` rows are accepted at epsilon <= 1.
        bounds : ``(lo, hi)``, per-feature (or scalar) box the reduced points of a DP spec lie
            in. It must not come from the rows (a documented range, the island's public specs).
            Without a kernel given, the DP fit uses the base kernel of scales ``(hi - lo) / 4``.

        Raises :class:`~protocol.errors.DataError` for unusable data (the message names the
        columns) and for data sets too small to summarise privately.
        """
        X = as_matrix(X, n_features=n_features)
        if epsilon is not None:
            return cls.fit_dp(X, epsilon=epsilon, delta=delta, bounds=bounds, k=k, gamma=gamma,
                              scales=scales, random_state=random_state)
        return cls.fit_checked(X, k=k, gamma=gamma, scales=scales, steps=steps,
                               random_state=random_state)

    @classmethod
    def fit_dp(cls, X: np.ndarray, *, epsilon: float, delta: float = 1e-5, bounds=None,
               k: int = DP_MAX_POINTS, gamma: float | None = None, scales=None,
               random_state=0, n_freq: int = dpmath.DEFAULT_FEATURES) -> "RKMESpec":
        """An (epsilon, delta)-DP spec of the checked rows X (:meth:`fit` with ``epsilon``).

        The Gaussian noise is drawn from the operating system's entropy, never from
        ``random_state`` (a known seed would let anyone subtract the noise); ``random_state``
        fixes only the public parts: random features and candidate points."""
        t0 = time.perf_counter()
        n, d = X.shape
        try:
            epsilon, delta = float(epsilon), float(delta)
        except (TypeError, ValueError):
            raise DataError("epsilon and delta must be numbers", field="epsilon") from None
        if not (0 < epsilon <= MAX_DP_EPSILON):
            raise DataError(f"epsilon must be in (0, {MAX_DP_EPSILON:g}]", field="epsilon")
        if not (0 < delta <= MAX_DP_DELTA):
            raise DataError(f"delta must be in (0, {MAX_DP_DELTA:g}]", field="delta")
        if delta > 0.1 / n:
            raise DataError(f"delta must be at most 0.1 / rows (= {0.1 / n:.3g}): a delta near "
                            "1 / rows allows publishing a row outright", field="delta")
        need = DP_MIN_ROWS if epsilon <= DP_MAX_EPSILON_FOR_SMALL else MIN_ROWS
        if n < need:
            raise DataError(f"{n} rows are too few for a differentially private specification "
                            f"at epsilon = {epsilon:g}: it needs at least {need} rows "
                            f"({DP_MIN_ROWS} at epsilon <= {DP_MAX_EPSILON_FOR_SMALL:g}). "
                            f"{_LOCALIZE_HINT}", field="X",
                            details={"rows": n, "min_rows": need})
        if bounds is None:
            raise DataError("a differentially private spec needs bounds=(lo, hi): the range its "
                            "reduced points may take, declared from public knowledge (a "
                            "documented range, the island's published specs), never from the "
                            "rows themselves", field="bounds")
        try:
            lo, hi = (np.broadcast_to(np.asarray(b, dtype=np.float64), (d,)).copy()
                      for b in bounds)
        except (TypeError, ValueError):
            raise DataError(f"bounds must be (lo, hi), each a number or {d} numbers",
                            field="bounds") from None
        if not (np.isfinite(lo).all() and np.isfinite(hi).all() and (hi > lo).all()):
            raise DataError("bounds must be finite with lo < hi for every feature",
                            field="bounds")
        if scales is None:
            scales = (hi - lo) / 4.0
        try:
            gamma, scales = check_kernel(1.0 / (2.0 * d) if gamma is None else gamma, scales, d)
        except ValueError as exc:
            raise DataError(str(exc), field="scales") from exc
        k = int(k)
        if not 1 <= k <= MAX_SPEC_POINTS:
            raise DataError(f"k must be from 1 to {MAX_SPEC_POINTS}", field="k")
        # few points for little data: each point fitted to the noisy embedding adds freedom
        # to follow the noise (std sigma ~ 7.5 / (n epsilon) per inner product at delta 1e-5)
        k_eff = min(k, DP_MAX_POINTS, max(2, round(n * epsilon / DP_ROWS_PER_POINT)))
        public = np.random.default_rng(random_state)
        width = dpmath.feature_width(n, epsilon)
        feats = dpmath.DPFeatures(gamma * width, scales, n_freq=n_freq,
                                  seed=int(public.integers(2**31)))
        secret = _secret_rng()  # OS entropy: the noise must not be reproducible
        target, sigma = dpmath.noisy_mean_embedding(X, feats, epsilon, delta, secret)
        z, beta = dpmath.fit_to_embedding(target, feats, lo, hi, k_eff, public)
        info = {"n_rows": n, "k_requested": k, "k_eff": int(z.shape[0]), "dp_sigma": sigma,
                "dp_feature_gamma": gamma * width,
                "fit_seconds": time.perf_counter() - t0}
        budget = {"epsilon": epsilon, "delta": delta, "mechanism": "gaussian-rff",
                  "features": int(n_freq)}
        return cls(z, beta, gamma, scales, fit_info=info, dp=budget)

    @classmethod
    def fit_checked(cls, X: np.ndarray, k: int = 100, gamma: float | None = None, scales=None,
                    steps: int = 3, random_state=0) -> "RKMESpec":
        """:meth:`fit` for an X that already went through :func:`client_sdk.data.as_matrix`
        (``MarketClient`` checks its input once, where it enters, and fits from the result)."""
        t_start = time.perf_counter()
        n, d = X.shape
        if n < MIN_ROWS:
            raise DataError(f"{n} rows are too few for an RKME specification: it needs at "
                            f"least {MIN_ROWS} rows (one reduced point per {ROWS_PER_POINT} "
                            f"rows keeps single rows from showing through). {_LOCALIZE_HINT}",
                            field="X", details={"rows": n, "min_rows": MIN_ROWS})
        k = int(k)
        if k < 1:
            raise DataError("k must be at least 1", field="k")
        if k > MAX_SPEC_POINTS:  # the market refuses larger specs and requirements
            raise DataError(f"k must be at most {MAX_SPEC_POINTS} (the protocol's limit on "
                            f"reduced points)", field="k")
        steps = int(steps)
        if steps < 0:
            raise DataError("steps must be >= 0", field="steps")
        k_eff = min(k, n // ROWS_PER_POINT)
        # -- kernel
        if scales is None:
            scales = X.std(axis=0)
            scales[~(scales > 0)] = 1.0
        try:
            _, scales = check_kernel(1.0, scales, d)
        except ValueError as exc:
            raise DataError(str(exc), field="scales") from exc
        Xs = X / scales
        center = Xs.mean(axis=0)
        Xs -= center  # centred, scaled, float64: the kernel's metric is Euclidean here
        Xc = Xs
        if gamma is None:
            v = float(Xc.var(axis=0).mean())
            gamma = 1.0 / (d * v) if v > 0 else 1.0 / d
        try:
            gamma, _ = check_kernel(gamma, None)
        except ValueError as exc:
            raise DataError(str(exc), field="gamma") from exc
        rng = np.random.default_rng(random_state)
        z, beta, info = _fit_points(Xc, k_eff, gamma, steps, rng)
        info.update({"n_rows": n, "k_requested": k, "k_eff": k_eff,
                     "fit_seconds": time.perf_counter() - t_start})
        z_raw = (z + center) * scales
        return cls(z_raw, beta, gamma, scales, fit_info=info)

    # ------------------------------------------------------------------------- properties
    @property
    def n_features(self) -> int:
        return int(self.z.shape[1])

    @property
    def k(self) -> int:
        return int(self.z.shape[0])

    def __repr__(self) -> str:
        return (f"RKMESpec(k={self.k}, n_features={self.n_features}, gamma={self.gamma:.4g}, "
                f"scales={'None' if self.scales is None else 'array'})")

    # ------------------------------------------------------------------------- arithmetic
    def _same_kernel(self, other: "RKMESpec") -> None:
        if not isinstance(other, RKMESpec):
            raise TypeError("expected an RKMESpec")
        if other.n_features != self.n_features:
            raise DataError(f"the specifications have {self.n_features} and "
                            f"{other.n_features} features", field="n_features")
        same_scales = ((self.scales is None and other.scales is None)
                       or (self.scales is not None and other.scales is not None
                           and np.allclose(self.scales, other.scales, rtol=1e-12, atol=0))
                       or (self.scales is None and np.all(other.scales == 1.0))
                       or (other.scales is None and np.all(self.scales == 1.0)))
        if not np.isclose(self.gamma, other.gamma, rtol=1e-12, atol=0) or not same_scales:
            raise DataError("the specifications use different kernels; compare them under one "
                            "kernel with other.with_kernel(self.gamma, self.scales)",
                            field="gamma")

    def inner(self, other: "RKMESpec") -> float:
        """RKHS inner product ``<mu_self, mu_other>`` (same kernel required)."""
        self._same_kernel(other)
        return embedding_inner(self.z, self.beta, other.z, other.beta, self.gamma, self.scales)

    def mmd(self, other: "RKMESpec") -> float:
        """Squared MMD ``||mu_self - mu_other||^2`` (same kernel required)."""
        self._same_kernel(other)
        return mmd2(self.z, self.beta, other.z, other.beta, self.gamma, self.scales)

    def herd(self, t: int, random_state=0) -> np.ndarray:
        """``t`` points (raw units) that follow the embedded distribution (kernel herding)."""
        return herd(self.z, self.beta, self.gamma, self.scales, t, random_state=random_state)

    def with_kernel(self, gamma, scales=None) -> "RKMESpec":
        """The same points and weights evaluated under another kernel.

        The weights were optimal for the fitting kernel; under another one they are a good but not
        an optimal approximation of the data's embedding.
        """
        info = dict(self.fit_info)
        info["refit_kernel"] = True
        return RKMESpec(self.z, self.beta, gamma, scales, fit_info=info, dp=self.dp)

    # ---------------------------------------------------------------------- serialisation
    def to_dict(self) -> dict:
        """The wire form: ``z``, ``beta``, ``scales`` (encoded arrays or None), ``gamma``,
        ``n_features``."""
        out = {
            "z": encode_array(self.z),
            "beta": encode_array(self.beta),
            "gamma": float(self.gamma),
            "scales": None if self.scales is None else encode_array(self.scales),
            "n_features": self.n_features,
        }
        if self.dp:
            out["dp"] = dict(self.dp)
        return out

    @classmethod
    def from_dict(cls, d: Any) -> "RKMESpec":
        """Rebuild (and fully check) a spec from :meth:`to_dict` output; errors are
        :class:`~protocol.errors.SchemaError` / ``EncodingError`` naming the field."""
        if not isinstance(d, dict):
            raise SchemaError("an RKME specification must be an object", field="rkme")
        expected = {"z", "beta", "gamma", "scales", "n_features"}
        missing, extra = expected - set(d), set(d) - expected - {"dp"}
        if missing or extra:
            raise SchemaError(f"RKME fields must be exactly {sorted(expected)}"
                              + (f"; missing {sorted(missing)}" if missing else "")
                              + (f"; unexpected {sorted(extra)}" if extra else ""), field="rkme")
        decoded = decode_spec(d, field="", scales_ndim=1)
        z, beta, scales = decoded.z, decoded.beta, decoded.scales
        nf = d["n_features"]
        if not isinstance(nf, int) or isinstance(nf, bool) or nf < 1:
            raise SchemaError("n_features must be a positive integer", field="n_features")
        if z.shape[1] != nf:
            raise SchemaError(f"z has {z.shape[1]} columns, n_features says {nf}", field="z")
        g = d["gamma"]
        if isinstance(g, bool) or not isinstance(g, (int, float)):
            raise SchemaError("gamma must be a number", field="gamma")
        budget = d.get("dp")
        if budget is not None:
            from protocol.schemas import DP_BUDGET
            DP_BUDGET.check(budget, "dp")
        try:
            return cls(z, beta, g, scales, dp=budget)
        except DataError as exc:
            raise SchemaError(exc.message, field=exc.field) from exc


# --------------------------------------------------------------------------- measurement
def membership_inference_auc(spec: RKMESpec, members, non_members) -> float:
    """AUC of the attack "x was a training row if it lies within r of some reduced point".

    Sweeping r over all thresholds gives the ROC of the score ``-min_j ||x - z_j||`` (kernel
    metric); 0.5 means the spec tells members from fresh rows of the same distribution no better
    than chance.
    """
    from scipy.stats import rankdata

    def score(X):
        X = as_matrix(X, n_features=spec.n_features)
        s = spec.scales if spec.scales is not None else 1.0
        zc = spec.z / s
        center = zc.mean(axis=0)
        d2, _ = _nearest_rows(zc - center, X / s - center)  # each row's nearest reduced point
        return -d2

    a, b = score(members), score(non_members)
    ranks = rankdata(np.concatenate([a, b]))
    n1, n0 = a.shape[0], b.shape[0]
    return float((ranks[:n1].sum() - n1 * (n1 + 1) / 2.0) / (n1 * n0))
