"""Model files never run code, downloads are verified end to end, and the market is pinned.

Server: model files carrying pickle payloads (raw pickles, skops schemas naming ``os.system`` /
``builtins.exec`` / ``subprocess.Popen``, object arrays inside the zip) are refused at publish with
``unsafe_model`` and the payload never runs. Client: swapped model bytes or manifests are refused,
a market signing with another key than the pinned one raises ``KeyMismatchError``, and cached
models are not transferred twice.
"""
from __future__ import annotations

import io
import json
import pickle
import zipfile

import httpx
import numpy as np
import pytest
import sqlalchemy as sa

from client_sdk import Identity, MarketClient
from market_server.storage import DatabaseBlobs
from protocol.artefact import sha256_hex, sign_artefact
from protocol.errors import (KeyMismatchError, ProtocolError, SignatureError,
                             UnsafeModelError)
from learnware_core.modelfile import dump_model

from tests.helpers import (blob, count_rows, detail_codes, error_body, fitted_ridge,
                           linear_task, publish_envelope, publish_parts, semantic, stored_blobs)

SEM = semantic("safety cases")


# --------------------------------------------------------------------------------------------
# malicious model files
# --------------------------------------------------------------------------------------------
class _Exec:
    """Unpickling this runs ``code`` (the classic pickle payload)."""

    def __init__(self, code: str):
        self.code = code

    def __reduce__(self):
        return (exec, (self.code,))


def _touch_code(marker) -> str:
    return f"open({str(marker)!r}, 'w').write('pwned')"


def raw_pickle(marker) -> bytes:
    return pickle.dumps(_Exec(_touch_code(marker)))


def _rewrite_zip(data: bytes, edit) -> bytes:
    """Copy a zip, letting ``edit(name, bytes) -> bytes | None`` change or drop members."""
    src = zipfile.ZipFile(io.BytesIO(data))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as dst:
        for info in src.infolist():
            new = edit(info.filename, src.read(info.filename))
            if new is not None:
                dst.writestr(info.filename, new)
    return out.getvalue()


def _ridge_bytes() -> bytes:
    X = np.random.default_rng(0).normal(size=(30, 3))
    return dump_model(fitted_ridge(X, X @ [1.0, 2.0, 3.0]))


def skops_with_node(node: dict) -> bytes:
    """A real skops Ridge file whose ``alpha`` is replaced by ``node``."""
    def edit(name, raw):
        if name != "schema.json":
            return raw
        schema = json.loads(raw)
        schema["content"]["content"]["alpha"] = node
        return json.dumps(schema).encode()
    return _rewrite_zip(_ridge_bytes(), edit)


def skops_with_top(module: str, cls: str, loader: str) -> bytes:
    """A real skops Ridge file whose top-level object claims to be ``module.cls``."""
    def edit(name, raw):
        if name != "schema.json":
            return raw
        schema = json.loads(raw)
        schema.update(__module__=module, __class__=cls, __loader__=loader)
        return json.dumps(schema).encode()
    return _rewrite_zip(_ridge_bytes(), edit)


def skops_with_object_array(marker) -> bytes:
    """A real skops Ridge file whose coefficient array is an object array: numpy pickles its
    items, so ``np.load(..., allow_pickle=True)`` would run the payload."""
    buf = io.BytesIO()
    arr = np.empty(1, dtype=object)
    arr[0] = _Exec(_touch_code(marker))
    np.save(buf, arr, allow_pickle=True)
    payload = buf.getvalue()

    def edit(name, raw):
        return payload if name.endswith(".npy") else raw
    return _rewrite_zip(_ridge_bytes(), edit)


MALICIOUS = {
    "raw_pickle": lambda m: raw_pickle(m),
    "pickle_protocol0": lambda m: pickle.dumps(_Exec(_touch_code(m)), protocol=0),
    "skops_os_system": lambda m: skops_with_node(
        {"__class__": "system", "__module__": "os", "__loader__": "FunctionNode",
         "__id__": 1}),
    "skops_builtins_exec": lambda m: skops_with_node(
        {"__class__": "exec", "__module__": "builtins", "__loader__": "FunctionNode",
         "__id__": 2}),
    "skops_subprocess_popen": lambda m: skops_with_top("subprocess", "Popen", "ObjectNode"),
    "skops_allowed_type_wrong_loader": lambda m: skops_with_node(
        {"__class__": "Ridge", "__module__": "sklearn.linear_model._ridge",
         "__loader__": "FunctionNode", "__id__": 3}),
    "skops_object_array": lambda m: skops_with_object_array(m),
}


