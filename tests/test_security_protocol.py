"""Issue 13, items 6, 7 and 11: every request is bound to its market, every answer to its
request, the pinned market keys fail closed, and only the canonical envelope form opens.

* 7: a developer's publish and delete envelopes replayed to a second market are refused there
  (``aud`` names the market) and change nothing.
* 6: a network attacker who replays an old answer, or rewrites a GET to another resource while
  keeping the client's nonce, or a market answer about another id/island, is refused by the SDK.
* 11: a corrupt ``known_markets.json`` is an error naming the file (never a silent re-TOFU); a
  ``sig`` member moved within the envelope, or any other non-canonical frame, is refused.
"""
from __future__ import annotations

import json
import time

import httpx
import numpy as np
import pytest

from client_sdk import Identity
from protocol.envelope import MemoryNonceStore, open_envelope, seal
from protocol.errors import (AudienceError, ConfigFileError, EncodingError, ProtocolError,
                             SignatureError, StaleMessageError)
from learnware_core.semantic import island_key
from tests.helpers import (blob, count_rows, error_body, fitted_ridge, linear_task,
                           publish_envelope, publish_parts, seal_request, search_envelope,
                           semantic, stored_blobs)
from benchmarks.hostile import seal_escaped

SEM = semantic("security protocol", tags=["binding"])
OTHER = semantic("security protocol, other island", features=("p", "q"))


def _send(env, method: str, path: str, data: bytes) -> httpx.Response:
    with env.http() as http:
        return http.request(method, path, content=data,
                            headers={"Content-Type": "application/json"})


def _job(seed: int, center, w, n: int = 120):
    rng = np.random.default_rng(seed)
    X = blob(rng, center, n=n)
    return fitted_ridge(X, linear_task(rng, X, w)), X


# --------------------------------------------------------------------------------------------
# item 7: requests name their market
# --------------------------------------------------------------------------------------------
def test_publish_and_delete_replayed_to_another_market_are_refused(make_market):
    a, b = make_market(), make_market()
    dev = Identity.generate()
    model, X = _job(1, (0, 0, 0), (1, 2, 3))
    assert b.client(dev).publish(model, X, SEM) == "lw-1"  # dev's own lw-1 on market B
    before_b = (count_rows(b.store, "learnwares"), count_rows(b.store, "islands"),
                stored_blobs(b))
    # a publish of another model, sealed for A: accepted by A, refused by B
    # (same rows: the island A creates has B's kernel, so B could not refuse it for that)
    other = fitted_ridge(X, X @ np.array([3.0, 0.0, -1.0]))
    sem, spec, mb = publish_parts(a.client(dev), X, SEM, model=other)
    publish = publish_envelope(dev, sem, spec, mb, to=a)
    assert _send(a, "POST", "/v1/learnwares", publish).status_code == 201
    r = _send(b, "POST", "/v1/learnwares", publish)
    assert r.status_code == 401, r.content[:300]
    body = error_body(b, r)
    assert body["code"] == "wrong_audience" and body["field"] == "aud"
    assert a.key_id in body["message"] and b.key_id in body["message"]
    # a delete of lw-1, sealed for A: A deletes its lw-1, B keeps its own
    delete = seal_request(dev, "delete", {"learnware_id": "lw-1"}, to=a)
    assert _send(a, "DELETE", "/v1/learnwares/lw-1", delete).status_code == 200
    r = _send(b, "DELETE", "/v1/learnwares/lw-1", delete)
    assert r.status_code == 401 and error_body(b, r)["code"] == "wrong_audience"
    assert not b.store.learnware(1).deleted
    assert (count_rows(b.store, "learnwares"), count_rows(b.store, "islands"),
            stored_blobs(b)) == before_b
    # the SDK addresses each market by its own key: both still work
    assert b.client(dev).delete("lw-1") is True


