"""Reuse estimators: scikit-learn conventions, tiny label budgets, class alignment, and routing
accuracy on a 3-cluster task."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn.base import clone, is_classifier, is_regressor
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LinearRegression, LogisticRegression, Ridge
from sklearn.model_selection import cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.svm import LinearSVC

from client_sdk.learnware import Learnware
from client_sdk.reuse import Averaging, EnsemblePruning, FeatureAugment, JobSelector
from client_sdk.rkme import RKMESpec
from protocol.errors import DataError

D = 5
REUSERS = [Averaging, JobSelector, EnsemblePruning, FeatureAugment]


def _cluster_task(task: str, seed: int = 0, n_train: int = 600, sep: float = 4.0):
    """Three Gaussian clusters; learnware c is trained on cluster c only, with a rule of its
    own (3-class labels from a cluster-specific linear map, or a cluster-specific linear
    regression)."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(3, D))
    centers *= sep / np.linalg.norm(centers, axis=1, keepdims=True)
    W = rng.normal(size=(3, 3, D))

    def sample(c, n):
        X = centers[c] + rng.normal(size=(n, D))
        Xc = X - centers[c]
        if task == "classification":
            y = np.argmax(Xc @ W[c].T, axis=1)
            flip = rng.random(n) < 0.03
            y[flip] = rng.integers(0, 3, flip.sum())
        else:
            y = Xc @ W[c, 0] + 3.0 * c + 0.1 * rng.normal(size=n)
        return X, y

    lws = []
    for c in range(3):
        X, y = sample(c, n_train)
        model = (LogisticRegression(max_iter=1000) if task == "classification" else Ridge())
        model.fit(X, y)
        semantic = {"task_type": task}
        if task == "classification":
            semantic["classes"] = [0, 1, 2]
        lws.append(Learnware(f"lw{c}", model, RKMESpec.fit(X, k=50, gamma=0.1), semantic))

    def user(n_per, clusters=(0, 1, 2)):
        parts = [sample(c, n_per) for c in clusters]
        X = np.vstack([p[0] for p in parts])
        y = np.concatenate([p[1] for p in parts])
        owner = np.concatenate([np.full(n_per, c) for c in clusters])
        return X, y, owner

    return lws, user


@pytest.fixture(scope="module")
def clf_task():
    return _cluster_task("classification")


@pytest.fixture(scope="module")
def reg_task():
    return _cluster_task("regression", seed=1)


def _oracle(lws, X, owner):
    out = np.empty(len(X), dtype=np.asarray(lws[0].model.predict(X[:1])).dtype)
    for c, lw in enumerate(lws):
        out[owner == c] = lw.model.predict(X[owner == c])
    return out


def _make(cls, lws):
    return cls(lws)


# ------------------------------------------------------------------ scikit-learn conventions
@pytest.mark.parametrize("cls", REUSERS)
@pytest.mark.parametrize("task", ["classification", "regression"])
def test_in_pipeline_with_get_params(cls, task, clf_task, reg_task):
    lws, user = clf_task if task == "classification" else reg_task
    X, y, _ = user(40)
    X = X.copy()
    X[0, 1] = np.nan  # the imputer in front takes care of it
    pipe = make_pipeline(SimpleImputer(), _make(cls, lws))
    assert pipe.fit(X, y) is pipe
    pred = pipe.predict(X)
    assert pred.shape == (len(X),)
    reuser = pipe[-1]
    params = reuser.get_params()
    assert params["learnwares"] is lws
    assert set(params) == set(cls(lws).get_params())
    assert pipe.get_params()[f"{type(reuser).__name__.lower()}__learnwares"] is lws
    assert reuser.n_features_in_ == D
    if task == "classification":
        assert is_classifier(reuser) and not is_regressor(reuser)
        proba = pipe.predict_proba(X)
        assert proba.shape == (len(X), 3)
        np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-6)
        np.testing.assert_array_equal(reuser.classes_, [0, 1, 2])
        assert 0.0 <= pipe.score(X, y) <= 1.0
    else:
        assert is_regressor(reuser) and not is_classifier(reuser)
        with pytest.raises(AttributeError, match="classification"):
            reuser.predict_proba(X)
    fresh = clone(reuser)
    assert fresh.get_params().keys() == params.keys()
    assert not hasattr(fresh, "n_features_in_")


@pytest.mark.parametrize("cls", REUSERS)
def test_set_params_and_fit_returns_self(cls, clf_task):
    lws, user = clf_task
    X, y, _ = user(10)
    est = cls(lws[:2])
    est.set_params(learnwares=lws)
    assert est.get_params()["learnwares"] is lws
    assert est.fit(X, y) is est


