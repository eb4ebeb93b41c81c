"""The specification world: islands connected by shared features, the signed world endpoint,
feature matching by name / alias / description, and search across islands (issue #15)."""
from __future__ import annotations

import numpy as np
import pytest

from learnware_core.features import FeatureMatcher, resolve_columns
from learnware_core.marginal import conditional_fill, marginal_mmd2, spec_median_fill
from learnware_core.kernels import mmd2
from learnware_core.semantic import island_key
from market_server.world import IslandNode, World

from .helpers import fitted_ridge, semantic

FEATS = ("a", "b", "c", "d")


def _node(iid, feats, *, target="y", info=None, count=3, gamma=None, scales=None):
    sem = {"data_type": "table", "task_type": "regression", "input_features": list(feats),
           "target": target, "objective": "rmse"}
    d = len(feats)
    return IslandNode(iid, sem, gamma or 1.0 / (2 * d), tuple(scales or [1.0] * d), count,
                      info or {})


# --- pure: matching, components, kernels --------------------------------------------------
def test_matcher_links_by_name_alias_and_description():
    m = FeatureMatcher()
    m.add("log_median", {"description": "Log of the median sale price", "unit": "USD"})
    assert m.add("Log_Median") == "log_median"                       # normalised name
    assert m.add("lmed", {"aliases": ["log_median"]}) == "log_median"  # declared alias
    assert m.add("price", {"description": "log of the  MEDIAN sale price",
                           "unit": "usd"}) == "log_median"            # same description + unit
    assert m.add("price2", {"description": "log of the median sale price",
                            "unit": "EUR"}) == "price2"               # other unit: not the same
    assert {x["by"] for x in m.matches} == {"name", "alias", "description"}
    cols, matches = resolve_columns(m, ["x", "price2", "mine"], {"mine": "lmed"})
    assert cols == {"price2": "price2", "mine": "log_median"}
    assert matches == [{"feature": "mine", "matched": "log_median", "by": "map"}]


def test_world_components_connect_overlapping_islands_only():
    w = World([_node("isl_1", ["a", "b", "c"]), _node("isl_2", ["b", "c", "d"]),
               _node("isl_3", ["e", "f"]), _node("isl_4", ["a", "b"], target="z"),
               _node("isl_5", ["D", "g"])])
    comps = {tuple(i.island_id for i in c.islands): c for c in w.components}
    assert set(comps) == {("isl_1", "isl_2", "isl_5"), ("isl_3",), ("isl_4",)}
    c = comps[("isl_1", "isl_2", "isl_5")]
    assert c.features == ["a", "b", "c", "d", "g"]
    assert c.connecting == ["b", "c", "d"]            # "D" is "d" by its normalised name
    assert w.canonical("isl_5") == ["d", "g"]
    assert {"feature": "D", "matched": "d", "by": "name"} in w.matches()
    wire = w.wire()
    assert wire["island_features"]["isl_5"] == ["d", "g"]
    assert c.info["d"]["aliases"] == ["D"]


def test_component_widths_pool_every_island_holding_the_feature():
    # island 2's kernel is refined (gamma not 1/(2d)): its widths are s / sqrt(2 d gamma)
    w = World([_node("isl_1", ["a", "b"], scales=[1.0, 2.0], count=1),
               _node("isl_2", ["b", "c"], scales=[8.0, 1.0], gamma=1.0 / 4 / 4, count=1)])
    widths = w.components[0].widths
    assert widths["a"] == pytest.approx(1.0)
    assert widths["b"] == pytest.approx(np.sqrt(2.0 * 16.0))     # geomean of 2 and 16
    assert widths["c"] == pytest.approx(2.0)


