"""Search across islands: the ranking key (MMD raised by the share of inputs to fill) and the
mixture (the best candidates weighed by the inverse key), on small worlds whose answer is known."""
from __future__ import annotations

import numpy as np

from market_server.world_search import (FILL_PENALTY, Candidate, WorldSearch, filled_share,
                                        rank_key)

WIDTHS = {"a": 1.0, "b": 1.0, "c": 1.0}


def _user(seed=0, n=30):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 2)), np.full(n, 1.0 / n)


def _shifted(z, d):
    out = z.copy()
    out[:, 0] += d
    return out


def test_filled_share_and_key():
    zq, bq = _user()
    full = Candidate("A", "i1", 1, zq, bq, ["a", "b"], ["a", "b"])
    half = Candidate("B", "i2", 2, zq, bq, ["a", "c"], ["a", "c"])
    assert filled_share(full, ["a", "b"]) == 0.0
    assert filled_share(half, ["a"]) == 0.5
    assert rank_key(0.2, 0.0) == 0.2                         # nothing to fill: the MMD itself
    assert np.isclose(rank_key(0.2, 0.5), 0.2 * (1 + 0.5 * FILL_PENALTY))


def test_a_learnware_that_needs_filling_loses_a_near_tie_on_fewer_features():
    """B matches the user's marginal on its one shared feature a little better than A matches
    on both of A's inputs, but half of B's inputs must be filled: A comes first."""
    zq, bq = _user()
    a = Candidate("A", "i1", 1, _shifted(zq, 0.6), bq, ["a", "b"], ["a", "b"])
    b = Candidate("B", "i2", 2, _shifted(zq, 0.5), bq, ["a", "c"], ["a", "c"])
    ranked = WorldSearch(zq, bq, ["a", "b"], WIDTHS).rank([b, a])
    mmd = {r["cand"].learnware_id: r["mmd"] for r in ranked}
    assert mmd["B"] < mmd["A"] < mmd["B"] * (1 + 0.5 * FILL_PENALTY)   # the near tie
    assert [r["cand"].learnware_id for r in ranked] == ["A", "B"]
    # a clear winner on the marginal still wins although it must fill
    far = Candidate("A", "i1", 1, _shifted(zq, 1.5), bq, ["a", "b"], ["a", "b"])
    ranked = WorldSearch(zq, bq, ["a", "b"], WIDTHS).rank([far, b])
    assert [r["cand"].learnware_id for r in ranked] == ["B", "A"]


def test_mixture_weighs_the_best_candidates_by_inverse_key():
    zq, bq = _user(1)
    cands = [Candidate(f"L{i}", "i1", i, _shifted(zq, d), bq, ["a", "b"], ["a", "b"])
             for i, d in enumerate((0.9, 0.2, 0.5, 1.4))]
    ws = WorldSearch(zq, bq, ["a", "b"], WIDTHS)
    ranked = ws.rank(cands)
    members, w, v, common = ws.mixture(ranked, max_size=3)
    assert [r["cand"].learnware_id for r in members] == ["L1", "L2", "L0"]   # the best three
    key = np.array([r["key"] for r in members])
    assert np.isclose(w.sum(), 1.0) and np.all(np.diff(w) < 0)
    assert np.allclose(w, (1 / key) / (1 / key).sum())                   # not uniform, not QP
    assert common == ["a", "b"]
    # the weighted mixture's squared MMD: convex in the weights, so at most the weighted mean
    assert 0.0 <= v <= float(w @ key) + 1e-12


def test_mixture_of_one_candidate_and_an_exact_match():
    zq, bq = _user(2)
    exact = Candidate("E", "i1", 1, zq.copy(), bq, ["a", "b"], ["a", "b"])
    other = Candidate("O", "i1", 2, _shifted(zq, 1.0), bq, ["a", "b"], ["a", "b"])
    ws = WorldSearch(zq, bq, ["a", "b"], WIDTHS)
    members, w, v, _ = ws.mixture(ws.rank([other, exact]), max_size=2)
    assert members[0]["cand"].learnware_id == "E" and w[0] > 0.999 and np.isfinite(w).all()
    members, w, _, _ = ws.mixture(ws.rank([other]), max_size=5)
    assert len(members) == 1 and w.tolist() == [1.0]
