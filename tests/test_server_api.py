"""The market's HTTP API end to end, through the SDK and raw requests (SQLite and PostgreSQL)."""
from __future__ import annotations

import re

import numpy as np
import pytest

from protocol.artefact import sha256_hex
from protocol.errors import LearnwareError
from learnware_core.semantic import island_key

from tests.helpers import blob, fitted_ridge, linear_task, query, semantic

# Five well-separated training distributions (unit spread, >= 8 units apart) on one island.
CENTERS = [(0, 0, 0), (8, 0, 0), (0, 8, 0), (0, 0, 8), (8, 8, 8)]
WEIGHTS = [(1, 2, 3), (-1, 0, 2), (3, -2, 1), (0, 1, -1), (2, 2, -3)]
NAMES = ["Austin housing prices", "Boston crime rates", "Chicago weather forecast",
         "Denver traffic volume", "Seattle rainfall totals"]
SEM = semantic("toy task")


def populate(env, seed: int = 0, n: int = 5):
    """Publish one learnware per center (the first ``n``), each by its own developer."""
    rng = np.random.default_rng(seed)
    out = []
    for center, w, name in list(zip(CENTERS, WEIGHTS, NAMES))[:n]:
        X = blob(rng, center, n=200)
        y = linear_task(rng, X, w)
        model = fitted_ridge(X, y)
        dev = env.client()
        lid = dev.publish(model, X, dict(SEM, name=name, tags=[name.split()[0].lower()]))
        out.append({"id": lid, "X": X, "model": model, "dev": dev, "center": center,
                    "name": name})
    return out


@pytest.fixture(scope="module")
def populated(make_module_market):
    """One market per backend with the five learnwares, shared by the read-only tests (and
    by the islands test, which only adds a learnware on another island)."""
    env = make_module_market()
    return env, populate(env)


def test_publish_manifest_and_download(populated):
    env, lws = populated
    assert [lw["id"] for lw in lws] == [f"lw-{i}" for i in range(1, 6)]
    user = env.client()
    lw = lws[2]
    man = user.manifest(lw["id"])
    assert man["learnware_id"] == lw["id"]
    assert man["developer"] == lw["dev"].identity.public_key_b64
    assert man["deleted"] is False
    assert man["semantic"]["name"] == lw["name"]
    assert man["spec"]["n_features"] == 3

    # Download by id through the SDK: the model predicts exactly like the published one.
    got = user.download(lw["id"])
    Xq = np.random.default_rng(5).normal(size=(7, 3))
    np.testing.assert_allclose(got.model.predict(Xq), lw["model"].predict(Xq))
    assert user.model_transfers == 1

    # By id and by sha256 over raw HTTP: the same bytes, hashing to the manifest's sha256.
    with env.http() as http:
        by_id = http.get(f"/v1/learnwares/{lw['id']}/model")
        by_sha = http.get(f"/v1/models/{man['model_sha256']}")
    assert by_id.status_code == by_sha.status_code == 200
    assert by_id.content == by_sha.content
    assert sha256_hex(by_id.content) == man["model_sha256"]
    assert len(by_id.content) == man["model_size"]
    assert by_sha.headers["X-Model-Sha256"] == man["model_sha256"]
    # Another learnware's file is another file.
    other = user.manifest(lws[0]["id"])["model_sha256"]
    assert other != man["model_sha256"]


def test_search_ranks_the_source_distribution_first(populated):
    env, lws = populated
    user = env.client()
    rng = np.random.default_rng(42)
    for j in (0, 2, 4):  # fresh samples from three of the training distributions
        res = user.search(blob(rng, CENTERS[j], n=200), SEM, max_results=5)
        assert res.island_id == "isl-1"
        ranked = [m.learnware_id for m in res.single]
        assert ranked[0] == lws[j]["id"], (j, ranked)
        assert len(ranked) == 5 and len(set(ranked)) == 5
        mmds = [m.mmd for m in res.single]
        assert mmds == sorted(mmds)
        # the match is clearly better than the runner-up, not a tie
        assert mmds[0] < 0.2 * mmds[1]
        assert res.mixture is not None
        assert abs(sum(res.mixture.weights) - 1.0) < 1e-6
        assert all(w > 0 for w in res.mixture.weights)
        assert res.mixture.learnware_ids[0] == lws[j]["id"]


