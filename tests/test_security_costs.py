"""The last cheap requests that cost the market seconds (issue 13, "worst cheap request").

* Anchor profiles are bounded (``max_profile_learnwares``: the learnwares with the smallest
  sha256 of their id, a subset a publish changes by at most one), updated rather than rebuilt,
  built once however many requests arrive together, and a model that fails at profile time is
  left out instead of switching off the island's anchors.
* The publish check's sandbox CPU budget is proportional to what the client sent
  (``sandbox_cpu_base_seconds + sandbox_cpu_seconds_per_mb x MB``, at most
  ``sandbox_cpu_seconds``): a few-KB model slow at predict time is refused within about the
  base budget, a large honest forest still publishes.
"""
from __future__ import annotations

import hashlib
import logging
import threading
import time

import numpy as np
import pytest
from sklearn.ensemble import RandomForestRegressor
from sklearn.linear_model import Ridge

from protocol.identity import Identity
from market_server import anchors
from market_server.profiles import profile_subset
from market_server.storage import learnware_public_id
from tests.helpers import (blob, count_rows, detail_codes, error_body, linear_task,
                           publish_envelope, publish_parts, query, semantic, stored_blobs)
from benchmarks.hostile_models import nested_sum_gpr

SEM = semantic("profile costs", features=("a", "b", "c"))


def _market(env):
    return env.app.extensions["learnware_market"].market


def _publish_island(env, n: int, seed: int = 0, sem=SEM) -> list[str]:
    """n learnwares in a few regimes (distinct centres and functions)."""
    rng = np.random.default_rng(seed)
    dev = env.client()
    ids = []
    for i in range(n):
        X = blob(rng, (3.0 * (i % 4), 0.0, 0.0), n=60)
        y = linear_task(rng, X, ((1, -1, 2), (-2, 1, 0), (0, 3, -1), (1, 1, 1))[i % 4])
        ids.append(dev.publish(Ridge().fit(X, y), X, sem, k=5))
    return ids


def _by_hash(ids, cap):
    return sorted(sorted(ids, key=lambda i: hashlib.sha256(i.encode()).digest())[:cap],
                  key=lambda i: int(i.split("-")[1]))


# ------------------------------------------------------------------------- the bounded subset
def test_profile_subset_is_the_smallest_hashes_and_moves_by_one_per_publish():
    live = list(range(1, 501))
    sub = profile_subset(live, set(), 64)
    assert [learnware_public_id(p) for p in sub] == _by_hash(
        [learnware_public_id(p) for p in live], 64)
    for new in range(501, 531):  # each publish: at most one joins, at most one leaves
        live.append(new)
        nxt = profile_subset(live, set(), 64)
        assert len(set(nxt) - set(sub)) <= 1 and len(set(sub) - set(nxt)) <= 1
        assert len(nxt) == 64
        sub = nxt
    # an excluded (failed) learnware gives its place to the next one by hash
    gone = learnware_public_id(sub[0])
    assert len(profile_subset(live, {gone}, 64)) == 64 and sub[0] not in profile_subset(
        live, {gone}, 64)


