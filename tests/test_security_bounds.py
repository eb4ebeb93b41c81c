"""Issue 13 items 3, 8 and 9: every number of the protocol is bounded (a search requirement
cannot cost minutes, a metrics report cannot overflow the market), a market answer that fails to
encode is the market's 500 (never the client's 400), and withdrawn learnwares keep their record
but are no longer served (developer or operator withdraws, with a reason)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import sqlalchemy as sa

from client_sdk import Identity, RKMESpec
from protocol.encoding import decode_array, encode_array
from protocol.errors import DataError, WithdrawnError
from protocol.limits import MAX_METRIC, MAX_ROWS, MAX_SPEC_POINTS
from learnware_core.modelfile import dump_model
from tests.helpers import (blob, error_body, fitted_ridge, linear_task, publish_envelope,
                           publish_parts, search_envelope, semantic, signed_envelope)
from benchmarks.hostile import snapshot

SEM = semantic("bounds", tags=["security"])


def _post(env, path, data, method="POST"):
    with env.http() as http:
        return http.request(method, path, content=data,
                            headers={"Content-Type": "application/json"})


def _island(env, n: int = 2, sem: dict = SEM, seed: int = 3):
    """A developer, the ids of ``n`` learnwares published on one island, and the island's info."""
    dev = env.client()
    rng = np.random.default_rng(seed)
    ids = []
    for i in range(n):
        X = blob(rng, (3 * i, 0, 0), n=120)
        ids.append(dev.publish(fitted_ridge(X, linear_task(rng, X, (1, 2, i))), X, sem))
    return dev, ids, dev.island(sem)


def _requirement(info: dict, k: int, seed: int = 0) -> dict:
    """k reduced points under the island's kernel (built directly: the SDK fits at most the cap)."""
    scales = decode_array(info["kernel"]["scales"], field="scales")
    z = np.random.default_rng(seed).normal(size=(k, len(scales)))
    return {"z": encode_array(z), "beta": encode_array(np.full(k, 1.0 / k)),
            "gamma": info["kernel"]["gamma"], "scales": info["kernel"]["scales"],
            "n_features": len(scales)}


# --------------------------------------------------------------------------------------------
# item 3: the size of a requirement
# --------------------------------------------------------------------------------------------
def test_a_40000_point_requirement_is_refused_at_the_schema(market):
    env = market
    _, _, info = _island(env)
    before = snapshot(env)
    r = _post(env, "/v1/search", search_envelope(Identity.generate(), SEM,
                                                 _requirement(info, 40_000), validate=False, to=env))
    body = error_body(env, r)
    assert r.status_code == 422 and body["code"] == "schema_violation", body
    assert body["field"] in ("requirement.z", "requirement.beta"), body
    assert str(MAX_SPEC_POINTS) in body["message"]
    # one point past the cap is refused too; the cap itself is served
    r = _post(env, "/v1/search", search_envelope(Identity.generate(), SEM,
                                                 _requirement(info, MAX_SPEC_POINTS + 1),
                                                 validate=False, to=env))
    assert error_body(env, r)["field"] in ("requirement.z", "requirement.beta")
    r = _post(env, "/v1/search", search_envelope(Identity.generate(), SEM,
                                                 _requirement(info, MAX_SPEC_POINTS), to=env))
    assert r.status_code == 200 and env.reply(r)[0] == "search_result", r.content[:300]
    assert snapshot(env) == before


def test_the_sdk_fits_at_most_the_cap_and_its_default_search_is_admitted(market):
    env = market
    _, _, _ = _island(env)
    X = np.random.default_rng(1).normal(size=(600, 3))
    with pytest.raises(DataError) as exc:
        RKMESpec.fit(X, k=MAX_SPEC_POINTS + 1)
    assert exc.value.field == "k"
    assert len(RKMESpec.fit(X, k=MAX_SPEC_POINTS).beta) <= MAX_SPEC_POINTS
    res = env.client().search(X, SEM)  # DEFAULT_K
    assert res.island_id is not None and res.single