def test_marginal_mmd_is_the_mmd_of_the_dropped_coordinates():
    rng = np.random.default_rng(0)
    z1, z2 = rng.normal(size=(20, 4)), rng.normal(size=(15, 3)) + 0.5
    b1, b2 = np.full(20, 1 / 20), np.full(15, 1 / 15)
    s = np.array([1.0, 2.0])
    v = marginal_mmd2(z1, b1, [3, 0], z2, b2, [1, 2], 0.25, s)
    assert v == pytest.approx(mmd2(z1[:, [3, 0]], b1, z2[:, [1, 2]], b2, 0.25, s))
    # the marginal MMD of identical marginals is 0 whatever the other coordinates
    z3 = z1.copy()
    z3[:, 1] += 100.0
    assert marginal_mmd2(z1, b1, [0, 2], z3, b1, [0, 2], 0.25, s) == pytest.approx(0, abs=1e-12)


def test_conditional_fill_follows_the_shared_coordinates_and_median_does_not():
    t = np.linspace(-3, 3, 61)
    z = np.column_stack([t, 2 * t + 1])            # feature 1 = 2 * feature 0 + 1
    beta = np.full(len(t), 1 / len(t))
    X = np.array([[-2.0], [0.0], [2.5]])
    cond = conditional_fill(z, beta, [0], [1], X, [0.3])
    assert np.allclose(cond[:, 0], 2 * X[:, 0] + 1, atol=0.1)
    med = spec_median_fill(z, beta, [1], 3)
    assert np.allclose(med, 1.0)


# --- the endpoint and the search --------------------------------------------------------------
def _publish_sets(market, rng, sets, n_per=2):
    dev = market.client()
    ids = {}
    for j, feats in enumerate(sets):
        for i in range(n_per):
            X = rng.normal(size=(200, len(feats))) + (i - 0.5) * 2.0
            y = X.sum(axis=1)
            ids[(j, i)] = dev.publish(fitted_ridge(X, y), X, semantic(
                "toy", features=feats), k=10)
    return ids


def test_world_endpoint_is_signed_and_lists_components(market):
    rng = np.random.default_rng(1)
    _publish_sets(market, rng, [("a", "b", "c"), ("b", "c", "d"), ("x", "y")], n_per=1)
    user = market.client()
    world = user.world()
    comps = sorted(world["components"], key=lambda c: len(c["islands"]))
    assert [len(c["islands"]) for c in comps] == [1, 2]
    assert comps[1]["connecting_features"] == ["b", "c"]
    assert comps[1]["features"] == ["a", "b", "c", "d"]
    assert {i.island_id for i in user.islands()} == {i for c in world["components"]
                                                     for i in c["islands"]}
    resp = market.http().get("/v1/world")
    assert resp.status_code == 200
    kind, body = market.reply(resp)                  # signed by the market
    assert kind == "world" and body["components"]


def test_search_reaches_connected_islands_and_says_what_to_fill(market):
    rng = np.random.default_rng(2)
    ids = _publish_sets(market, rng, [("a", "b", "c"), ("b", "c", "d"), ("a", "c", "d")])
    user = market.client()
    # columns no developer used; near the second developer of each set
    X = rng.normal(size=(300, 3)) + 0.5 * 2.0
    sem = semantic("user", features=("d", "a", "b"))
    res = user.search(X, sem, max_results=6)
    assert res.component_id and len(res.islands) == 3
    assert {m.island_id for m in res.single} == set(res.islands)
    best = res.single[0]
    assert best.learnware_id in {ids[(j, 1)] for j in range(3)}
    for m in res.single:
        assert set(m.covered.values()) <= {"a", "b", "d"}
        assert set(m.covered) | set(m.fill) == set(user.manifest(m.learnware_id)
                                                    .semantic["input_features"])
        assert "c" in m.fill
    assert res.mixture is not None and set(res.mixture_features) <= {"a", "b", "d"}


