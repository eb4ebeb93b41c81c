"""Differentially private specs (issue #19): the mechanism's math, the fit's guards, and the
budget declared in the spec, stored and returned by the market."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import norm

from client_sdk import DataError, RKMESpec
from client_sdk.rkme import DP_MIN_ROWS, MIN_ROWS, membership_inference_auc
from learnware_core import dp
from tests.helpers import blob, error_body, fitted_ridge, linear_task, semantic

SEM = semantic("dp island", features=("a", "b", "c"))
BOUNDS = (-8.0, 8.0)


@pytest.fixture
def seeded_noise(monkeypatch):
    """Repeatable DP noise for tests that assert on what a noisy spec looks like."""
    import client_sdk.rkme as rkme
    rng = np.random.default_rng(12345)
    monkeypatch.setattr(rkme, "_secret_rng", lambda: rng)


# --- the mechanism -------------------------------------------------------------------------
def _delta_reference(sigma, eps, sens):
    """Balle & Wang 2018, Theorem 8, with scipy's normal CDF (an independent evaluation)."""
    a, b = sens / (2 * sigma), eps * sigma / sens
    return norm.cdf(a - b) - math.exp(eps) * norm.cdf(-a - b)


@pytest.mark.parametrize("eps, delta, sens", [(0.5, 1e-5, 1.0), (1.0, 1e-5, 2 / 30),
                                              (4.0, 1e-6, 0.02), (10.0, 1e-3, 1.0)])
def test_noise_scale_is_the_analytic_gaussian_mechanisms(eps, delta, sens):
    sigma = dp.gaussian_sigma(eps, delta, sens)
    assert _delta_reference(sigma, eps, sens) <= delta * (1 + 1e-6)
    assert _delta_reference(sigma * 0.999, eps, sens) > delta  # the smallest such sigma
    assert dp.gaussian_delta(sigma, eps, sens) == pytest.approx(
        _delta_reference(sigma, eps, sens), rel=1e-6, abs=1e-15)
    if eps < 1:  # tighter than the classical bound where that one holds
        assert sigma <= dp.classical_sigma(eps, delta, sens)
    # scale invariance: sigma is proportional to the sensitivity
    assert dp.gaussian_sigma(eps, delta, 2 * sens) == pytest.approx(2 * sigma, rel=1e-9)


def test_known_value_of_the_analytic_mechanism():
    # eps = 1, delta = 1e-5, sensitivity 1: sigma ~ 3.73 (classical formula: 4.84)
    assert dp.gaussian_sigma(1.0, 1e-5, 1.0) == pytest.approx(3.73, abs=0.01)
    assert dp.classical_sigma(1.0, 1e-5, 1.0) == pytest.approx(4.84, abs=0.01)


def test_bad_budgets_are_refused():
    for eps, delta in [(0, 1e-5), (-1, 1e-5), (math.inf, 1e-5), (1, 0), (1, 1)]:
        with pytest.raises(ValueError):
            dp.gaussian_sigma(eps, delta, 1.0)


def test_features_have_unit_norm_so_the_sensitivity_bound_holds():
    rng = np.random.default_rng(0)
    feats = dp.DPFeatures(1 / 6, np.array([1.0, 0.1, 10.0]), n_freq=300, seed=1)
    X = rng.normal(size=(200, 3)) * np.array([1e6, 1e-3, 1.0])  # any values at all
    np.testing.assert_allclose(np.linalg.norm(feats(X), axis=1), 1.0, rtol=1e-12)
    n = 40
    worst = 0.0
    for _ in range(200):
        A = rng.normal(size=(n, 3)) * 5
        B = A.copy()
        B[rng.integers(n)] = rng.normal(size=3) * 1e3  # one row replaced by anything
        worst = max(worst, np.linalg.norm(feats(A).mean(0) - feats(B).mean(0)))
    assert worst <= dp.embedding_sensitivity(n) + 1e-12


