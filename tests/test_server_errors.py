"""Every bad request gets a signed JSON error with a stable code and the right 4xx, never a 5xx;
refused publishes report every reason at once and leave nothing behind."""
from __future__ import annotations

import json
import time

import numpy as np
import pytest

from client_sdk import Identity
from protocol.artefact import sha256_hex
from protocol.encoding import encode_array
from protocol.envelope import seal
from protocol.errors import LearnwareError

from tests.helpers import (blob, blob_files, count_rows, detail_codes, error_body,
                           fitted_ridge, island_kernel_of, linear_task, publish_envelope, publish_parts, query,
                           seal_request, search_envelope, semantic, stored_blobs)

SEM = semantic("error cases")
RNG_SEED = 0


@pytest.fixture(scope="module")
def shared(make_module_market):
    """A market with one learnware, for the requests that change nothing."""
    env = make_module_market()
    rng = np.random.default_rng(RNG_SEED)
    X = blob(rng, (0, 0, 0), n=120)
    dev = env.client()
    lid = dev.publish(fitted_ridge(X, linear_task(rng, X, (1, 2, 3))), X, SEM)
    return env, lid, X


def _post(env, path, data, method="POST"):
    with env.http() as http:
        return http.request(method, path, content=data,
                            headers={"Content-Type": "application/json"})


def _requirement(env, X):
    spec, _ = env.client().requirement(X, SEM, k=20)
    return spec.to_dict()


# --------------------------------------------------------------------------------------------
# envelopes
# --------------------------------------------------------------------------------------------
def test_unsigned_and_garbage_bodies(shared):
    env, _, _ = shared
    cases = [
        (b"", 401, "unsigned_request"),
        (b"\xff\xfe\x00garbage\x80", 400, "bad_encoding"),
        (b"not json at all", 400, "bad_encoding"),
        (b"[1, 2, 3]", 400, "bad_encoding"),
        # a plain (unsigned) JSON body, as a naive client might send it
        (json.dumps({"semantic": query(SEM), "max_results": 5}).encode(), 400, "bad_encoding"),
        (b'{"v":1,"v":1}', 400, "bad_encoding"),                       # duplicate keys
        (b"[" * 100_000, 400, "bad_encoding"),                           # nesting bomb
        (b'{"x": NaN}', 400, "bad_encoding"),
    ]
    for data, status, code in cases:
        for path in ("/v1/search", "/v1/learnwares", "/v1/anchors", "/v1/localize"):
            r = _post(env, path, data)
            assert r.status_code == status, (path, data[:40], r.status_code, r.content[:200])
            assert error_body(env, r)["code"] == code


def test_envelope_without_signature_or_with_a_foreign_one(shared):
    env, _, X = shared
    me, other = Identity.generate(), Identity.generate()
    raw = json.loads(search_envelope(me, SEM, to=env))
    del raw["sig"]
    r = _post(env, "/v1/search", json.dumps(raw).encode())
    assert r.status_code == 400 and error_body(env, r)["field"] == "sig"
    # signed by one key, claiming to be another
    raw = json.loads(search_envelope(me, SEM, to=env))
    raw["sender"] = other.public_key_b64
    data = json.dumps(raw, sort_keys=True, separators=(",", ":")).encode()
    r = _post(env, "/v1/search", data)
    assert r.status_code == 401 and error_body(env, r)["code"] == "bad_signature"


def test_tampered_envelope(shared):
    env, _, X = shared
    me = Identity.generate()
    data = search_envelope(me, SEM, _requirement(env, X), max_results=5, to=env)
    # A meaningful change that keeps valid JSON and a valid schema: the signature catches it.
    assert b'"max_results":5' in data
    r = _post(env, "/v1/search", data.replace(b'"max_results":5', b'"max_results":6'))
    assert r.status_code == 401 and error_body(env, r)["code"] == "bad_signature"
    # Flip one bit at many positions (inside arrays, names, signature, nonce...): always refused
    # with a 400/401/422, never accepted and never a 5xx.
    positions = np.linspace(1, len(data) - 2, 40).astype(int)
    for pos in positions:
        bad = bytearray(data)
        bad[pos] ^= 0x01
        r = _post(env, "/v1/search", bytes(bad))
        assert r.status_code in (400, 401, 422), (pos, r.status_code, r.content[:200])
        error_body(env, r)
    # the untouched envelope is fine (and was never consumed by the refused copies)
    r = _post(env, "/v1/search", data)
    assert r.status_code == 200, r.content[:300]
    assert env.reply(r)[0] == "search_result"


