"""Random-feature sketches and the two-stage search of large islands (issue #8)."""
from __future__ import annotations

import numpy as np
import pytest

from market_server.search import IslandIndex
from market_server.sketch import RFFSketch
from learnware_core.kernels import gaussian_kernel
from market_server.embedding_stack import EmbeddingStack

D_FEAT, K = 6, 20


def clustered(n: int, seed: int = 0, n_centres: int | None = None):
    rng = np.random.default_rng(seed)
    n_centres = n_centres or max(1, n // 10)
    centres = rng.uniform(-3.0 * n_centres ** (1 / D_FEAT), 3.0 * n_centres ** (1 / D_FEAT),
                          size=(n_centres, D_FEAT))
    means = centres[rng.integers(n_centres, size=n)] + rng.normal(scale=0.7, size=(n, D_FEAT))
    points = {i + 1: (means[i] + rng.normal(size=(K, D_FEAT)), rng.dirichlet(np.ones(K)))
              for i in range(n)}
    return means, points


KERNEL = {"gamma": 1.0 / (2 * D_FEAT), "scales": [1.0, 2.0, 0.5, 1.0, 1.5, 1.0]}


def build(points, keep=None, kernel=KERNEL, **kw):
    pks = list(points)
    return IslandIndex.from_points(kernel, 1, [f"lw-{pk}" for pk in pks], pks, points,
                                   keep=keep, **kw)


def test_features_approximate_the_kernel():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, D_FEAT)) * 2
    K_exact = gaussian_kernel(X, X, KERNEL["gamma"], np.array(KERNEL["scales"]))
    F = RFFSketch(KERNEL["gamma"], KERNEL["scales"], D_FEAT, dim=2048, seed=3,
                  center=X.mean(axis=0)).features(X).astype(np.float64)
    err = F @ F.T - K_exact
    assert np.sqrt(np.mean(err ** 2)) < 0.03
    assert abs(err.mean()) < 0.01  # unbiased


def test_sketch_distance_approximates_mmd():
    _, points = clustered(300, seed=1)
    Z = np.concatenate([p[0] for p in points.values()])
    B = np.concatenate([p[1] for p in points.values()])
    owner = np.repeat(np.arange(300), K)
    stack = EmbeddingStack(Z, B, owner, KERNEL["gamma"], KERNEL["scales"])
    sk = RFFSketch(KERNEL["gamma"], KERNEL["scales"], D_FEAT, dim=512, center=Z.mean(axis=0))
    S = sk.embed(Z, B, np.full(300, K))
    # one embedding, sketched alone, gives the same row
    z0, b0 = points[1]
    np.testing.assert_allclose(sk.embed_one(z0, b0), S[0], rtol=1e-4, atol=1e-5)
    for q in (5, 77, 210):
        z, b = points[q + 1]
        exact = stack.mmd2_to(z, b, precision="double")
        approx = ((S.astype(np.float64) - sk.embed_one(z, b)) ** 2).sum(axis=1)
        assert np.corrcoef(exact, approx)[0, 1] > 0.9
        assert np.abs(approx - exact).max() < 0.25  # |MMD^2| <= 2; error ~ 1/sqrt(D)
        assert approx[q] < 0.05  # a sketch is at distance ~0 from itself


def test_two_stage_recall_and_public_behaviour():
    means, points = clustered(3000, seed=2)
    idx = build(points, coarse_min=500, sketch_dim=512)
    assert idx.S is not None and idx.S.shape == (3000, 512) and idx.S.dtype == np.float32
    assert 0 < idx.sketch_err < 0.1
    rng = np.random.default_rng(5)
    recalls = []
    for t in range(15):
        w = int(rng.integers(3000))
        z = means[w] + rng.normal(size=(K, D_FEAT))
        b = np.full(K, 1.0 / K)
        exact = idx.mmd_all(z, b)
        top = set(np.argsort(exact, kind="stable")[:10].tolist())
        cand, mmd = idx.rank(z, b, top=12, prune=False)  # the sketch path alone
        assert len(cand) == 12 and np.all(np.diff(mmd) >= 0)
        np.testing.assert_allclose(mmd, exact[cand], atol=1e-5)  # exact re-rank
        recalls.append(len(top & set(cand[:10].tolist())) / 10)
        # with the ball bounds first: the exact head of the ranking
        pc, pm = idx.rank(z, b, top=12)
        np.testing.assert_allclose(pm, np.sort(exact)[:12], atol=1e-5)
        np.testing.assert_allclose(pm, exact[pc], atol=1e-5)
        mix = idx.mixture(z, b, mmd, max_size=5, among=cand)
        assert mix is not None and set(mix[0]) <= set(cand.tolist())
        assert abs(mix[1].sum() - 1) < 1e-9
    assert np.mean(recalls) >= 0.95
    # small islands stay exact over all
    small = build({pk: points[pk] for pk in list(points)[:300]}, coarse_min=500)
    assert small.S is None
    cand, mmd = small.rank(*points[7], top=5)
    full = small.mmd_all(*points[7])
    np.testing.assert_array_equal(cand, np.argsort(full, kind="stable")[:5])
    assert small.baseline is not None and idx.baseline is not None


