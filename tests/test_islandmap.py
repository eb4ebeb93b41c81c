"""The island map's numerics (market_server/islandmap.py): the MMD matrix is the pairwise MMD
of learnware_core, classical MDS recovers a planar configuration, the sample is stable."""
from __future__ import annotations

import numpy as np
import pytest

from learnware_core.kernels import mmd2
from market_server.islandmap import classical_mds, island_map, mmd_matrix, sample_pks, stress


def _embeddings(rng, n=7, d=3):
    out = []
    for i in range(n):
        k = int(rng.integers(1, 9))
        b = rng.random(k)
        out.append((rng.normal(loc=i % 3, size=(k, d)), b / b.sum()))
    return out


def test_mmd_matrix_is_the_pairwise_mmd_under_the_islands_kernel():
    rng = np.random.default_rng(0)
    emb = _embeddings(rng)
    scales = np.array([0.5, 2.0, 1.0])
    M = mmd_matrix(emb, 0.3, scales)
    want = np.array([[mmd2(zi, bi, zj, bj, 0.3, scales) for zj, bj in emb] for zi, bi in emb])
    np.testing.assert_allclose(M, want, atol=1e-10)
    assert (np.diag(M) == 0).all() and np.allclose(M, M.T)
    # another kernel gives another matrix: the map follows the island's kernel
    assert not np.allclose(M, mmd_matrix(emb, 0.3, np.ones(3)))


def test_mmd_matrix_refuses_mismatched_weights():
    with pytest.raises(ValueError):
        mmd_matrix([(np.zeros((3, 2)), np.ones(2) / 2)], 1.0)


def test_classical_mds_recovers_a_planar_configuration():
    rng = np.random.default_rng(1)
    P = rng.normal(size=(20, 2)) * [3.0, 1.0]
    D2 = ((P[:, None] - P[None]) ** 2).sum(-1)
    X = classical_mds(D2)
    E2 = ((X[:, None] - X[None]) ** 2).sum(-1)
    np.testing.assert_allclose(E2, D2, atol=1e-8)
    assert stress(D2, X) < 1e-6
    # 3-D points squeezed into 2-D: the stress says the picture is not exact
    Q = rng.normal(size=(20, 3))
    Q2 = ((Q[:, None] - Q[None]) ** 2).sum(-1)
    assert stress(Q2, classical_mds(Q2)) > 0.05


def test_sample_is_stable_under_publishes_and_bounded():
    pks = list(range(1, 1001))
    s = sample_pks(pks, max_learnwares=50)
    assert len(s) == 50 and s == sorted(s)
    s2 = sample_pks(pks + [1001], max_learnwares=50)
    assert len(set(s) ^ set(s2)) in (0, 2)  # one learnware in, one out at most
    sizes = {pk: 100 for pk in pks}
    s3 = sample_pks(pks, sizes, max_learnwares=50, max_points=1000)
    assert len(s3) == 10 and sum(sizes[p] for p in s3) <= 1000


def test_island_map_in_the_unit_square():
    rng = np.random.default_rng(2)
    emb = _embeddings(rng, n=12)
    m = island_map(list(range(1, 13)), emb, 0.5, None, kernel_version=3)
    assert m.xy.shape == (12, 2) and m.kernel_version == 3
    assert m.xy.min() >= -1e-9 and m.xy.max() <= 1 + 1e-9
    assert m.median_mmd > 0 and 0 <= m.stress < 1
    one = island_map([5], emb[:1], 0.5, None, kernel_version=0)
    assert one.xy.shape == (1, 2)


def test_point_budget_bounds_the_work_whatever_the_features():
    from market_server.islandmap import MAP_POINTS, MAP_WORK, point_budget
    assert point_budget(10) == MAP_POINTS
    for d in (100, 10_000):
        p = point_budget(d)
        assert p < MAP_POINTS and p * p * d <= MAP_WORK
