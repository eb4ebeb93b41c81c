"""Storage on SQLite and PostgreSQL: atomic publish, orphan collection, tombstones, the shared
nonce store, schema versions, and several app instances ("workers") on one database."""
from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa

from client_sdk import Identity
from market_server.storage import (SCHEMA_VERSION, DatabaseBlobs, FolderBlobs, StorageError,
                                   Store)
from protocol.artefact import sha256_hex
from protocol.errors import LearnwareError

from tests.helpers import (blob, count_rows, error_body, fitted_ridge, linear_task,
                           search_envelope, semantic, stored_blobs)

SEM = semantic("storage cases")


def _publish(env, seed: int, center=(0, 0, 0), client=None) -> str:
    rng = np.random.default_rng(seed)
    X = blob(rng, center, n=120)
    model = fitted_ridge(X, linear_task(rng, X, rng.normal(size=3)))
    return (client or env.client()).publish(model, X, SEM)


def _new_store(env) -> Store:
    cfg = env.config
    return Store(cfg.resolved_db_url(), blob_store=cfg.resolved_blob_store(),
                 blob_dir=Path(cfg.data_dir) / "blobs", db_schema=cfg.db_schema)


def _id(lid: str) -> int:
    return int(lid.split("-")[1])


def test_blob_store_matches_backend(market):
    if market.backend == "postgresql":
        assert isinstance(market.store.blobs, DatabaseBlobs)
    else:
        assert isinstance(market.store.blobs, FolderBlobs)


def test_publish_is_atomic_when_the_database_fails_after_the_blob_write(market, monkeypatch):
    env = market
    _publish(env, 1)
    island_pk = 1
    before = {"rows": count_rows(env.store, "learnwares"), "blobs": stored_blobs(env),
              "version": env.store.island_version(island_pk)}

    written = []
    real_put = env.store.blobs.put

    def spy_put(sha, data, conn=None):
        created = real_put(sha, data, conn)
        written.append((sha, created))
        return created

    monkeypatch.setattr(env.store.blobs, "put", spy_put)

    def fail_insert(conn, cursor, statement, parameters, context, executemany):
        if statement.lstrip().upper().startswith("INSERT INTO LEARNWARES"):
            raise sa.exc.OperationalError(statement, parameters,
                                          RuntimeError("simulated: the disk is full"))

    sa.event.listen(env.store.engine, "before_cursor_execute", fail_insert)
    try:
        with pytest.raises(LearnwareError) as exc:
            _publish(env, 2)
    finally:
        sa.event.remove(env.store.engine, "before_cursor_execute", fail_insert)
    assert exc.value.code == "storage_error" and exc.value.status == 503
    # the model file WAS written before the failing insert ...
    assert len(written) == 1 and written[0][1] is True
    new_sha = written[0][0]
    # ... and nothing of it is left: no row, no file / blob row, island unchanged
    assert count_rows(env.store, "learnwares") == before["rows"]
    assert stored_blobs(env) == before["blobs"]
    assert new_sha not in stored_blobs(env)
    assert env.store.island_version(island_pk) == before["version"]
    assert env.client().island(SEM)["learnware_count"] == 1
    # the market is fine afterwards
    lid = _publish(env, 2)
    assert _id(lid) > 1
    assert count_rows(env.store, "learnwares") == 2


def test_orphan_blobs_are_collected(market):
    env = market
    lid = _publish(env, 3)
    kept = env.client().manifest(lid)["model_sha256"]
    # a crash between the blob write and the row commit leaves a file no row references
    orphan = b"PK\x03\x04 not referenced by any learnware"
    sha = sha256_hex(orphan)
    if isinstance(env.store.blobs, DatabaseBlobs):
        with env.store.engine.begin() as conn:
            env.store.blobs.put(sha, orphan, conn)
    else:
        env.store.blobs.put(sha, orphan)
    assert stored_blobs(env) == {kept, sha}
    if not isinstance(env.store.blobs, DatabaseBlobs):
        # and a half-written temporary file (a crash in the middle of the write itself)
        tmp = Path(env.config.data_dir) / "blobs" / "ab" / "cd" / ".tmp-crashed"
        tmp.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_bytes(b"partial")
    assert env.store.collect_orphan_blobs() == 1
    assert stored_blobs(env) == {kept}
    if not isinstance(env.store.blobs, DatabaseBlobs):
        assert not any(p.name.startswith(".tmp-")
                       for p in (Path(env.config.data_dir) / "blobs").rglob("*"))
    # nothing more to collect; a tombstoned learnware's file is still referenced and kept (the
    # record stays), but no longer served (issue 13: 410 withdrawn)
    assert env.store.collect_orphan_blobs() == 0
    assert env.store.tombstone(_id(lid))  # (the publisher's key was random: via the store)
    assert env.store.collect_orphan_blobs() == 0
    assert stored_blobs(env) == {kept}
    with env.http() as http:
        r = http.get(f"/v1/models/{kept}")
    assert r.status_code == 410 and error_body(env, r)["code"] == "withdrawn"