def test_features_approximate_the_island_kernel():
    from learnware_core.kernels import gaussian_kernel
    rng = np.random.default_rng(2)
    scales = np.array([1.0, 2.0, 0.5])
    feats = dp.DPFeatures(1 / 6, scales, n_freq=4000, seed=3)
    X, Y = rng.normal(size=(30, 3)), rng.normal(size=(30, 3))
    np.testing.assert_allclose(feats(X) @ feats(Y).T, gaussian_kernel(X, Y, 1 / 6, scales),
                               atol=0.05)


def test_noise_added_has_the_calibrated_scale():
    rng = np.random.default_rng(4)
    X = rng.normal(size=(50, 3))
    feats = dp.DPFeatures(1 / 6, np.ones(3), n_freq=2000, seed=0)
    noisy, sigma = dp.noisy_mean_embedding(X, feats, 1.0, 1e-5, np.random.default_rng(9))
    assert sigma == pytest.approx(dp.gaussian_sigma(1.0, 1e-5, 2 / 50))
    resid = noisy - feats(X).mean(0)
    assert resid.std() == pytest.approx(sigma, rel=0.05)
    assert abs(resid.mean()) < 4 * sigma / math.sqrt(resid.size)


# --- the fit -------------------------------------------------------------------------------
def _k():
    return 1 / 6, np.ones(3)


def test_dp_fit_declares_its_budget_and_round_trips():
    X = np.random.default_rng(0).normal(size=(40, 3))
    g, s = _k()
    spec = RKMESpec.fit(X, epsilon=1.0, delta=1e-5, bounds=BOUNDS, gamma=g, scales=s)
    d = spec.to_dict()
    assert d["dp"] == {"epsilon": 1.0, "delta": 1e-5, "mechanism": "gaussian-rff",
                       "features": dp.DEFAULT_FEATURES}
    back = RKMESpec.from_dict(d)
    assert back.dp == d["dp"] and back.k == spec.k
    assert (spec.z >= BOUNDS[0]).all() and (spec.z <= BOUNDS[1]).all()
    plain = RKMESpec.fit(np.random.default_rng(1).normal(size=(60, 3)), gamma=g, scales=s)
    assert plain.dp is None and "dp" not in plain.to_dict()  # the default declares nothing


def test_dp_lowers_the_row_minimum_only_at_small_epsilon():
    rng = np.random.default_rng(1)
    g, s = _k()
    X20 = rng.normal(size=(DP_MIN_ROWS, 3))
    RKMESpec.fit(X20, epsilon=1.0, bounds=BOUNDS, gamma=g, scales=s, delta=1e-4)
    with pytest.raises(DataError) as e:
        RKMESpec.fit(X20[:-1], epsilon=1.0, bounds=BOUNDS, gamma=g, scales=s, delta=1e-4)
    assert e.value.field == "X"
    with pytest.raises(DataError) as e:  # epsilon > 1: the non-DP minimum stays
        RKMESpec.fit(rng.normal(size=(30, 3)), epsilon=4.0, bounds=BOUNDS, gamma=g, scales=s)
    assert e.value.details["min_rows"] == MIN_ROWS
    with pytest.raises(DataError):  # and without DP 30 rows stay too few
        RKMESpec.fit(rng.normal(size=(30, 3)), gamma=g, scales=s)


@pytest.mark.parametrize("kw, field", [({"bounds": None}, "bounds"),
                                       ({"bounds": (1.0, 1.0)}, "bounds"),
                                       ({"bounds": ([0, 0], [1, 1])}, "bounds"),
                                       ({"epsilon": 0.0}, "epsilon"),
                                       ({"epsilon": 1e3}, "epsilon"),
                                       ({"delta": 0.0}, "delta"),
                                       ({"delta": 0.01}, "delta")])  # >= 1 / rows
def test_dp_fit_refuses_what_would_not_be_private(kw, field):
    X = np.random.default_rng(2).normal(size=(60, 3))
    args = {"epsilon": 1.0, "delta": 1e-5, "bounds": BOUNDS, "gamma": 1 / 6,
            "scales": np.ones(3), **kw}
    with pytest.raises(DataError) as e:
        RKMESpec.fit(X, **args)
    assert e.value.field == field