def test_tampered_publish_changes_nothing(market):
    env = market
    rng = np.random.default_rng(1)
    X = blob(rng, (0, 0, 0), n=120)
    dev = Identity.generate()
    sem, spec, mb = publish_parts(env.client(dev), X, SEM,
                                  model=fitted_ridge(X, linear_task(rng, X, (1, 1, 1))))
    data = publish_envelope(dev, sem, spec, mb, to=env)
    i = data.index(b'"data":"') + 40  # inside the base64 model file
    bad = bytearray(data)
    bad[i] = ord("A") if bad[i] != ord("A") else ord("B")
    r = _post(env, "/v1/learnwares", bytes(bad))
    assert r.status_code == 401 and error_body(env, r)["code"] == "bad_signature"
    assert count_rows(env.store, "learnwares") == 0 and count_rows(env.store, "islands") == 0
    assert stored_blobs(env) == set()
    assert _post(env, "/v1/learnwares", data).status_code == 201


def test_replayed_envelope(shared):
    env, _, X = shared
    me = Identity.generate()
    data = search_envelope(me, SEM, _requirement(env, X), to=env)
    first = _post(env, "/v1/search", data)
    assert first.status_code == 200
    again = _post(env, "/v1/search", data)
    assert again.status_code == 409
    assert error_body(env, again)["code"] == "replayed_nonce"
    # the same body in a new envelope (new nonce) is fine
    assert _post(env, "/v1/search", search_envelope(me, SEM, _requirement(env, X), to=env)
                 ).status_code == 200


def test_replayed_publish_is_not_published_twice(market):
    env = market
    rng = np.random.default_rng(2)
    X = blob(rng, (0, 0, 0), n=120)
    dev = Identity.generate()
    sem, spec, mb = publish_parts(env.client(dev), X, SEM,
                                  model=fitted_ridge(X, linear_task(rng, X, (1, 0, 1))))
    data = publish_envelope(dev, sem, spec, mb, to=env)
    assert _post(env, "/v1/learnwares", data).status_code == 201
    r = _post(env, "/v1/learnwares", data)
    assert r.status_code == 409 and error_body(env, r)["code"] == "replayed_nonce"
    assert count_rows(env.store, "learnwares") == 1


@pytest.mark.parametrize("offset_s", [-3600, +3600, -301, +301])
def test_timestamp_out_of_window(shared, offset_s):
    env, _, _ = shared
    data = search_envelope(Identity.generate(), SEM, now=time.time() + offset_s, to=env)
    r = _post(env, "/v1/search", data)
    assert r.status_code == 401
    body = error_body(env, r)
    assert body["code"] == "timestamp_out_of_window" and body["field"] == "ts"


def test_slightly_skewed_clock_is_accepted(shared):
    env, _, _ = shared
    r = _post(env, "/v1/search", search_envelope(Identity.generate(), SEM,
                                                 now=time.time() - 120, to=env))
    assert r.status_code == 200


def test_wrong_message_type_for_endpoint(shared):
    env, lid, _ = shared
    me = Identity.generate()
    delete = seal_request(me, "delete", {"learnware_id": lid}, to=env)
    search = search_envelope(me, SEM, to=env)
    for path, data in [("/v1/search", delete), ("/v1/learnwares", search),
                       ("/v1/anchors", search), ("/v1/localize", search)]:
        r = _post(env, path, data)
        assert r.status_code == 400, (path, r.status_code)
        body = error_body(env, r)
        assert body["code"] == "unexpected_message_type" and body["field"] == "type"
    r = _post(env, f"/v1/learnwares/{lid}", search, method="DELETE")
    assert r.status_code == 400 and error_body(env, r)["code"] == "unexpected_message_type"
    # a response type sent as a request
    r = _post(env, "/v1/search", seal(me, "delete_result", {"learnware_id": lid,
                                                             "deleted": True}))
    assert r.status_code == 400 and error_body(env, r)["code"] == "unexpected_message_type"
    # an unknown type altogether
    raw = json.loads(search)
    raw["type"] = "launch_missiles"
    r = _post(env, "/v1/search", json.dumps(raw, sort_keys=True,
                                           separators=(",", ":")).encode())
    assert r.status_code == 400 and error_body(env, r)["code"] == "unknown_message_type"


