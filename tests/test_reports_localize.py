"""Usage reports as real rows of the task x model matrix (anchors.report_prior): the prior moves
to where reporting users were, models real users measured worse than predicted are shifted,
one reporter's weight is bounded whatever row count it claims, no reports change nothing, and
the market's localize uses the island's reports. (Figures: benchmarks/report_bench.py.)"""
from __future__ import annotations

import numpy as np
import pytest

from learnware_core import metrics as pm
from market_server import anchors as an
from tests.helpers import blob, fitted_ridge, linear_task, semantic
from tests.test_anchors import D, _regression_island


@pytest.fixture(scope="module")
def island():
    learnwares, W, regime = _regression_island(n_regimes=4, per_regime=3, seed=3)
    profile = an.build_island_profile(learnwares, "rmse", "regression", n_herd=32)
    return profile, W, regime


def _reporter(profile, W, r, rng, ids, n=40):
    X = rng.normal(size=(n, D))
    y = X @ W[r] + 0.3 * rng.normal(size=n)
    return {j: pm.evaluate("rmse", y, profile.models[j].predict(X)) for j in ids}, n


def test_prior_moves_to_where_reporters_were(island):
    profile, W, regime = island
    rng = np.random.default_rng(0)
    anchors = an.select_anchors(profile, 4)
    reports = [_reporter(profile, W, 2, rng, anchors) for _ in range(6)]
    assert np.all(an.report_prior(profile, reports).log_prior == -np.log(profile.n))  # default
    prior = an.report_prior(profile, reports, prior_strength=2.0)
    p = np.exp(prior.log_prior)
    assert p.sum() == pytest.approx(1.0)
    in_regime = sum(p[i] for i, lw in enumerate(profile.ids) if regime[lw] == 2)
    assert in_regime > 0.5 > 3 / len(profile.ids)  # uniform would give 3/12
    assert prior.reporters == 6 and prior.counts.sum() == 6 * len(anchors)
    # a new user with almost no evidence (one anchor, 2 rows) now lands in regime 2
    X = rng.normal(size=(2, D))
    y = X @ W[2]
    one = anchors[:1]
    vals = [pm.evaluate("rmse", y, profile.models[one[0]].predict(X))]
    with_reports = an.localize(profile, one, vals, 2, reports=prior)
    assert regime[with_reports.best.id] == 2
    mass = sum(w for lw, w in with_reports.task_weights.items() if regime[lw] == 2)
    plain = an.localize(profile, one, vals, 2)
    assert mass > sum(w for lw, w in plain.task_weights.items() if regime[lw] == 2)


def test_models_reported_worse_than_predicted_are_shifted(island):
    profile, W, regime = island
    rng = np.random.default_rng(1)
    anchors = an.select_anchors(profile, 4)
    bad = anchors[0]
    used = [lw for lw in profile.ids if lw != profile.ids[-1]]  # one learnware never reported
    reports = []
    for _ in range(8):
        vals, n = _reporter(profile, W, regime[bad], rng, used)
        vals[bad] *= 3.0  # real users found it far worse than its behaviour suggests
        reports.append((vals, n))
    # blend 0: the profile localises, the reports only correct the models it misjudges
    prior = an.report_prior(profile, reports, shrink=2.0, blend=0.0)
    j = profile.ids.index(bad)
    assert prior.shift[j] > 0.3  # log scale: the loss (rmse^2) is 9x what was predicted
    assert prior.shift[j] == prior.shift.max()
    assert prior.shift[-1] == 0.0 and prior.counts[-1] == 0
    X = rng.normal(size=(20, D))
    y = X @ W[regime[bad]]
    vals = _user_vals(profile, anchors, X, y)
    est0 = {r.id: r.estimate for r in an.localize(profile, anchors, vals, 20).ranking}
    # and with shrink and blend chosen by cross-validation on the reporters
    auto = an.report_prior(profile, reports)
    assert auto.shift[-1] == 0.0  # nobody reported it: not moved
    assert auto.cv_error < auto.cv_error_profile  # the reports predict reporters better
    for p in (prior, auto):
        est = {r.id: r.estimate for r in an.localize(profile, anchors, vals, 20, reports=p).ranking}
        assert est[bad] > 1.5 * est0[bad]


def _user_vals(profile, anchors, X, y):
    return [pm.evaluate("rmse", y, profile.models[a].predict(X)) for a in anchors]


def test_one_reporter_weighs_at_most_one_user_whatever_it_claims(island):
    profile, W, regime = island
    rng = np.random.default_rng(2)
    anchors = an.select_anchors(profile, 4)
    vals, _ = _reporter(profile, W, 0, rng, anchors)
    big = an.report_prior(profile, [(vals, 10**9)], prior_strength=2.0)
    fair = an.report_prior(profile, [(vals, 100)], prior_strength=2.0)
    np.testing.assert_allclose(np.exp(big.log_prior), np.exp(fair.log_prior), atol=0.05)
    # and with the default strength, one reporter cannot take over the prior
    assert np.exp(big.log_prior).max() < 0.5


def test_no_usable_reports_change_nothing(island):
    profile, W, regime = island
    rng = np.random.default_rng(3)
    anchors = an.select_anchors(profile, 4)
    empty = an.report_prior(profile, [({"not-in-profile": 1.0}, 20), ({}, 5)])
    assert empty.reporters == 0 and np.all(empty.shift == 0)
    np.testing.assert_allclose(np.exp(empty.log_prior), 1 / profile.n)
    X = rng.normal(size=(10, D))
    vals = _user_vals(profile, anchors, X, X @ W[1])
    a = an.localize(profile, anchors, vals, 10, reports=empty)
    b = an.localize(profile, anchors, vals, 10)
    assert [r.id for r in a.ranking] == [r.id for r in b.ranking]
    assert a.mixture.expected == pytest.approx(b.mixture.expected)


