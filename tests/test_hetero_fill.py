"""Reuse with missing features (issue #15): FilledLearnware and the reusers across islands."""
from __future__ import annotations

import numpy as np
import pytest

from client_sdk.fill import FilledLearnware, choose_fill_rule
from client_sdk.learnware import Learnware
from client_sdk.reuse import Averaging, EnsemblePruning, FeatureAugment, JobSelector
from client_sdk.rkme import RKMESpec


def _lw(rng, feats, coef, *, correlated=True, task="regression", lid="lw"):
    from sklearn.linear_model import LinearRegression, LogisticRegression
    X = rng.normal(size=(400, len(feats)))
    if correlated:  # the last feature follows the first: a conditional fill can recover it
        X[:, -1] = 2.0 * X[:, 0] + 0.05 * rng.normal(size=400)
    y = X @ np.asarray(coef, float)
    model = (LinearRegression().fit(X, y) if task == "regression"
             else LogisticRegression().fit(X, (y > 0).astype(int)))
    spec = RKMESpec.fit(X, k=40, gamma=1.0 / (2 * len(feats)), scales=np.ones(len(feats)),
                        random_state=0)
    sem = {"task_type": task, "input_features": list(feats)}
    if task == "classification":
        sem["classes"] = [0, 1]
    return Learnware(lid, model, spec, sem), X, y


def test_filled_learnware_predicts_on_the_user_columns():
    rng = np.random.default_rng(0)
    lw, X, y = _lw(rng, ["a", "b", "c"], [1.0, 1.0, 1.0])
    # the user has c and a under its own names, an extra column, and lacks b... and order differs
    cols = ["extra", "C", "A"]
    Xu = np.column_stack([rng.normal(size=400), X[:, 2], X[:, 0]])
    f = FilledLearnware(lw, {"a": "A", "c": "C"}, cols, rule="conditional", X_user=Xu)
    assert f.missing_features == ["b"] and f.semantic["input_features"] == cols
    pred = f.model.predict(Xu)
    # b is independent of a and c: its conditional mean is ~0, so the prediction is a + c
    assert np.sqrt(np.mean((pred - (X[:, 0] + X[:, 2])) ** 2)) < 0.3
    assert f.spec.z.shape[1] == 3


def test_auto_rule_follows_the_evidence_on_the_spec():
    rng = np.random.default_rng(1)
    lw, X, y = _lw(rng, ["a", "b", "c"], [0.5, 0.0, 3.0])     # c = 2a: fill from a works
    rule, ev = choose_fill_rule(lw.model, lw.spec, [2], "regression")
    assert rule == "conditional" and ev["conditional"] < ev["median"]
    lw2, X2, _ = _lw(rng, ["a", "b", "c"], [0.5, 0.0, 3.0], correlated=False)
    # c independent of a, b: the conditional mean of the spec is noise around the median
    rule2, ev2 = choose_fill_rule(lw2.model, lw2.spec, [2], "regression")
    assert ev2["conditional"] > 0.5 * ev2["median"]            # no real evidence for it
    cols = ["a", "b"]
    f = FilledLearnware(lw, {"a": "a", "b": "b"}, cols)          # rule="auto"
    assert f.fill_rule == "conditional" and set(f.fill_evidence) == {"conditional", "median"}
    err = np.sqrt(np.mean((f.model.predict(X[:, :2]) - y) ** 2))
    assert err < 0.3 * np.std(y)


def test_reusers_take_learnwares_from_several_islands():
    rng = np.random.default_rng(2)
    lw1, X1, _ = _lw(rng, ["a", "b", "c"], [1.0, 1.0, 0.5], lid="lw1")
    lw2, X2, _ = _lw(rng, ["b", "c", "d"], [1.0, 0.5, 0.5], lid="lw2")
    cols = ["a", "b", "c"]
    Xu = rng.normal(size=(120, 3))
    yu = Xu @ np.array([1.0, 1.0, 0.5])
    f1 = FilledLearnware(lw1, {f: f for f in cols}, cols, X_user=Xu)
    f2 = FilledLearnware(lw2, {"b": "b", "c": "c"}, cols, X_user=Xu)
    assert f2.missing_features == ["d"]
    for reuser in (Averaging([f1, f2], weights=[0.5, 0.5]).fit(Xu),
                   JobSelector([f1, f2], n_herd=50).fit(Xu),
                   EnsemblePruning([f1, f2]).fit(Xu[:30], yu[:30]),
                   FeatureAugment([f1, f2]).fit(Xu[:30], yu[:30])):
        assert reuser.predict(Xu).shape == (120,)


def test_classification_learnwares_fill_too():
    rng = np.random.default_rng(3)
    lw, X, y = _lw(rng, ["a", "b", "c"], [1.0, -1.0, 0.5], task="classification")
    f = FilledLearnware(lw, {"a": "a", "b": "b"}, ["a", "b"])
    p = f.model.predict_proba(X[:, :2])
    assert p.shape == (400, 2) and np.allclose(p.sum(1), 1)
    assert Averaging([f]).fit(X[:, :2]).predict(X[:, :2]).shape == (400,)


def test_bad_mappings_are_refused():
    rng = np.random.default_rng(4)
    lw, X, _ = _lw(rng, ["a", "b"], [1.0, 1.0])
    with pytest.raises(ValueError, match="covered"):
        FilledLearnware(lw, {"a": "nope"}, ["a"])
    with pytest.raises(ValueError, match="covered"):
        FilledLearnware(lw, {"zz": "a"}, ["a"])
    with pytest.raises(ValueError, match="rule"):
        FilledLearnware(lw, {"a": "a"}, ["a"], rule="magic")