def test_delete_id_must_match_the_url(shared):
    env, lid, _ = shared
    r = _post(env, f"/v1/learnwares/{lid}",
              seal_request(Identity.generate(), "delete", {"learnware_id": "lw-999"}, to=env),
              method="DELETE")
    assert r.status_code == 400 and error_body(env, r)["code"] == "id_mismatch"


# --------------------------------------------------------------------------------------------
# ids, methods, sizes
# --------------------------------------------------------------------------------------------
BAD_LEARNWARE_IDS = ["lw-999", "lw-0", "lw-99999999999999999999", "lw-999999999999999999",
                     "lw--1", "lw-1e3", "lw-²", "lw-¹²", "lw-1%20OR%201=1", "lw-1';--",
                     "lw-%00", "..%2F..%2Fetc%2Fpasswd", "lw-" + "9" * 5000, "isl-1", "1"]


def test_unknown_and_path_like_learnware_ids(shared):
    env, lid, _ = shared
    with env.http() as http:
        for bad in BAD_LEARNWARE_IDS:
            for path in (f"/v1/learnwares/{bad}", f"/v1/learnwares/{bad}/model"):
                r = http.get(path)
                assert r.status_code == 404, (path, r.status_code, r.content[:200])
                assert error_body(env, r)["code"] == "not_found"
        # literal dot segments never reach a file
        r = http.get("/v1/learnwares/../../etc/passwd")
        assert r.status_code == 404 and error_body(env, r)["code"] == "not_found"
        assert b"root:" not in r.content
        for sha in ("0" * 64, "A" * 64, "../" * 21 + "a", "0" * 63, "²" * 64, "0" * 65):
            r = http.get(f"/v1/models/{sha}")
            assert r.status_code == 404, (sha, r.status_code)
            assert error_body(env, r)["code"] == "not_found"
        for isl in ("isl-999", "isl-²", "isl-99999999999999999999", "lw-1", "..%2Fx"):
            r = http.get(f"/v1/islands/{isl}")
            assert r.status_code == 404 and error_body(env, r)["code"] == "not_found"
        for key in ("0" * 64, "g" * 64, "x", "²" * 64):
            r = http.get(f"/v1/islands/by-key/{key}")
            assert r.status_code == 404 and error_body(env, r)["code"] == "not_found"
        # the real one still works
        assert http.get(f"/v1/learnwares/{lid}").status_code == 200
    # signed deletes of ids that do not exist (or cannot exist)
    me = Identity.generate()
    for bad in ("lw-999", "lw-99999999999999999999"):
        r = _post(env, f"/v1/learnwares/{bad}",
                  seal_request(me, "delete", {"learnware_id": bad}, to=env), method="DELETE")
        assert r.status_code == 404 and error_body(env, r)["code"] == "not_found"
    r = _post(env, "/v1/learnwares/lw-²", seal_request(me, "delete", {"learnware_id": "lw-²"},
                                                        validate=False, to=env), method="DELETE")
    assert r.status_code == 422 and error_body(env, r)["code"] == "schema_violation"


def test_text_search_bad_query(shared):
    env, _, _ = shared
    with env.http() as http:
        r = http.get("/v1/learnwares", params={"q": "x", "limit": "many"})
        assert r.status_code == 400 and error_body(env, r)["code"] == "bad_query"
        for q in ("\x00", "a" * 20_000, "%s%n", "' OR 1=1 --"):
            r = http.get("/v1/learnwares", params={"q": q})
            assert r.status_code == 200, (q[:20], r.status_code)


@pytest.mark.parametrize("method,path", [
    ("PUT", "/v1/learnwares"), ("PATCH", "/v1/learnwares/lw-1"), ("GET", "/v1/search"),
    ("GET", "/v1/anchors"), ("GET", "/v1/localize"), ("POST", "/v1/islands"),
    ("DELETE", "/v1/islands/isl-1"), ("POST", "/healthz"), ("DELETE", "/openapi.json"),
    ("POST", "/v1/models/" + "0" * 64), ("PUT", "/v1/learnwares/lw-1/model"),
])
def test_wrong_http_method(shared, method, path):
    env, _, _ = shared
    with env.http() as http:
        r = http.request(method, path, content=b"{}")
    assert r.status_code == 405
    assert error_body(env, r)["code"] == "method_not_allowed"