def test_mixture_of_two_sources(populated):
    env, lws = populated
    rng = np.random.default_rng(7)
    X = np.vstack([blob(rng, CENTERS[1], n=150), blob(rng, CENTERS[3], n=150)])
    res = env.client().search(X, SEM)
    mix = res.mixture
    assert mix is not None
    assert abs(sum(mix.weights) - 1.0) < 1e-6
    w = dict(zip(mix.learnware_ids, mix.weights))
    assert set(w) >= {lws[1]["id"], lws[3]["id"]}, w
    assert 0.3 < w[lws[1]["id"]] < 0.7 and 0.3 < w[lws[3]["id"]] < 0.7, w
    # a blend is explained better by the mixture than by any single learnware
    assert mix.mmd < 0.5 * res.single[0].mmd


def test_absolute_fit_labels(populated):
    env, lws = populated
    user = env.client()
    rng = np.random.default_rng(3)
    near = user.search(blob(rng, CENTERS[1], n=200), SEM)
    assert near.single[0].learnware_id == lws[1]["id"]
    assert near.single[0].fit == "good"
    assert near.baseline_mmd is not None and near.baseline_mmd > 0
    far = user.search(blob(rng, (40, 40, 40), n=200), SEM)
    assert far.single, "a far requirement still gets a ranking"
    assert far.single[0].fit == "poor", far.single[0]
    assert all(m.fit == "poor" for m in far.single)
    assert near.single[0].score > far.single[0].score


def test_islands_list_get_and_by_key(populated):
    env, lws = populated
    user = env.client()
    other_sem = semantic("two-feature task", features=("u", "v"))
    rng = np.random.default_rng(11)
    X2 = blob(rng, (0, 0), n=100)
    user.publish(fitted_ridge(X2, X2 @ [1.0, -1.0]), X2, other_sem)

    islands = {i["island_id"]: i for i in user.islands()}
    assert set(islands) == {"isl-1", "isl-2"}
    assert islands["isl-1"]["learnware_count"] == 5
    assert islands["isl-2"]["learnware_count"] == 1
    assert islands["isl-1"]["semantic"] == query(SEM)
    assert islands["isl-2"]["n_features"] == 2
    assert islands["isl-1"]["semantic_key"] == island_key(SEM)
    assert islands["isl-1"]["kernel"]["gamma"] == pytest.approx(1 / 6)

    by_key = user.island(SEM)
    assert by_key["island_id"] == "isl-1" and by_key["learnware_count"] == 5
    assert user.island(other_sem)["island_id"] == "isl-2"
    # the name/description are not part of the island: another name, same island
    assert user.island(dict(SEM, name="anything else"))["island_id"] == "isl-1"
    # another target is another island, which does not exist yet
    assert user.island(dict(SEM, target="z")) is None

    with env.http() as http:
        _, got = env.reply(http.get("/v1/islands/isl-2"))
        assert got["island_id"] == "isl-2" and got["semantic"] == query(other_sem)
        r = http.get("/v1/islands/isl-3")
        assert r.status_code == 404 and env.reply(r)[1]["code"] == "not_found"
        r = http.get(f"/v1/islands/by-key/{'0' * 64}")
        assert r.status_code == 404 and env.reply(r)[1]["code"] == "not_found"


def test_text_search_tolerates_case_and_typos(populated):
    env, lws = populated
    user = env.client()
    ids = {lw["name"]: lw["id"] for lw in lws}

    def top(q):
        hits = user.text_search(q)
        return [h["learnware_id"] for h in hits]

    assert top("Austin housing prices")[0] == ids["Austin housing prices"]
    assert top("HOUSING")[0] == ids["Austin housing prices"]          # case
    assert top("housng")[0] == ids["Austin housing prices"]           # missing letter
    assert top("bostn CRIME")[0] == ids["Boston crime rates"]        # both
    assert top("seatle rainfal")[0] == ids["Seattle rainfall totals"]
    assert top("Chicgo wether")[0] == ids["Chicago weather forecast"]
    assert top("xylophone quantum") == []
    hits = user.text_search("traffic", limit=1)
    assert len(hits) == 1 and hits[0]["learnware_id"] == ids["Denver traffic volume"]
    assert 0 < hits[0]["score"] <= 1