def test_a_published_spec_past_the_cap_is_refused_at_the_schema(market):
    env = market
    dev, _, info = _island(env)
    rng = np.random.default_rng(5)
    X = blob(rng, (1, 1, 1), n=120)
    sem, _, model = publish_parts(dev, X, SEM, model=fitted_ridge(X, X @ [1.0, 0.0, 0.0]))
    spec = _requirement(info, MAX_SPEC_POINTS + 1)
    r = _post(env, "/v1/learnwares", publish_envelope(dev.identity, sem, spec, model,
                                                      validate=False, to=env))
    body = error_body(env, r)
    assert body["code"] == "schema_violation" and body["field"] in ("spec.z", "spec.beta")


def test_a_search_computes_the_requirements_self_term_once(market, monkeypatch):
    """The k_q x k_q kernel sum of the requirement with itself was computed by the pruning and
    again by the mixture (and again on the fallback paths)."""
    import learnware_core.kernels as kernels_mod
    import market_server.embedding_stack as stack_mod
    import market_server.search as search_mod
    env = market
    _, _, info = _island(env, n=3)
    req = _requirement(info, 300, seed=2)
    k_q = 300
    calls = []
    real = kernels_mod.embedding_inner

    def counting(z1, b1, z2, b2, *args, **kw):
        if np.shape(z1)[0] == k_q and np.shape(z2)[0] == k_q:
            calls.append(1)
        return real(z1, b1, z2, b2, *args, **kw)

    monkeypatch.setattr(search_mod, "embedding_inner", counting)
    monkeypatch.setattr(stack_mod, "embedding_inner", counting)
    r = _post(env, "/v1/search", search_envelope(Identity.generate(), SEM, req, to=env))
    assert r.status_code == 200, r.content[:300]
    assert env.reply(r)[1]["single"]
    assert len(calls) == 1


# --------------------------------------------------------------------------------------------
# item 8: bounded numbers, and the market's own encoding failures
# --------------------------------------------------------------------------------------------
def _report(info_id: str, ids: list[str], value: float, n_rows: int, metric: str = "rmse"):
    return {"island_id": info_id, "metric": metric, "n_rows": n_rows,
            "values": {i: value for i in ids}, "round": 1, "max_results": 5}


@pytest.mark.parametrize("n_rows,value,field", [
    (10**400, 0.5, "n_rows"), (MAX_ROWS + 1, 0.5, "n_rows"), (30, 1e100, "values.{lid}"),
    (30, MAX_METRIC * 1.001, "values.{lid}"), (30, -1e100, "values.{lid}")])
def test_metric_reports_past_the_bounds_are_refused_naming_the_field(market, n_rows, value,
                                                                     field):
    env = market
    _, ids, info = _island(env)
    before = snapshot(env)
    r = _post(env, "/v1/localize", signed_envelope(
        Identity.generate(), "metrics_report", _report(info["island_id"], ids[:1], value,
                                                       n_rows), to=env))
    body = error_body(env, r)
    assert body["code"] == "schema_violation" and body["field"] == field.format(lid=ids[0])
    assert snapshot(env) == before


@pytest.mark.parametrize("n_rows,value", [(1, 0.0), (1, MAX_METRIC), (MAX_ROWS, 0.0),
                                          (MAX_ROWS, MAX_METRIC), (2, 1e-300)])
def test_localize_at_the_bounds_answers_with_finite_numbers(make_module_market, n_rows, value):
    env = _localize_market(make_module_market)
    env, ids, info = env
    r = _post(env, "/v1/localize", signed_envelope(
        Identity.generate(), "metrics_report", _report(info["island_id"], ids, value, n_rows),
        validate=True, to=env))
    assert r.status_code == 200, r.content[:500]
    mtype, body = env.reply(r)  # validated against the (bounded) schema by the reader
    assert mtype == "localization_result" and body["single"]
    for m in body["single"]:
        assert math.isfinite(m["estimate"]) and 0.0 <= m["estimate"] <= MAX_METRIC
        assert math.isfinite(m["uncertainty"])


_LOCALIZE: dict = {}


def _localize_market(make_module_market):
    key = id(make_module_market)
    if key not in _LOCALIZE:
        env = make_module_market()
        _, ids, info = _island(env, n=3)
        _LOCALIZE[key] = (env, ids, info)
    return _LOCALIZE[key]