def test_unknown_route(shared):
    env, _, _ = shared
    with env.http() as http:
        for path in ("/v2/learnwares", "/admin", "/v1/learnwares/lw-1/model/extra"):
            r = http.get(path)
            assert r.status_code == 404 and error_body(env, r)["code"] == "not_found"


def test_oversize_body(make_market):
    env = make_market(max_message_bytes=2048)
    me = Identity.generate()
    r = _post(env, "/v1/search", b"x" * 10_000)
    assert r.status_code == 413 and error_body(env, r)["code"] == "message_too_large"
    # a valid, signed envelope over the limit is refused the same way
    big = seal_request(me, "search", {"semantic": dict(query(SEM), description="d" * 8000),
                                      "max_results": 5}, to=env)
    assert len(big) > 2048
    r = _post(env, "/v1/search", big)
    assert r.status_code == 413 and error_body(env, r)["code"] == "message_too_large"
    # a chunked body (no Content-Length) is never processed as a valid request
    with env.http() as http:
        r = http.post("/v1/search", content=iter([b"x" * 3000] * 4))
    assert r.status_code in (401, 411, 413), r.status_code
    error_body(env, r)
    # the SDK surfaces it as an error with that code; nothing was stored
    rng = np.random.default_rng(3)
    X = blob(rng, (0, 0, 0), n=120)
    with pytest.raises(LearnwareError) as exc:
        env.client().publish(fitted_ridge(X, X @ [1.0, 2.0, 3.0]), X, SEM)
    assert exc.value.code == "message_too_large" and exc.value.status == 413
    assert count_rows(env.store, "learnwares") == 0
    # small requests still work
    r = _post(env, "/v1/search", search_envelope(me, SEM, to=env))
    assert r.status_code == 200


# --------------------------------------------------------------------------------------------
# malformed bodies: always a 4xx with a stable code
# --------------------------------------------------------------------------------------------
def _arr(a):
    return encode_array(np.asarray(a, dtype=float))


def _req(z, b, gamma=1 / 6, scales=(1.0, 1.0, 1.0), n_features=None):
    z = np.asarray(z, dtype=float)
    return {"z": _arr(z), "beta": _arr(b), "gamma": gamma,
            "scales": None if scales is None else _arr(scales),
            "n_features": n_features or (z.shape[1] if z.ndim == 2 and z.shape[1] else 3)}


