"""Convex quadratic programs over the probability simplex.

Both the RKME weights (beta) and the mixture weights of a market search are minimisers of a squared
RKHS distance ``||sum_i b_i mu_i - mu||^2 = b'Kb - 2c'b + const`` over the simplex
``{b >= 0, sum b = 1}``. :func:`simplex_qp` minimises ``0.5 b'Kb - c'b``, which has the same
minimiser, for a symmetric positive semi-definite ``K`` (singular ones included).

Method: a dual active-set solver in C (Goldfarb-Idnani, the ``quadprog`` package) solves a
slightly regularised copy (``K + 1e-10 * scale * I``: it needs K positive definite) in a
fraction of the gradient phase's time; a primal active-set method then solves the
equality-constrained problem on the support exactly and adds/drops indices until the KKT
conditions hold to ``tol`` for K itself (usually one or two face solves). Without quadprog, or
when it fails (near-singular K beyond what the regularisation absorbs) or its polish does not
certify, accelerated projected gradient (FISTA with adaptive restart and exact projection) finds
the support instead, and the same active set finishes. Every accepted active-set step lowers the
objective, so the polish can only improve on its start. A warm start (``b0``) goes to the active
set directly when quadprog is not used. Singular K (duplicate or near-duplicate points) is
handled by running the active set on ``K + 1e-13 * scale * I``, which changes the KKT residual
for K by at most that much.

Why quadprog: under a refined island kernel (a few relevant features) the RKME's reduced points
are nearly collinear in the kernel's eyes, K is ill-conditioned (eigenvalues down to 1e-7 of its
largest), and the gradient phase needed 40-180 iterations plus ~30 face solves per QP, most of
an RKME fit; quadprog + polish reaches the same objective in about a tenth of the time
(docs/RESULTS.md, "Numeric kernels").
"""
from __future__ import annotations

import numpy as np

try:  # a small C extension; the pure-numpy path below stays the fallback
    import quadprog as _quadprog
except ImportError:  # pragma: no cover - quadprog is a declared dependency
    _quadprog = None

#: quadprog is O(n^3) in dense form: beyond this many variables the gradient phase is used
QUADPROG_MAX_N = 600

__all__ = ["project_simplex", "simplex_qp", "kkt_residual"]


def project_simplex(v: np.ndarray) -> np.ndarray:
    """Euclidean projection onto the probability simplex (sort-based, exact; rows if 2-D)."""
    v = np.asarray(v, dtype=np.float64)
    if v.ndim not in (1, 2) or v.shape[-1] == 0:
        raise ValueError("project_simplex expects a non-empty vector or a 2-D array of rows")
    n = v.shape[-1]
    if v.ndim == 1:  # the hot case: no fancy indexing
        u = -np.sort(-v)
        css = np.cumsum(u) - 1.0
        ind = np.arange(1, n + 1, dtype=np.float64)
        rho = int(np.count_nonzero(u * ind > css)) - 1  # the condition holds on a prefix
        return np.maximum(v - css[rho] / (rho + 1.0), 0.0)
    u = -np.sort(-v, axis=-1)
    css = np.cumsum(u, axis=-1) - 1.0
    ind = np.arange(1, n + 1, dtype=np.float64)
    cond = u - css / ind > 0
    # rho = last index where cond holds (cond[0] is always true)
    rho = n - 1 - np.argmax(cond[..., ::-1], axis=-1)
    rho = np.asarray(rho)[..., None]
    theta = np.take_along_axis(css, rho, axis=-1) / (rho + 1.0)
    return np.maximum(v - theta, 0.0)