def test_delete_tombstones(market):
    env, lws = market, populate(market, n=3)
    victim = lws[2]
    user = env.client()
    rng = np.random.default_rng(9)
    Xu = blob(rng, CENTERS[2], n=200)
    assert user.search(Xu, SEM).single[0].learnware_id == victim["id"]

    # Someone else cannot delete it.
    with pytest.raises(LearnwareError) as exc:
        user.delete(victim["id"])
    assert exc.value.code == "forbidden" and exc.value.status == 403
    assert user.manifest(victim["id"])["deleted"] is False

    assert victim["dev"].delete(victim["id"]) is True
    man = user.manifest(victim["id"], include_withdrawn=True)
    assert man["deleted"] is True and man["learnware_id"] == victim["id"]
    res = user.search(Xu, SEM)
    returned = {m.learnware_id for m in res.single} | set(res.mixture.learnware_ids)
    assert victim["id"] not in returned
    assert len(res.single) == 2
    assert victim["id"] not in {h["learnware_id"] for h in user.text_search("Chicago weather")}
    assert user.island(SEM)["learnware_count"] == 2

    with pytest.raises(LearnwareError) as exc:
        victim["dev"].delete(victim["id"])
    assert exc.value.code == "gone" and exc.value.status == 410

    # The next publish gets a new id, never the tombstoned one (nor any other used one).
    X = blob(rng, CENTERS[2], n=200)
    new_id = victim["dev"].publish(fitted_ridge(X, X @ [1.0, 1.0, 1.0]), X, SEM)
    used = {lw["id"] for lw in lws}
    assert new_id not in used
    assert int(new_id.split("-")[1]) > max(int(i.split("-")[1]) for i in used)
    assert user.manifest(victim["id"], include_withdrawn=True)["deleted"] is True
    assert user.search(Xu, SEM).single[0].learnware_id == new_id


def _openapi_path(rule: str) -> str:
    return re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule)


def test_openapi_lists_every_route(market):
    with market.http() as http:
        r = http.get("/openapi.json")
    assert r.status_code == 200
    doc = r.json()
    assert doc["openapi"].startswith("3.")
    documented = {(path, method.upper()) for path, ops in doc["paths"].items() for method in ops}
    registered = set()
    for rule in market.app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            registered.add((_openapi_path(rule.rule), method))
    assert registered, "no routes registered?"
    assert registered - documented == set(), "routes missing from /openapi.json"
    assert documented - registered == set(), "/openapi.json documents routes that do not exist"
    # every path parameter is declared
    for path, ops in doc["paths"].items():
        names = set(re.findall(r"{([^}]+)}", path))
        for op in ops.values():
            declared = {p["name"] for p in op.get("parameters", []) if p.get("in") == "path"}
            assert declared == names, (path, declared, names)


def test_healthz_and_market_key(market):
    with market.http() as http:
        h = http.get("/healthz")
        m = http.get("/v1/market")
    assert h.status_code == 200 and h.json()["status"] == "ok"
    assert m.status_code == 200
    assert h.json()["market_key_id"] == m.json()["market_key_id"] == market.state.identity.key_id
    assert m.json()["market_key"] == market.market_key


def test_search_without_island_or_requirement(market):
    user = market.client()
    # no island yet: a clear message, no ranking
    res = user.search(None, SEM)
    assert res.island_id is None and res.single == [] and res.mixture is None
    assert "no island" in res.message
    lws = populate(market, n=3)
    # no requirement: learnwares listed, fit unknown
    res = user.search(None, SEM, max_results=2)
    assert [m.learnware_id for m in res.single] == [lw["id"] for lw in lws[:2]]
    assert all(m.fit == "unknown" for m in res.single)


def test_publish_a_spec_prepared_beforehand(market):
    """``island_spec`` then ``publish(..., spec=)``: the fit can happen before (and apart from)
    the upload; a spec under the wrong kernel is recomputed from X, or refused without X."""
    from client_sdk import RKMESpec
    env = market
    rng = np.random.default_rng(77)
    client = env.client()
    X1, X2 = blob(rng, (0, 0, 0), n=150), blob(rng, (2, 0, 1), n=150)
    sem = dict(SEM)
    spec = client.island_spec(X1, sem)  # a new island: the declared scales are filled in
    assert "feature_scales" in spec.semantic and sem == SEM  # ... in its own copy
    assert client.publish(fitted_ridge(X1, linear_task(rng, X1, (1, 2, 3))), None, sem,
                          spec=spec) == "lw-1"
    sem2 = dict(SEM)
    spec2 = client.island_spec(X2, sem2)
    assert "feature_scales" not in spec2.semantic
    assert client.publish(fitted_ridge(X2, linear_task(rng, X2, (3, 2, 1))), None, sem2,
                          spec=spec2) == "lw-2"
    bad = RKMESpec.fit(X2, k=20, gamma=0.9, random_state=0)
    model = fitted_ridge(X2, linear_task(rng, X2, (0, 2, 1)))
    with pytest.raises(LearnwareError) as exc:
        client.publish(model, None, sem2, spec=bad)
    assert exc.value.code == "kernel_mismatch"
    assert client.publish(model, X2, sem2, spec=bad) == "lw-3"  # recomputed from X