def test_malformed_bodies_never_5xx(shared):
    env, lid, _ = shared
    rng = np.random.default_rng(4)
    q = query(SEM)
    z10 = rng.normal(size=(10, 3))
    cases = [
        ("/v1/search", "search", {}, 422, "schema_violation"),
        ("/v1/search", "search", {"semantic": q, "max_results": 0}, 422, "schema_violation"),
        ("/v1/search", "search", {"semantic": q, "max_results": 5, "extra": 1}, 422,
         "schema_violation"),
        ("/v1/search", "search", {"semantic": dict(q, task_type="poetry"), "max_results": 5},
         422, "schema_violation"),
        ("/v1/search", "search", {"semantic": q, "max_results": 5,
                                  "requirement": {"z": {"__array__": {"dtype": "<c16",
                                                                      "shape": [1, 3],
                                                                      "data": ""}},
                                                  "beta": _arr([1.0]), "gamma": 0.1,
                                                  "n_features": 3}}, 422, "schema_violation"),
        ("/v1/search", "search", {"semantic": q, "max_results": 5,
                                  "requirement": _req(z10, np.full(10, np.nan))}, 422,
         "schema_violation"),
        # inconsistent requirements: caught before any numerics
        ("/v1/search", "search", {"semantic": q, "max_results": 5,
                                  "requirement": _req(z10, np.ones(5) / 5)}, 422,
         "spec_dimension"),
        ("/v1/search", "search", {"semantic": q, "max_results": 5,
                                  "requirement": _req(np.zeros((0, 3)), np.zeros(0))}, 422,
         "spec_dimension"),
        ("/v1/search", "search", {"semantic": q, "max_results": 5,
                                  "requirement": _req(rng.normal(size=(10, 4)),
                                                      np.ones(10) / 10)}, 422,
         "spec_dimension"),
        ("/v1/search", "search", {"semantic": q, "max_results": 5,
                                  "requirement": _req(z10, -np.ones(10) / 10)}, 422,
         "spec_weights"),
        ("/v1/search", "search", {"semantic": q, "max_results": 5,
                                  "requirement": _req(z10, np.full(10, 1e307))}, 422,
         "spec_weights"),
        ("/v1/search", "search", {"semantic": q, "max_results": 5,
                                  "requirement": _req(z10 * 1e300, np.ones(10) / 10)}, 422,
         "bad_spec"),
        ("/v1/search", "search", {"semantic": q, "max_results": 5, "island_id": "isl-999"},
         404, "not_found"),
        ("/v1/search", "search", {"semantic": dict(q, target="other"), "max_results": 5,
                                  "island_id": "isl-1"}, 409, "island_mismatch"),
        ("/v1/anchors", "anchor_request", {"semantic": dict(q, target="other")}, 404,
         "not_found"),
        ("/v1/anchors", "anchor_request", {"semantic": q, "max_anchors": 0}, 422,
         "schema_violation"),
        ("/v1/localize", "metrics_report", {"island_id": "isl-1", "metric": "rmse",
                                            "n_rows": 5, "values": {}, "round": 1}, 422,
         "bad_metrics"),
        ("/v1/localize", "metrics_report", {"island_id": "isl-1", "metric": "rmse",
                                            "n_rows": 5, "values": {lid: -1.0}, "round": 1},
         422, "bad_metrics"),
        ("/v1/localize", "metrics_report", {"island_id": "isl-1", "metric": "rmse",
                                            "n_rows": 5, "values": {lid: 1e308}, "round": 1},
         422, "schema_violation"),  # past protocol.limits.MAX_METRIC: refused by the schema
        ("/v1/localize", "metrics_report", {"island_id": "isl-1", "metric": "mae",
                                            "n_rows": 5, "values": {lid: 1.0}, "round": 1},
         422, "wrong_metric"),
        ("/v1/localize", "metrics_report", {"island_id": "isl-1", "metric": "rmse",
                                            "n_rows": 5, "values": {"lw-999": 1.0},
                                            "round": 1}, 422, "unknown_anchor"),
        ("/v1/localize", "metrics_report", {"island_id": "isl-404", "metric": "rmse",
                                            "n_rows": 5, "values": {lid: 1.0}, "round": 1},
         404, "not_found"),
        ("/v1/localize", "metrics_report", {"island_id": "isl-1", "metric": "rmse",
                                            "n_rows": 0, "values": {lid: 1.0}, "round": 1},
         422, "schema_violation"),
        ("/v1/learnwares", "publish", {"semantic": SEM}, 422, "schema_violation"),
    ]
    me = Identity.generate()
    for path, mtype, body, status, code in cases:
        r = _post(env, path, seal_request(me, mtype, body, to=env, validate=False))
        assert r.status_code == status, (path, body, r.status_code, r.content[:300])
        assert error_body(env, r)["code"] == code, (path, body)
    # and a good localize still works on this island
    r = _post(env, "/v1/localize", seal_request(me, "metrics_report", {
        "island_id": "isl-1", "metric": "rmse", "n_rows": 30, "values": {lid: 0.5},
        "round": 1}, to=env))
    assert r.status_code == 200, r.content[:300]


# --------------------------------------------------------------------------------------------
# publish refusals
# --------------------------------------------------------------------------------------------
def _state(env, sem=SEM):
    """Everything a refused publish must leave untouched."""
    user = env.client()
    island = user.island(sem)
    return {"learnwares": count_rows(env.store, "learnwares"),
            "islands": count_rows(env.store, "islands"),
            "blob_rows": count_rows(env.store, "blobs"),
            "blobs": stored_blobs(env), "blob_files": blob_files(env),
            "island_count": None if island is None else island["learnware_count"],
            "island_version": None if island is None else env.store.island_version(
                int(island["island_id"].split("-")[1]))}


def _one_published(env):
    rng = np.random.default_rng(5)
    X = blob(rng, (0, 0, 0), n=150)
    lid = env.client().publish(fitted_ridge(X, linear_task(rng, X, (1, 2, 3))), X, SEM)
    return env, lid, X, rng


@pytest.fixture
def one_published(market):
    return _one_published(market)


@pytest.fixture(scope="module")
def refusals(make_module_market):
    """Shared by tests whose publishes are all refused (they compare state before/after)."""
    return _one_published(make_module_market())


