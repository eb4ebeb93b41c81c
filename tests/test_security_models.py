"""Hostile model files must not pin a CPU or blow up memory (issue 13, items 1 and 4).

* A few-KB GPR whose kernel is ``Sum(k, k)`` nested over one shared ``k`` (skops refers to an
  earlier node by ``__id__``): cost doubles per level. Refused by the expanded-size bound, fast,
  in ``load_model``, at publish and on download.
* A model that passes every file check but is costly at predict time: refused by the sandbox's
  CPU budget at publish (422 ``model_too_costly``); the market keeps serving.
* Padded / oversized-uncompressed files: refused, nothing stored.
* Real models still publish, download and predict.
"""
from __future__ import annotations

import io
import json
import time
import zipfile
import zlib

import numpy as np
import pytest
from sklearn.ensemble import HistGradientBoostingRegressor, RandomForestRegressor
from sklearn.gaussian_process import GaussianProcessRegressor
from sklearn.gaussian_process.kernels import RBF, ConstantKernel, WhiteKernel
from sklearn.linear_model import Ridge
from sklearn.neural_network import MLPRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from protocol.artefact import sha256_hex, sign_artefact
from protocol.errors import ModelTooCostlyError, UnsafeModelError
from protocol.identity import Identity
from learnware_core.modelfile import DEFAULT_MAX_NODES, dump_model, load_model
from market_server.storage import learnware_public_id
from benchmarks.hostile_models import nested_sum_gpr, rezip, zip_entries
from tests.helpers import (blob, count_rows, detail_codes, error_body, linear_task,
                           publish_envelope, publish_parts, semantic, stored_blobs,
                           zip_of_deflated)

SEM = semantic("hostile models", features=("a", "b", "c"))


# ------------------------------------------------------------------------------ hostile files
def _ridge_bytes() -> bytes:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(50, 3))
    return dump_model(Ridge().fit(X, X.sum(1)))


# ------------------------------------------------------------------- item 1: expanded size
def test_nested_shared_kernel_is_refused_fast_by_the_expanded_size_bound():
    data = nested_sum_gpr(40)
    assert len(data) < 10_000
    t0 = time.perf_counter()
    with pytest.raises(ModelTooCostlyError) as err:
        load_model(data)
    assert time.perf_counter() - t0 < 1.0
    assert err.value.code == "model_too_costly" and err.value.status == 422
    assert err.value.details == {"limit": DEFAULT_MAX_NODES, "resource": "nodes"}
    assert "expands to more than" in err.value.message


def test_shallow_shared_kernel_still_loads_and_the_bound_is_a_parameter():
    data = nested_sum_gpr(6)  # 64 leaves: a legitimate (if odd) sharing
    model = load_model(data)
    assert model.predict(np.zeros((2, 3))).shape == (2,)
    with pytest.raises(ModelTooCostlyError):
        load_model(data, max_nodes=200)


def test_a_node_that_contains_itself_is_refused():
    parts = zip_entries(_ridge_bytes())
    schema = json.loads(dict(parts)["schema.json"])
    root_id = schema["__id__"]
    schema["content"]["content"]["alpha"] = {k: schema[k] for k in
                                             ("__class__", "__module__", "__loader__")}
    schema["content"]["content"]["alpha"]["__id__"] = root_id
    data = rezip([(n, json.dumps(schema).encode() if n == "schema.json" else b)
                   for n, b in parts])
    with pytest.raises(UnsafeModelError, match="contains itself"):
        load_model(data)


def test_publish_refuses_the_nested_kernel_with_a_clear_422(make_market):
    env = make_market()
    dev = Identity.generate()
    X = blob(np.random.default_rng(0), (0, 0, 0), n=100)
    sem, spec, mb = publish_parts(env.client(dev), X, SEM, model_bytes=nested_sum_gpr(40))
    t0 = time.perf_counter()
    r = env.http().post("/v1/learnwares", content=publish_envelope(dev, sem, spec, mb, to=env))
    assert time.perf_counter() - t0 < 10.0
    body = error_body(env, r)
    assert r.status_code == 422 and "model_too_costly" in detail_codes(body)
    assert count_rows(env.store, "learnwares") == 0 and stored_blobs(env) == set()