def test_request_without_audience_is_refused(market):
    r = _send(market, "POST", "/v1/search",
              seal_escaped(Identity.generate(), "search",
                           {"semantic": {f: SEM[f] for f in ("data_type", "task_type",
                                                             "input_features", "target",
                                                             "objective")},
                            "max_results": 5}, aud=None))
    assert r.status_code == 400
    body = error_body(market, r)
    assert body["code"] == "missing_audience" and body["field"] == "aud"


def test_audience_is_checked_and_signed():
    me, aud, other = Identity.generate(), "a1" * 16, "b2" * 16
    data = seal(me, "delete", {"learnware_id": "lw-1"}, audience=aud)
    assert open_envelope(data, nonce_store=MemoryNonceStore(), audience=aud).audience == aud
    with pytest.raises(AudienceError) as exc:
        open_envelope(data, nonce_store=MemoryNonceStore(), audience=other)
    assert exc.value.code == "wrong_audience" and exc.value.status == 401
    # re-addressing the envelope breaks its signature
    with pytest.raises(SignatureError):
        open_envelope(data.replace(aud.encode(), other.encode()),
                      nonce_store=MemoryNonceStore(), audience=other)
    with pytest.raises(EncodingError, match="audience"):
        seal(me, "delete", {"learnware_id": "lw-1"})  # requests must be addressed
    with pytest.raises(EncodingError):
        seal(me, "delete_result", {"learnware_id": "lw-1", "deleted": True}, audience=aud)


# --------------------------------------------------------------------------------------------
# item 6: answers are bound to their request
# --------------------------------------------------------------------------------------------
class Attacker(httpx.BaseTransport):
    """On the network between the SDK and the market. ``rewrite(url) -> url | None`` sends a
    request elsewhere (keeping every header, so the client's nonce too); ``replay[path]`` answers
    with a saved answer; ``forge[path](body) -> body`` re-signs the genuine answer with the
    market's own key (a buggy or compromised market), keeping its reply_to."""

    def __init__(self, env):
        self.env, self.inner = env, env.transport
        self.rewrite = lambda url: None
        self.replay: dict[str, bytes] = {}
        self.forge: dict = {}
        self.forge_now: float | None = None
        self.saved: dict[str, bytes] = {}

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path in self.replay:
            return httpx.Response(200, content=self.replay[path],
                                  headers={"Content-Type": "application/json"})
        url = self.rewrite(request.url)
        if url is not None:
            request = httpx.Request(request.method, url, headers=request.headers,
                                    content=request.content)
        resp = self.inner.handle_request(request)
        resp.read()
        self.saved[path] = resp.content
        if path in self.forge:
            env = open_envelope(resp.content, nonce_store=None)
            body = self.forge[path](env.body)
            data = seal(self.env.state.identity, env.type, body, reply_to=env.reply_to,
                        now=self.forge_now)
            return httpx.Response(resp.status_code, content=data,
                                  headers={"Content-Type": "application/json"})
        return resp


@pytest.fixture(scope="module")
def two_islands(make_module_market):
    env = make_module_market()
    dev = env.client()
    ids = [dev.publish(*_job(s, c, w), SEM) for s, c, w in
           ((1, (0, 0, 0), (1, 2, 3)), (2, (4, 4, 4), (-1, 0, 2)))]
    model, X = _job(3, (0, 0), (1, 1))
    ids.append(dev.publish(model, X, OTHER))
    return env, ids


def _user(env, attacker):
    return env.client(transport=attacker)


def _refused(call, code="bad_response"):
    with pytest.raises(ProtocolError) as exc:
        call()
    assert exc.value.code == code, exc.value
    return exc.value


def test_rewritten_manifest_request_is_refused(two_islands):
    """The attacker asks the market for lw-2 with the client's nonce: a genuine, fresh, bound
    answer, about another learnware."""
    env, (lw1, lw2, _) = two_islands
    att = Attacker(env)
    att.rewrite = lambda url: (url.copy_with(path=f"/v1/learnwares/{lw2}")
                               if url.path == f"/v1/learnwares/{lw1}" else None)
    user = _user(env, att)
    _refused(lambda: user.manifest(lw1))
    _refused(lambda: user.download(lw1))
    assert user.model_transfers == 0
    assert user.download(lw2).id == lw2  # untouched requests still work