def test_publish_refusal_reports_every_reason_and_leaves_nothing(one_published):
    env, _, X, rng = one_published
    before = _state(env)
    assert before["island_count"] == 1 and len(before["blobs"]) == 1
    dev = Identity.generate()
    client = env.client(dev)
    sem, spec, mb = publish_parts(client, X, SEM,
                                  model=fitted_ridge(X, linear_task(rng, X, (3, 2, 1))))
    # (1) wrong dimension: 4 columns on a 3-feature island
    z = np.asarray(rng.normal(size=(20, 4)))
    spec["z"] = _arr(z)
    spec["n_features"] = 4
    # (2) weights that do not sum to 1
    spec["beta"] = _arr(np.full(20, 0.5 / 20))
    # (3) model.sha256 that is not the hash of model.data (the artefact signs the claim)
    claimed = sha256_hex(mb + b"x")
    data = publish_envelope(dev, sem, spec, mb, sha256=claimed, to=env)
    r = _post(env, "/v1/learnwares", data)
    assert r.status_code == 422, r.content[:300]
    body = error_body(env, r)
    assert body["code"] == "publish_refused"
    codes = detail_codes(body)
    assert {"spec_dimension", "spec_weights", "model_hash_mismatch"} <= codes, codes
    for d in body["details"]:
        assert d["message"] and d["field"], d
    assert f"{len(body['details'])} problem" in body["message"]
    assert _state(env) == before


def test_refused_first_publish_creates_no_island(market):
    env = market
    rng = np.random.default_rng(6)
    X = blob(rng, (0, 0, 0), n=120)
    before = _state(env)
    dev = Identity.generate()
    sem, spec, mb = publish_parts(env.client(dev), X, SEM,
                                  model=fitted_ridge(X, X @ [1.0, 1.0, 1.0]))
    spec["beta"] = _arr(np.full(20, 0.1))
    r = _post(env, "/v1/learnwares", publish_envelope(dev, sem, spec, mb, to=env))
    assert r.status_code == 422
    assert "spec_weights" in detail_codes(error_body(env, r))
    assert _state(env) == before
    assert env.client().island(SEM) is None


def test_artefact_must_bind_the_parts(refusals):
    env, _, X, rng = refusals
    before = _state(env)
    dev = Identity.generate()
    sem, spec, mb = publish_parts(env.client(dev), X, SEM,
                                  model=fitted_ridge(X, linear_task(rng, X, (0, 2, 1))))
    # the artefact signs another model file than the one sent
    data = publish_envelope(dev, sem, spec, mb, artefact_sha256="ab" * 32, to=env)
    r = _post(env, "/v1/learnwares", data)
    assert r.status_code == 422
    assert "artefact_mismatch" in detail_codes(error_body(env, r))
    # size and base64 lies are reported as such
    data = publish_envelope(dev, sem, spec, mb, size=len(mb) + 1, to=env)
    assert "model_size_mismatch" in detail_codes(error_body(env, _post(env, "/v1/learnwares",
                                                                       data)))
    data = publish_envelope(dev, sem, spec, mb, data="QUJD" * 3 + "A=", to=env)
    assert "bad_model_encoding" in detail_codes(error_body(env, _post(env, "/v1/learnwares",
                                                                      data)))
    assert _state(env) == before


def test_duplicate_model_in_same_island(one_published):
    env, lid, X, rng = one_published
    first = env.client().manifest(lid)
    # the very bytes that were published (skops output need not be byte-identical per dump)
    with env.http() as http:
        model_bytes = http.get(f"/v1/models/{first['model_sha256']}").content
    before = _state(env)
    dev = Identity.generate()
    assert dev.public_key_b64 != first["developer"]  # another developer, same file
    sem, spec, _ = publish_parts(env.client(dev), X, SEM, model_bytes=model_bytes)
    r = _post(env, "/v1/learnwares", publish_envelope(dev, sem, spec, model_bytes, to=env))
    assert r.status_code == 409, r.content[:300]
    body = error_body(env, r)
    assert body["code"] == "duplicate_model" and lid in body["message"]
    assert _state(env) == before
    # on another island the same file is fine
    other = semantic("error cases", target="other target")
    sem2, spec2, _ = publish_parts(env.client(dev), X, other, model_bytes=model_bytes)
    r = _post(env, "/v1/learnwares", publish_envelope(dev, sem2, spec2, model_bytes, to=env))
    assert r.status_code == 201, r.content[:300]


