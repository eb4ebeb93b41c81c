"""``lwm admin backup`` / ``restore`` (issue 20): a consistent copy of rows, model files and key,
taken while the market serves, restored into an empty market; every learnware compared
(manifest, spec, model bytes, withdrawal), on SQLite and PostgreSQL, and across engines."""
from __future__ import annotations

import json
import threading
import uuid
from pathlib import Path

import numpy as np
import pytest

from market_server.admin import main as admin_main
from market_server.app import create_app
from market_server.backup import BackupError, backup, restore
from market_server.config import ServerConfig
from market_server.storage import Store, parse_id
from tests.helpers import _pg_exec, blob, fitted_ridge, linear_task, semantic

SEMS = [semantic("backup a"), semantic("backup b", features=("p", "q"))]


def _fill(env, n: int = 3) -> list[str]:
    """Learnwares on two islands, one of them withdrawn."""
    rng = np.random.default_rng(0)
    dev = env.client()
    ids = []
    for sem in SEMS:
        d = len(sem["input_features"])
        for i in range(n):
            X = blob(rng, np.arange(d) + i, n=60)
            ids.append(dev.publish(fitted_ridge(X, linear_task(rng, X, np.ones(d))), X, sem,
                                   k=8))
    dev.delete(ids[1], reason="superseded")
    return ids


def _everything(store: Store) -> dict:
    """Every island and learnware (live or withdrawn) with its model bytes."""
    out = {"islands": store.list_islands(), "learnwares": {}}
    for isl in out["islands"]:
        for lw in store.island_learnwares(isl.pk, include_deleted=True):
            out["learnwares"][lw.learnware_id] = (lw, store.model_bytes(lw.model_sha256))
    return out


@pytest.fixture
def target(backend, tmp_path, request):
    """An empty market's config on the same backend (a new SQLite folder or schema)."""
    made = []

    def make(kind: str = backend) -> ServerConfig:
        root = tmp_path / f"target-{len(made)}"
        if kind == "postgresql":
            url = request.getfixturevalue("pg_url")
            schema = f"lwm_restore_{uuid.uuid4().hex[:12]}"
            _pg_exec(url, f'CREATE SCHEMA "{schema}"')
            made.append((url, schema))
            return ServerConfig(data_dir=root, db_url=url, db_schema=schema, refine_at=())
        made.append(None)
        return ServerConfig(data_dir=root, refine_at=())

    yield make
    for m in made:
        if m is not None:
            _pg_exec(m[0], f'DROP SCHEMA IF EXISTS "{m[1]}" CASCADE')


def _store(cfg: ServerConfig) -> Store:
    cfg.data_dir.mkdir(parents=True, exist_ok=True)
    return Store(cfg.resolved_db_url(), blob_store=cfg.resolved_blob_store(),
                 blob_dir=cfg.data_dir / "blobs", db_schema=cfg.db_schema)


def _key_path(env) -> Path:
    return Path(env.config.data_dir) / "market_key.pem"


def test_restore_gives_back_every_learnware(market, target, tmp_path):
    ids = _fill(market)
    before = _everything(market.store)
    summary = backup(market.store, _key_path(market), tmp_path / "bk")
    assert summary["tables"]["learnwares"]["rows"] == len(ids)
    assert summary["blobs"] == len(ids)
    assert (tmp_path / "bk" / "market_key.pem").stat().st_mode & 0o777 == 0o600
    cfg = target()
    store = _store(cfg)
    restore(tmp_path / "bk", store, cfg.data_dir / "market_key.pem")
    after = _everything(store)
    assert after == before
    assert after["learnwares"][ids[1]][0].withdrawn["reason"] == "superseded"
    # the restored market serves them under the same key, and new ids follow the old ones
    store.dispose()
    app = create_app(cfg)
    try:
        state = app.extensions["learnware_market"]
        assert state.identity.public_key_b64 == market.market_key
        from tests.helpers import MarketEnv
        env = MarketEnv(market.backend, cfg, app, tmp_path, "http://restored.test")
        for lid in ids:  # the signed manifests, withdrawal included, are the same
            assert state.market.manifest(lid) == market.state.market.manifest(lid)
        user = env.client(market_key=market.market_key)
        for lid in ids[:1] + ids[2:]:
            lw = user.download(lid)
            assert lw.id == lid
            assert lw.semantic["name"] == before["learnwares"][lid][0].semantic["name"]
        X = blob(np.random.default_rng(5), [0, 1, 2], n=60)
        rng = np.random.default_rng(6)
        new = user.publish(fitted_ridge(X, linear_task(rng, X, [1, 1, 1])), X, SEMS[0], k=8)
        assert parse_id(new, "lw") > max(parse_id(i, "lw") for i in ids)
    finally:
        state.market.sandbox.close()
        state.store.dispose()