def test_noise_does_not_come_from_random_state():
    X = np.random.default_rng(3).normal(size=(60, 3))
    g, s = _k()
    a = RKMESpec.fit(X, epsilon=1.0, bounds=BOUNDS, gamma=g, scales=s, random_state=0)
    b = RKMESpec.fit(X, epsilon=1.0, bounds=BOUNDS, gamma=g, scales=s, random_state=0)
    assert not (a.z.shape == b.z.shape and np.allclose(a.z, b.z) and np.allclose(a.beta, b.beta))


def test_dp_spec_locates_its_data_and_resists_membership_inference(seeded_noise):
    rng = np.random.default_rng(5)
    g, s = _k()
    X, fresh = rng.normal(size=(300, 3)), rng.normal(size=(300, 3))
    spec = RKMESpec.fit(X, epsilon=1.0, bounds=BOUNDS, gamma=g, scales=s)
    near = RKMESpec.fit(rng.normal(size=(2000, 3)), k=20, gamma=g, scales=s)
    far = RKMESpec.fit(rng.normal(size=(2000, 3)) + 2.0, k=20, gamma=g, scales=s)
    assert spec.mmd(near) < spec.mmd(far)
    assert membership_inference_auc(spec, X, fresh) < 0.6


# --- the market ----------------------------------------------------------------------------
def test_dp_publish_of_30_rows_is_stored_and_returned(market, seeded_noise):
    rng = np.random.default_rng(6)
    dev = market.client()
    X = blob(rng, [1, 2, 3], n=30)
    y = linear_task(rng, X, [1, 2, 3])
    with pytest.raises(DataError):
        dev.publish(fitted_ridge(X, y), X, SEM)  # without DP: refused
    lid = dev.publish(fitted_ridge(X, y), X, SEM,
                      dp={"epsilon": 1.0, "delta": 1e-5, "bounds": BOUNDS})
    man = market.client().manifest(lid)
    assert man.spec["dp"]["epsilon"] == 1.0 and man.spec["dp"]["mechanism"] == "gaussian-rff"
    with market.http() as http:  # the catalogue shows the declared budget
        page = http.get(f"/learnwares/{lid}").text
    budget = page.split('id="dp-budget"', 1)[1].split("</p>", 1)[0]
    assert "ε = 1," in budget and "gaussian-rff" in budget
    # the new island's declared scales come from the bounds, not from the rows
    from protocol.encoding import decode_array
    sc = decode_array(man.semantic["feature_scales"], field="s", ndim=1)
    np.testing.assert_allclose(sc, 4.0)
    # a user's DP requirement searches as any other
    res = market.client().search(blob(rng, [1, 2, 3], n=60), SEM,
                                 dp={"epsilon": 1.0, "delta": 1e-5, "bounds": BOUNDS})
    assert res.single[0].learnware_id == lid


def test_market_refuses_an_unbounded_dp_declaration(market):
    rng = np.random.default_rng(7)
    dev = market.client()
    X = blob(rng, [0, 0, 0], n=80)
    from tests.helpers import publish_envelope, publish_parts
    sem, spec, model = publish_parts(dev, X, SEM, model=fitted_ridge(X, X[:, 0]))
    spec["dp"] = {"epsilon": 1e6, "delta": 1e-5, "mechanism": "gaussian-rff"}
    r = market.http().post("/v1/learnwares",
                           content=publish_envelope(dev.identity, sem, spec, model, to=market,
                                                            validate=False))
    assert r.status_code in (400, 422)
    assert error_body(market, r)["field"] == "spec.dp.epsilon"


def test_client_names_what_is_wrong_in_dp(market):
    rng = np.random.default_rng(8)
    X = blob(rng, [0, 0, 0], n=60)
    for dp_arg, field in [({"epsilon": 1.0, "bounds": BOUNDS, "sigma": 3}, "dp"),
                          ({"epsilon": 1.0}, "bounds")]:
        with pytest.raises(DataError) as e:
            market.client().publish(fitted_ridge(X, X[:, 0]), X, SEM, dp=dp_arg)
        assert e.value.field == field