def test_replayed_get_answers_are_refused(two_islands):
    env, (lw1, lw2, _) = two_islands
    att = Attacker(env)
    user = _user(env, att)
    assert user.manifest(lw1)["learnware_id"] == lw1
    islands = user.islands()
    assert len(islands) == 2
    info = user.island(SEM)
    matches = user.text_search("security")
    # the same answers, replayed to the same requests: each was bound to another nonce
    for path in list(att.saved):
        att.replay[path] = att.saved[path]
    _refused(lambda: user.manifest(lw1))
    _refused(lambda: user.download(lw1))
    _refused(lambda: user.islands())
    _refused(lambda: user.island(SEM))
    _refused(lambda: user.text_search("security"))
    assert info["semantic_key"] == island_key(SEM) and matches


def test_rewritten_island_and_text_search_requests_are_refused(two_islands):
    env, _ = two_islands
    att = Attacker(env)
    k1, k2 = island_key(SEM), island_key(OTHER)

    def swap(url):
        if url.path == f"/v1/islands/by-key/{k1}":
            return url.copy_with(path=f"/v1/islands/by-key/{k2}")
        if url.path == "/v1/learnwares" and url.params.get("q") == "security":
            return url.copy_with(params={"q": "nothing matches this", "limit": "20"})
        return None
    att.rewrite = swap
    user = _user(env, att)
    _refused(lambda: user.island(SEM))
    _refused(lambda: user.text_search("security"))
    assert user.island(OTHER)["semantic_key"] == k2


def test_answers_about_another_island_are_refused(two_islands):
    env, (lw1, lw2, lw3) = two_islands
    att = Attacker(env)
    user = _user(env, att)
    model, X = _job(4, (0, 0, 0), (1, 2, 3))
    other_island = user.island(OTHER)["island_id"]
    att.forge["/v1/search"] = lambda body: dict(body, island_id=other_island)
    _refused(lambda: user.search(X, SEM))
    # anchors of another island: refused before any metric about them is sent
    att.forge.clear()
    att.forge["/v1/anchors"] = lambda body: dict(body, anchors=[lw3])
    y = model.predict(X)
    _refused(lambda: user.localize(X, y, SEM))
    assert "/v1/localize" not in att.saved
    # a manifest naming another learnware (its own artefact is genuine)
    att.forge.clear()
    att.forge[f"/v1/learnwares/{lw1}"] = lambda body: env.state.market.manifest(lw2)
    _refused(lambda: user.download(lw1))
    # island_info naming another semantic key
    att.forge.clear()
    att.forge[f"/v1/islands/by-key/{island_key(SEM)}"] = lambda body: dict(
        body, semantic_key=island_key(OTHER))
    _refused(lambda: user.island(SEM))


def test_stale_bound_answer_is_refused(two_islands):
    """Answers are bound now, so the 24 h acceptance window is gone: the normal window."""
    env, (lw1, _, _) = two_islands
    att = Attacker(env)
    att.forge[f"/v1/learnwares/{lw1}"] = lambda body: body
    att.forge_now = time.time() - 3600
    user = _user(env, att)
    with pytest.raises(StaleMessageError):
        user.manifest(lw1)
    att.forge_now = None
    assert user.manifest(lw1)["learnware_id"] == lw1


def test_get_nonce_header_is_validated_and_answers_are_not_cached(two_islands):
    env, (lw1, _, _) = two_islands
    with env.http() as http:
        r = http.get(f"/v1/learnwares/{lw1}", headers={"X-LWM-Nonce": "XYZ"})
        assert r.status_code == 400
        body = error_body(env, r)
        assert body["code"] == "bad_nonce" and body["field"] == "X-LWM-Nonce"
        r = http.get(f"/v1/learnwares/{lw1}", headers={"X-LWM-Nonce": "ab" * 16})
        assert r.status_code == 200 and r.headers["Cache-Control"] == "no-store"
        sha = env.reply(r)[1]["model_sha256"]
        r = http.get(f"/v1/models/{sha}")
        assert r.status_code == 200 and "immutable" in r.headers["Cache-Control"]