def test_payloads_are_real(tmp_path):
    """Sanity: the crafted payloads DO run code when loaded the unsafe way; so the absence of
    the marker below means the market never loaded them that way."""
    m1 = tmp_path / "sanity-pickle"
    pickle.loads(raw_pickle(m1))  # noqa: S301 - deliberately unsafe, on our own payload
    assert m1.read_text() == "pwned"
    m2 = tmp_path / "sanity-npy"
    zf = zipfile.ZipFile(io.BytesIO(skops_with_object_array(m2)))
    npy = [n for n in zf.namelist() if n.endswith(".npy")][0]
    np.load(io.BytesIO(zf.read(npy)), allow_pickle=True)
    assert m2.read_text() == "pwned"
    # and every crafted skops file is still a structurally valid zip with a schema
    for name, make in MALICIOUS.items():
        data = make(tmp_path / "unused")
        if name.startswith("skops"):
            assert "schema.json" in zipfile.ZipFile(io.BytesIO(data)).namelist()


@pytest.fixture
def island_with_one(market):
    rng = np.random.default_rng(0)
    X = blob(rng, (0, 0, 0), n=120)
    lid = market.client().publish(fitted_ridge(X, linear_task(rng, X, (1, 2, 3))), X, SEM)
    return market, lid, X


@pytest.fixture(scope="module")
def shared_island(make_module_market):
    """One market per backend with one learnware; refused publishes change nothing in it."""
    env = make_module_market()
    rng = np.random.default_rng(0)
    X = blob(rng, (0, 0, 0), n=120)
    env.client().publish(fitted_ridge(X, linear_task(rng, X, (1, 2, 3))), X, SEM)
    return env, X


@pytest.mark.parametrize("kind", sorted(MALICIOUS))
def test_server_refuses_unsafe_model_at_publish(shared_island, tmp_path, kind):
    env, X = shared_island
    marker = tmp_path / f"marker-{kind}"
    payload = MALICIOUS[kind](marker)
    before = (count_rows(env.store, "learnwares"), stored_blobs(env))
    dev = Identity.generate()
    sem, spec, _ = publish_parts(env.client(dev), X, SEM, model_bytes=payload)
    # Hand-built: the artefact signature covers the malicious bytes, so only the model check
    # can refuse it.
    data = publish_envelope(dev, sem, spec, payload, to=env)
    with env.http() as http:
        r = http.post("/v1/learnwares", content=data)
    assert r.status_code == 422, r.content[:300]
    body = error_body(env, r)
    assert body["code"] == "publish_refused"
    assert detail_codes(body) == {"unsafe_model"}, body["details"]
    assert not marker.exists(), "the payload ran on the server"
    assert (count_rows(env.store, "learnwares"), stored_blobs(env)) == before


def test_client_refuses_unsafe_model_even_if_the_market_serves_it(island_with_one, tmp_path):
    """Defence in depth: a market that skipped its checks (here: a row written straight into
    the store) cannot make the SDK load a pickle, even with a valid developer signature."""
    env, _, X = island_with_one
    marker = tmp_path / "marker-client"
    payload = raw_pickle(marker)
    evil = Identity.generate()
    sem, spec, _ = publish_parts(env.client(evil), X, SEM, model_bytes=payload)
    sha = sha256_hex(payload)
    pk = env.store.publish(island_pk=1, developer=evil.public_key_b64,
                           developer_key_id=evil.key_id, semantic=sem, spec=spec,
                           model_sha256=sha, model=payload,
                           artefact=sign_artefact(evil, sem, spec, sha))
    user = env.client()
    with pytest.raises(UnsafeModelError) as exc:
        user.download(f"lw-{pk}")
    assert exc.value.code == "unsafe_model"
    assert "pickle" in exc.value.message
    assert not marker.exists(), "the payload ran on the client"