def test_republish_after_delete(market):
    env = market
    rng = np.random.default_rng(8)
    X = blob(rng, (0, 0, 0), n=120)
    dev = Identity.generate()
    client = env.client(dev)
    sem, spec, mb = publish_parts(client, X, SEM, model=fitted_ridge(X, X @ [1.0, 0.0, 2.0]))
    assert _post(env, "/v1/learnwares",
                 publish_envelope(dev, sem, spec, mb, to=env)).status_code == 201
    r = _post(env, "/v1/learnwares", publish_envelope(dev, sem, spec, mb, to=env))
    assert r.status_code == 409 and error_body(env, r)["code"] == "duplicate_model"
    assert client.delete("lw-1")
    r = _post(env, "/v1/learnwares", publish_envelope(dev, sem, spec, mb, to=env))
    assert r.status_code == 201
    assert env.reply(r)[1]["learnware_id"] == "lw-2"


def _nan_model(X):
    m = fitted_ridge(X, X @ [1.0, 2.0, 3.0])
    m.coef_ = np.full_like(m.coef_, np.nan)
    return m


def _inf_model(X):
    m = fitted_ridge(X, X @ [1.0, 2.0, 3.0])
    m.intercept_ = np.inf
    return m


def _two_output_model(X):
    return fitted_ridge(X, np.c_[X @ [1.0, 2.0, 3.0], X @ [3.0, 2.0, 1.0]])


def _four_feature_model(X):
    X4 = np.c_[X, X[:, :1]]
    return fitted_ridge(X4, X4 @ [1.0, 2.0, 3.0, 4.0])


@pytest.mark.parametrize("make_model,code", [
    (_nan_model, "model_output"), (_inf_model, "model_output"),
    (_two_output_model, "model_output_shape"), (_four_feature_model, "model_predict_failed"),
])
def test_models_with_bad_predictions_are_refused(refusals, make_model, code):
    env, _, X, _ = refusals
    before = _state(env)
    with pytest.raises(LearnwareError) as exc:
        env.client().publish(make_model(X), X, SEM)
    assert exc.value.code == "publish_refused" and exc.value.status == 422
    assert code in {d["code"] for d in exc.value.details}, exc.value.details
    assert _state(env) == before


def test_classifier_predicting_undeclared_classes(market):
    from sklearn.linear_model import LogisticRegression
    env = market
    rng = np.random.default_rng(9)
    X = blob(rng, (0, 0, 0), n=150)
    y = np.where(X[:, 0] > 0, "cat", "dog")
    sem = semantic("pets", task_type="classification", objective="accuracy",
                   classes=["cat", "mouse"])
    with pytest.raises(LearnwareError) as exc:
        env.client().publish(LogisticRegression().fit(X, y), X, sem)
    assert "model_classes" in {d["code"] for d in exc.value.details}
    assert count_rows(env.store, "learnwares") == 0
    # declared correctly, it is accepted
    assert env.client().publish(LogisticRegression().fit(X, y), X,
                                dict(sem, classes=["cat", "dog"])) == "lw-1"


def test_semantic_inconsistencies_are_reasons(market):
    env = market
    rng = np.random.default_rng(10)
    X = blob(rng, (0, 0, 0), n=120)
    dev = Identity.generate()
    sem = semantic("bad", objective="accuracy")  # a regression scored by accuracy
    sem["classes"] = [0, 1]                      # and a regression with classes
    sem, spec, mb = publish_parts(env.client(dev), X, sem, model=fitted_ridge(X, X @ [1., 1, 1]))
    r = _post(env, "/v1/learnwares", publish_envelope(dev, sem, spec, mb, to=env))
    assert r.status_code == 422
    assert {"bad_objective", "bad_semantic"} <= detail_codes(error_body(env, r))
    assert count_rows(env.store, "islands") == 0