# --------------------------------------------------------------------------------------------
# item 11: pinned keys fail closed; canonical envelopes only
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("content", [b"{not json", b"[]", b'{"http://x.test": 5}', b"\xff\xfe"])
def test_corrupt_known_markets_fails_closed(market, config_dir, content):
    config_dir.mkdir(parents=True, exist_ok=True)
    path = config_dir / "known_markets.json"
    path.write_bytes(content)
    user = market.client()
    with pytest.raises(ConfigFileError) as exc:
        user.islands()
    assert exc.value.code == "bad_config_file" and str(path) in exc.value.message
    assert "delete it" in exc.value.message
    with pytest.raises(ConfigFileError):  # signed requests too (they need the market's key id)
        user.delete("lw-1")
    assert path.read_bytes() == content


def test_trust_on_first_use_keeps_every_other_pinned_market(market, config_dir):
    config_dir.mkdir(parents=True, exist_ok=True)
    path = config_dir / "known_markets.json"
    other_key = Identity.generate().public_key_b64
    path.write_text(json.dumps({"http://other.test": other_key}))
    market.client().islands()
    assert json.loads(path.read_text()) == {"http://other.test": other_key,
                                            market.url: market.market_key}


def _move_sig_before_nonce(data: bytes) -> bytes:
    env = json.loads(data)
    member = b',"sig":"' + env["sig"].encode() + b'"'
    without = data.replace(member, b"")
    at = without.rindex(b',"nonce":')
    return without[:at] + member + without[at:]


def test_moved_sig_member_is_refused(market):
    me = Identity.generate()
    data = search_envelope(me, SEM, to=market)
    moved = _move_sig_before_nonce(data)
    assert json.loads(moved) == json.loads(data) and moved != data
    with pytest.raises(EncodingError) as exc:
        open_envelope(moved, nonce_store=MemoryNonceStore())
    assert exc.value.code == "not_canonical" and exc.value.field == "sig"
    r = _send(market, "POST", "/v1/search", moved)
    assert r.status_code == 400 and error_body(market, r)["code"] == "not_canonical"
    assert _send(market, "POST", "/v1/search", data).status_code == 200  # the canonical one


@pytest.mark.parametrize("mangle", [
    lambda d: d.replace(b'"sender":"', b'"sender": "'),                 # whitespace in the frame
    lambda d: d.replace(b',"v":1}', b',"v":1 }'),
    lambda d: d.replace(b'"type":"search"', b'"type":"\\u0073earch"'),  # an escape
    lambda d: d.replace(b',"ts":', b',"ts":0', 1) if b',"ts":1' in d else d,  # a leading zero
])
def test_non_canonical_frames_are_refused(mangle):
    me, aud = Identity.generate(), "c3" * 16
    data = seal(me, "search", {"semantic": {f: SEM[f] for f in (
        "data_type", "task_type", "input_features", "target", "objective")},
        "max_results": 5}, audience=aud)
    mangled = mangle(data)
    assert mangled != data
    with pytest.raises(EncodingError) as exc:
        open_envelope(mangled, nonce_store=MemoryNonceStore(), audience=aud)
    assert exc.value.code in ("not_canonical", "bad_encoding")
    open_envelope(data, nonce_store=MemoryNonceStore(), audience=aud)  # the original opens


def test_sdk_learnware_ids_still_round_trip(two_islands):
    """Sanity: with every binding on, the normal flow is unchanged."""
    env, (lw1, lw2, lw3) = two_islands
    user = env.client()
    model, X = _job(5, (0, 0, 0), (1, 2, 3))
    res = user.search(X, SEM)
    assert res.island_id == user.island(SEM)["island_id"] and res.single
    assert {m.learnware_id for m in res.single} <= {lw1, lw2}
    loc = user.localize(X, model.predict(X), SEM)
    assert set(loc.anchors) <= {lw1, lw2}