def test_download_refuses_the_nested_kernel_fast(make_market):
    """A learnware the market should never have held (an older market, a bypassed check):
    the SDK's download runs the same bounded loader and does not hang."""
    env = make_market()
    dev = Identity.generate()
    rng = np.random.default_rng(1)
    X = blob(rng, (0, 0, 0), n=100)
    client = env.client(dev)
    client.publish(Ridge().fit(X, linear_task(rng, X, (1, 2, 3))), X, SEM, k=10)
    island = env.state.market.island_for(SEM)
    sem, spec, mb = publish_parts(client, X, SEM, model_bytes=nested_sum_gpr(40))
    sha = sha256_hex(mb)
    pk = env.store.publish(island_pk=island.pk, developer=dev.public_key_b64,
                           developer_key_id=dev.key_id, semantic=sem, spec=spec,
                           model_sha256=sha, model=mb,
                           artefact=sign_artefact(dev, sem, spec, sha))
    t0 = time.perf_counter()
    with pytest.raises(ModelTooCostlyError):
        env.client().download(learnware_public_id(pk))
    assert time.perf_counter() - t0 < 5.0


# ---------------------------------------------------------------- item 1: the sandbox budget
def test_a_model_costly_only_at_predict_time_is_refused_by_the_sandbox(make_market):
    """Within the graph bound (depth 12: ~50k expanded nodes, loads in a blink), but predict
    evaluates 4,096 RBF blocks against 3,000 training rows: far over a 1 s CPU budget."""
    data = nested_sum_gpr(12, n_train=3000)
    env = make_market(sandbox_cpu_seconds=1)
    dev = Identity.generate()
    rng = np.random.default_rng(2)
    X = blob(rng, (0, 0, 0), n=100)
    sem, spec, mb = publish_parts(env.client(dev), X, SEM, model_bytes=data)
    t0 = time.perf_counter()
    r = env.http().post("/v1/learnwares", content=publish_envelope(dev, sem, spec, mb, to=env))
    elapsed = time.perf_counter() - t0
    body = error_body(env, r)
    assert r.status_code == 422 and "model_too_costly" in detail_codes(body), body
    assert elapsed < 10.0
    assert count_rows(env.store, "learnwares") == 0 and stored_blobs(env) == set()
    # the market keeps serving: an honest model publishes right after, in a fresh worker
    lid = env.client(dev).publish(Ridge().fit(X, linear_task(rng, X, (1, 1, 1))), X, SEM, k=10)
    assert env.client().download(lid).model.predict(X[:3]).shape == (3,)


def test_a_worker_serves_many_tasks_past_its_first_cpu_seconds():
    """Each task gets its own budget on top of the CPU time the worker already used; a worker
    that set a hard limit per task could not raise it again after its first whole CPU second
    and died on the next task, which then looked like a crashing model."""
    from sklearn.neighbors import KNeighborsRegressor
    from market_server.sandbox import ModelSandbox

    rng = np.random.default_rng(3)
    Xt = rng.normal(size=(20_000, 10))
    model = dump_model(KNeighborsRegressor(algorithm="brute").fit(Xt, Xt[:, 0]))
    box = ModelSandbox(cpu_seconds=1.0)
    try:
        proxy = box.load(sha256_hex(model), model)
        X = rng.normal(size=(1500, 10))
        for _ in range(30):  # several CPU seconds in one worker, each task well under 1 s
            assert proxy.predict(X).shape == (1500,)
        assert len(box._workers) == 1
    finally:
        box.close()


def test_the_market_process_never_loads_a_model():
    """The publish check and the island computations go through the sandbox proxy."""
    import market_server.market as market_module
    assert not hasattr(market_module, "load_model")


# ------------------------------------------------------------------ item 4: padding, inflation
def test_unreferenced_entry_is_refused():
    data = rezip(zip_entries(_ridge_bytes()) + [("extra.npy", b"\x00" * 1000)])
    with pytest.raises(UnsafeModelError, match="no node refers to"):
        load_model(data)


def test_small_file_declaring_a_large_uncompressed_size_is_refused():
    """64 MiB of zeros deflates to 64 KB: over 8x the file (and the 16 MiB floor)."""
    base = zip_entries(_ridge_bytes())
    schema = json.loads(dict(base)["schema.json"])
    name = next(n for n, _ in base if n.endswith(".npy"))
    big = io.BytesIO()
    np.save(big, np.zeros(8 << 20), allow_pickle=False)  # 64 MiB, referenced by a node
    data = rezip([(n, big.getvalue() if n == name else b) for n, b in base])
    assert len(data) < 1 << 20
    with pytest.raises(UnsafeModelError, match="more than 8 times"):
        load_model(data)
    assert schema  # the schema itself is untouched: only the array is inflated


