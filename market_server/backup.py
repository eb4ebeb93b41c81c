"""``lwm admin backup`` / ``restore``: a consistent copy of a market (rows, model files, key).

A backup is a folder: ``backup.json`` (format, schema version, row and file counts, the sha256
of every table file), ``tables/<table>.jsonl`` (one row a line), ``blobs/<sha256>`` (the model
files the rows reference, each checked against its name) and ``market_key.pem`` (0600: the
backup holds the market's private key; keep it like the key).

Consistency while the market serves: every row comes from one snapshot (SQLite: the online
backup API copies the database into a temporary file first; PostgreSQL: one REPEATABLE READ
read-only transaction), and the model files are those its rows reference. Model files are
content-addressed and never rewritten, and a file that a row references is never removed (a
withdrawal keeps it), so the files read after the snapshot are the snapshot's.

The format is the same for every engine and blob store: restoring a SQLite backup into
PostgreSQL (or folder blobs into database blobs) is how a market moves (docs/DEPLOY.md).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import sqlite3
import tempfile
import time
from pathlib import Path
from typing import Iterator

import sqlalchemy as sa

from protocol.errors import LearnwareError
from protocol.identity import Identity

from . import storage
from .storage import DatabaseBlobs, Store

FORMAT = 1
#: the tables a backup holds, in restore order (rate counters and the deployment record are
#: per machine; the schema version is the restoring server's own)
TABLES = (storage.islands, storage.learnwares, storage.market_keys, storage.nonces)
KEY_FILE = "market_key.pem"


class BackupError(LearnwareError):
    code = "backup_error"
    status = 400


def backup(store: Store, identity_path: Path, dest: Path) -> dict:
    """Write a backup of the market behind ``store`` (key from ``identity_path``) to the new
    folder ``dest``; returns its summary (what ``backup.json`` holds)."""
    dest = Path(dest)
    if dest.exists() and any(dest.iterdir()):
        raise BackupError(f"{dest} exists and is not empty: back up into a new folder")
    key = Identity.load(identity_path)  # refuses a missing or unreadable key before any work
    chain = store.market_key_chain()
    if chain and chain[-1][0] != key.public_key_b64:
        raise BackupError(f"{identity_path} is not the market's current key: name the key "
                          f"the market's servers sign with (--market-key-file)")
    work = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent if dest.parent.exists()
                                 else None))
    try:
        (work / "tables").mkdir()
        (work / "blobs").mkdir()
        with _snapshot(store) as conn:
            summary = {"format": FORMAT, "schema_version": storage.SCHEMA_VERSION,
                       "created_at": time.time(), "source": store.engine.dialect.name,
                       "tables": {t.name: _dump_table(conn, t, work / "tables")
                                  for t in TABLES}}
            shas = sorted({r[0] for r in conn.execute(
                sa.select(storage.learnwares.c.model_sha256))})
            if isinstance(store.blobs, DatabaseBlobs):
                summary["blobs"] = _copy_blobs(shas, lambda sha: store.blobs.get(sha, conn),
                                               work / "blobs")
        if not isinstance(store.blobs, DatabaseBlobs):
            summary["blobs"] = _copy_blobs(shas, store.blobs.get, work / "blobs")
        shutil.copyfile(identity_path, work / KEY_FILE)
        os.chmod(work / KEY_FILE, 0o600)
        summary["market_key_id"] = Identity.load(work / KEY_FILE).key_id
        (work / "backup.json").write_text(json.dumps(summary, indent=1, sort_keys=True))
        if dest.exists():
            dest.rmdir()
        os.replace(work, dest)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return summary


def restore(src: Path, store: Store, identity_path: Path) -> dict:
    """Restore the backup ``src`` into the empty market behind ``store``, and its key to
    ``identity_path``; returns the backup's summary."""
    src = Path(src)
    summary = _read_summary(src)
    for table, info in summary["tables"].items():
        if _file_sha(src / "tables" / f"{table}.jsonl") != info["sha256"]:
            raise BackupError(f"tables/{table}.jsonl differs from the backup's record: the "
                              f"backup is damaged")
    with store.engine.connect() as conn:
        if conn.execute(sa.select(sa.func.count()).select_from(storage.islands)).scalar():
            raise BackupError("the target market is not empty: restore into a new database "
                              "(or PostgreSQL schema) only")
    key = Identity.load(src / KEY_FILE)
    if identity_path.exists() and Identity.load(identity_path).key_id != key.key_id:
        raise BackupError(f"{identity_path} holds another market key than the backup's: move "
                          f"it away (or name another --market-key-file) to restore")
    shas = _blob_names(src, summary)
    for sha in shas:  # model files first (like a publish): a failure leaves no rows behind
        data = (src / "blobs" / sha).read_bytes()
        if not isinstance(store.blobs, DatabaseBlobs):
            store.blobs.put(sha, data)
    with store.engine.begin() as conn:
        conn.execute(storage.market_keys.delete())
        conn.execute(storage.deployment.delete())  # the restoring servers record theirs
        for table in TABLES:
            rows = list(_rows(src / "tables" / f"{table.name}.jsonl"))
            for i in range(0, len(rows), 500):
                conn.execute(table.insert(), rows[i:i + 500])
        if isinstance(store.blobs, DatabaseBlobs):
            for sha in shas:
                store.blobs.put(sha, (src / "blobs" / sha).read_bytes(), conn)
        if store.engine.dialect.name == "postgresql":  # ids continue after the restored ones
            for table in (storage.islands, storage.learnwares):
                conn.execute(sa.text(
                    f"SELECT setval(pg_get_serial_sequence('{table.name}', 'id'), "
                    f"COALESCE((SELECT max(id) FROM {table.name}), 0) + 1, false)"))
    if not identity_path.exists():
        identity_path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src / KEY_FILE, identity_path)
        os.chmod(identity_path, 0o600)
    return summary