def test_tombstones_never_reuse_ids_even_after_restart(market):
    env = market
    dev = env.client()
    ids = [_publish(env, s, client=dev) for s in (10, 11, 12)]
    assert ids == ["lw-1", "lw-2", "lw-3"]
    assert dev.delete("lw-3")                       # the highest id
    assert _publish(env, 13, client=dev) == "lw-4"
    # restart: a new app (new Store) on the same database
    env.store.dispose()
    env2 = env.sibling()
    dev2 = env2.client(dev.identity)
    assert dev2.manifest("lw-3", include_withdrawn=True)["deleted"] is True
    assert dev2.delete("lw-4")
    env2.store.dispose()
    env3 = env.sibling()
    new = _publish(env3, 14, client=env3.client(dev.identity))
    assert new == "lw-5"
    # the tombstoned rows are still there, marked deleted
    store = _new_store(env)
    try:
        assert store.learnware(3).deleted and store.learnware(4).deleted
        assert not store.learnware(5).deleted
        assert [r.learnware_id for r in store.island_learnwares(1)] == ["lw-1", "lw-2", "lw-5"]
        assert len(store.island_learnwares(1, include_deleted=True)) == 5
    finally:
        store.dispose()


def test_nonce_store_is_shared_by_workers(market):
    a = market
    b = a.sibling()
    me = Identity.generate()
    env1 = search_envelope(me, SEM, to=a)
    assert a.http().post("/v1/search", content=env1).status_code == 200
    r = b.http().post("/v1/search", content=env1)
    assert r.status_code == 409 and error_body(a, r)["code"] == "replayed_nonce"
    env2 = search_envelope(me, SEM, to=a)
    assert b.http().post("/v1/search", content=env2).status_code == 200
    r = a.http().post("/v1/search", content=env2)
    assert r.status_code == 409 and error_body(a, r)["code"] == "replayed_nonce"
    # a third, independent Store on the same database sees both nonces
    store = _new_store(a)
    try:
        assert store.check_and_store(me.key_id, _nonce(env1), 0, 300.0) is False
        assert store.check_and_store(me.key_id, "f" * 32, 0, 300.0) is True
    finally:
        store.dispose()


def _nonce(envelope: bytes) -> str:
    import json
    return json.loads(envelope)["nonce"]


def test_schema_version(market):
    env = market
    with env.store.engine.connect() as conn:
        versions = [r[0] for r in conn.execute(sa.text("SELECT version FROM schema_version"))]
    assert versions == [SCHEMA_VERSION]
    # migrating again (another worker starting) records nothing new
    _new_store(env).dispose()
    with env.store.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM schema_version")).scalar() == 1
    # a database written by a newer server is refused, not corrupted
    with env.store.engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO schema_version (version, applied_at) VALUES (:v, 0)"),
                     {"v": SCHEMA_VERSION + 1})
    with pytest.raises(StorageError, match="newer"):
        _new_store(env)
    if env.backend == "postgresql":
        # the tables live in the test's own schema, not in public
        with env.store.engine.connect() as conn:
            schema = conn.execute(sa.text(
                "SELECT table_schema FROM information_schema.tables "
                "WHERE table_name = 'learnwares' AND table_schema = :s"),
                {"s": env.config.db_schema}).scalar()
        assert schema == env.config.db_schema


