"""Issue 14 item 4: the store hands out typed rows (market_server/rows.py), one shape per kind of
row whoever asks, and the API still answers exactly as before."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from market_server.rows import IslandRow, LiveSemantic, LiveSpec, StoredLearnware
from market_server.storage import parse_id
from learnware_core.semantic import island_key
from tests.helpers import blob, fitted_ridge, linear_task, semantic

SEM = semantic("typed rows")

MANIFEST_FIELDS = {"learnware_id", "island_id", "semantic", "spec", "model_sha256", "model_size",
                   "developer", "artefact", "deleted", "withdrawn", "created_at"}
ISLAND_INFO_FIELDS = {"island_id", "semantic_key", "semantic", "kernel", "n_features",
                      "learnware_count", "created_at"}


def _publish(client, seed: int, center) -> str:
    rng = np.random.default_rng(seed)
    X = blob(rng, center, n=120)
    return client.publish(fitted_ridge(X, linear_task(rng, X, rng.normal(size=3))), X, SEM)


@pytest.fixture
def three_one_withdrawn(market):
    """An island of three learnwares, the second withdrawn by its developer."""
    dev = market.client()
    ids = [_publish(dev, s, (s, 0, 0)) for s in range(3)]
    assert dev.delete(ids[1], reason="superseded")
    return market, ids


def _pk(lid: str) -> int:
    return parse_id(lid, "lw")


def test_the_store_returns_typed_island_rows(three_one_withdrawn):
    env, ids = three_one_withdrawn
    store = env.store
    row = store.island(1)
    assert type(row) is IslandRow
    assert (row.pk, row.island_id, row.island_key) == (1, "isl-1", island_key(SEM))
    assert row.n_features == 3 and row.semantic["target"] == SEM["target"]
    assert {"gamma", "scales"} <= set(row.kernel) and row.kernel_version == 0
    assert row.version >= 4  # three publishes and a delete
    assert row.learnware_count is None  # only the listing counts
    assert store.island_by_key(row.island_key) == row
    assert store.ensure_island(row.island_key, {}, 3, {}) == row  # found, not created
    listed = store.list_islands()
    assert [type(i) for i in listed] == [IslandRow]
    assert listed[0] == dataclasses.replace(row, learnware_count=2)
    with pytest.raises(dataclasses.FrozenInstanceError):
        row.version = 0
    with pytest.raises(TypeError):  # no dict access left to fall back on
        row["pk"]


def test_the_store_returns_typed_learnware_rows(three_one_withdrawn):
    env, ids = three_one_withdrawn
    store = env.store
    live = store.learnware(_pk(ids[0]))
    gone = store.learnware(_pk(ids[1]))
    assert type(live) is StoredLearnware and type(gone) is StoredLearnware
    assert (live.pk, live.learnware_id, live.island_pk, live.island_id) == (
        _pk(ids[0]), ids[0], 1, "isl-1")
    assert not live.deleted and live.withdrawn is None
    assert live.spec["n_features"] == 3 and live.model_size > 0 and len(live.model_sha256) == 64
    assert gone.deleted and gone.withdrawn["reason"] == "superseded"
    assert gone.withdrawn["by"] == "developer" and isinstance(gone.withdrawn["at"], int)
    assert store.island_learnwares(1) == [live, store.learnware(_pk(ids[2]))]
    assert [r.learnware_id for r in store.island_learnwares(1, include_deleted=True)] == ids
    assert store.learnwares_by_pks([_pk(ids[2]), _pk(ids[0])]) == store.island_learnwares(1)
    assert store.model_withdrawal(gone.model_sha256) == gone
    assert store.model_withdrawal(live.model_sha256) is None
    with pytest.raises(dataclasses.FrozenInstanceError):
        live.deleted = True


def test_the_indexes_read_typed_live_rows(three_one_withdrawn):
    env, ids = three_one_withdrawn
    store = env.store
    first, last = _pk(ids[0]), _pk(ids[2])
    specs = store.island_specs(1, known={first})
    assert [type(r) for r in specs] == [LiveSpec, LiveSpec]
    assert specs[0] == LiveSpec(first, ids[0], None)  # held by the caller: not read again
    assert specs[1] == LiveSpec(last, ids[2], store.learnware(last).spec)
    assert store.island_appended(1, first, (1, first, first * first)) == [specs[1]]
    semantics = store.all_live_learnwares()
    assert [type(r) for r in semantics] == [LiveSemantic, LiveSemantic]
    assert [(r.learnware_id, r.island_id) for r in semantics] == [(ids[0], "isl-1"),
                                                                 (ids[2], "isl-1")]
    assert semantics[0].semantic["name"] == SEM["name"]
    _, since = store.live_text_since(first)
    assert since == [LiveSemantic(last, ids[2], semantics[1].semantic)]
    assert store.live_semantics([first, _pk(ids[1])]) == [
        LiveSemantic(first, ids[0], semantics[0].semantic)]


def test_manifests_and_island_infos_through_the_api_are_unchanged(three_one_withdrawn):
    """A round trip through HTTP: the answers carry the same fields and values as before the
    rows were typed (built from the row, with integer times)."""
    env, ids = three_one_withdrawn
    http = env.http()
    for lid in (ids[0], ids[1]):
        kind, man = env.reply(http.get(f"/v1/learnwares/{lid}"))
        row = env.store.learnware(_pk(lid))
        assert kind == "download_manifest" and set(man) == MANIFEST_FIELDS
        assert man == {f: getattr(row, f) for f in MANIFEST_FIELDS - {"created_at"}} | {
            "created_at": int(row.created_at)}
    row = env.store.island(1)
    kind, info = env.reply(http.get("/v1/islands/isl-1"))
    assert kind == "island_info" and set(info) == ISLAND_INFO_FIELDS
    assert (info["island_id"], info["semantic_key"], info["n_features"],
            info["learnware_count"], info["created_at"]) == (
        row.island_id, row.island_key, row.n_features, 2, int(row.created_at))
    assert info["kernel"]["version"] == row.kernel_version
    _, by_key = env.reply(http.get(f"/v1/islands/by-key/{row.island_key}"))
    _, listing = env.reply(http.get("/v1/islands"))
    assert by_key == info and listing["islands"] == [info]
    http.close()
    # the cached island row a search reads is refreshed, not mutated, after a publish
    market = env.state.market
    before = market.island_for(SEM)
    _publish(env.client(), 7, (0, 3, 0))
    after = market.island_for(SEM)
    assert after.version == before.version + 1 and after.kernel is before.kernel
    assert before == dataclasses.replace(after, version=before.version)