def test_an_answer_the_market_cannot_encode_is_its_500_not_the_clients_400(market,
                                                                          monkeypatch):
    env = market
    _, ids, info = _island(env)
    monkeypatch.setattr(env.state.market, "search",
                        lambda body: {"island_id": None, "single": [], "mixture": None,
                                      "message": "x", "baseline_mmd": float("nan")})
    r = _post(env, "/v1/search", search_envelope(Identity.generate(), SEM, to=env))
    assert r.status_code == 500, r.content[:300]
    mtype, body = env.reply(r)
    assert mtype == "error" and body["code"] == "internal_error", body
    assert "market bug" in body["message"]
    # the SDK sees a typed error with the status
    with pytest.raises(Exception) as exc:
        env.client().search(None, SEM)
    assert getattr(exc.value, "code", None) == "internal_error"
    assert getattr(exc.value, "status", None) == 500


# --------------------------------------------------------------------------------------------
# item 9: withdrawal
# --------------------------------------------------------------------------------------------
def _get(env, path):
    with env.http() as http:
        return http.get(path)


def _withdrawn_everywhere(env, lid: str, sha: str, by: str, reason: str) -> None:
    r = _get(env, f"/v1/learnwares/{lid}")
    assert r.status_code == 200
    man = env.reply(r)[1]
    assert man["deleted"] is True and man["learnware_id"] == lid
    assert man["withdrawn"]["by"] == by and man["withdrawn"]["reason"] == reason
    assert isinstance(man["withdrawn"]["at"], int)
    for path in (f"/v1/learnwares/{lid}/model", f"/v1/models/{sha}"):
        r = _get(env, path)
        body = error_body(env, r)
        assert r.status_code == 410 and body["code"] == "withdrawn", (path, body)
        assert reason in body["message"] and by in body["message"]


def test_a_developer_withdraws_with_a_reason_and_the_model_is_no_longer_served(market):
    env = market
    dev, ids, _ = _island(env)
    user = env.client()
    before = user.download(ids[0])  # fills the user's model cache
    assert before.model is not None and user.model_transfers == 1
    sha = env.state.market.manifest(ids[0])["model_sha256"]
    assert dev.delete(ids[0], reason="trained on mislabelled rows") is True
    _withdrawn_everywhere(env, ids[0], sha, "developer", "trained on mislabelled rows")
    # the SDK says so, and does not fall back on the cached model file
    for call in (user.download, user.manifest):
        with pytest.raises(WithdrawnError) as exc:
            call(ids[0])
        assert exc.value.code == "withdrawn" and "mislabelled" in exc.value.message
    assert user.model_transfers == 1
    assert user.manifest(ids[0], include_withdrawn=True)["withdrawn"]["by"] == "developer"
    # the other learnware is untouched
    assert user.download(ids[1]).model is not None


def test_the_operator_withdraws_any_learnware_and_strangers_cannot(make_market):
    operator = Identity.generate()
    env = make_market(operator_key=operator.public_key_b64)
    _, ids, _ = _island(env)
    before = snapshot(env)
    stranger = env.client()
    with pytest.raises(Exception) as exc:
        stranger.delete(ids[0], reason="I do not like it")
    assert getattr(exc.value, "code", None) == "forbidden" and exc.value.status == 403
    assert snapshot(env) == before
    sha = env.state.market.manifest(ids[1])["model_sha256"]
    assert env.client(operator).delete(ids[1], reason="licence violation reported") is True
    _withdrawn_everywhere(env, ids[1], sha, "operator", "licence violation reported")
    # without a reason, the record says who withdrew it
    assert env.client(operator).delete(ids[0]) is True
    man = env.client().manifest(ids[0], include_withdrawn=True)
    assert man["withdrawn"] == {"reason": "withdrawn by its operator", "by": "operator",
                                "at": man["withdrawn"]["at"]}


def test_no_operator_key_means_only_developers_withdraw(market):
    env = market
    _, ids, _ = _island(env)
    with pytest.raises(Exception) as exc:
        env.client().delete(ids[0])
    assert exc.value.status == 403