def test_sketches_deterministic_and_reused():
    _, points = clustered(800, seed=3)
    a = build(points, coarse_min=100, sketch_dim=256)
    b = build(points, coarse_min=100, sketch_dim=256)
    np.testing.assert_array_equal(a.S, b.S)
    np.testing.assert_array_equal(a.sketch._W, b.sketch._W)
    assert a.baseline == b.baseline
    # a publish with the kernel unchanged: old rows reused as is, only the new one computed
    more = dict(points)
    more[10_001] = (np.random.default_rng(9).normal(size=(K, D_FEAT)), np.full(K, 1.0 / K))
    c = build(more, keep=a)
    assert c.sketch is a.sketch and c.coarse_min == 100 and c.sketch_dim == 256
    np.testing.assert_array_equal(c.S[:800], a.S)
    fresh = a.sketch.embed(*more[10_001], [K])
    np.testing.assert_allclose(c.S[800], fresh[0], rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(c.stack.self_inner[:800], a.stack.self_inner)
    np.testing.assert_allclose(c.stack.self_inner, build(more).stack.self_inner, rtol=1e-12)
    # a delete: rows follow their learnwares
    fewer = {pk: v for pk, v in points.items() if pk % 7}
    e = build(fewer, keep=a)
    np.testing.assert_array_equal(e.S, a.S[[pk - 1 for pk in fewer]])


def test_kernel_change_recomputes_sketches():
    _, points = clustered(600, seed=4)
    a = build(points, coarse_min=100, sketch_dim=256)
    new_kernel = {"gamma": KERNEL["gamma"] * 2, "scales": KERNEL["scales"]}
    b = build(points, keep=a, kernel=new_kernel)
    assert b.sketch is not a.sketch and b.sketch.matches(new_kernel["gamma"],
                                                         new_kernel["scales"])
    assert not np.allclose(a.S, b.S)
    ref = build(points, kernel=new_kernel, coarse_min=100, sketch_dim=256)
    np.testing.assert_allclose(b.S, ref.S, rtol=1e-6, atol=1e-7)
    # and the two-stage ranking follows the new kernel
    z, w = points[3]
    cand, mmd = b.rank(z, w, top=5)
    np.testing.assert_allclose(mmd[:5], np.sort(b.mmd_all(z, w))[:5], atol=1e-5)


@pytest.mark.parametrize("orthogonal", [True, False])
def test_sketch_seed_controls_features(orthogonal):
    s1 = RFFSketch(0.1, None, 4, dim=64, seed=1, orthogonal=orthogonal)
    s2 = RFFSketch(0.1, None, 4, dim=64, seed=1, orthogonal=orthogonal)
    s3 = RFFSketch(0.1, None, 4, dim=64, seed=2, orthogonal=orthogonal)
    X = np.random.default_rng(0).normal(size=(5, 4))
    np.testing.assert_array_equal(s1.features(X), s2.features(X))
    assert not np.allclose(s1.features(X), s3.features(X))


def test_appends_grow_in_place_and_branches_do_not_clobber_each_other():
    """Two refreshes from the same index (two threads, two publishes seen differently): the
    first grows the shared buffers in place, the second must copy, and neither index changes
    under the other's feet."""
    _, points = clustered(300, seed=6)
    a = build(points, coarse_min=100, sketch_dim=128)
    rng = np.random.default_rng(11)
    extra1 = (rng.normal(size=(K, D_FEAT)), np.full(K, 1.0 / K))
    extra2 = (rng.normal(size=(K, D_FEAT)) + 3.0, np.full(K, 1.0 / K))
    b = build({**points, 1001: extra1}, keep=a)
    c = build({**points, 1002: extra2}, keep=a)
    d = build({**points, 1001: extra1, 1003: extra2}, keep=b)  # b's buffer grows in place
    for idx, extras in ((b, [extra1]), (c, [extra2]), (d, [extra1, extra2])):
        ref = build({**points, **{1000 + i: e for i, e in enumerate(extras, 1)}},
                    coarse_min=100, sketch_dim=128)
        assert idx.stack._Z.shape == ref.stack._Z.shape
        np.testing.assert_array_equal(idx.stack._Z, ref.stack._Z)
        np.testing.assert_allclose(idx.stack.self_inner, ref.stack.self_inner, rtol=1e-12)
        # sketches: a's rows as they were, the new ones under a's features
        np.testing.assert_array_equal(idx.S[:300], a.S)
        for j, (z, w) in enumerate(extras):
            np.testing.assert_allclose(idx.S[300 + j], a.sketch.embed(z, w, [K])[0],
                                       rtol=1e-6, atol=1e-7)
        for pk, (z, w) in list(idx.points.items())[-3:]:
            np.testing.assert_array_equal(z, {**points, 1001: extra1, 1002: extra2,
                                              1003: extra2}[pk][0])
        z, w = extras[-1]
        np.testing.assert_allclose(idx.rank(z, w, top=3)[1], ref.rank(z, w, top=3)[1],
                                   atol=2e-6)
    assert d.stack._buf is b.stack._buf and d._S_buf is b._S_buf  # grown in place
    assert c.stack._buf is not b.stack._buf  # a's rows had no spare room: each copied
    # a second refresh from b (d already wrote b's spare rows): it must copy, d is untouched
    d_Z, d_S = d.stack._Z.copy(), d.S.copy()
    extra3 = (rng.normal(size=(K, D_FEAT)) - 3.0, np.full(K, 1.0 / K))
    e = build({**points, 1001: extra1, 1004: extra3}, keep=b)
    assert e.stack._buf is not b.stack._buf and e._S_buf is not b._S_buf
    np.testing.assert_array_equal(d.stack._Z, d_Z)
    np.testing.assert_array_equal(d.S, d_S)
    np.testing.assert_array_equal(e.stack._Z[-K:], extra3[0])