def test_profile_over_an_island_larger_than_the_cap_is_the_cap_subset_and_stable(make_market):
    env = make_market(max_profile_learnwares=5)
    ids = _publish_island(env, 9)
    market = _market(env)
    island = market.island_for(SEM)
    prof = market.profile(island)
    assert prof.ids == _by_hash(ids, 5)
    assert market.profiles.builds == 1
    answer = market.anchor_set({"semantic": query(SEM), "max_anchors": 3})
    assert set(answer["anchors"]) <= set(prof.ids) and len(answer["anchors"]) == 3
    # one more publish: the subset changes by at most one learnware, without a rebuild
    ids += _publish_island(env, 1, seed=7)
    prof2 = market.profile(market.island_for(SEM))
    assert prof2.ids == _by_hash(ids, 5)
    assert len(set(prof2.ids) ^ set(prof.ids)) <= 2
    assert market.profiles.builds == 1
    # the updated profile is the profile a rebuild over the same subset gives
    rows = market.store.learnwares_by_pks([int(i.split("-")[1]) for i in prof2.ids])
    fresh = anchors.build_island_profile(market._learnware_arrays(rows), "rmse", "regression",
                                         random_state=0)
    assert fresh.ids == prof2.ids
    np.testing.assert_allclose(prof2.loss, fresh.loss, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(prof2.behaviour, fresh.behaviour, rtol=1e-9, atol=1e-12)


def test_a_small_island_localises_exactly_as_before(make_market):
    """Under the cap the profile is the one the whole island gives, as before the bound."""
    env = make_market()
    ids = _publish_island(env, 8, seed=3)
    market = _market(env)
    prof = market.profile(market.island_for(SEM))
    rows = market.store.island_learnwares(market.island_for(SEM).pk)
    whole = anchors.build_island_profile(market._learnware_arrays(rows), "rmse", "regression",
                                         random_state=0)
    assert prof.ids == whole.ids == ids
    assert np.array_equal(prof.loss, whole.loss) and np.array_equal(prof.behaviour,
                                                                     whole.behaviour)
    answer = market.anchor_set({"semantic": query(SEM), "max_anchors": 4})
    assert answer["anchors"] == anchors.select_anchors(whole, max_anchors=4)
    # the user of regime 1 (centre (3, 0, 0), w = (-2, 1, 0)) is localised in regime 1
    rng = np.random.default_rng(11)
    X = blob(rng, (3.0, 0.0, 0.0), n=12)
    y = linear_task(rng, X, (-2, 1, 0))
    result = env.client().localize(X, y, SEM)
    assert ids.index(result.single[0].learnware_id) % 4 == 1


# ------------------------------------------------------------------- failures are not fatal
def _overflowing_ridge(X, y):
    """Finite on its own inputs (|a| < ~17), Inf beyond: passes the publish check (samples of
    its own spec), fails on the other learnwares' samples at profile time."""
    model = Ridge().fit(X, y)
    model.coef_ = np.array([1e307, 0.0, 0.0])
    model.intercept_ = 0.0
    return model


def test_a_model_failing_at_profile_time_is_left_out_and_anchors_still_work(make_market,
                                                                            caplog):
    env = make_market()
    ids = _publish_island(env, 6, seed=5)
    rng = np.random.default_rng(6)
    X = blob(rng, (0.0, 0.0, 0.0), n=60, spread=0.5)
    bad = env.client().publish(_overflowing_ridge(X, X.sum(1)), X, SEM, k=5)
    far = blob(rng, (40.0, 0.0, 0.0), n=60)  # a regime far along a: the bad model overflows
    ids.append(env.client().publish(Ridge().fit(far, far.sum(1)), far, SEM, k=5))
    market = _market(env)
    with caplog.at_level(logging.WARNING, logger="market_server"):
        answer = market.anchor_set({"semantic": query(SEM), "max_anchors": 4})
    assert len(answer["anchors"]) == 4 and bad not in answer["anchors"]
    prof = market.profile(market.island_for(SEM))
    assert prof.ids == ids and bad not in prof.ids
    assert any(bad in r.getMessage() and "left out" in r.getMessage() for r in caplog.records)
    # remembered: the next publish updates the profile without trying the failed model again
    ids += _publish_island(env, 1, seed=8)
    builds = market.profiles.builds
    assert market.profile(market.island_for(SEM)).ids == ids
    assert market.profiles.builds == builds
    # and a user is localised end to end
    Xu = blob(rng, (3.0, 0.0, 0.0), n=12)
    result = env.client().localize(Xu, linear_task(rng, Xu, (-2, 1, 0)), SEM)
    assert result.single and bad not in [s.learnware_id for s in result.single]


# ---------------------------------------------------------------------- one build at a time
def test_concurrent_anchor_requests_build_the_profile_once(make_market, monkeypatch):
    env = make_market()
    _publish_island(env, 5, seed=9)
    market = _market(env)
    calls = []
    real = anchors.build_island_profile

    def counting(*args, **kwargs):
        calls.append(1)
        time.sleep(0.3)  # long enough for every request to arrive during the build
        return real(*args, **kwargs)

    monkeypatch.setattr(anchors, "build_island_profile", counting)
    barrier = threading.Barrier(6)
    answers, errors = [], []

    def ask():
        try:
            barrier.wait()
            answers.append(market.anchor_set({"semantic": query(SEM), "max_anchors": 3}))
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=ask) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert len(answers) == 6 and len({tuple(a["anchors"]) for a in answers}) == 1
    assert len(calls) == 1


