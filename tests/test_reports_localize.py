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
    extra = an.coverage_anchors(profile, prior.counts, 3, exclude=anchors)
    assert len(extra) == 3 and not set(extra) & set(anchors)
    assert all(prior.counts[profile.ids.index(e)] == 0 for e in extra)
    # once those are reported, others come next; without reports: the profile's best first
    reports += [_reporter(profile, W, 1, rng, extra)]
    later = an.coverage_anchors(profile, an.report_prior(profile, reports), 3, exclude=anchors)
    assert not set(later) & set(extra)
    none = an.coverage_anchors(profile, None, 1)
    assert none == [profile.ids[int(np.argmin(profile.loss.mean(axis=0)))]]
    for bad in ((prior.counts, -1), (prior.counts[:-1], 2)):
        with pytest.raises(ValueError):
            an.coverage_anchors(profile, *bad)


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


class _Saturating:
    """A ridge that clips its inputs to the box it was trained in: the same model as a ridge
    there, flat outside it."""

    def __init__(self, model, bound):
        self.model, self.bound = model, bound

    def predict(self, X):
        return self.model.predict(np.clip(X, -self.bound, self.bound))


@pytest.fixture(scope="module")
def shifted_island():
    """Four regimes of ridge developers; two of regime 2's three clip their inputs to the box
    they were trained in (``_Saturating``). Real users of regime 2 work further out (their
    inputs shifted), where those two fail and the plain ridge extrapolates: the herded
    pseudo-data (the developers' own input regions) cannot tell them apart."""
    learnwares, W, regime = _regression_island(n_regimes=4, per_regime=3, seed=3)
    learnwares = [(i, _Saturating(m, 2.5) if i in SATURATING else m, *rest)
                  for i, m, *rest in learnwares]
    profile = an.build_island_profile(learnwares, "rmse", "regression", n_herd=32)
    return profile, W


SATURATING = ("r2-dev0", "r2-dev1")


def _shifted_rows(rng, W, n):
    X = rng.normal(size=(n, D)) + 2.5
    return X, X @ W[2] + 0.3 * rng.normal(size=n)


def test_reports_steer_the_mixture_off_models_real_users_found_bad(shifted_island):
    profile, W = shifted_island
    rng = np.random.default_rng(4)
    anchors = an.select_anchors(profile, 4)
    regime2 = [lw for lw in profile.ids if lw.startswith("r2-")]
    reports = []
    for _ in range(8):  # real users of regime 2 report the learnwares they tried
        X, y = _shifted_rows(rng, W, 40)
        reports.append(({j: pm.evaluate("rmse", y, profile.models[j].predict(X))
                         for j in dict.fromkeys(anchors + regime2)}, 40))
    prior = an.report_prior(profile, reports)  # shrink and blend by cross-validation
    assert prior.cv_error < prior.cv_error_profile  # the reports predict reporters better
    good = profile.ids.index("r2-dev2")
    for j in SATURATING:
        assert prior.shift[profile.ids.index(j)] > prior.shift[good] + 0.5
    Xu, yu = _shifted_rows(rng, W, 8)  # a new user with few rows
    Xt, yt = _shifted_rows(rng, W, 200)  # and the rows it will use the learnwares on
    vals = _user_vals(profile, anchors, Xu, yu)
    plain = an.localize(profile, anchors, vals, len(yu))
    steered = an.localize(profile, anchors, vals, len(yu), reports=prior)

    def weight(loc, ids):
        return sum(w for j, w in zip(loc.mixture.ids, loc.mixture.weights) if j in ids)

    def mixture_rmse(loc):
        pred = sum(w * profile.models[j].predict(Xt) for j, w in zip(loc.mixture.ids,
                                                                     loc.mixture.weights))
        return pm.evaluate("rmse", yt, pred)

    assert weight(plain, SATURATING) > 0.2  # the profile alone cannot tell them apart
    assert weight(steered, SATURATING) < 0.1
    assert steered.best.id == "r2-dev2"
    assert mixture_rmse(steered) < 0.8 * mixture_rmse(plain)


def test_shrinkage_follows_how_well_reporters_agree(island):
    """Reporters whose deviations from the profile are shared get light shrinkage; reporters
    whose deviations are each their own noise get heavy shrinkage (and the reports barely move
    a new user's estimates)."""
    profile, W, regime = island
    rng = np.random.default_rng(6)
    anchors = an.select_anchors(profile, 4)
    ids = profile.ids
    common = {j: float(rng.normal(scale=0.6)) for j in ids}
    shared, noisy = [], []
    for _ in range(12):
        vals, n = _reporter(profile, W, int(rng.integers(4)), rng, ids)
        shared.append(({j: v * np.exp(common[j]) for j, v in vals.items()}, n))
        noisy.append(({j: v * np.exp(rng.normal(scale=0.6)) for j, v in vals.items()}, n))
    a, b = an.report_prior(profile, shared), an.report_prior(profile, noisy)
    assert a.shrink < b.shrink
    assert a.cv_error < a.cv_error_profile
    # the shared deviations are recovered, up to their mean
    c = np.array([common[j] for j in ids])
    assert np.corrcoef(a.shift, c)[0, 1] > 0.8
    assert np.abs(b.shift).max() < np.abs(a.shift).max()
