"""Private search (issue #19): the client ranks locally, exactly as the market does, and keeps
an incremental mirror of the island that follows publishes, withdrawals and kernel changes."""
from __future__ import annotations

import httpx
import numpy as np
import pytest

from client_sdk import private_search as ps
from market_server.search import IslandIndex
from protocol.encoding import encode_array

from tests.helpers import blob, error_body, fitted_ridge, linear_task, semantic

SEM = semantic("private search", features=("a", "b", "c", "d"))


class CountingTransport(httpx.BaseTransport):
    """Records each request's path and the bytes of each answer."""

    def __init__(self, inner):
        self.inner, self.log = inner, []

    def handle_request(self, request):
        resp = self.inner.handle_request(request)
        resp.read()
        self.log.append((request.method, request.url.path, len(resp.content)))
        return resp


def _publish_many(env, n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    dev = env.client()
    centres = rng.uniform(-6, 6, size=(n, 4))
    ids = []
    for c in centres:
        X = blob(rng, c, n=120)
        ids.append(dev.publish(fitted_ridge(X, linear_task(rng, X, [1, -1, .5, 2])), X, SEM,
                               k=8))
    return dev, centres, ids


def _same_ranking(server, private, n_top):
    assert [m.learnware_id for m in server.single] == [m.learnware_id for m in private.single]
    np.testing.assert_allclose([m.mmd for m in server.single[:n_top]],
                               [m.mmd for m in private.single[:n_top]], rtol=1e-4, atol=1e-6)
    assert [m.fit for m in server.single] == [m.fit for m in private.single]
    assert server.mixture.learnware_ids == private.mixture.learnware_ids
    np.testing.assert_allclose(server.mixture.weights, private.mixture.weights, atol=2e-3)


@pytest.fixture(scope="module")
def small_island(make_module_market):
    env = make_module_market()
    dev, centres, ids = _publish_many(env, 16)
    return env, dev, centres, ids


def test_private_ranking_is_the_markets_on_a_small_island(small_island):
    env, _, centres, _ = small_island
    rng = np.random.default_rng(5)
    rec = CountingTransport(env.transport)
    user = env.client(transport=rec)
    for t, w in enumerate([0, 3, 7, 11]):
        X = blob(rng, centres[w] + 0.3 * rng.normal(size=4), n=150)
        server = user.search(X, SEM, max_results=8, k=12)
        private = user.search(X, SEM, max_results=8, k=12, private=True)
        assert private.single[0].learnware_id == f"lw-{w + 1}"
        _same_ranking(server, private, 8)
    private_paths = {p for m, p, _ in rec.log if "/digest" in p or "/specs" in p}
    assert private_paths and not any("/specs" in p for p in private_paths)  # specs mode: none


def test_second_search_reads_only_what_changed(small_island):
    env, dev, centres, ids = small_island
    rng = np.random.default_rng(9)
    rec = CountingTransport(env.transport)
    user = env.client(transport=rec)
    X = blob(rng, centres[2], n=150)
    user.search(X, SEM, private=True)
    first = sum(b for _, p, b in rec.log if "/digest" in p)
    rec.log.clear()
    user.search(X, SEM, private=True)
    second = sum(b for _, p, b in rec.log if "/digest" in p)
    assert second < first / 4, (first, second)
    # a publish since: the mirror adds exactly that learnware
    Xn = blob(rng, [9, 9, 9, 9], n=120)
    new_id = dev.publish(fitted_ridge(Xn, linear_task(rng, Xn, [1, 1, 1, 1])), Xn, SEM, k=8)
    res = user.search(blob(rng, [9, 9, 9, 9], n=150), SEM, private=True)
    assert res.single[0].learnware_id == new_id
    island = user.island(SEM)
    mirror = ps.IslandMirror.load(ps.cache_path(user, island.island_id), island.island_id)
    assert mirror.pks.tolist() == sorted(int(i.split("-")[1]) for i in ids + [new_id])
    # a withdrawal since: dropped from the mirror and from the ranking
    dev.delete(new_id, reason="test")
    res = user.search(blob(rng, [9, 9, 9, 9], n=150), SEM, private=True)
    assert new_id not in [m.learnware_id for m in res.single]
    mirror = ps.IslandMirror.load(ps.cache_path(user, island.island_id), island.island_id)
    assert int(new_id.split("-")[1]) not in mirror.pks.tolist()
    server = user.search(blob(rng, centres[4], n=150), SEM, max_results=6)
    private = user.search(blob(rng, centres[4], n=150), SEM, max_results=6, private=True)
    assert [m.learnware_id for m in server.single] != [] and server.single[0].learnware_id \
        == private.single[0].learnware_id


def test_private_ranking_is_the_markets_with_sketches(make_market, monkeypatch):
    """Islands ranked with sketches: the client gets sketches, picks the market's candidates
    with the market's rule and fetches only their exact specs."""
    monkeypatch.setattr(IslandIndex, "COARSE_MIN", 6)
    monkeypatch.setattr(ps, "SPEC_BATCH", 5)  # several spec requests
    env = make_market()
    _, centres, ids = _publish_many(env, 14, seed=3)
    rng = np.random.default_rng(4)
    rec = CountingTransport(env.transport)
    user = env.client(transport=rec)
    for w in (1, 6, 12):
        X = blob(rng, centres[w], n=150)
        server = user.search(X, SEM, max_results=5, k=12)
        private = user.search(X, SEM, max_results=5, k=12, private=True)
        assert private.single[0].learnware_id == ids[w]
        _same_ranking(server, private, 5)
    island = user.island(SEM)
    mirror = ps.IslandMirror.load(ps.cache_path(user, island.island_id), island.island_id)
    assert mirror.mode == "sketch" and mirror.S.shape == (14, 512)
    assert any("/specs" in p for _, p, _ in rec.log)


# --- the mirror's cache, against a scripted market -------------------------------------------
class ScriptedMarket:
    """A client stand-in whose digest answers come from a list of islands states."""

    def __init__(self, tmp_path):
        self.cache_dir, self.market_key_id = tmp_path, "k" * 64
        self.state = None
        self.asked = []

    def signed_get(self, path, expected, params=None):
        self.asked.append((path, dict(params or {})))
        since = int(params.get("since", 0))
        version, specs = self.state
        pks = [p for p in sorted(specs) if p > since]
        z = np.concatenate([specs[p] for p in pks]) if pks else np.zeros((0, 2))
        return {"island_id": "isl-1", "mode": "specs", "more": False,
                "kernel": {"gamma": 0.25, "scales": encode_array(np.ones(2)), "version": version},
                "cursor": max(pks) if pks else since, "learnware_count": len(specs),
                "baseline_mmd": 0.5, "pks": encode_array(np.array(pks, dtype=np.int64)),
                "live": encode_array(np.array(sorted(specs), dtype=np.int64)),
                "counts": encode_array(np.array([len(specs[p]) for p in pks], dtype=np.int64)),
                "z": encode_array(z), "beta": encode_array(np.concatenate(
                    [np.full(len(specs[p]), 1 / len(specs[p])) for p in pks]) if pks
                    else np.zeros(0))}


def test_mirror_follows_publishes_withdrawals_and_kernel_changes(tmp_path):
    rng = np.random.default_rng(0)
    specs = {p: rng.normal(size=(3, 2)) for p in (1, 2, 3)}
    m = ScriptedMarket(tmp_path)
    m.state = (1, dict(specs))
    mirror = ps.sync(m, "isl-1")
    assert mirror.pks.tolist() == [1, 2, 3] and m.asked[-1][1]["since"] == 0
    specs[5] = rng.normal(size=(4, 2))
    del specs[2]
    m.state = (1, dict(specs))
    mirror = ps.sync(m, "isl-1")
    assert m.asked[-1][1]["since"] == 3  # only what came after the cached cursor
    assert mirror.pks.tolist() == [1, 3, 5] and mirror.counts.tolist() == [3, 3, 4]
    np.testing.assert_array_equal(mirror.z[3:6], specs[3])
    # a kernel change: the cached mirror is dropped and read again from the start
    m.state = (2, dict(specs))
    mirror = ps.sync(m, "isl-1")
    assert [a[1]["since"] for a in m.asked[-2:]] == [5, 0]
    assert mirror.kernel_version == 2 and mirror.pks.tolist() == [1, 3, 5]
    # the self inner products are recomputed under the current kernel
    from learnware_core.kernels import embedding_inner
    b = np.full(3, 1 / 3)
    assert mirror.self_inner[0] == pytest.approx(embedding_inner(specs[1], b, specs[1], b, 0.25,
                                                                 np.ones(2)))


def test_cache_file_is_not_a_pickle(tmp_path):
    path = tmp_path / "private" / "x.npz"
    path.parent.mkdir()
    np.save(path.with_suffix(".npy"), np.array([object()], dtype=object), allow_pickle=True)
    path.write_bytes(path.with_suffix(".npy").read_bytes())
    assert ps.IslandMirror.load(path, "isl-1").pks.size == 0  # unreadable: an empty mirror


# --- bad requests ----------------------------------------------------------------------------
@pytest.mark.parametrize("query, field", [("pks=abc", "pks"), ("pks=", "pks"),
                                          ("pks=" + ",".join(["1"] * 600), "pks"),
                                          ("pks=-3", "pks")])
def test_bad_spec_requests_are_clear_400s(small_island, query, field):
    env = small_island[0]
    island = env.client().island(SEM)
    r = env.http().get(f"/v1/islands/{island.island_id}/specs?{query}")
    assert r.status_code == 400
    assert error_body(env, r)["field"] == field


@pytest.mark.parametrize("query, field", [("since=-1", "since"), ("since=x", "since"),
                                          ("limit=99999999999", "limit")])
def test_bad_digest_requests_are_clear_400s(small_island, query, field):
    env = small_island[0]
    island = env.client().island(SEM)
    r = env.http().get(f"/v1/islands/{island.island_id}/digest?{query}")
    assert r.status_code == 400
    assert error_body(env, r)["field"] == field


def test_unknown_island_is_a_404(small_island):
    env = small_island[0]
    r = env.http().get("/v1/islands/isl-999999/digest")
    assert r.status_code == 404


def test_digest_pages_by_cursor(small_island):
    env = small_island[0]
    island = env.client().island(SEM)
    c = env.client()
    seen, since = [], 0
    while True:
        page = c.signed_get(f"/v1/islands/{island.island_id}/digest", "island_digest",
                            params={"since": since, "limit": 5})
        from protocol.encoding import decode_array
        seen += decode_array(page["pks"], field="pks", ndim=1).tolist()
        since = page["cursor"]
        if not page["more"]:
            live = decode_array(page["live"], field="live", ndim=1).tolist()
            break
        assert "live" not in page
    assert seen == sorted(seen) == live


def test_cli_private_search_and_dp_publish(tmp_path):
    """`lwm publish --epsilon --bounds` (30 rows) and `lwm search --private` end to end."""
    import json
    import os
    import subprocess
    import sys

    import pandas as pd
    from sklearn.linear_model import Ridge

    from client_sdk.demo.server import ServerProcess
    from learnware_core.modelfile import dump_model

    env = dict(os.environ, LWM_CONFIG_DIR=str(tmp_path / "config"), OMP_NUM_THREADS="1")
    feats = ["a", "b", "c", "d"]
    (tmp_path / "sem.json").write_text(json.dumps(SEM))

    def lwm(*args):
        p = subprocess.run([sys.executable, "-m", "client_sdk.cli", *args], capture_output=True,
                           text=True, env=env, timeout=120)
        assert p.returncode == 0, p.stdout + p.stderr
        return json.loads(p.stdout)

    rng = np.random.default_rng(0)
    with ServerProcess(tmp_path / "market", address_limits=False) as server:
        m = ["--market", server.url]
        lwm("keygen", "--identity", str(tmp_path / "dev.pem"), "--json")
        ids = []
        for loc, n, dp in ((0.0, 200, []), (8.0, 30, ["--epsilon", "1", "--bounds=4,12"])):
            X = rng.normal(loc=loc, size=(n, 4))
            pd.DataFrame(X, columns=feats).to_csv(tmp_path / f"t{loc}.csv", index=False)
            (tmp_path / f"m{loc}.skops").write_bytes(dump_model(Ridge().fit(X, X @ [1, 2, 3, 4])))
            ids.append(lwm("publish", *m, "--identity", str(tmp_path / "dev.pem"), "--model",
                           str(tmp_path / f"m{loc}.skops"), "--data", str(tmp_path / f"t{loc}.csv"),
                           "--semantic", str(tmp_path / "sem.json"), *dp, "--json")
                       ["learnware_id"])
        pd.DataFrame(rng.normal(loc=8.0, size=(100, 4)), columns=feats).to_csv(
            tmp_path / "user.csv", index=False)
        res = lwm("search", *m, "--semantic", str(tmp_path / "sem.json"), "--data",
                  str(tmp_path / "user.csv"), "--private", "--json")
        assert res["single"][0]["learnware_id"] == ids[1]
        assert list((tmp_path / "config").rglob("*.npz"))  # the mirror, cached