@pytest.mark.parametrize("where", ["trailing", "comment", "between"])
def test_padding_bytes_are_refused(where):
    data = _ridge_bytes()
    if where == "trailing":
        bad = data + b"\x00" * 100
    elif where == "comment":
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
            for n, b in zip_entries(data):
                zf.writestr(n, b)
            zf.comment = b"x" * 100
        bad = buf.getvalue()
    else:  # junk after a deflate stream, inside the entry's compressed size
        bad = _junk_after_stream(data)
    with pytest.raises(UnsafeModelError, match="padding|directory|not end"):
        load_model(bad)


def _junk_after_stream(data: bytes) -> bytes:
    """The same archive, schema.json's deflate stream followed by 64 junk bytes (counted in
    its compressed size, so zipfile itself would never notice)."""
    parts = zip_entries(data)
    schema = dict(parts)["schema.json"]
    co = zlib.compressobj(6, zlib.DEFLATED, -15)
    stream = co.compress(schema) + co.flush() + b"\x00" * 64
    return _zip_with_raw_stream(parts, "schema.json", stream, zlib.crc32(schema), len(schema))


def _zip_with_raw_stream(parts, name, stream, crc, size) -> bytes:
    """A zip of ``parts`` (deflated) written by hand, entry ``name`` holding ``stream`` as is."""
    entries = []
    for n, b in parts:
        if n == name:
            entries.append((n, stream, crc, size))
        else:
            co = zlib.compressobj(6, zlib.DEFLATED, -15)
            entries.append((n, co.compress(b) + co.flush(), zlib.crc32(b), len(b)))
    return zip_of_deflated(entries)


def test_hand_built_archive_without_padding_loads():
    """The hand-built zip of the padding test, without the junk, is a valid model file: the
    refusal above is the junk, not the builder."""
    data = _ridge_bytes()
    parts = zip_entries(data)
    schema = dict(parts)["schema.json"]
    co = zlib.compressobj(6, zlib.DEFLATED, -15)
    ok = _zip_with_raw_stream(parts, "schema.json", co.compress(schema) + co.flush(),
                              zlib.crc32(schema), len(schema))
    assert isinstance(load_model(ok), Ridge)


def test_publish_of_a_padded_file_is_refused_and_stores_nothing(make_market):
    env = make_market()
    dev = Identity.generate()
    X = blob(np.random.default_rng(3), (0, 0, 0), n=100)
    rng = np.random.default_rng(3)
    honest = dump_model(Ridge().fit(X, linear_task(rng, X, (1, 1, 1))))
    padded = rezip(zip_entries(honest) + [("pad.npy", bytes(200 << 20))])  # 200 MiB of zeros
    sem, spec, mb = publish_parts(env.client(dev), X, SEM, model_bytes=padded)
    r = env.http().post("/v1/learnwares", content=publish_envelope(dev, sem, spec, mb, to=env))
    body = error_body(env, r)
    assert r.status_code == 422 and "unsafe_model" in detail_codes(body), body
    assert count_rows(env.store, "learnwares") == 0 and stored_blobs(env) == set()


# ------------------------------------------------------------------- real models still work
def _real_models(X, y):
    return {
        "ridge": Ridge().fit(X, y),
        "forest": RandomForestRegressor(30, random_state=0).fit(X, y),
        "hgb": HistGradientBoostingRegressor(max_iter=30).fit(X, y),
        "mlp": MLPRegressor(hidden_layer_sizes=(16,), max_iter=200, random_state=0).fit(X, y),
        "pipeline": make_pipeline(StandardScaler(), Ridge()).fit(X, y),
        "gpr": GaussianProcessRegressor(ConstantKernel() * RBF() + WhiteKernel(),
                                        random_state=0).fit(X[:80], y[:80]),
    }


def test_real_models_publish_download_and_predict(make_market):
    env = make_market()
    rng = np.random.default_rng(4)
    X = blob(rng, (0, 0, 0), n=150)
    y = linear_task(rng, X, (1, -1, 2))
    dev = env.client()
    user = env.client()
    for name, model in _real_models(X, y).items():
        lid = dev.publish(model, X, dict(SEM, name=f"real {name}"), k=10)
        got = user.download(lid).model
        np.testing.assert_allclose(got.predict(X[:5]), model.predict(X[:5]), rtol=1e-9,
                                   err_msg=name)
