"""``lwm serve`` refuses unsafe or inconsistent set-ups (issue 20): a missing PostgreSQL schema,
a market key other than the one the database has seen, a blob folder the database's files are
not in; with a clear message, exit code 1 and no traceback."""
from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from market_server.config import ServerConfig
from market_server.deploy_checks import (KEY_FILE_ENV, DeployError, check_deployment,
                                         schema_exists)
from protocol.identity import Identity
from tests.helpers import _pg_exec

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def pg_schema(pg_url):
    """A schema name (not created) that is dropped afterwards."""
    name = f"lwm_deploy_{uuid.uuid4().hex[:12]}"
    yield name
    _pg_exec(pg_url, f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


def _serve(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "market_server", "serve", *args],
                          capture_output=True, text=True, timeout=120, cwd=ROOT,
                          env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})})


def _key(path: Path) -> Identity:
    ident = Identity.generate()
    ident.save(path)
    return ident


@pytest.mark.postgres
def test_missing_schema_is_refused_with_the_command_that_creates_it(pg_url, pg_schema,
                                                                     tmp_path):
    out = _serve("--db", pg_url, "--db-schema", pg_schema, "--data-dir", str(tmp_path / "d"),
                 "--port", "0")
    assert out.returncode == 1
    assert "Traceback" not in out.stderr and "InvalidSchemaName" not in out.stderr
    assert f"schema {pg_schema!r} does not exist" in out.stderr
    assert f"CREATE SCHEMA {pg_schema}" in out.stderr and "--create-schema" in out.stderr
    cfg = ServerConfig(data_dir=tmp_path / "d", db_url=pg_url, db_schema=pg_schema)
    with pytest.raises(DeployError):
        schema_exists(cfg)  # still missing: nothing was created by the refusal


@pytest.mark.postgres
def test_create_schema_creates_it_and_the_market_starts_on_it(pg_url, pg_schema, tmp_path):
    cfg = ServerConfig(data_dir=tmp_path / "d", db_url=pg_url, db_schema=pg_schema)
    found = check_deployment(cfg, create_schema=True, environ={})
    assert found.blob_store == "db" and found.key_path == tmp_path / "d" / "market_key.pem"
    assert schema_exists(cfg) is False  # exists now
    again = check_deployment(cfg, environ={})  # a second start: same key, same store
    assert again.identity.key_id == found.identity.key_id


def test_a_schema_name_that_is_not_plain_is_refused(tmp_path):
    cfg = ServerConfig(data_dir=tmp_path, db_url="postgresql://nobody@127.0.0.1:1/x",
                       db_schema='x"; DROP SCHEMA public; --')
    with pytest.raises(DeployError, match="plain schema name"):
        schema_exists(cfg)


def test_another_market_key_on_the_same_database_is_refused(tmp_path):
    a, b = tmp_path / "a.pem", tmp_path / "b.pem"
    ident_a, ident_b = _key(a), _key(b)
    cfg = ServerConfig(data_dir=tmp_path / "d")
    assert check_deployment(cfg, key_file=str(a), environ={}).identity.key_id == ident_a.key_id
    with pytest.raises(DeployError) as err:
        check_deployment(cfg, key_file=str(b), environ={})
    msg = str(err.value)
    assert ident_a.key_id in msg and ident_b.key_id in msg and "--market-key-file" in msg
    # the default key file does not exist: refused, and no new key is created there
    with pytest.raises(DeployError, match="has no key at"):
        check_deployment(cfg, environ={})
    assert not (tmp_path / "d" / "market_key.pem").exists()


def test_the_key_comes_from_the_environment_and_a_named_key_must_exist(tmp_path):
    a = tmp_path / "a.pem"
    ident = _key(a)
    cfg = ServerConfig(data_dir=tmp_path / "d")
    found = check_deployment(cfg, environ={KEY_FILE_ENV: str(a)})
    assert found.identity.key_id == ident.key_id and found.key_path == a
    with pytest.raises(DeployError, match="lwm keygen --out"):
        check_deployment(cfg, key_file=str(tmp_path / "missing.pem"), environ={})