def test_two_apps_share_state_and_refresh_caches(market):
    a = market
    b = a.sibling()
    user_b = b.client()
    rng = np.random.default_rng(20)
    X_user = blob(rng, (8, 0, 0), n=200)
    # B knows nothing yet
    assert user_b.search(None, SEM).island_id is None
    # publish through A
    dev = a.client()
    first = _publish(a, 21, center=(0, 0, 0), client=dev)
    res = user_b.search(X_user, SEM)
    assert [m.learnware_id for m in res.single] == [first]
    # A publishes a better match: B's cached index must refresh
    better = _publish(a, 22, center=(8, 0, 0), client=dev)
    res = user_b.search(X_user, SEM)
    assert res.single[0].learnware_id == better and len(res.single) == 2
    assert res.single[0].fit == "good"
    # B downloads what A stored (a file on the shared folder, or a blob row in PostgreSQL)
    lw = user_b.download(better)
    assert lw.id == better and user_b.model_transfers == 1
    np.testing.assert_allclose(lw.model.predict(X_user[:5]),
                               a.client().download(better).model.predict(X_user[:5]))
    if a.backend == "postgresql":
        assert Path(b.config.data_dir) != Path(a.config.data_dir)
        assert not (Path(b.config.data_dir) / "blobs").exists() or not any(
            p.is_file() for p in (Path(b.config.data_dir) / "blobs").rglob("*"))
    # A deletes: B stops returning it
    assert dev.delete(better)
    res = user_b.search(X_user, SEM)
    assert [m.learnware_id for m in res.single] == [first]
    assert user_b.island(SEM)["learnware_count"] == 1
    # and B's publishes are visible through A, with ids from the same sequence
    third = _publish(b, 23, center=(0, 8, 0))
    assert _id(third) > _id(better)
    assert {m.learnware_id for m in a.client().search(X_user, SEM).single} == {first, third}


def test_a_worker_rereads_the_island_row_only_when_the_kernel_changed(market):
    """Publishes move the island's version: a worker's cached row takes the new version and
    keeps its decoded kernel. A kernel change anywhere makes it read the row again."""
    a = market
    b = a.sibling()
    _publish(a, 31)
    market_b = b.app.extensions["learnware_market"].market
    row = market_b.island_for(SEM)
    _publish(a, 32, center=(4, 0, 0))
    again = market_b.island_for(SEM)
    assert again.version > row.version and again.kernel is row.kernel
    kernel = dict(again.kernel, gamma=again.kernel["gamma"] * 2)
    assert a.store.set_kernel(again.pk, kernel, again.kernel_version)
    fresh = market_b.island_for(SEM)
    assert fresh.kernel_version == again.kernel_version + 1
    assert fresh.kernel["gamma"] == kernel["gamma"]


def test_concurrent_publishes_through_two_workers(market):
    a = market
    b = a.sibling()
    results, errors = [], []

    def work(env, seeds):
        try:
            for s in seeds:
                results.append(_publish(env, s))
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(a, (30, 31, 32))),
               threading.Thread(target=work, args=(b, (33, 34, 35)))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert sorted(results, key=_id) == [f"lw-{i}" for i in range(1, 7)]
    assert count_rows(a.store, "islands") == 1
    assert a.client().island(SEM)["learnware_count"] == 6


def test_racing_first_publishers_of_an_island(market, monkeypatch):
    """Two developers publish the first learnware of an island at the same moment, through two
    workers, with different feature scales: the loser must not be stored with a spec computed
    under a kernel the island does not have (the SDK recomputes and retries)."""
    a = market
    b = a.sibling()
    rng = np.random.default_rng(40)
    X1 = blob(rng, (0, 0, 0), n=120)                 # scales ~ 1
    X2 = blob(rng, (0, 0, 0), n=120, spread=7.0)     # scales ~ 7
    first = a.client().publish(fitted_ridge(X1, X1 @ [1.0, 2.0, 3.0]), X1, SEM)
    # Worker B has not "seen" the island yet when the second developer asks for it and publishes
    # (its reads ran before worker A's commit): the first two lookups find nothing.
    real = b.store.island_by_key
    calls = {"n": 0}

    def stale(key, conn=None):
        calls["n"] += 1
        return None if calls["n"] <= 2 else real(key, conn)

    monkeypatch.setattr(b.store, "island_by_key", stale)
    second = b.client().publish(fitted_ridge(X2, X2 @ [3.0, 2.0, 1.0]), X2, SEM)
    assert calls["n"] > 2, "the race was not simulated"
    assert (first, second) == ("lw-1", "lw-2")
    island = a.client().island(SEM)
    from protocol.encoding import decode_array
    island_scales = decode_array(island["kernel"]["scales"], field="scales")
    for lid in (first, second):
        spec = a.client().manifest(lid)["spec"]
        assert spec["gamma"] == pytest.approx(island["kernel"]["gamma"])
        np.testing.assert_allclose(decode_array(spec["scales"], field="scales"), island_scales)