# --------------------------------------------------------------------------------------------
# downloads are verified
# --------------------------------------------------------------------------------------------
@pytest.fixture
def two_published(market):
    rng = np.random.default_rng(1)
    XA, XB = blob(rng, (0, 0, 0), n=120), blob(rng, (6, 0, 0), n=120)
    dev = market.client()
    a = dev.publish(fitted_ridge(XA, linear_task(rng, XA, (1, 2, 3))), XA, SEM)
    b = dev.publish(fitted_ridge(XB, linear_task(rng, XB, (3, 2, 1))), XB, SEM)
    return market, a, b, dev


def _swap_model_bytes(env, sha: str, data: bytes) -> None:
    """Replace the stored bytes of model ``sha`` behind the market's back."""
    if isinstance(env.store.blobs, DatabaseBlobs):
        with env.store.engine.begin() as conn:
            conn.execute(sa.text("UPDATE blobs SET data = :d WHERE sha256 = :s"),
                         {"d": data, "s": sha})
    else:
        path = env.store.blobs._path(sha)
        assert path.exists()
        path.write_bytes(data)


def test_download_refuses_swapped_model_bytes(two_published):
    env, a, b, _ = two_published
    user = env.client()
    man_a, man_b = user.manifest(a), user.manifest(b)
    with env.http() as http:
        bytes_b = http.get(f"/v1/models/{man_b['model_sha256']}").content
    # B's model is a perfectly valid, safe model file: only the hash can tell
    _swap_model_bytes(env, man_a["model_sha256"], bytes_b)
    with pytest.raises(ProtocolError) as exc:
        user.download(a)
    assert exc.value.code == "model_hash_mismatch"
    assert user.model_transfers == 1
    # nothing was cached under A's name
    assert not (user.cache_dir / "models" / f"{man_a['model_sha256']}.skops").exists()
    # B itself is fine
    assert user.download(b).id == b


def test_download_refuses_a_manifest_the_developer_did_not_sign(two_published):
    env, a, b, dev = two_published
    user = env.client()
    # the market swaps the spec of A (e.g. to make it rank for other users)
    with env.store.engine.begin() as conn:
        spec_b = conn.execute(sa.text("SELECT spec FROM learnwares WHERE id = 2")).scalar()
        conn.execute(sa.text("UPDATE learnwares SET spec = :s WHERE id = 1"), {"s": spec_b})
    with pytest.raises(SignatureError) as exc:
        user.download(a)
    assert exc.value.code == "artefact_mismatch"
    # ... or claims another developer published B
    other = Identity.generate()
    with env.store.engine.begin() as conn:
        conn.execute(sa.text("UPDATE learnwares SET developer = :d WHERE id = 2"),
                     {"d": other.public_key_b64})
    with pytest.raises(SignatureError) as exc:
        user.download(b)
    assert exc.value.code == "bad_artefact_signature"
    assert user.model_transfers == 0  # refused before any model transfer


class CountingTransport(httpx.BaseTransport):
    def __init__(self, inner):
        self.inner, self.paths = inner, []

    def handle_request(self, request):
        self.paths.append(request.url.path)
        return self.inner.handle_request(request)


def test_second_download_transfers_no_model(two_published, tmp_path):
    env, a, b, _ = two_published
    counting = CountingTransport(env.transport)
    cache = tmp_path / "shared-cache"
    user = env.client(transport=counting, cache_dir=cache)
    first = user.download(a)
    second = user.download(a)
    assert user.model_transfers == 1
    model_gets = [p for p in counting.paths if p.startswith("/v1/models/")
                  or p.endswith("/model")]
    assert len(model_gets) == 1, counting.paths
    Xq = np.random.default_rng(3).normal(size=(4, 3))
    np.testing.assert_allclose(first.model.predict(Xq), second.model.predict(Xq))
    # another client sharing the cache directory does not transfer it either
    other = env.client(transport=counting, cache_dir=cache)
    other.download(a)
    assert other.model_transfers == 0
    # a different learnware is a transfer
    user.download(b)
    assert user.model_transfers == 2
    # a corrupted cache entry is not trusted: fetched again, and then correct
    sha = user.manifest(a)["model_sha256"]
    (cache / "models" / f"{sha}.skops").write_bytes(b"corrupted")
    again = user.download(a)
    assert user.model_transfers == 3
    np.testing.assert_allclose(again.model.predict(Xq), first.model.predict(Xq))
    assert len([p for p in counting.paths if p.startswith("/v1/models/")]) == 3


