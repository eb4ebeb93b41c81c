"""Privacy by construction: few points per row, no point on (or near) a training row, and a
membership-inference attack that does little better than chance."""
from __future__ import annotations

import numpy as np
import pytest

from client_sdk.rkme import (MIN_DISTANCE_FRACTION, MIN_ROWS, ROWS_PER_POINT, RKMESpec,
                             membership_inference_auc)
from protocol.errors import DataError


def mixture(n, d, seed=0, components=5, spread=3.0):
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(99 + d).normal(scale=spread, size=(components, d))
    return centres[rng.integers(components, size=n)] + rng.normal(size=(n, d))


def nearest_row_distances(spec, X):
    """Brute force, kernel metric: distance from each reduced point to its nearest row."""
    s = spec.scales if spec.scales is not None else 1.0
    D = (((spec.z[:, None, :] - X[None, :, :]) / s) ** 2).sum(-1)
    return np.sqrt(D.min(axis=1))


def median_nn_distance(spec, X):
    s = spec.scales if spec.scales is not None else 1.0
    Xs = X / s
    D = ((Xs[:, None, :] - Xs[None, :, :]) ** 2).sum(-1)
    D[D <= 1e-12] = np.inf  # the row itself and exact duplicates
    return float(np.median(np.sqrt(D.min(axis=1))))


def outliers_and_duplicates(seed=0):
    rng = np.random.default_rng(seed)
    X = mixture(300, 2, seed=seed)
    X = np.vstack([X, X[:40], X[:10], rng.normal(scale=30, size=(8, 2))])  # copies, outliers
    return X


def discrete_survey(seed=0):
    rng = np.random.default_rng(seed)
    n = 600
    return np.column_stack([rng.integers(18, 90, n), rng.integers(0, 2, n), rng.integers(1, 8, n),
                            rng.integers(0, 2, n), rng.integers(1, 6, n)]).astype(float)


@pytest.mark.parametrize("make", [lambda: mixture(1000, 3, seed=1), outliers_and_duplicates,
                                  discrete_survey, lambda: mixture(MIN_ROWS, 4, seed=2)],
                         ids=["mixture", "outliers+duplicates", "discrete", "min-rows"])
def test_no_reduced_point_near_a_training_row(make):
    X = make()
    spec = RKMESpec.fit(X)
    dist = nearest_row_distances(spec, X)
    required = spec.fit_info["min_distance_required"]
    assert required >= MIN_DISTANCE_FRACTION * median_nn_distance(spec, X) * 0.5  # estimate ok
    assert dist.min() > 0
    assert dist.min() >= required * (1 - 1e-9), (dist.min(), required)
    assert spec.fit_info["min_distance"] >= required * (1 - 1e-6)
    assert spec.k <= len(X) // ROWS_PER_POINT


def test_privacy_holds_under_a_narrow_market_kernel():
    # a narrow kernel pulls points onto rows; the push-out must still keep them away
    X = mixture(2000, 10, seed=3)
    spec = RKMESpec.fit(X, gamma=2.0, scales=np.ones(10))
    assert nearest_row_distances(spec, X).min() >= spec.fit_info["min_distance_required"]


def test_constant_data_gets_a_positive_distance():
    X = np.ones((80, 3))
    spec = RKMESpec.fit(X, k=5)
    assert nearest_row_distances(spec, X).min() > 0
    assert spec.fit_info["min_distance_required"] > 0


def test_row_limits():
    X = mixture(MIN_ROWS, 3, seed=4)
    assert RKMESpec.fit(X).fit_info["k_eff"] == MIN_ROWS // ROWS_PER_POINT
    with pytest.raises(DataError) as e:
        RKMESpec.fit(X[:-1])
    assert "MarketClient.localize" in e.value.message
    assert str(MIN_ROWS) in e.value.message


@pytest.mark.parametrize("n,d", [(1000, 10), (500, 5)])
def test_membership_inference_auc_at_defaults(n, d):
    X = mixture(2 * n, d, seed=5 + d)
    train, fresh = X[:n], X[n:]
    spec = RKMESpec.fit(train)
    auc = membership_inference_auc(spec, train, fresh)
    assert auc <= 0.60, auc
    # sanity of the measurement: publishing raw rows would be caught at once
    leak = RKMESpec(train[:100], np.full(100, 0.01), spec.gamma, spec.scales)
    assert membership_inference_auc(leak, train[:100], fresh[:100]) == 1.0