def test_search_by_alias_and_feature_map(market):
    rng = np.random.default_rng(3)
    dev = market.client()
    X = rng.normal(size=(200, 3))
    info = {"b": {"description": "the second measurement", "aliases": ["beta_col"]}}
    dev.publish(fitted_ridge(X, X.sum(1)), X, semantic("toy", features=("a", "b", "c"),
                                                      feature_info=info), k=10)
    user = market.client()
    sem = semantic("user", features=("A", "beta_col", "mine"), feature_map={"mine": "c"})
    res = user.search(rng.normal(size=(120, 3)), sem)
    assert res.single and res.single[0].covered == {"a": "A", "b": "beta_col", "c": "mine"}
    assert res.single[0].fill == []
    by = {(m["feature"], m["by"]) for m in res.matches}
    assert {("A", "name"), ("beta_col", "alias"), ("mine", "map")} <= by
    # the island key ignores feature_info
    assert island_key(semantic("t", feature_info=info)) == island_key(semantic("t"))


def test_exact_island_alone_keeps_the_one_island_search(market):
    rng = np.random.default_rng(4)
    _publish_sets(market, rng, [("a", "b", "c")])
    user = market.client()
    res = user.search(rng.normal(size=(120, 3)), semantic("u", features=("a", "b", "c")))
    assert res.component_id is None and res.single and res.single[0].island_id is None


def test_world_search_refuses_a_requirement_of_the_wrong_width(market):
    from protocol.encoding import encode_array
    from .helpers import error_body, signed_envelope
    rng = np.random.default_rng(5)
    _publish_sets(market, rng, [("a", "b", "c"), ("b", "c", "d")], n_per=1)
    user = market.client()
    q = {"data_type": "table", "task_type": "regression", "input_features": ["a", "b"],
         "target": "y", "objective": "rmse"}
    req = {"z": encode_array(np.zeros((2, 3))), "beta": encode_array(np.array([0.5, 0.5])),
           "gamma": 0.5, "n_features": 3}
    data = signed_envelope(user.identity, "world_search",
                           {"semantic": q, "requirement": req, "max_results": 3}, to=market)
    resp = market.http().post("/v1/search/world", content=data)
    assert error_body(market, resp)["field"] == "requirement.z"


def test_world_follows_publish_and_withdraw_and_is_rebuilt_from_storage(market):
    rng = np.random.default_rng(6)
    dev = market.client()
    X = rng.normal(size=(200, 3))
    a = dev.publish(fitted_ridge(X, X.sum(1)), X, semantic("t", features=("a", "b", "c")), k=10)
    user = market.client()
    assert [len(c["islands"]) for c in user.world()["components"]] == [1]
    X2 = rng.normal(size=(200, 2))
    b = dev.publish(fitted_ridge(X2, X2.sum(1)), X2, semantic("t", features=("c", "d")), k=10)
    [comp] = user.world()["components"]                      # publishing connected it
    assert len(comp["islands"]) == 2 and comp["connecting_features"] == ["c"]
    # another worker (a fresh Market on the same store) builds the same world from storage
    assert market.sibling().client().world()["components"] == [comp]
    dev.delete(a)
    [comp] = user.world()["components"]                      # the emptied island drops out
    assert comp["islands"] == [user.manifest(b).island_id] and comp["learnware_count"] == 1


def test_world_search_work_is_bounded_and_says_so(market, monkeypatch):
    from market_server import world_search
    rng = np.random.default_rng(7)
    _publish_sets(market, rng, [("a", "b", "c"), ("b", "c", "d")], n_per=3)
    user = market.client()
    sem = semantic("user", features=("a", "b", "d"))
    X = rng.normal(size=(200, 3))
    full = user.search(X, sem, max_results=10)
    assert len(full.single) == 6 and not full.message
    # room for about two learnwares: the island sharing most features comes first
    monkeypatch.setattr(world_search, "WORK_BUDGET", 2 * (20 * 10 + 100) + 50)
    res = user.search(X, sem, max_results=10)
    assert 1 <= len(res.single) < 6 and "not evaluated" in res.message