def kkt_residual(K: np.ndarray, c: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """(natural residual ``||b - P(b - g)||_inf``, Frank-Wolfe gap ``g'b - min g``), g = Kb - c.

    Both are zero exactly at the minimiser; the gap is also a certified bound on
    ``f(b) - min f`` for convex ``f``.
    """
    g = K @ b - c
    nat = float(np.max(np.abs(b - project_simplex(b - g))))
    gap = float(g @ b - g.min())
    return nat, gap


def _objective(K: np.ndarray, c: np.ndarray, b: np.ndarray) -> float:
    return float(0.5 * b @ (K @ b) - c @ b)


def _lipschitz(K: np.ndarray) -> float:
    n = K.shape[0]
    if n <= 600:
        return float(max(np.linalg.eigvalsh(K)[-1], 0.0))
    x = np.random.default_rng(0).standard_normal(n)
    lam = 0.0
    for _ in range(60):
        y = K @ x
        nrm = np.linalg.norm(y)
        if nrm == 0:
            return 0.0
        lam_new = float(x @ y / (x @ x))
        x = y / nrm
        if abs(lam_new - lam) <= 1e-6 * abs(lam_new):
            lam = lam_new
            break
        lam = lam_new
    return 1.02 * lam  # the power iteration approaches from below


def _fista(K, c, b, L, max_iter, tol_nat, stall_checks=0):
    """Accelerated projected gradient with gradient-based restart; returns (b, iterations)."""
    y = b.copy()
    t = 1.0
    step = 1.0 / L
    it = 0
    support = None
    stable = 0
    for it in range(1, max_iter + 1):
        g = K @ y - c
        b_new = project_simplex(y - step * g)
        if (y - b_new) @ (b_new - b) > 0:  # momentum points uphill: restart (O'Donoghue-Candes)
            t = 1.0
            y = b_new
        else:
            t_new = 0.5 * (1.0 + np.sqrt(1.0 + 4.0 * t * t))
            y = b_new + ((t - 1.0) / t_new) * (b_new - b)
            t = t_new
        b = b_new
        if it % 10 == 0:
            nat, _ = kkt_residual(K, c, b)
            if nat <= tol_nat:
                break
            new_support = b > 0
            same = support is not None and np.array_equal(new_support, support)
            stable = stable + 1 if same else 0
            support = new_support
            if stall_checks and stable >= stall_checks:
                break  # the support has settled: the active set finishes exactly
    return b, it


def _solve_face(K, c, S):
    """Stationary point of 0.5x'Kx - c'x on the affine hull ``{sum x = 1}`` of face S, or None.

    ``K`` is the (slightly regularised, hence positive definite) matrix of the active set, so the
    bordered system is nonsingular; solve() is backward stable, which is what the KKT residual
    needs even when x itself is ill-determined along near-duplicate points.
    """
    m = len(S)
    A = np.empty((m + 1, m + 1))
    A[:m, :m] = K.take(S, axis=0).take(S, axis=1)
    A[:m, m] = 1.0
    A[m, :m] = 1.0
    A[m, m] = 0.0
    rhs = np.empty(m + 1)
    rhs[:m] = c.take(S)
    rhs[m] = 1.0
    try:
        sol = np.linalg.solve(A, rhs)
    except np.linalg.LinAlgError:
        sol = np.linalg.lstsq(A, rhs, rcond=None)[0]
    # a backward-error test (NaN fails it too): x may be huge along near-null directions, the
    # residual stays tiny
    if not np.abs(A @ sol - rhs).max() <= 1e-12 * (np.abs(rhs).max() + np.abs(sol).max() * m):
        return None
    return sol[:m]


def _active_set(K, c, b, tol, max_iter, scale):
    """Primal active-set polish from a feasible b; monotone in the objective.

    Works on ``K + eps I`` with ``eps = 1e-13 * scale``: faces of a singular K (duplicate points)
    then have a unique minimiser, and the answer's KKT residual for K itself moves by <= eps.
    """
    n = len(c)
    K = K + (1e-13 * scale) * np.eye(n)
    S = list(np.flatnonzero(b > 0))
    b = np.where(b > 0, b, 0.0)
    b /= b.sum()
    f = _objective(K, c, b)
    blocked: set[int] = set()
    it = 0
    for it in range(1, max_iter + 1):
        x = _solve_face(K, c, np.asarray(S))
        if x is None:
            return b, it, False
        bS = b[S]
        neg = x <= 0
        if neg.any():
            # move from b toward x until the first weight hits zero, then drop it
            dec = neg & (bS > x)
            alpha = np.min(bS[dec] / (bS[dec] - x[dec])) if dec.any() else 0.0
            newS = bS + alpha * (x - bS)
            drop = (newS <= 1e-15 * max(1.0, bS.max())) | (neg & (alpha >= 1.0))
            if dec.any():
                drop[np.flatnonzero(dec)[np.argmin(bS[dec] / (bS[dec] - x[dec]))]] = True
            if alpha == 0.0:
                blocked.update(np.asarray(S)[neg].tolist())
            newS[drop] = 0.0
            b_try = b.copy()
            b_try[S] = newS
            b_try = np.maximum(b_try, 0.0)
            b_try /= b_try.sum()
            f_try = _objective(K, c, b_try)
            S = [s for s, keep in zip(S, ~drop) if keep]
            if not S or f_try > f + 1e-14 * scale:
                return b, it, False
            b, f = b_try, f_try
            continue
        b_try = np.zeros(n)
        b_try[S] = x
        f_try = _objective(K, c, b_try)
        if f_try > f + 1e-14 * scale:
            return b, it, False
        b, f = b_try, f_try
        blocked.clear()
        g = K @ b - c
        lam = float(g[S] @ b[S])  # common gradient value on the support
        viol = lam - g
        viol[S] = -np.inf
        if blocked:
            viol[list(blocked)] = -np.inf
        j = int(np.argmax(viol))
        if viol[j] <= tol * scale:
            return b, it, True
        S.append(j)
    return b, it, False


def _dual_active_set(K: np.ndarray, c: np.ndarray, scale: float) -> np.ndarray | None:
    """quadprog's solution on ``K + 1e-10 * scale * I``, projected onto the simplex (None when
    it fails): a start for the exact polish."""
    n = len(c)
    G = K + (1e-10 * scale) * np.eye(n)
    C = np.empty((n, n + 1))
    C[:, 0] = 1.0
    C[:, 1:] = np.eye(n)
    rhs = np.zeros(n + 1)
    rhs[0] = 1.0
    try:
        x = _quadprog.solve_qp(G, c, C, rhs, meq=1)[0]
    except ValueError:  # "matrix G is not positive definite", "constraints are inconsistent"
        return None
    if not np.all(np.isfinite(x)):
        return None
    x = np.maximum(x, 0.0)
    total = x.sum()
    return x / total if total > 0 else None


def simplex_qp(K, c, tol: float = 1e-10, max_iter: int = 5000, b0=None):
    """Minimise ``0.5 b'Kb - c'b`` over ``{b >= 0, sum(b) = 1}`` for symmetric PSD ``K``.

    The minimiser is the same as that of ``b'Kb - 2c'b`` (squared RKHS distances). ``b0``
    warm-starts the solver. Returns ``(b, info)``: ``info["kkt"]`` is the natural KKT residual
    ``||b - P(b - (Kb - c))||_inf`` reached, ``info["gap"]`` the Frank-Wolfe gap (a bound on the
    suboptimality), ``info["iterations"]`` (gradient + active-set), ``info["converged"]`` whether
    ``kkt <= tol * scale`` with ``scale = max(1, |K|_max, |c|_max)``, ``info["objective"]``.
    """
    K = np.asarray(K, dtype=np.float64)
    c = np.asarray(c, dtype=np.float64).ravel()
    n = c.shape[0]
    if K.shape != (n, n):
        raise ValueError(f"K must be {n} x {n} to match c, is {K.shape}")
    if n == 0:
        raise ValueError("simplex_qp needs at least one variable")
    if not (np.all(np.isfinite(K)) and np.all(np.isfinite(c))):
        raise ValueError("K and c must be finite")
    K = 0.5 * (K + K.T)
    scale = max(1.0, float(np.abs(K).max()), float(np.abs(c).max()))
    if n == 1:
        b = np.ones(1)
        return b, {"kkt": 0.0, "gap": 0.0, "iterations": 0, "fista_iterations": 0,
                   "active_set_iterations": 0, "converged": True,
                   "objective": _objective(K, c, b)}
    if _quadprog is not None and n <= QUADPROG_MAX_N:
        b_qp = _dual_active_set(K, c, scale)
        if b_qp is not None:
            b_as, as_iter0, ok = _active_set(K, c, b_qp, tol, max_iter=max(10, 2 * n + 20),
                                             scale=scale)
            nat, gap = kkt_residual(K, c, b_as)
            if ok and nat <= tol * scale:
                return b_as, {"kkt": nat, "gap": gap, "iterations": as_iter0,
                              "fista_iterations": 0, "active_set_iterations": as_iter0,
                              "converged": True, "objective": _objective(K, c, b_as),
                              "method": "quadprog"}
    # First the active set alone: from the support of b0 (a warm start is usually nearly right),
    # or from the full support (dense minimisers, such as RKME weights, need only a few drops).
    # Sparse minimisers (mixture weights) leave it short of budget, and the gradient phase follows.
    if b0 is None:
        b = np.full(n, 1.0 / n)
        budget = 8
    else:
        b = project_simplex(np.asarray(b0, dtype=np.float64).ravel())
        # small problems (mixtures) may grow a vertex start to the full support one index at a
        # time; large ones (RKME weights) should only need a few swaps
        budget = n + 2 if n <= 64 else max(10, n // 4)
    b_as, as_iter0, ok = _active_set(K, c, b, tol, max_iter=budget, scale=scale)
    nat, gap = kkt_residual(K, c, b_as)
    if ok and nat <= tol * scale:
        return b_as, {"kkt": nat, "gap": gap, "iterations": as_iter0, "fista_iterations": 0,
                      "active_set_iterations": as_iter0, "converged": True,
                      "objective": _objective(K, c, b_as)}
    b = b_as if _objective(K, c, b_as) <= _objective(K, c, b) else b
    L = _lipschitz(K)
    fista_iter = 0
    if L > 0:
        # a loose gradient phase: the active set finishes the job exactly
        b, fista_iter = _fista(K, c, b, L, max_iter=min(max_iter, 500),
                               tol_nat=max(1e-6 * scale, tol * scale), stall_checks=3)
    else:  # K == 0: linear objective, the best vertex is optimal
        b = np.zeros(n)
        b[int(np.argmax(c))] = 1.0
    b_fista = b
    f_fista = _objective(K, c, b)
    b_as, as_iter, _ = _active_set(K, c, b, tol, max_iter=max(10, 2 * n + 20), scale=scale)
    if _objective(K, c, b_as) <= f_fista + 1e-14 * scale:
        b = b_as
    else:  # pragma: no cover - the active set is monotone; keep the gradient point if not
        b = b_fista
    nat, gap = kkt_residual(K, c, b)
    if nat > tol * scale and fista_iter < max_iter and L > 0:
        # the polish failed to certify (degenerate face): spend the remaining budget on gradient
        b2, extra = _fista(K, c, b, L, max_iter=max_iter - fista_iter, tol_nat=tol * scale)
        fista_iter += extra
        nat2, gap2 = kkt_residual(K, c, b2)
        if nat2 < nat:
            b, nat, gap = b2, nat2, gap2
    return b, {"kkt": nat, "gap": gap, "iterations": fista_iter + as_iter0 + as_iter,
               "fista_iterations": fista_iter, "active_set_iterations": as_iter0 + as_iter,
               "converged": bool(nat <= tol * scale), "objective": _objective(K, c, b)}