@contextlib.contextmanager
def _snapshot(store: Store) -> Iterator[sa.Connection]:
    """A connection that sees one consistent state of the market's rows."""
    if store.engine.dialect.name == "sqlite":
        with tempfile.TemporaryDirectory(prefix="lwm-backup-") as tmp:
            copy = Path(tmp) / "snapshot.db"
            src = sqlite3.connect(store.engine.url.database, timeout=30)
            dst = sqlite3.connect(copy)
            try:
                src.backup(dst)  # the online backup API: one consistent copy, writers go on
            finally:
                dst.close()
                src.close()
            engine = sa.create_engine(f"sqlite:///{copy}")
            try:
                with engine.connect() as conn:
                    yield conn
            finally:
                engine.dispose()
        return
    with store.engine.connect() as conn:
        conn = conn.execution_options(isolation_level="REPEATABLE READ")
        with conn.begin():
            conn.execute(sa.text("SET TRANSACTION READ ONLY"))
            yield conn


def _dump_table(conn: sa.Connection, table: sa.Table, folder: Path) -> dict:
    path = folder / f"{table.name}.jsonl"
    n = 0
    with path.open("w", encoding="utf-8") as fh:
        key = list(table.primary_key.columns)
        for row in conn.execute(sa.select(table).order_by(*key)):
            fh.write(json.dumps(dict(row._mapping), sort_keys=True, separators=(",", ":")))
            fh.write("\n")
            n += 1
    return {"rows": n, "sha256": _file_sha(path)}


def _copy_blobs(shas: list[str], read, folder: Path) -> int:
    for sha in shas:
        data = read(sha)
        if data is None:
            raise BackupError(f"the model file {sha} that a learnware references is missing "
                              f"from the blob store")
        if hashlib.sha256(data).hexdigest() != sha:
            raise BackupError(f"the model file {sha} in the blob store is damaged (its sha256 "
                              f"differs)")
        (folder / sha).write_bytes(data)
    return len(shas)


def _read_summary(src: Path) -> dict:
    try:
        summary = json.loads((src / "backup.json").read_text())
    except (OSError, ValueError) as exc:
        raise BackupError(f"{src} is not a market backup (no readable backup.json: {exc})") \
            from exc
    if summary.get("format") != FORMAT:
        raise BackupError(f"backup format {summary.get('format')!r} is not {FORMAT}")
    if summary.get("schema_version", 0) > storage.SCHEMA_VERSION:
        raise BackupError(f"the backup comes from a newer server (schema "
                          f"{summary['schema_version']}); upgrade this one to restore it")
    if set(summary.get("tables", {})) != {t.name for t in TABLES}:
        raise BackupError("the backup does not list the market's tables")
    return summary


def _blob_names(src: Path, summary: dict) -> list[str]:
    shas = sorted(p.name for p in (src / "blobs").iterdir())
    if len(shas) != summary.get("blobs"):
        raise BackupError(f"the backup holds {len(shas)} model files, its record says "
                          f"{summary.get('blobs')}")
    for sha in shas:
        if _file_sha(src / "blobs" / sha) != sha:
            raise BackupError(f"blobs/{sha} is damaged (its sha256 differs from its name)")
    return shas


def _rows(path: Path) -> Iterator[dict]:
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                yield json.loads(line)


def _file_sha(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