def test_a_backup_taken_while_publishing_is_consistent(market, target, tmp_path):
    """Publishes go on during the backup: the copy holds a prefix of them, each learnware
    with its model file, and the islands' live counts match their rows."""
    _fill(market, n=1)
    rng = np.random.default_rng(3)
    dev = market.client()
    stop, published, failed = threading.Event(), [], []

    def publisher():
        try:
            for i in range(12):
                if stop.is_set():
                    return
                X = blob(rng, [i, 0, 1], n=60)
                published.append(dev.publish(fitted_ridge(X, linear_task(rng, X, [1, 2, 3])),
                                             X, SEMS[0], k=5))
        except Exception as exc:  # noqa: BLE001 - reported by the test below
            failed.append(exc)

    t = threading.Thread(target=publisher)
    t.start()
    try:
        while len(published) < 2 and t.is_alive():
            stop.wait(0.05)
        backup(market.store, _key_path(market), tmp_path / "bk")
    finally:
        stop.set()
        t.join()
    assert not failed, failed
    cfg = target()
    store = _store(cfg)
    restore(tmp_path / "bk", store, cfg.data_dir / "market_key.pem")
    got = _everything(store)
    for isl in got["islands"]:
        assert isl.learnware_count == len(store.island_live_pks(isl.pk))
    for lid, (lw, data) in got["learnwares"].items():
        assert data is not None and len(data) == lw.model_size
        source = market.store.learnware(lw.pk)
        assert source == lw and market.store.model_bytes(lw.model_sha256) == data
    store.dispose()


def test_restore_refuses_a_market_that_is_not_empty_and_a_damaged_backup(market, tmp_path):
    _fill(market, n=1)
    backup(market.store, _key_path(market), tmp_path / "bk")
    with pytest.raises(BackupError, match="not empty"):
        restore(tmp_path / "bk", market.store, _key_path(market))
    with pytest.raises(BackupError, match="not empty"):
        backup(market.store, _key_path(market), tmp_path / "bk")
    sha = next((tmp_path / "bk" / "blobs").iterdir())
    sha.write_bytes(sha.read_bytes() + b"x")
    empty = ServerConfig(data_dir=tmp_path / "empty")
    store = _store(empty)
    with pytest.raises(BackupError, match="damaged"):
        restore(tmp_path / "bk", store, empty.data_dir / "market_key.pem")
    assert store.list_islands() == [] and not (empty.data_dir / "market_key.pem").exists()
    store.dispose()


@pytest.mark.postgres
@pytest.mark.parametrize("backend", ["sqlite"])
def test_moving_from_sqlite_to_postgresql_with_the_cli(market, target, tmp_path, capsys):
    """The documented move: ``lwm admin backup`` on SQLite (folder blobs), ``lwm admin
    restore`` into PostgreSQL (database blobs)."""
    ids = _fill(market)
    before = _everything(market.store)
    assert admin_main(["backup", str(tmp_path / "bk"), "--data-dir",
                       str(market.config.data_dir)]) == 0
    assert f"{len(ids)} learnwares" in capsys.readouterr().out
    cfg = target("postgresql")
    assert admin_main(["restore", str(tmp_path / "bk"), "--data-dir", str(cfg.data_dir),
                       "--db", cfg.db_url, "--db-schema", cfg.db_schema]) == 0
    store = _store(cfg)
    assert _everything(store) == before
    assert json.loads((tmp_path / "bk" / "backup.json").read_text())["source"] == "sqlite"
    store.dispose()


def test_lwm_admin_says_what_is_wrong_without_a_traceback(tmp_path):
    import os
    import subprocess
    import sys
    out = subprocess.run([sys.executable, "-m", "client_sdk.cli", "admin", "restore",
                          str(tmp_path / "nothing"), "--data-dir", str(tmp_path / "d")],
                         capture_output=True, text=True, timeout=120,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 1
    assert "is not a market backup" in out.stderr and "Traceback" not in out.stderr