# --------------------------------------------------------------------- tiny label budgets
@pytest.mark.parametrize("cls", [EnsemblePruning, FeatureAugment])
@pytest.mark.parametrize("task", ["classification", "regression"])
def test_five_labelled_rows(cls, task, clf_task, reg_task):
    lws, user = clf_task if task == "classification" else reg_task
    X, y, _ = user(200)
    rng = np.random.default_rng(3)
    for _ in range(5):
        idx = rng.choice(len(X), 5, replace=False)
        if task == "classification" and np.unique(y[idx]).size < 2:
            continue
        est = cls(lws).fit(X[idx], y[idx])
        pred = est.predict(X)
        assert pred.shape == (len(X),)
        if task == "classification":
            assert np.isfinite(est.predict_proba(X)).all()
        else:
            assert np.isfinite(pred).all()


@pytest.mark.parametrize("cls", [EnsemblePruning, FeatureAugment])
def test_one_row_is_refused_with_a_clear_message(cls, clf_task):
    lws, user = clf_task
    X, y, _ = user(5)
    with pytest.raises(DataError, match="at least 2 labelled rows"):
        cls(lws).fit(X[:1], y[:1])
    with pytest.raises(DataError, match="needs labels"):
        cls(lws).fit(X)


@pytest.mark.parametrize("cls", [EnsemblePruning, FeatureAugment])
def test_single_class_falls_back_to_averaging_with_a_warning(cls, clf_task):
    lws, user = clf_task
    X, y, _ = user(100)
    idx = np.flatnonzero(y == 1)[:5]
    with pytest.warns(UserWarning, match="single class"):
        est = cls(lws).fit(X[idx], y[idx])
    assert est.fallback_ is not None
    np.testing.assert_allclose(est.predict_proba(X), Averaging(lws).fit(X).predict_proba(X))


def test_labels_length_and_width_are_checked(clf_task):
    lws, user = clf_task
    X, y, _ = user(5)
    with pytest.raises(DataError, match="rows but y has"):
        FeatureAugment(lws).fit(X, y[:-1])
    with pytest.raises(DataError, match="features"):
        Averaging(lws).fit(X[:, :3])
    fitted = JobSelector(lws).fit(X)
    with pytest.raises(DataError, match="features"):
        fitted.predict(X[:, :4])
    with pytest.raises(DataError, match="NaN"):
        fitted.predict(np.full_like(X, np.nan))


def test_inconsistent_learnwares_are_refused(clf_task, reg_task):
    with pytest.raises(ValueError, match="mix task types"):
        Averaging([clf_task[0][0], reg_task[0][0]]).fit()
    with pytest.raises(ValueError, match="non-empty list"):
        JobSelector([]).fit()
    with pytest.raises(ValueError, match="weights has"):
        Averaging(clf_task[0], weights=[1, 2]).fit()


# ------------------------------------------------------------------------------ behaviour
def test_job_selector_routes_close_to_oracle(clf_task):
    lws, user = clf_task
    X, y, owner = user(1000)
    js = JobSelector(lws, n_herd=300).fit(X)
    route_acc = np.mean(js.route(X) == owner)
    acc = np.mean(js.predict(X) == y)
    oracle = np.mean(_oracle(lws, X, owner) == y)
    avg = np.mean(Averaging(lws).fit(X).predict(X) == y)
    assert route_acc >= 0.97, route_acc
    assert acc >= oracle - 0.015, (acc, oracle)
    assert acc > avg + 0.1, (acc, avg)
    proba = js.predict_proba(X)
    np.testing.assert_array_equal(js.classes_[proba.argmax(axis=1)], js.predict(X))


def test_job_selector_regression_and_custom_selector(reg_task):
    lws, user = reg_task
    X, y, owner = user(300)
    oracle = _oracle(lws, X, owner)
    avg_mse = np.mean((Averaging(lws).fit(X).predict(X) - y) ** 2)
    for selector in (None, HistGradientBoostingClassifier(max_iter=30)):
        js = JobSelector(lws, selector=selector).fit(X)
        assert np.mean(js.route(X) == owner) >= 0.95
        # rows routed right are predicted like the oracle; wrong routes cost the offset gap
        right = js.route(X) == owner
        np.testing.assert_allclose(js.predict(X)[right], oracle[right])
        assert np.mean((js.predict(X) - y) ** 2) < avg_mse / 5


def test_averaging_aligns_classes_and_uses_votes_without_proba():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, D))
    y_ab = np.where(X[:, 0] > 0, "a", "b")
    y_bc = np.where(X[:, 1] > 0, "b", "c")
    spec = RKMESpec.fit(X, k=20)
    lw1 = Learnware("ab", LogisticRegression().fit(X, y_ab), spec,
                    {"task_type": "classification", "classes": ["a", "b"]})
    lw2 = Learnware("bc", LinearSVC().fit(X, y_bc), spec,
                    {"task_type": "classification", "classes": ["b", "c"]})
    av = Averaging([lw1, lw2], weights=[3, 1]).fit(X)
    np.testing.assert_array_equal(av.classes_, ["a", "b", "c"])
    p = av.predict_proba(X)
    expected = np.zeros((len(X), 3))
    expected[:, :2] += 0.75 * lw1.model.predict_proba(X)
    votes = lw2.model.predict(X)
    expected[:, 1] += 0.25 * (votes == "b")
    expected[:, 2] += 0.25 * (votes == "c")
    np.testing.assert_allclose(p, expected)
    np.testing.assert_array_equal(av.predict(X), np.array(["a", "b", "c"])[p.argmax(1)])