# --------------------------------------------------------------------------------------------
# the market's key is pinned
# --------------------------------------------------------------------------------------------
def test_market_serving_another_key_than_pinned(make_market, config_dir):
    a = make_market()
    b = make_market()
    assert a.market_key != b.market_key
    url = "http://the-market.test"
    # explicit pin
    pinned_a = MarketClient(url, transport=a.transport, market_key=a.market_key,
                            cache_dir=config_dir / "c1")
    assert pinned_a.islands() == []
    wrong = MarketClient(url, transport=b.transport, market_key=a.market_key,
                         cache_dir=config_dir / "c2")
    with pytest.raises(KeyMismatchError):
        wrong.islands()
    # trust on first use, remembered in LWM_CONFIG_DIR
    first = MarketClient(url, transport=a.transport, cache_dir=config_dir / "c3")
    first.islands()
    known = json.loads((config_dir / "known_markets.json").read_text())
    assert known[url] == a.market_key
    later = MarketClient(url, transport=b.transport, cache_dir=config_dir / "c4")
    with pytest.raises(KeyMismatchError) as exc:
        later.islands()
    assert exc.value.code == "market_key_mismatch"
    # publishing to the impostor is refused before anything is sent that matters
    rng = np.random.default_rng(5)
    X = blob(rng, (0, 0, 0), n=120)
    with pytest.raises(KeyMismatchError):
        later.publish(fitted_ridge(X, X @ [1.0, 1.0, 1.0]), X, SEM)
    assert count_rows(b.store, "learnwares") == 0
    # the genuine market at that URL still works
    assert MarketClient(url, transport=a.transport, cache_dir=config_dir / "c5").islands() == []
    # no pin and TOFU disabled: refuse
    strict = MarketClient("http://never-seen.test", transport=a.transport,
                          trust_on_first_use=False, cache_dir=config_dir / "c6")
    with pytest.raises(KeyMismatchError):
        strict.islands()


class ReplayingTransport(httpx.BaseTransport):
    """Answers every POST to /v1/search with the first answer it saw (an attacker replaying a
    genuine, market-signed response)."""

    def __init__(self, inner):
        self.inner, self.saved = inner, None

    def handle_request(self, request):
        if request.url.path == "/v1/search" and self.saved is not None:
            return httpx.Response(200, content=self.saved,
                                  headers={"Content-Type": "application/json"})
        resp = self.inner.handle_request(request)
        if request.url.path == "/v1/search":
            resp.read()
            self.saved = resp.content
        return resp


def test_replayed_market_answer_is_refused(two_published):
    env, a, _, _ = two_published
    rng = np.random.default_rng(6)
    user = env.client(transport=ReplayingTransport(env.transport))
    X = blob(rng, (0, 0, 0), n=120)
    assert user.search(X, SEM).single[0].learnware_id == a
    with pytest.raises(ProtocolError) as exc:
        user.search(X, SEM)
    assert exc.value.code == "bad_response"


def test_clients_share_one_verifying_tls_context():
    """Clients reuse one TLS context (building one reads the CA bundle); it must still verify
    the market's certificate and host name."""
    import ssl
    from client_sdk.client import _tls_context
    ctx = _tls_context()
    assert ctx is _tls_context()
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    assert ctx.cert_store_stats()["x509_ca"] > 0          # a CA bundle is loaded
    a, b = (MarketClient("https://market.example", Identity.generate()) for _ in range(2))
    try:
        pools = [c._http._transport._pool for c in (a, b)]
        assert pools[0]._ssl_context is ctx and pools[1]._ssl_context is ctx
    finally:
        a.close(), b.close()