def test_a_failing_publish_never_deletes_a_file_another_publish_is_placing(tmp_path):
    """Two publishes of the same model file on two islands: B finds the file A just wrote and
    is about to reference it when A fails and cleans up. A's clean-up must wait for B's commit
    (the blob lock) and then leave the file alone."""
    import threading
    from client_sdk import Identity
    from protocol.artefact import sign_artefact
    from protocol.encoding import encode_array
    store = Store(f"sqlite:///{tmp_path / 'm.db'}", blob_store="folder",
                  blob_dir=tmp_path / "blobs")
    me = Identity.generate()
    kernel = {"gamma": 0.5, "scales": [1.0], "base_scales": [1.0]}
    isl = [store.ensure_island(key, {"data_type": "table"}, 1, kernel).pk
           for key in ("a" * 64, "b" * 64)]
    model, sha = b"model bytes", "f" * 64
    spec = {"z": encode_array(np.zeros((1, 1))), "beta": encode_array(np.ones(1)),
            "gamma": 0.5, "scales": encode_array(np.ones(1)), "n_features": 1}
    store.blobs.put(sha, model)  # A wrote the file (and will fail)
    paused, resume = threading.Event(), threading.Event()
    real_put = store.blobs.put

    def slow_put(s, data, conn=None):
        created = real_put(s, data, conn)
        paused.set()  # B found the file in place; its row is not committed yet
        assert resume.wait(10)
        return created

    store.blobs.put = slow_put
    b_result = {}
    b = threading.Thread(target=lambda: b_result.update(pk=store.publish(
        island_pk=isl[1], developer=me.public_key_b64, developer_key_id=me.key_id,
        semantic=SEM, spec=spec, model_sha256=sha, model=model,
        artefact=sign_artefact(me, SEM, spec, sha))))
    b.start()
    assert paused.wait(10)
    a = threading.Thread(target=store._drop_blob_if_unreferenced, args=(sha,))
    a.start()
    a.join(0.5)
    assert a.is_alive(), "the clean-up did not wait for the publish in progress"
    resume.set()
    b.join(10)
    a.join(10)
    assert b_result["pk"] >= 1
    assert store.blobs.get(sha) == model  # still there, and referenced
    assert store.collect_orphan_blobs() == 0
    store.dispose()


def test_schema_1_is_upgraded(market):
    """A database of schema 1 (no index on the island's live ids) gets the index and the new
    version recorded once; its learnwares are untouched."""
    from market_server.storage import ix_island_live
    env = market
    lid = _publish(env, 1)
    with env.store.engine.begin() as conn:
        ix_island_live.drop(conn)
        conn.execute(sa.text("DELETE FROM schema_version"))
        conn.execute(sa.text("INSERT INTO schema_version (version, applied_at) VALUES (1, 0)"))
    store = _new_store(env)
    with store.engine.connect() as conn:
        versions = sorted(r[0] for r in conn.execute(sa.text("SELECT version FROM schema_version")))
        names = {ix["name"] for ix in sa.inspect(conn).get_indexes(
            "learnwares", schema=env.config.db_schema)}
    assert versions == [1, SCHEMA_VERSION] and "ix_learnwares_island_live" in names
    assert store.learnware(_id(lid)).learnware_id == lid
    store.dispose()


def _back_to_schema_2(env) -> None:
    """Make the database what a schema-2 server left: no live totals, version 2 recorded."""
    from market_server.storage import LIVE_TOTALS
    with env.store.engine.begin() as conn:
        for c in LIVE_TOTALS:
            conn.execute(sa.text(f"ALTER TABLE islands DROP COLUMN {c}"))
        conn.execute(sa.text("DELETE FROM schema_version"))
        conn.execute(sa.text("INSERT INTO schema_version (version, applied_at) VALUES (2, 0)"))
    env.store.dispose()