def test_averaging_regression_is_weighted_mean(reg_task):
    lws, user = reg_task
    X, _, _ = user(20)
    av = Averaging(lws, weights=[1, 0, 1]).fit(X)
    expected = 0.5 * (lws[0].model.predict(X) + lws[2].model.predict(X))
    np.testing.assert_allclose(av.predict(X), expected)


def test_ensemble_pruning_keeps_the_learnware_that_fits_the_user(clf_task, reg_task):
    for lws, user, task in [(*clf_task, "clf"), (*reg_task, "reg")]:
        X, y, _ = user(30, clusters=(2,))
        Xt, yt, _ = user(500, clusters=(2,))
        est = EnsemblePruning(lws).fit(X, y)
        assert est.pruned_ and list(est.selected_) == [2], (task, est.weights_)
        avg = Averaging(lws).fit(X)
        if task == "clf":
            assert est.score(Xt, yt) > avg.score(Xt, yt) + 0.1
        else:
            assert est.score(Xt, yt) > avg.score(Xt, yt)
    # Many learnwares: greedy forward selection with replacement, max_size respected.
    lws, user = clf_task
    X, y, _ = user(40, clusters=(0,))
    est = EnsemblePruning(lws * 4, max_size=2).fit(X, y)
    assert 1 <= len(est.selected_) <= 2
    assert np.isclose(est.weights_.sum(), 1.0)


def test_ensemble_pruning_keeps_all_when_pruning_does_not_help(clf_task):
    """Copies of one learnware: no subset beats the average out of sample, so none is pruned."""
    lws, user = clf_task
    X, y, _ = user(4)
    est = EnsemblePruning([lws[0]] * 3, metric="accuracy").fit(X, y)
    assert not est.pruned_
    assert est.cv_loss_ == pytest.approx(est.averaging_loss_)
    np.testing.assert_allclose(est.weights_, 1 / 3)


def test_ensemble_pruning_metric_checks(clf_task):
    lws, user = clf_task
    X, y, _ = user(10)
    with pytest.raises(ValueError, match="does not apply"):
        EnsemblePruning(lws, metric="mse").fit(X, y)
    from sklearn.metrics import f1_score
    est = EnsemblePruning(lws, metric=lambda t, p: f1_score(t, p, average="macro")).fit(X, y)
    assert est.predict(X).shape == (len(X),)


def test_feature_augment_learns_from_labels(reg_task, clf_task):
    lws, user = reg_task
    X, y, _ = user(100)
    Xt, yt, _ = user(500)
    fa = FeatureAugment(lws).fit(X, y)
    assert fa.mode_ == "augmented"
    assert fa.score(Xt, yt) > Averaging(lws).fit(X).score(Xt, yt)
    few = FeatureAugment(lws).fit(X[:5], y[:5])
    assert few.mode_ == "learnware-features"
    custom = FeatureAugment(lws, estimator=LinearRegression()).fit(X, y)
    assert custom.score(Xt, yt) > 0.5

    lws, user = clf_task
    X, y, _ = user(150)
    Xt, yt, _ = user(500)
    fa = FeatureAugment(lws).fit(X, y)
    assert fa.mode_ == "augmented"
    assert fa.score(Xt, yt) > Averaging(lws).fit(X).score(Xt, yt)
    pool = FeatureAugment(lws).fit(X[:6], y[:6])
    assert pool.mode_ == "pool"
    assert pool.predict_proba(Xt).shape == (len(Xt), 3)


def test_cross_validation_clones_and_scores(clf_task):
    lws, user = clf_task
    X, y, _ = user(30)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scores = cross_val_score(FeatureAugment(lws), X, y, cv=3)
    assert scores.shape == (3,) and np.all((scores >= 0) & (scores <= 1))


@pytest.mark.parametrize("cls", [EnsemblePruning, FeatureAugment])
def test_labels_no_learnware_knows_are_added_with_a_warning(cls, clf_task):
    lws, user = clf_task
    X, y, _ = user(10)
    y = y.copy()
    y[:3] = 7
    with pytest.warns(UserWarning, match="no learnware predicts them"):
        est = cls(lws).fit(X, y)
    np.testing.assert_array_equal(est.classes_, [0, 1, 2, 7])
    assert est.predict_proba(X).shape == (len(X), 4)


def test_declared_classes_join_the_union(clf_task):
    lws, user = clf_task
    X, _, _ = user(5)
    wider = Learnware("wider", lws[0].model, lws[0].spec,
                      {"task_type": "classification", "classes": [0, 1, 2, 3]})
    av = Averaging([wider, lws[1]]).fit(X)
    np.testing.assert_array_equal(av.classes_, [0, 1, 2, 3])
    assert np.all(av.predict_proba(X)[:, 3] == 0)
