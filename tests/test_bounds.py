"""Ball bounds and the exact pruned search (market_server.bounds, IslandIndex.rank)."""
from __future__ import annotations

import numpy as np
import pytest

from market_server.bounds import balls, cross_upper
from market_server.search import IslandIndex
from market_server.embedding_stack import EmbeddingStack


def _island(rng, n, d, k, spread, offset=0.0):
    centres = rng.uniform(-spread, spread, size=(n, d)) + offset
    return {i + 1: (centres[i] + rng.normal(size=(k, d)) * rng.uniform(0.3, 2.0),
                    rng.dirichlet(np.ones(k) * rng.uniform(0.2, 2.0)))
            for i in range(n)}


def _index(points, d, gamma, scales=None, **kw):
    pks = list(points)
    kernel = {"gamma": gamma, "scales": list(np.ones(d) if scales is None else scales)}
    return IslandIndex.from_points(kernel, 1, [f"lw-{pk}" for pk in pks], pks, points, **kw)


@pytest.mark.parametrize("offset", [0.0, 1e4])
def test_cross_upper_is_an_upper_bound(offset):
    rng = np.random.default_rng(0)
    d, gamma = 5, 0.3
    pts = _island(rng, 60, d, 15, spread=4.0, offset=offset)
    Z = np.concatenate([z for z, _ in pts.values()])
    B = np.concatenate([b for _, b in pts.values()])
    counts = np.array([len(b) for _, b in pts.values()])
    C, r, w = balls(Z, B, counts)
    assert np.allclose(w, 1.0)
    stack = EmbeddingStack(Z, B, np.repeat(np.arange(60), counts), gamma)
    for t in range(20):
        q = Z[rng.integers(len(Z))] + rng.normal(size=(10, d)) * rng.uniform(0.01, 3.0)
        bq = rng.dirichlet(np.ones(10))
        exact = stack.cross_inner(q, bq)
        upper = cross_upper(q, bq, C, r, w, gamma)
        assert np.all(upper >= exact - 1e-15), (upper - exact).min()
        # and it is informative: far balls get a bound far below 1
        assert np.median(upper) < 0.9


@pytest.mark.parametrize("spread,gamma", [(30.0, 0.1), (2.0, 0.1), (0.0, 0.05)])
def test_pruned_rank_is_the_exact_ranking(spread, gamma):
    """Separated islands (the bound prunes almost all), overlapping and identical regions (it
    prunes little and falls back): the head of the ranking is the exact one either way."""
    rng = np.random.default_rng(1)
    d = 4
    pts = _island(rng, 300, d, 12, spread=spread)
    idx = _index(pts, d, gamma, scales=[1.0, 2.0, 0.5, 1.0])
    assert idx.ball_C is not None
    for t in range(10):
        z, b = pts[int(rng.integers(1, 301))]
        z = z + rng.normal(scale=0.5, size=z.shape)
        full = idx.mmd_all(z, b)
        cand, mmd = idx.rank(z, b, top=7)
        np.testing.assert_allclose(mmd, np.sort(full)[:7], atol=2e-6)
        np.testing.assert_allclose(mmd, full[cand], atol=2e-6)
        assert len(set(cand.tolist())) == 7