def test_kernel_mismatch(one_published):
    env, _, X, rng = one_published
    before = _state(env)
    dev = Identity.generate()
    client = env.client(dev)
    island = client.island(SEM)
    gamma = float(island["kernel"]["gamma"])
    sem, spec, mb = publish_parts(client, X, SEM, gamma=2 * gamma,
                                  model=fitted_ridge(X, linear_task(rng, X, (1, -1, 1))))
    assert spec["gamma"] == pytest.approx(2 * gamma)
    r = _post(env, "/v1/learnwares", publish_envelope(dev, sem, spec, mb, to=env))
    assert r.status_code == 422
    body = error_body(env, r)
    assert "kernel_mismatch" in detail_codes(body)
    assert [d["field"] for d in body["details"] if d["code"] == "kernel_mismatch"] == ["spec.gamma"]
    # other scales are a mismatch too
    sem, spec, mb = publish_parts(client, X, SEM, scales=np.array([1.0, 2.0, 3.0]),
                                  model=fitted_ridge(X, linear_task(rng, X, (1, -1, 1))))
    r = _post(env, "/v1/learnwares", publish_envelope(dev, sem, spec, mb, to=env))
    assert "kernel_mismatch" in detail_codes(error_body(env, r))
    assert _state(env) == before
    # the SDK recomputes under the island's kernel: the same model is then accepted
    assert client.publish(fitted_ridge(X, linear_task(rng, X, (1, -1, 1))), X, SEM) == "lw-2"


def test_kernel_mismatch_on_a_new_island(market):
    env = market
    rng = np.random.default_rng(12)
    X = blob(rng, (0, 0, 0), n=120)
    dev = Identity.generate()
    sem, spec, mb = publish_parts(env.client(dev), X, SEM, gamma=0.5,
                                  model=fitted_ridge(X, X @ [1.0, 1.0, 1.0]))
    r = _post(env, "/v1/learnwares", publish_envelope(dev, sem, spec, mb, to=env))
    assert r.status_code == 422
    assert "kernel_mismatch" in detail_codes(error_body(env, r))
    assert count_rows(env.store, "islands") == 0


def test_absurd_spec_values_are_refused_not_crashed(market):
    env = market
    rng = np.random.default_rng(13)
    X = blob(rng, (0, 0, 0), n=120)
    dev = Identity.generate()
    sem, spec, mb = publish_parts(env.client(dev), X, SEM,
                                  model=fitted_ridge(X, X @ [1.0, 1.0, 1.0]))
    from protocol.encoding import decode_array
    z = decode_array(spec["z"], field="z") * 1e300
    spec["z"] = _arr(z)
    r = _post(env, "/v1/learnwares", publish_envelope(dev, sem, spec, mb, to=env))
    assert r.status_code == 422, r.content[:300]
    body = error_body(env, r)
    assert body["code"] == "publish_refused" and "spec_values" in detail_codes(body)
    assert count_rows(env.store, "learnwares") == 0 and count_rows(env.store, "islands") == 0
    # (accepted, such a spec would have made every later search on the island non-finite)
    assert env.client(dev).publish(fitted_ridge(X, X @ [1.0, 1.0, 1.0]), X, SEM) == "lw-1"
    res = env.client().search(X, SEM)
    assert res.single[0].learnware_id == "lw-1" and np.isfinite(res.single[0].mmd)


def test_spec_under_the_kernel_a_refinement_replaced_is_accepted(one_published):
    """A developer who fetched the island just before a refinement publishes without
    recomputing; a spec two kernels old is refused."""
    env, _, X, rng = one_published
    market = env.app.extensions["learnware_market"].market
    client = env.client(Identity.generate())
    old = island_kernel_of(client, SEM)

    def refine(scales):
        island = env.store.island(1)
        kernel = dict(island.kernel, previous={"gamma": island.kernel["gamma"],
                                               "scales": island.kernel["scales"]})
        kernel["scales"] = list(scales)
        assert env.store.set_kernel(1, kernel, island.kernel_version)

    parts = [publish_parts(client, X, SEM, gamma=old[0], scales=old[1],
                           model=fitted_ridge(X, linear_task(rng, X, (i, -1, 1))))
             for i in (1, 2)]
    refine(np.asarray(old[1]) * 1.5)
    dev = Identity.generate()
    r = _post(env, "/v1/learnwares", publish_envelope(dev, *parts[0], to=env))
    assert r.status_code == 201, r.content[:300]
    refine(np.asarray(old[1]) * 2.0)  # the spec's kernel is now two refinements old
    before = _state(env)
    r = _post(env, "/v1/learnwares", publish_envelope(dev, *parts[1], to=env))
    assert r.status_code == 422 and "kernel_mismatch" in detail_codes(error_body(env, r))
    assert _state(env) == before
    assert market.search({"semantic": query(SEM), "max_results": 5})["single"]
