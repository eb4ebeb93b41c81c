"""RKME engine: shared kernel arithmetic (learnware_core.kernels) and the client's RKMESpec."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import learnware_core.kernels as kernels
from client_sdk.data import as_matrix, feature_names
from client_sdk.rkme import MIN_ROWS, ROWS_PER_POINT, RKMESpec
from protocol.encoding import canonical_bytes, decode
from protocol.errors import DataError, EncodingError, SchemaError
from learnware_core.kernels import embedding_inner, gaussian_kernel, herd, mmd2
from market_server.embedding_stack import (EmbeddingStack, cross_inner, embedding_gram, mmd2_to_many,
                                           self_inners)


def mixture(n, d, seed=0, components=4, spread=3.0):
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(1234 + d).normal(scale=spread, size=(components, d))
    return centres[rng.integers(components, size=n)] + rng.normal(size=(n, d))


def naive_kernel(X, Y, gamma, scales=None):
    s = np.ones(X.shape[1]) if scales is None else scales
    D = (((X[:, None, :] - Y[None, :, :]) / s) ** 2).sum(-1)
    return np.exp(-gamma * D)


_SELF = {}


def empirical_mmd2(spec_z, spec_b, X, gamma, scales=None):
    """Exact squared MMD to the embedding of all rows of X (its own term computed once)."""
    w = np.full(len(X), 1.0 / len(X))
    key = (id(X), gamma, None if scales is None else scales.tobytes())
    if key not in _SELF:
        _SELF[key] = (X, embedding_inner(X, w, X, w, gamma, scales))
    x_self = _SELF[key][1]
    return max(embedding_inner(spec_z, spec_b, spec_z, spec_b, gamma, scales) + x_self
               - 2 * embedding_inner(spec_z, spec_b, X, w, gamma, scales), 0.0)


# ----------------------------------------------------------------------------------- kernel
def test_kernel_matches_definition_and_chunking():
    rng = np.random.default_rng(0)
    X, Y = rng.normal(size=(70, 4)) * 3 + 100, rng.normal(size=(55, 4)) * 3 + 100
    scales = np.array([0.5, 1.0, 2.0, 4.0])
    ref = naive_kernel(X, Y, 0.3, scales)
    full = gaussian_kernel(X, Y, 0.3, scales)
    chunked = gaussian_kernel(X, Y, 0.3, scales, block_elements=7)  # one row per block
    assert full.dtype == np.float64
    np.testing.assert_allclose(full, ref, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(chunked, full, rtol=1e-13, atol=1e-300)  # BLAS rounding only
    np.testing.assert_allclose(np.diag(gaussian_kernel(X, X, 0.3)), 1.0, atol=1e-12)
    # scales None is all ones
    np.testing.assert_allclose(gaussian_kernel(X, Y, 0.3), gaussian_kernel(X, Y, 0.3, np.ones(4)))


@pytest.mark.parametrize("gamma,scales", [(0, None), (-1, None), (np.inf, None),
                                          (1.0, [1.0, -1.0]), (1.0, [1.0, 1.0, 1.0])])
def test_kernel_rejects_bad_parameters(gamma, scales):
    with pytest.raises(ValueError):
        gaussian_kernel(np.ones((2, 2)), np.ones((3, 2)), gamma, scales)


def test_inner_and_mmd_match_dense_formula():
    rng = np.random.default_rng(1)
    z1, z2 = rng.normal(size=(12, 3)), rng.normal(size=(9, 3)) + 0.5
    b1, b2 = rng.dirichlet(np.ones(12)), rng.dirichlet(np.ones(9))
    s = np.array([1.0, 2.0, 0.5])
    ref = b1 @ naive_kernel(z1, z2, 0.7, s) @ b2
    assert embedding_inner(z1, b1, z2, b2, 0.7, s) == pytest.approx(ref, rel=1e-12)
    m = (b1 @ naive_kernel(z1, z1, 0.7, s) @ b1 + b2 @ naive_kernel(z2, z2, 0.7, s) @ b2
         - 2 * ref)
    assert mmd2(z1, b1, z2, b2, 0.7, s) == pytest.approx(m, rel=1e-10)
    assert mmd2(z1, b1, z1, b1, 0.7, s) == 0.0  # clipped, never negative


# ------------------------------------------------------------------------- many embeddings
def _stack(rng, N=40, d=4, kmin=3, kmax=9, shuffle=True):
    sizes = rng.integers(kmin, kmax + 1, size=N)
    owner = np.repeat(np.arange(N), sizes)
    Z = rng.normal(size=(N, d))[owner] * 2 + rng.normal(size=(owner.size, d))
    B = rng.random(owner.size)
    B[rng.random(owner.size) < 0.1] = 0.0  # some zero weights
    B /= np.bincount(owner, weights=B, minlength=N)[owner]
    if shuffle:  # rows need not be grouped by owner
        p = rng.permutation(owner.size)
        Z, B, owner = Z[p], B[p], owner[p]
    return Z, B, owner


def test_mmd2_to_many_equals_looping_mmd2():
    rng = np.random.default_rng(2)
    Z, B, owner = _stack(rng)
    scales = np.array([1.0, 0.5, 2.0, 1.5])
    z, b = rng.normal(size=(7, 4)), rng.dirichlet(np.ones(7))
    loop = np.array([mmd2(z, b, Z[owner == i], B[owner == i], 0.4, scales)
                     for i in range(owner.max() + 1)])
    si = self_inners(Z, B, owner, 0.4, scales)
    loop_si = np.array([embedding_inner(Z[owner == i], B[owner == i], Z[owner == i],
                                        B[owner == i], 0.4, scales)
                        for i in range(owner.max() + 1)])
    np.testing.assert_allclose(si, loop_si, rtol=1e-12)
    double = mmd2_to_many(z, b, Z, B, owner, si, 0.4, scales, precision="double")
    single = mmd2_to_many(z, b, Z, B, owner, si, 0.4, scales)
    np.testing.assert_allclose(double, loop, rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(single, loop, rtol=0, atol=2e-6)  # float32 kernel block
    # the prepared stack is reused, and edits in place are noticed
    Z2 = Z.copy()
    mmd2_to_many(z, b, Z2, B, owner, si, 0.4, scales)
    Z2[0] += 5.0
    moved = mmd2_to_many(z, b, Z2, B, owner, si, 0.4, scales, precision="single")
    expect = mmd2_to_many(z, b, Z2.copy(), B, owner, si, 0.4, scales, precision="double")
    np.testing.assert_allclose(moved, expect, atol=2e-6)


def test_stack_gram_and_cross_inner_match_dense():
    rng = np.random.default_rng(3)
    Z, B, owner = _stack(rng, N=25, d=3)
    idx = np.array([4, 0, 17, 9])
    dense = np.array([[embedding_inner(Z[owner == i], B[owner == i], Z[owner == j],
                                       B[owner == j], 0.6) for j in idx] for i in idx])
    np.testing.assert_allclose(embedding_gram(Z, B, owner, idx, 0.6), dense, rtol=1e-12)
    z, b = rng.normal(size=(5, 3)), rng.dirichlet(np.ones(5))
    c = np.array([embedding_inner(z, b, Z[owner == i], B[owner == i], 0.6) for i in idx])
    np.testing.assert_allclose(cross_inner(z, b, Z, B, owner, idx, 0.6), c, rtol=1e-12)
    stack = EmbeddingStack(Z, B, owner, 0.6)
    np.testing.assert_allclose(stack.gram(idx), dense, rtol=1e-12)
    np.testing.assert_allclose(stack.mmd2_to(z, b, precision="double")[idx],
                               [mmd2(z, b, Z[owner == i], B[owner == i], 0.6) for i in idx],
                               rtol=1e-10, atol=1e-13)


def test_stack_chunking_does_not_change_results(monkeypatch):
    rng = np.random.default_rng(4)
    Z, B, owner = _stack(rng, N=30)
    z, b = rng.normal(size=(6, 4)), rng.dirichlet(np.ones(6))
    big = EmbeddingStack(Z, B, owner, 0.3).mmd2_to(z, b, precision="double")
    monkeypatch.setattr(kernels, "BLOCK_ELEMENTS", 13)
    small = EmbeddingStack(Z, B, owner, 0.3)
    np.testing.assert_allclose(small.mmd2_to(z, b, precision="double"), big, rtol=1e-12,
                               atol=1e-15)
    np.testing.assert_allclose(small.mmd2_to(z, b), big, atol=2e-6)


# ------------------------------------------------------------------------------------ herd
def test_herd_samples_track_the_embedding():
    X = mixture(4000, 3, seed=5)
    spec = RKMESpec.fit(X, k=60)
    t = 150
    S = spec.herd(t, random_state=1)
    assert S.shape == (t, 3) and np.all(np.isfinite(S))
    np.testing.assert_array_equal(S, spec.herd(t, random_state=1))  # deterministic
    assert len(np.unique(S, axis=0)) == t  # no duplicates
    w = np.full(t, 1.0 / t)
    herd_mmd = mmd2(S, w, spec.z, spec.beta, spec.gamma, spec.scales)
    # as good as t fresh draws of the true distribution, and far from another distribution
    fresh = mixture(t, 3, seed=6)
    fresh_mmd = mmd2(fresh, w, spec.z, spec.beta, spec.gamma, spec.scales)
    other = mixture(t, 3, seed=7) + 3.0
    assert herd_mmd < fresh_mmd
    assert herd_mmd < 0.1 * mmd2(other, w, spec.z, spec.beta, spec.gamma, spec.scales)
    # protocol-level function, raw units
    S2 = herd(spec.z, spec.beta, spec.gamma, spec.scales, 20, random_state=3)
    assert S2.shape == (20, 3)
    with pytest.raises(ValueError):
        herd(spec.z, spec.beta * 2, spec.gamma, spec.scales, 5)


# ------------------------------------------------------------------------------------- fit
def test_fit_shapes_defaults_and_determinism():
    X = mixture(3000, 6, seed=8) * np.array([1, 10, 100, 0.1, 1, 5]) + 50
    spec = RKMESpec.fit(X, k=40)
    assert spec.z.shape == (spec.k, 6) and spec.k <= 40 and spec.n_features == 6
    assert np.all(spec.beta > 0) and spec.beta.sum() == pytest.approx(1.0, abs=1e-12)
    # standalone defaults: per-feature std, gamma = 1/d on standardised features
    np.testing.assert_allclose(spec.scales, X.std(axis=0), rtol=1e-12)
    assert spec.gamma == pytest.approx(1.0 / 6, rel=1e-12)
    again = RKMESpec.fit(X, k=40)
    np.testing.assert_array_equal(spec.z, again.z)
    np.testing.assert_array_equal(spec.beta, again.beta)
    other = RKMESpec.fit(X, k=40, random_state=1)
    assert not np.array_equal(spec.z, other.z)
    assert spec.fit_info["qp_kkt_max"] < 1e-10
    # a given kernel is used as is
    given = RKMESpec.fit(X, k=20, gamma=0.05, scales=np.full(6, 2.0))
    assert given.gamma == 0.05 and np.all(given.scales == 2.0)


def test_k_is_capped_by_rows_per_point():
    X = mixture(300, 3, seed=9)
    spec = RKMESpec.fit(X, k=100)
    assert spec.fit_info["k_eff"] == 300 // ROWS_PER_POINT
    assert spec.k <= 300 // ROWS_PER_POINT


def test_fitting_lowers_the_mmd_and_is_monotone():
    X = mixture(5000, 5, seed=10)
    s0 = RKMESpec.fit(X, k=50, steps=0)
    s3 = RKMESpec.fit(X, k=50, steps=3)
    m0 = empirical_mmd2(s0.z, s0.beta, X, s0.gamma, s0.scales)
    m3 = empirical_mmd2(s3.z, s3.beta, X, s3.gamma, s3.scales)
    assert m3 < 0.9 * m0
    h = np.array(s3.fit_info["objective_history"])
    assert np.all(np.diff(h) <= 1e-12), h  # each step provably lowers the objective


def test_rkme_beats_random_rows_at_d50():
    X = mixture(3000, 50, seed=11)
    spec = RKMESpec.fit(X, k=50)
    ours = empirical_mmd2(spec.z, spec.beta, X, spec.gamma, spec.scales)
    rng = np.random.default_rng(0)
    rand = [empirical_mmd2(X[rng.choice(len(X), 50, replace=False)], np.full(50, 0.02), X,
                           spec.gamma, spec.scales) for _ in range(5)]
    assert ours < min(rand)


def test_fit_accepts_dataframes_like_arrays():
    X = mixture(400, 3, seed=12)
    df = pd.DataFrame(X, columns=["a", "b", "c"])
    df["flag"] = (X[:, 0] > 0)  # booleans count as numbers
    Xb = np.column_stack([X, (X[:, 0] > 0).astype(float)])
    a, b = RKMESpec.fit(df, k=20), RKMESpec.fit(Xb, k=20)
    np.testing.assert_array_equal(a.z, b.z)
    arr, names = as_matrix(df), feature_names(df)
    assert names == ["a", "b", "c", "flag"] and arr.dtype == np.float64


# ---------------------------------------------------------------------------------- errors
def test_errors_name_the_problem():
    X = mixture(200, 3, seed=13)
    df = pd.DataFrame(X, columns=["age", "income", "score"])
    df["city"] = "Austin"
    df["kind"] = pd.Categorical(["a"] * 200)
    with pytest.raises(DataError) as e:
        RKMESpec.fit(df)
    assert "city" in e.value.message and "kind" in e.value.message and "age" not in e.value.message
    df = df.drop(columns=["city", "kind"])
    df.loc[3, "income"] = np.nan
    df.loc[5, "score"] = np.inf
    with pytest.raises(DataError) as e:
        RKMESpec.fit(df)
    assert "income" in e.value.message and "score" in e.value.message
    assert "age" not in e.value.message
    arr = X.astype(object)
    arr[0, 1] = "x"
    with pytest.raises(DataError, match="column 1"):
        RKMESpec.fit(arr)
    with pytest.raises(DataError, match="3 features, expected 4"):
        RKMESpec.fit(X, n_features=4)
    with pytest.raises(DataError, match="scales"):
        RKMESpec.fit(X, scales=np.ones(4))
    with pytest.raises(DataError, match="reshape"):
        RKMESpec.fit(X[:, 0])
    with pytest.raises(DataError) as e:
        RKMESpec.fit(X[:MIN_ROWS - 1])
    assert "MarketClient.localize" in e.value.message and e.value.code == "bad_data"
    with pytest.raises(DataError, match="gamma"):
        RKMESpec.fit(X, gamma=-1.0)


# ---------------------------------------------------------------------- spec arithmetic/IO
def test_round_trip_through_the_wire_format():
    spec = RKMESpec.fit(mixture(500, 4, seed=14), k=30)
    d = spec.to_dict()
    assert set(d) == {"z", "beta", "gamma", "scales", "n_features"}
    back = RKMESpec.from_dict(decode(canonical_bytes(d)))
    np.testing.assert_array_equal(back.z, spec.z)  # bit-exact
    np.testing.assert_array_equal(back.beta, spec.beta)
    np.testing.assert_array_equal(back.scales, spec.scales)
    assert back.gamma == spec.gamma and back.n_features == 4
    unscaled = RKMESpec(spec.z, spec.beta, spec.gamma, None)
    assert RKMESpec.from_dict(unscaled.to_dict()).scales is None


@pytest.mark.parametrize("field,value,error", [
    ("beta", "bad", EncodingError), ("gamma", -1.0, SchemaError), ("gamma", True, SchemaError),
    ("n_features", 5, SchemaError), ("extra", 1, SchemaError)])
def test_from_dict_refuses_malformed_specs(field, value, error):
    d = RKMESpec.fit(mixture(500, 4, seed=15), k=20).to_dict()
    d[field] = value
    with pytest.raises(error):
        RKMESpec.from_dict(d)


def test_from_dict_refuses_weights_off_the_simplex():
    from protocol.encoding import encode_array
    d = RKMESpec.fit(mixture(500, 4, seed=16), k=20).to_dict()
    beta = RKMESpec.from_dict(d).beta
    d["beta"] = encode_array(beta * 2)
    with pytest.raises(SchemaError, match="sum to 1"):
        RKMESpec.from_dict(d)
    d["beta"] = encode_array(beta[:-1])
    with pytest.raises(SchemaError):
        RKMESpec.from_dict(d)


def test_inner_mmd_and_kernel_checks():
    a = RKMESpec.fit(mixture(800, 3, seed=17), k=30, gamma=0.2, scales=np.ones(3))
    b = RKMESpec.fit(mixture(800, 3, seed=18) + 1.0, k=30, gamma=0.2, scales=np.ones(3))
    assert a.inner(b) == pytest.approx(b.inner(a), rel=1e-12)
    assert a.mmd(b) == pytest.approx(a.inner(a) + b.inner(b) - 2 * a.inner(b), abs=1e-12)
    assert a.mmd(a) == 0.0 and a.mmd(b) > 0
    c = RKMESpec.fit(mixture(800, 3, seed=18), k=30)  # default kernel: another one
    with pytest.raises(DataError, match="with_kernel"):
        a.mmd(c)
    c2 = c.with_kernel(a.gamma, a.scales)
    np.testing.assert_array_equal(c2.z, c.z)
    assert a.mmd(c2) == pytest.approx(mmd2(a.z, a.beta, c.z, c.beta, 0.2), rel=1e-12)
    with pytest.raises(DataError):
        a.mmd(RKMESpec.fit(mixture(800, 4, seed=19), k=30, gamma=0.2, scales=np.ones(4)))