# -------------------------------------------------------------- the publish check's budget
def test_a_small_slow_model_is_refused_within_about_the_base_budget(make_market):
    """A ~100 KB model that passes every file check but is slow at predict time: it gets
    0.5 s + 1 s/MB for load and predict together (not the 20 s maximum), so the publish is
    refused in about a second."""
    data = nested_sum_gpr(12, n_train=3000)
    env = make_market()  # the default budgets
    budget = 0.5 + 1.0 * len(data) / (1 << 20)
    assert len(data) < 200_000 and budget < 1.0
    dev = Identity.generate()
    rng = np.random.default_rng(12)
    X = blob(rng, (0, 0, 0), n=100)
    sem, spec, mb = publish_parts(env.client(dev), X, SEM, model_bytes=data)
    t0 = time.perf_counter()
    r = env.http().post("/v1/learnwares", content=publish_envelope(dev, sem, spec, mb, to=env))
    elapsed = time.perf_counter() - t0  # >= the worker's CPU time: it is single-threaded
    body = error_body(env, r)
    assert r.status_code == 422 and "model_too_costly" in detail_codes(body), body
    costly = [d for d in body["details"] if d["code"] == "model_too_costly"]
    assert "0." in costly[0]["message"]  # names the sub-second budget it overran
    assert elapsed < 6.0  # generous (a loaded machine); before: 20 s of CPU, then refused
    assert count_rows(env.store, "learnwares") == 0 and stored_blobs(env) == set()


def test_a_large_honest_forest_still_publishes(make_market):
    rng = np.random.default_rng(13)
    X = blob(rng, (0, 0, 0), n=1500)
    y = linear_task(rng, X, (1, -1, 2)) + np.sin(3 * X[:, 0])
    forest = RandomForestRegressor(150, random_state=0, n_jobs=1).fit(X, y)
    env = make_market()
    lid = env.client().publish(forest, X, SEM, k=10)
    assert env.client().download(lid).model.predict(X[:4]).shape == (4,)
    assert env.client().manifest(lid)["model_size"] > 1 << 20  # MBs: far past the base's size


def test_the_sandbox_takes_a_budget_per_call():
    """A per-call budget below the sandbox's: overrun is refused and names that budget."""
    from sklearn.neighbors import KNeighborsRegressor
    from protocol.artefact import sha256_hex
    from protocol.errors import ModelTooCostlyError
    from learnware_core.modelfile import dump_model
    from market_server.sandbox import ModelSandbox

    rng = np.random.default_rng(14)
    Xt = rng.normal(size=(20_000, 10))
    model = dump_model(KNeighborsRegressor(algorithm="brute").fit(Xt, Xt[:, 0]))
    box = ModelSandbox(cpu_seconds=20.0)
    try:
        proxy = box.load(sha256_hex(model), model, cpu_seconds=5.0)
        assert proxy.predict(rng.normal(size=(10, 10))).shape == (10,)
        with pytest.raises(ModelTooCostlyError) as err:
            box.call(proxy.sha256, model, "predict", rng.normal(size=(60_000, 10)),
                     cpu_seconds=0.2)
        assert err.value.details == {"resource": "cpu_seconds", "limit": 0.2}
    finally:
        box.close()
