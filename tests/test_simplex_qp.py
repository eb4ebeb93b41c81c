"""learnware_core.simplex: exact projection and the simplex QP against brute force, scipy and KKT."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from learnware_core.simplex import kkt_residual, project_simplex, simplex_qp


def _objective(K, c, b):
    return 0.5 * b @ K @ b - c @ b


def _brute_force(K, c):
    """Minimum over every face: solve the equality-constrained QP on each support and keep the
    best feasible point (exponential; only for tiny n)."""
    n = len(c)
    best, best_b = np.inf, None
    for r in range(1, n + 1):
        for S in itertools.combinations(range(n), r):
            S = list(S)
            A = np.zeros((r + 1, r + 1))
            A[:r, :r] = K[np.ix_(S, S)]
            A[:r, r] = A[r, :r] = 1.0
            rhs = np.r_[c[S], 1.0]
            sol = np.linalg.lstsq(A, rhs, rcond=None)[0]
            x = sol[:r]
            if np.linalg.norm(A @ sol - rhs) > 1e-8 or np.any(x < -1e-12):
                continue  # no stationary point on this face, or it lies outside the simplex
            b = np.zeros(n)
            b[S] = np.maximum(x, 0)
            b /= b.sum()
            f = _objective(K, c, b)
            if f < best:
                best, best_b = f, b
    return best, best_b


def _kernel_qp(rng, n, d=3, gamma=0.5, dup=0):
    Z = rng.normal(size=(n - dup, d))
    if dup:
        Z = np.vstack([Z, Z[:dup]])  # identical points: singular K
    X = rng.normal(size=(400, d)) * 1.3 + 0.4
    K = np.exp(-gamma * ((Z[:, None] - Z[None]) ** 2).sum(-1))
    c = np.exp(-gamma * ((Z[:, None] - X[None]) ** 2).sum(-1)).mean(1)
    return K, c


# ------------------------------------------------------------------------------- projection
def _project_bisect(v):
    lo, hi = v.min() - 1.0, v.max()
    for _ in range(200):
        t = 0.5 * (lo + hi)
        if np.maximum(v - t, 0).sum() > 1:
            lo = t
        else:
            hi = t
    return np.maximum(v - 0.5 * (lo + hi), 0)


@settings(max_examples=100, deadline=None)
@given(arrays(np.float64, st.integers(1, 30),
              elements=st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False)))
def test_projection_is_on_simplex_and_matches_bisection(v):
    p = project_simplex(v)
    assert np.all(p >= 0)
    assert abs(p.sum() - 1) < 1e-9
    np.testing.assert_allclose(p, _project_bisect(v), atol=1e-8)
    np.testing.assert_allclose(project_simplex(p), p, atol=1e-12)  # idempotent


def test_projection_rows_match_vectors():
    V = np.random.default_rng(0).normal(size=(40, 7)) * 3
    np.testing.assert_allclose(project_simplex(V), np.array([project_simplex(v) for v in V]),
                               atol=1e-14)


def test_projection_rejects_empty():
    with pytest.raises(ValueError):
        project_simplex(np.array([]))


# ------------------------------------------------------------------------------------ QP
@pytest.fixture(params=["quadprog", "numpy"])
def solver(request, monkeypatch):
    """Every QP test runs with the quadprog start and with the pure-numpy fallback."""
    import learnware_core.simplex as sx
    if request.param == "numpy":
        monkeypatch.setattr(sx, "_quadprog", None)
    elif sx._quadprog is None:  # pragma: no cover - quadprog is a declared dependency
        pytest.skip("quadprog is not installed")
    return request.param


@pytest.mark.parametrize("seed", range(6))
def test_qp_matches_brute_force_on_small_problems(seed, solver):
    rng = np.random.default_rng(seed)
    n = 2 + seed % 5
    K, c = _kernel_qp(rng, n, dup=1 if seed % 3 == 0 and n > 2 else 0)
    b, info = simplex_qp(K, c)
    best, _ = _brute_force(K, c)
    assert info["converged"] and info["kkt"] < 1e-10
    assert _objective(K, c, b) <= best + 1e-12


@pytest.mark.parametrize("n,d,dup", [(50, 5, 0), (100, 10, 0), (100, 2, 0), (60, 3, 20),
                                     (200, 10, 0)])
def test_qp_matches_scipy_and_meets_kkt(n, d, dup, solver):
    from scipy.optimize import minimize

    rng = np.random.default_rng(n + d + dup)
    K, c = _kernel_qp(rng, n, d=d, dup=dup)
    b, info = simplex_qp(K, c)
    assert np.all(b >= 0) and abs(b.sum() - 1) < 1e-12
    assert info["kkt"] < 1e-10 and info["gap"] < 1e-10 and info["converged"]
    nat, gap = kkt_residual(K, c, b)
    assert nat == pytest.approx(info["kkt"], abs=1e-15)
    ref = minimize(lambda x: _objective(K, c, x), np.full(n, 1 / n), jac=lambda x: K @ x - c,
                   bounds=[(0, 1)] * n, method="SLSQP",
                   constraints=[{"type": "eq", "fun": lambda x: x.sum() - 1,
                                 "jac": lambda x: np.ones(n)}],
                   options={"ftol": 1e-15, "maxiter": 1000})
    assert _objective(K, c, b) <= ref.fun + 1e-12
    # the Frank-Wolfe gap bounds the suboptimality
    assert _objective(K, c, b) - ref.fun <= info["gap"] + 1e-12


def test_qp_singular_low_rank_matrix(solver):
    rng = np.random.default_rng(5)
    F = rng.normal(size=(30, 3))
    K = F @ F.T  # rank 3, PSD
    c = rng.normal(size=30)
    b, info = simplex_qp(K, c)
    assert info["kkt"] < 1e-9
    # every vertex and the uniform point are no better
    f = _objective(K, c, b)
    assert f <= min(_objective(K, c, e) for e in np.eye(30)) + 1e-12
    assert f <= _objective(K, c, np.full(30, 1 / 30)) + 1e-12


def test_qp_edge_cases(solver):
    b, info = simplex_qp(np.array([[2.0]]), np.array([0.3]))
    assert b.tolist() == [1.0] and info["converged"]
    # K = 0: a linear objective is minimised at the best vertex
    b, info = simplex_qp(np.zeros((4, 4)), np.array([0.1, 0.5, 0.2, 0.4]))
    np.testing.assert_array_equal(b, [0, 1, 0, 0])
    # identity: the projection of c
    c = np.array([0.9, 0.5, -1.0])
    b, _ = simplex_qp(np.eye(3), c)
    np.testing.assert_allclose(b, project_simplex(c), atol=1e-12)
    with pytest.raises(ValueError):
        simplex_qp(np.eye(3), np.ones(2))
    with pytest.raises(ValueError):
        simplex_qp(np.eye(2), np.array([np.nan, 1.0]))


def test_qp_warm_start_gives_the_same_minimiser(solver):
    rng = np.random.default_rng(9)
    K, c = _kernel_qp(rng, 80, d=6)
    b1, i1 = simplex_qp(K, c)
    c2 = c + 1e-3 * rng.normal(size=c.shape)
    b2, i2 = simplex_qp(K, c2, b0=b1)
    b3, i3 = simplex_qp(K, c2)
    assert i2["kkt"] < 1e-10 and i3["kkt"] < 1e-10
    assert abs(_objective(K, c2, b2) - _objective(K, c2, b3)) < 1e-12


def test_qp_near_duplicate_points_with_noisy_linear_term(solver):
    # near-identical points (K numerically singular) whose c differs by float32-like noise: the
    # faces have no stationary point, and the solver must follow the singular direction
    rng = np.random.default_rng(11)
    base = rng.normal(size=(6, 1)) * 2
    Z = np.repeat(base, 12, axis=0) + 1e-7 * rng.normal(size=(72, 1))
    X = rng.normal(size=(500, 1))
    K = np.exp(-((Z[:, None] - Z[None]) ** 2).sum(-1))
    c = np.exp(-((Z[:, None] - X[None]) ** 2).sum(-1)).mean(1) + 1e-8 * rng.normal(size=72)
    for b0 in (None, np.full(72, 1 / 72)):
        b, info = simplex_qp(K, c, b0=b0)
        assert info["converged"] and info["kkt"] < 1e-10, info
        assert info["iterations"] < 500