def test_schema_2_is_upgraded_to_3(market):
    """A database of schema 2 gets the islands' live-id totals, computed from its learnwares
    (a deleted one left out), and refreshes after later publishes and deletes use them."""
    from market_server.storage import live_totals
    env = market
    lids = [_publish(env, seed, center=(seed, 0, 0)) for seed in range(3)]
    env.store.tombstone(_id(lids[1]))
    _back_to_schema_2(env)
    store = _new_store(env)
    with store.engine.connect() as conn:
        versions = sorted(r[0] for r in conn.execute(sa.text("SELECT version FROM schema_version")))
        totals = conn.execute(sa.text("SELECT live_count, live_sum, live_sumsq FROM islands")).one()
    assert versions == [2, SCHEMA_VERSION]
    assert tuple(totals) == live_totals([_id(lids[0]), _id(lids[2])])
    store.dispose()


def test_servers_starting_together_on_postgresql_migrate_once(market):
    """Two servers (other machines) open a schema-2 database at the same moment: one migrates,
    the other waits for it and finds the work done."""
    env = market
    if env.backend != "postgresql":
        pytest.skip("SQLite is migrated by the one server process before its workers start")
    _publish(env, 1)
    _back_to_schema_2(env)
    errors, stores = [], []

    def start():
        try:
            stores.append(_new_store(env))
        except Exception as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors
    with stores[0].engine.connect() as conn:
        versions = sorted(r[0] for r in conn.execute(sa.text("SELECT version FROM schema_version")))
        count = conn.execute(sa.text("SELECT live_count FROM islands")).scalar()
    assert versions == [2, SCHEMA_VERSION] and count == 1
    for st in stores:
        st.dispose()


def test_live_totals_follow_publish_and_delete(market):
    from market_server.storage import live_totals
    env = market
    lids = [_publish(env, seed, center=(seed, 0, 0)) for seed in range(4)]
    env.store.tombstone(_id(lids[2]))
    with env.store.engine.connect() as conn:
        totals = conn.execute(sa.text("SELECT live_count, live_sum, live_sumsq FROM islands")).one()
    assert tuple(totals) == live_totals(_id(x) for x in lids if x != lids[2])
    # an index that still holds the deleted one is told to list the island again
    ids = [_id(x) for x in lids]
    held = (len(ids), sum(ids), sum(i * i for i in ids))
    assert env.store.island_appended(1, max(ids), held) is None
    live = [i for i in ids if i != _id(lids[2])]
    assert env.store.island_appended(1, max(live), (len(live), sum(live),
                                                    sum(i * i for i in live))) == []
    # and one that holds the first two is given the last one
    got = env.store.island_appended(1, ids[1], (2, ids[0] + ids[1], ids[0] ** 2 + ids[1] ** 2))
    assert [r.pk for r in got] == [ids[3]]


def test_a_refinement_is_not_skipped_when_publishes_commit_together(make_market, monkeypatch):
    """The island passes a refine size between two publishes' checks (as when they commit
    together): the next publish refines, once."""
    env = make_market(refine_at=(4,))
    market = env.app.extensions["learnware_market"].market
    real = market._maybe_refine
    monkeypatch.setattr(market, "_maybe_refine", lambda pk, kernel=None: False)
    for seed in range(5):  # sizes 1..5 go by without any refinement check
        _publish(env, seed, center=(seed, 0, 0))
    island = env.store.island(1)
    v0 = island.kernel_version
    assert "refined_count" not in island.kernel
    monkeypatch.setattr(market, "_maybe_refine", real)
    _publish(env, 10, center=(1, 1, 1))  # size 6 >= 4 > 1: refine now
    island = env.store.island(1)
    assert island.kernel_version == v0 + 1 and island.kernel["refined_count"] == 6
    _publish(env, 11, center=(2, 1, 1))  # nothing new to cross
    assert env.store.island(1).kernel_version == v0 + 1


def test_an_island_far_past_its_refine_sizes_does_not_start_refining(make_market, monkeypatch):
    """An island that grew without refinements (e.g. filled with ``refine_at=()``) is not
    refined over all its learnwares by the next publish: only sizes just crossed count."""
    env = make_market(refine_at=(4,))
    market = env.app.extensions["learnware_market"].market
    real = market._maybe_refine
    monkeypatch.setattr(market, "_maybe_refine", lambda pk, kernel=None: False)
    for seed in range(4 + market.REFINE_SLACK):
        _publish(env, seed, center=(seed, 0, 0))
    v0 = env.store.island(1).kernel_version
    monkeypatch.setattr(market, "_maybe_refine", real)
    _publish(env, 50, center=(1, 2, 1))
    assert env.store.island(1).kernel_version == v0