def test_market_localize_uses_the_islands_reports(market):
    env = market
    rng = np.random.default_rng(5)
    dev = env.client()
    sem = semantic("reported island")
    ws = [(1, 2, 3), (3, -1, 0), (-2, 0, 1), (0, 4, -1)]
    data = []
    for i, w in enumerate(ws):
        X = blob(rng, [2.0 * i, 0.0, 0.0], n=120)
        y = linear_task(rng, X, w)
        dev.publish(fitted_ridge(X, y), X, sem)
        data.append((X, y))
    island = env.state.market.island_for(sem)
    prof = env.state.market.profile(island)
    assert env.state.market.reports.prior(island, prof) is None
    for _ in range(3):
        user = env.client()
        for lid in ("lw-1", "lw-2"):
            user.report(lid, *data[0])
    prior = env.state.market.reports.prior(island, prof)
    assert prior is not None and prior.reporters == 3
    assert prior.counts[prof.ids.index("lw-1")] == 3
    assert env.state.market.reports.prior(island, prof) is prior  # cached until reports change
    X, y = data[0]
    res = env.client().localize(X[:10], y[:10], sem)
    assert res.single and res.mixture
    env.client().report("lw-3", *data[0])
    assert env.state.market.reports.prior(island, prof) is not prior


def test_models_all_users_found_better_move_up_the_ranking(island):
    """Reporters from every regime found one model better than the pseudo-data says (e.g. it
    copes with a drift the herded inputs do not show): a new user with little evidence gets it
    ranked higher, with shrink and blend chosen by cross-validation on the reporters."""
    profile, W, regime = island
    rng = np.random.default_rng(4)
    anchors = an.select_anchors(profile, 4)
    good = next(lw for lw in profile.ids if lw not in anchors)
    reports = []
    for r in range(12):
        vals, n = _reporter(profile, W, r % 4, rng, profile.ids)
        vals[good] *= 0.4
        reports.append((vals, n))
    prior = an.report_prior(profile, reports)
    assert prior.cv_error < prior.cv_error_profile
    j = profile.ids.index(good)
    assert prior.shift[j] == prior.shift.min() < -0.5
    X = rng.normal(size=(3, D))
    vals = _user_vals(profile, anchors, X, X @ W[(regime[good] + 1) % 4])  # another regime
    plain = an.localize(profile, anchors, vals, 3)
    with_reports = an.localize(profile, anchors, vals, 3, reports=prior)
    rank = lambda loc: [r.id for r in loc.ranking].index(good)  # noqa: E731
    assert rank(with_reports) < rank(plain)
    est = {r.id: r.estimate for r in with_reports.ranking}
    est0 = {r.id: r.estimate for r in plain.ranking}
    assert est[good] < 0.8 * est0[good]


def test_reports_that_agree_with_the_profile_barely_move_it(island):
    """Reporters who measured what the profile predicts (noise only): estimates stay put."""
    profile, W, regime = island
    rng = np.random.default_rng(6)
    anchors = an.select_anchors(profile, 4)
    reports = [_reporter(profile, W, r % 4, rng, profile.ids) for r in range(8)]
    prior = an.report_prior(profile, reports)
    X = rng.normal(size=(10, D))
    vals = _user_vals(profile, anchors, X, X @ W[0] + 0.3 * rng.normal(size=10))  # as they
    a = {r.id: r.estimate for r in an.localize(profile, anchors, vals, 10, reports=prior).ranking}
    b = {r.id: r.estimate for r in an.localize(profile, anchors, vals, 10).ranking}
    ratio = np.array([a[i] / b[i] for i in profile.ids])
    assert np.all(np.abs(np.log(ratio)) < 0.35)


def test_coverage_anchors_hand_out_the_least_reported(island):
    profile, W, regime = island
    rng = np.random.default_rng(7)
    anchors = an.select_anchors(profile, 4)
    reports = [_reporter(profile, W, 0, rng, anchors) for _ in range(3)]
    prior = an.report_prior(profile, reports)
    extra = an.coverage_anchors(profile, prior, 3, exclude=anchors)
    assert len(extra) == 3 and not set(extra) & set(anchors)
    assert all(prior.counts[profile.ids.index(e)] == 0 for e in extra)
    # once those are reported, others come next; without reports: the profile's best first
    reports += [_reporter(profile, W, 1, rng, extra)]
    later = an.coverage_anchors(profile, an.report_prior(profile, reports), 3, exclude=anchors)
    assert not set(later) & set(extra)
    none = an.coverage_anchors(profile, None, 1)
    assert none == [profile.ids[int(np.argmin(profile.loss.mean(axis=0)))]]
    with pytest.raises(ValueError):
        an.coverage_anchors(profile, prior, -1)


def test_market_hands_out_coverage_anchors_when_configured(make_market):
    env = make_market(report_coverage_anchors=2)
    rng = np.random.default_rng(8)
    dev = env.client()
    sem = semantic("coverage island")
    data = []
    for i in range(6):
        X = blob(rng, [2.0 * i, 0.0, 0.0], n=120)
        y = linear_task(rng, X, (1 + i, -1, 0.5 * i))
        dev.publish(fitted_ridge(X, y), X, sem)
        data.append((X, y))
    market = env.state.market
    first = market.anchor_set({"semantic": sem, "max_anchors": 2})["anchors"]
    assert len(first) == 4 and len(set(first)) == 4
    for lid in first:
        env.client().report(lid, *data[0])
    second = market.anchor_set({"semantic": sem, "max_anchors": 2})["anchors"]
    assert second[:2] == first[:2]             # the medoids stay
    assert not set(second[2:]) & set(first)    # the unreported come next