def test_lwm_serve_refuses_another_key_with_exit_1_and_no_traceback(tmp_path):
    a, b = tmp_path / "a.pem", tmp_path / "b.pem"
    _key(a), _key(b)
    check_deployment(ServerConfig(data_dir=tmp_path / "d"), key_file=str(a), environ={})
    out = _serve("--data-dir", str(tmp_path / "d"), "--port", "0",
                 env={KEY_FILE_ENV: str(b)})
    assert out.returncode == 1, out.stderr
    assert "Traceback" not in out.stderr
    assert "refusing to start" in out.stderr and "same key" in out.stderr


@pytest.mark.postgres
def test_folder_blobs_on_a_shared_database_are_refused_on_a_second_machine(pg_url, pg_schema,
                                                                          tmp_path):
    """Two data folders (two machines) with folder blobs on one PostgreSQL schema: the second
    would serve a market whose model files it cannot read."""
    key = tmp_path / "market.pem"
    _key(key)

    def cfg(folder: str, store: str = "folder") -> ServerConfig:
        return ServerConfig(data_dir=tmp_path / folder, db_url=pg_url, db_schema=pg_schema,
                            blob_store=store)

    check_deployment(cfg("m1"), key_file=str(key), create_schema=True, environ={})
    check_deployment(cfg("m1"), key_file=str(key), environ={})  # the same machine again
    with pytest.raises(DeployError) as err:
        check_deployment(cfg("m2"), key_file=str(key), environ={})
    assert "--blob-store db" in str(err.value) and str(tmp_path / "m1") in str(err.value)
    with pytest.raises(DeployError, match="not in the database"):
        check_deployment(cfg("m2", "db"), key_file=str(key), environ={})
    # the same folder mounted on another machine (same store id) is fine
    (tmp_path / "m3").mkdir()
    (tmp_path / "m3" / "blobs").symlink_to(tmp_path / "m1" / "blobs")
    check_deployment(cfg("m3"), key_file=str(key), environ={})


@pytest.mark.postgres
def test_database_blobs_refuse_a_folder_server(pg_url, pg_schema, tmp_path):
    key = tmp_path / "market.pem"
    _key(key)
    first = ServerConfig(data_dir=tmp_path / "m1", db_url=pg_url, db_schema=pg_schema)
    assert check_deployment(first, key_file=str(key), create_schema=True,
                            environ={}).blob_store == "db"
    second = ServerConfig(data_dir=tmp_path / "m2", db_url=pg_url, db_schema=pg_schema)
    assert check_deployment(second, key_file=str(key), environ={}).blob_store == "db"
    with pytest.raises(DeployError, match="--blob-store db"):
        check_deployment(ServerConfig(data_dir=tmp_path / "m3", db_url=pg_url,
                                      db_schema=pg_schema, blob_store="folder"),
                         key_file=str(key), environ={})


def test_a_schema_4_database_is_migrated_and_then_checked(market):
    """Schema 5 adds the deployment record: an older database gets its tables, and the first
    start records the key it is served with."""
    import sqlalchemy as sa
    from market_server.storage import SCHEMA_VERSION, Store
    env = market
    with env.store.engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE market_keys"))
        conn.execute(sa.text("DROP TABLE deployment"))
        conn.execute(sa.text("DELETE FROM schema_version"))
        conn.execute(sa.text("INSERT INTO schema_version (version, applied_at) VALUES (4, 0)"))
    env.store.dispose()
    cfg = env.config
    store = Store(cfg.resolved_db_url(), blob_store=cfg.resolved_blob_store(),
                  blob_dir=cfg.data_dir / "blobs", db_schema=cfg.db_schema)
    try:
        with store.engine.connect() as conn:
            versions = sorted(r[0] for r in conn.execute(sa.text(
                "SELECT version FROM schema_version")))
        assert versions == [4, SCHEMA_VERSION] and SCHEMA_VERSION == 6
        assert store.market_key_chain() == []
        assert store.claim_market_key(env.market_key) == env.market_key
    finally:
        store.dispose()