def test_balls_follow_publishes_and_kernel_changes():
    rng = np.random.default_rng(2)
    d = 3
    pts = _island(rng, 50, d, 8, spread=10.0)
    a = _index(pts, d, 0.2)
    more = dict(pts)
    more[99] = (rng.normal(size=(8, d)), np.full(8, 1 / 8))
    b = _index(more, d, 0.2, keep=a)
    fresh = _index(more, d, 0.2)
    # the appended index keeps its centre; in absolute (scaled) units the balls agree
    np.testing.assert_allclose(b.ball_C + b.stack.center, fresh.ball_C + fresh.stack.center,
                               atol=1e-12)
    np.testing.assert_allclose(b.ball_r, fresh.ball_r, atol=1e-12)
    np.testing.assert_allclose(b.stack.self_inner, fresh.stack.self_inner, rtol=1e-12)
    assert b.baseline == pytest.approx(fresh.baseline, rel=1e-9)
    z, w = more[99]
    np.testing.assert_allclose(b.rank(z, w, top=5)[1], fresh.rank(z, w, top=5)[1], atol=2e-6)
    np.testing.assert_allclose(b.mmd_all(z, w), fresh.mmd_all(z, w), atol=2e-6)
    c = _index(more, d, 0.2, scales=[1.0, 3.0, 1.0], keep=b)  # a refined kernel
    ref = _index(more, d, 0.2, scales=[1.0, 3.0, 1.0])
    np.testing.assert_allclose(c.ball_r, ref.ball_r, atol=1e-12)
    z, w = more[99]
    np.testing.assert_allclose(c.rank(z, w, top=3)[1], np.sort(ref.mmd_all(z, w))[:3],
                               atol=2e-6)


def test_mixture_is_parsimonious_and_finds_true_mixtures():
    """One learnware's own distribution: that learnware alone (no 1e-3 weights on far ones);
    a 60/40 blend of two: those two, with weights near 0.6/0.4."""
    rng = np.random.default_rng(3)
    d, k = 5, 40
    centres = rng.uniform(-15, 15, size=(200, d))
    pts = {i + 1: (centres[i] + rng.normal(size=(k, d)), np.full(k, 1.0 / k))
           for i in range(200)}
    idx = _index(pts, d, 1.0 / (2 * d))
    z = centres[17] + rng.normal(size=(60, d))
    b = np.full(60, 1.0 / 60)
    cand, mmd, cross = idx.rank(z, b, top=12, with_cross=True)
    ids, w, v = idx.mixture(z, b, mmd, among=cand, cross=cross)
    assert ids.tolist() == [17] and w.tolist() == [1.0]
    z2 = np.vstack([centres[40] + rng.normal(size=(60, d)), centres[90] + rng.normal(size=(40, d))])
    b2 = np.full(100, 1.0 / 100)
    cand, mmd, cross = idx.rank(z2, b2, top=12, with_cross=True)
    ids, w, v = idx.mixture(z2, b2, mmd, among=cand, cross=cross)
    assert sorted(ids.tolist()) == [40, 90]
    assert abs(w[list(ids).index(40)] - 0.6) < 0.1
    assert v < 0.5 * mmd[0]  # far better than the best single learnware
    # the same mixture without the inner products from rank
    ids2, w2, v2 = idx.mixture(z2, b2, mmd, among=cand)
    assert ids2.tolist() == ids.tolist() and np.allclose(w2, w, atol=1e-6)


def test_ball_pair_bounds_enclose_the_exact_inner_products():
    from market_server.bounds import cross_bounds_of_balls
    rng = np.random.default_rng(8)
    d, gamma = 4, 0.2
    pts = _island(rng, 80, d, 10, spread=6.0, offset=50.0)
    Z = np.concatenate([z for z, _ in pts.values()])
    B = np.concatenate([b for _, b in pts.values()])
    counts = np.array([len(b) for _, b in pts.values()])
    C, r, w = balls(Z, B, counts)
    stack = EmbeddingStack(Z, B, np.repeat(np.arange(80), counts), gamma)
    for t in range(20):
        q = Z[rng.integers(len(Z))] + rng.normal(size=(12, d)) * rng.uniform(0.01, 4.0)
        bq = rng.dirichlet(np.ones(12))
        exact = stack.cross_inner(q, bq)
        lo, up = cross_bounds_of_balls(q, bq, C, r, w, gamma)
        assert np.all(lo <= exact + 1e-15) and np.all(exact <= up + 1e-15)
        assert np.all(up >= cross_upper(q, bq, C, r, w, gamma) / (1 + 1e-4) - 1e-15)