def test_a_model_file_shared_with_a_live_learnware_stays_served_by_sha(market):
    env = market
    dev = env.client()
    rng = np.random.default_rng(11)
    X = blob(rng, (0, 0, 0), n=120)
    model_bytes = dump_model(fitted_ridge(X, linear_task(rng, X, (1, 1, 1))))
    other = semantic("bounds other island", target="y2")  # same model bytes, another island
    published = []
    for sem in (SEM, other):
        sem, spec, _ = publish_parts(dev, X, sem, model_bytes=model_bytes)
        r = _post(env, "/v1/learnwares", publish_envelope(dev.identity, sem, spec, model_bytes,
                                                          to=env))
        assert r.status_code == 201, r.content[:300]
        published.append(env.reply(r)[1]["learnware_id"])
    a, b = published
    sha = env.state.market.manifest(a)["model_sha256"]
    assert env.state.market.manifest(b)["model_sha256"] == sha
    dev.delete(a, reason="superseded")
    assert _get(env, f"/v1/models/{sha}").status_code == 200
    assert _get(env, f"/v1/learnwares/{b}/model").status_code == 200
    r = _get(env, f"/v1/learnwares/{a}/model")
    assert r.status_code == 410 and error_body(env, r)["code"] == "withdrawn"
    assert env.client().download(b).model is not None
    # once the live one is withdrawn too, the file is no longer served at all
    dev.delete(b, reason="superseded as well")
    r = _get(env, f"/v1/models/{sha}")
    assert r.status_code == 410 and error_body(env, r)["code"] == "withdrawn"


def test_a_withdrawal_reason_is_bounded(market):
    env = market
    dev, ids, _ = _island(env)
    before = snapshot(env)
    r = _post(env, f"/v1/learnwares/{ids[0]}", signed_envelope(
        dev.identity, "delete", {"learnware_id": ids[0], "reason": "x" * 1001}, to=env),
        method="DELETE")
    body = error_body(env, r)
    assert body["code"] == "schema_violation" and body["field"] == "reason"
    assert snapshot(env) == before


def test_schema_3_databases_get_the_withdrawal_columns(market):
    """A schema-3 database (no withdrawal columns, an earlier tombstone) is migrated: old
    tombstones read as withdrawn by their developer with no reason recorded."""
    from market_server.storage import SCHEMA_VERSION, Store
    env = market
    dev, ids, _ = _island(env)
    dev.delete(ids[0], reason="will be lost: schema 3 had no column for it")
    with env.store.engine.begin() as conn:
        for c in ("withdrawn_reason", "withdrawn_by"):
            conn.execute(sa.text(f"ALTER TABLE learnwares DROP COLUMN {c}"))
        conn.execute(sa.text("DELETE FROM schema_version"))
        conn.execute(sa.text("INSERT INTO schema_version (version, applied_at) VALUES (3, 0)"))
    env.store.dispose()
    cfg = env.config
    store = Store(cfg.resolved_db_url(), blob_store=cfg.resolved_blob_store(),
                  blob_dir=cfg.data_dir / "blobs", db_schema=cfg.db_schema)
    try:
        with store.engine.connect() as conn:
            versions = sorted(r[0] for r in conn.execute(sa.text(
                "SELECT version FROM schema_version")))
        assert versions == [3, SCHEMA_VERSION] and SCHEMA_VERSION >= 4
        w = store.learnware(int(ids[0].split("-")[1])).withdrawn
        assert w["by"] == "developer" and w["reason"] == "no reason recorded"
        assert store.learnware(int(ids[1].split("-")[1])).withdrawn is None
        assert store.tombstone(int(ids[1].split("-")[1]), reason="after the upgrade",
                               by="operator")
        assert store.learnware(int(ids[1].split("-")[1])).withdrawn["reason"] == \
            "after the upgrade"
    finally:
        store.dispose()


def test_lwm_serve_reads_the_operator_key_from_the_flag_or_a_file(tmp_path):
    from market_server.serve import build_parser, config_from_args
    op = Identity.generate()
    args = build_parser().parse_args(["--operator-key", op.public_key_b64])
    assert config_from_args(args).operator_key == op.public_key_b64
    f = tmp_path / "operator.pub"
    f.write_text(op.public_key_b64 + "\n")
    args = build_parser().parse_args(["--operator-key", str(f)])
    assert config_from_args(args).operator_key == op.public_key_b64
    assert config_from_args(build_parser().parse_args([])).operator_key is None
    priv = tmp_path / "operator.pem"
    op.save(priv)
    for bad in (str(priv), "not-a-key"):
        with pytest.raises(SystemExit) as exc:
            config_from_args(build_parser().parse_args(["--operator-key", bad]))
        assert "operator-key" in str(exc.value)
