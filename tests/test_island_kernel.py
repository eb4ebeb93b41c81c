"""The market's island-kernel rule: relevance learned from the island's own models."""
import numpy as np
import pytest
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.tree import DecisionTreeRegressor

from client_sdk.rkme import RKMESpec
from market_server import island_kernel
from market_server.island_kernel import base_kernel, model_relevance, refine_kernel
from learnware_core.island import base_kernel as protocol_base_kernel
from learnware_core.kernels import mmd2

D = 4


def _island(task="regression", n_lw=6, relevant=0, seed=0):
    """Learnwares whose data differ on every feature but whose models use only ``relevant``."""
    rng = np.random.default_rng(seed)
    base = np.ones(D)
    gamma0, scales0 = base_kernel(base, D)
    lws, data = [], []
    for i in range(n_lw):
        X = rng.normal(size=(150, D)) + rng.normal(scale=2.0, size=D)  # shifted on every feature
        t = X[:, relevant]
        if task == "regression":
            y = np.sin(t) + 2 * t + 0.05 * rng.normal(size=len(t))
            model = (DecisionTreeRegressor(max_depth=4, random_state=0) if i % 2
                     else LinearRegression()).fit(X[:, [relevant]], y)
            model = _OnColumn(model, relevant)
        else:
            y = (t > np.median(t)).astype(int)
            model = _OnColumn(LogisticRegression().fit(X[:, [relevant]], y), relevant)
        spec = RKMESpec.fit(X, k=20, gamma=gamma0, scales=scales0, random_state=i)
        lws.append({"model": model, "z": spec.z, "beta": spec.beta, "gamma": spec.gamma,
                    "scales": spec.scales})
        data.append(X)
    return lws, base, data


class _OnColumn:
    """A model that reads only one column of the island's feature matrix."""

    def __init__(self, model, j):
        self.model, self.j = model, j

    def predict(self, X):
        return self.model.predict(np.asarray(X)[:, [self.j]])

    def __getattr__(self, name):
        if name == "predict_proba" and hasattr(self.model, "predict_proba"):
            return lambda X: self.model.predict_proba(np.asarray(X)[:, [self.j]])
        raise AttributeError(name)


class _Constant:
    def predict(self, X):
        return np.full(len(X), 3.0)


def test_base_kernel_matches_protocol():
    g, s = base_kernel([2.0, 0.5, 1.0], 3)
    g2, s2 = protocol_base_kernel([2.0, 0.5, 1.0], 3)
    assert g == pytest.approx(1 / 6) and g == g2
    np.testing.assert_array_equal(s, s2)


def test_relevant_feature_gets_by_far_the_smallest_scale():
    lws, base, _ = _island("regression", relevant=0)
    gamma, scales, info = refine_kernel(lws, base, "regression", random_state=0,
                                        return_info=True)
    assert gamma > 0 and np.isfinite(gamma)
    assert info["n_voters"] == len(lws)
    assert info["relevance"][0] > 0.9
    spread_ratio = scales / info["spread"]  # the part of the scale due to relevance
    assert spread_ratio[0] < 0.2 * spread_ratio[1:].min()
    assert scales[0] < 0.2 * scales[1:].min()


def test_classification_uses_probabilities_and_finds_feature_two():
    lws, base, _ = _island("classification", relevant=2, n_lw=4)
    _, scales, info = refine_kernel(lws, base, "classification", return_info=True)
    assert np.argmax(info["relevance"]) == 2
    assert scales[2] < 0.2 * np.delete(scales, 2).min()


def test_refined_kernel_ignores_irrelevant_shifts():
    """Two data sets that differ only on unused features come out (relatively) closer."""
    lws, base, data = _island("regression", relevant=0)
    g0, s0 = base_kernel(base, D)
    g1, s1 = refine_kernel(lws, base, "regression")
    rng = np.random.default_rng(5)
    A = rng.normal(size=(300, D))
    B = A.copy()
    B[:, 1:] += 3.0          # shifted on irrelevant features
    C = A.copy()
    C[:, 0] += 1.0           # shifted on the relevant one
    w = np.full(300, 1 / 300)
    base_ratio = mmd2(A, w, B, w, g0, s0) / mmd2(A, w, C, w, g0, s0)
    refined_ratio = mmd2(A, w, B, w, g1, s1) / mmd2(A, w, C, w, g1, s1)
    assert base_ratio > 1 and refined_ratio < 0.2


def test_deterministic_and_input_forms():
    lws, base, _ = _island("regression")
    a = refine_kernel(lws, base, "regression", random_state=3)
    b = refine_kernel(lws, base, "regression", random_state=3)
    assert a[0] == b[0] and np.array_equal(a[1], b[1])
    # (spec, model) pairs and objects with .model/.spec work the same
    specs = [RKMESpec(lw["z"], lw["beta"], lw["gamma"], lw["scales"]) for lw in lws]
    pairs = [(sp, lw["model"]) for sp, lw in zip(specs, lws)]
    c = refine_kernel(pairs, base, "regression", random_state=3)
    assert c[0] == pytest.approx(a[0]) and np.allclose(c[1], a[1])

    class LW:
        def __init__(self, model, spec):
            self.model, self.spec = model, spec
    d = refine_kernel([LW(m, sp) for sp, m in pairs], base, "regression", random_state=3)
    assert d[0] == pytest.approx(a[0]) and np.allclose(d[1], a[1])
    for kw in ({"spread": "own", "permute": "own"}, {"spread": "between"}, {"spread": "base"},
               {"gamma_rule": "base"}):
        g, s = refine_kernel(lws, base, "regression", random_state=3, n_herd=60, **kw)
        assert g > 0 and np.argmin(s / base) == 0


def test_models_without_a_say_fall_back_to_uniform_relevance():
    lws, base, _ = _island("regression", n_lw=3)
    for lw in lws:
        lw["model"] = None
    lws[0]["model"] = _Constant()  # ignores every feature: abstains
    _, scales, info = refine_kernel(lws, base, "regression", return_info=True)
    assert info["n_voters"] == 0
    np.testing.assert_allclose(info["relevance"], np.full(D, 1 / D))
    np.testing.assert_allclose(scales, info["spread"])
    assert model_relevance(_Constant(), np.zeros((10, D)), "regression") is None
    g, s = refine_kernel([], base, "regression")
    assert (g, list(s)) == (1 / (2 * D), list(base))


def test_floor_bounds_the_stretch_and_arguments_are_checked():
    lws, base, _ = _island("regression")
    _, scales, info = refine_kernel(lws, base, "regression", floor=0.04, return_info=True)
    stretch = scales / info["spread"]
    assert stretch.max() <= 1 / np.sqrt(0.04) * 1.0001
    with pytest.raises(ValueError):
        refine_kernel(lws, base, "ranking")
    with pytest.raises(ValueError):
        refine_kernel(lws, base, "regression", floor=0)
    with pytest.raises(ValueError):
        refine_kernel(lws, np.ones(D + 1), "regression")
    assert "Relevance" in island_kernel.__doc__ or "relevance" in island_kernel.__doc__
