"""Persistent market state on SQLite or PostgreSQL through SQLAlchemy Core.

Holds islands, learnwares (metadata, specification, artefact signature; tombstones on delete),
nonces (shared by every worker) and, optionally, model files. Schema changes are versioned in
``schema_version``. Every publish is one transaction: the model file is written first (to a
temporary name, then renamed into its content address), then the rows; a failure removes the file
again, and start-up removes files that no row references (a crash between the two steps).
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Iterable, Iterator

import sqlalchemy as sa
from sqlalchemy import event

from protocol.errors import LearnwareError

from .rows import IslandRow, LiveSemantic, LiveSpec, StoredLearnware

SCHEMA_VERSION = 6
LIVE_TOTALS = ("live_count", "live_sum", "live_sumsq")

metadata = sa.MetaData()

schema_version = sa.Table("schema_version", metadata,
                          sa.Column("version", sa.Integer, primary_key=True),
                          sa.Column("applied_at", sa.Float, nullable=False))

islands = sa.Table(
    "islands", metadata,
    sa.Column("id", sa.Integer, sa.Identity(), primary_key=True, autoincrement=True),
    sa.Column("island_key", sa.String(64), nullable=False, unique=True),
    sa.Column("semantic", sa.Text, nullable=False),
    sa.Column("n_features", sa.Integer, nullable=False),
    sa.Column("kernel", sa.Text, nullable=False),
    sa.Column("kernel_version", sa.Integer, nullable=False, default=0),
    # bumped on every publish/delete/kernel change: workers compare it to refresh caches.
    sa.Column("version", sa.Integer, nullable=False, default=0),
    # schema 3: count, sum and sum of squares (mod SUMSQ_MOD) of the live learnwares' ids,
    # kept by publish and delete in their transactions. An index refresh reads them with the
    # new rows in one statement: when the ids it holds plus the new ones add up, nothing else
    # changed.
    *(sa.Column(c, sa.BigInteger, nullable=False, default=0, server_default="0")
      for c in LIVE_TOTALS),
    sa.Column("created_at", sa.Float, nullable=False),
    sqlite_autoincrement=True,
)

learnwares = sa.Table(
    "learnwares", metadata,
    sa.Column("id", sa.Integer, sa.Identity(), primary_key=True, autoincrement=True),
    sa.Column("island_id", sa.Integer, sa.ForeignKey("islands.id"), nullable=False, index=True),
    sa.Column("developer", sa.String(44), nullable=False),
    sa.Column("developer_key_id", sa.String(32), nullable=False, index=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("semantic", sa.Text, nullable=False),
    sa.Column("spec", sa.Text, nullable=False),
    sa.Column("model_sha256", sa.String(64), nullable=False),
    sa.Column("model_size", sa.Integer, nullable=False),
    sa.Column("artefact", sa.Text, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("deleted_at", sa.Float, nullable=True),
    # schema 4: a withdrawal's reason and who withdrew ("developer" or "operator")
    sa.Column("withdrawn_reason", sa.Text, nullable=True),
    sa.Column("withdrawn_by", sa.String(16), nullable=True),
    # 1 while live, NULL once deleted: the unique constraint refuses duplicate live models.
    sa.Column("live", sa.Integer, nullable=True, default=1),
    sa.UniqueConstraint("island_id", "model_sha256", "live", name="uq_live_model"),
    sqlite_autoincrement=True,
)

#: schema 2: the live ids of an island straight from an index (a full index refresh lists them,
#: and the refresh after publishes reads the rows after an id: without it, every row's
#: specification pages)
ix_island_live = sa.Index("ix_learnwares_island_live", learnwares.c.island_id,
                          learnwares.c.deleted_at, learnwares.c.id)

blobs = sa.Table("blobs", metadata,
                 sa.Column("sha256", sa.String(64), primary_key=True),
                 sa.Column("size", sa.Integer, nullable=False),
                 sa.Column("data", sa.LargeBinary, nullable=False))

nonces = sa.Table("nonces", metadata,
                  sa.Column("key_id", sa.String(32), primary_key=True),
                  sa.Column("nonce", sa.String(32), primary_key=True),
                  sa.Column("seen_at", sa.Float, nullable=False, index=True))

# per-key request budgets, shared by every worker and server on the database (see ratelimit.py)
rate_hits = sa.Table("rate_hits", metadata,
                     sa.Column("id", sa.Integer, sa.Identity(), primary_key=True,
                               autoincrement=True),
                     sa.Column("action", sa.String(16), nullable=False),
                     sa.Column("key_id", sa.String(32), nullable=False),
                     sa.Column("at", sa.Float, nullable=False),
                     sa.Index("ix_rate_hits_key", "action", "key_id", "at"))

# schema 5: what the database has been served with, checked at every start (deploy_checks.py):
# named settings (the blob store), and the market's keys in order, each after the first with
# the rotation statement its predecessor signed (protocol/rotation.py).
deployment = sa.Table("deployment", metadata,
                      sa.Column("name", sa.String(64), primary_key=True),
                      sa.Column("value", sa.Text, nullable=False),
                      sa.Column("set_at", sa.Float, nullable=False))

market_keys = sa.Table("market_keys", metadata,
                       sa.Column("seq", sa.Integer, primary_key=True, autoincrement=False),
                       sa.Column("public_key", sa.String(44), nullable=False, unique=True),
                       sa.Column("rotation", sa.Text, nullable=True),
                       sa.Column("added_at", sa.Float, nullable=False))


# schema 6: users' signed usage reports (market_server/reports.py), one per (reporter key,
# learnware): a new report of the same key replaces its previous one
usage_reports = sa.Table(
    "usage_reports", metadata,
    sa.Column("id", sa.Integer, sa.Identity(), primary_key=True, autoincrement=True),
    sa.Column("learnware_id", sa.Integer, sa.ForeignKey("learnwares.id"), nullable=False),
    sa.Column("island_id", sa.Integer, sa.ForeignKey("islands.id"), nullable=False, index=True),
    sa.Column("reporter_key_id", sa.String(32), nullable=False),
    sa.Column("metric", sa.String(16), nullable=False),
    sa.Column("value", sa.Float, nullable=False),
    sa.Column("n_rows", sa.BigInteger, nullable=False),
    sa.Column("reuse", sa.String(32), nullable=False),
    sa.Column("comment", sa.Text, nullable=True),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.UniqueConstraint("learnware_id", "reporter_key_id", name="uq_report_per_key"),
    sqlite_autoincrement=True,
)


class StorageError(LearnwareError):
    code = "storage_error"
    status = 503


class NotFound(LearnwareError):
    code = "not_found"
    status = 404


MAX_ID = 2**31 - 1


def learnware_public_id(pk: int) -> str:
    return f"lw-{pk}"


def island_public_id(pk: int) -> str:
    return f"isl-{pk}"


def parse_id(text: str, prefix: str) -> int | None:
    if not isinstance(text, str) or not text.startswith(prefix + "-"):
        return None
    digits = text[len(prefix) + 1:]
    # ASCII only: str.isdigit() accepts e.g. "²", which int() then rejects.
    if not (digits.isascii() and digits.isdigit()) or len(digits) > 18:
        return None
    value = int(digits)
    # ids are INTEGER columns (32-bit on PostgreSQL): a larger value names nothing, and querying
    # it would make PostgreSQL fail with "integer out of range".
    return value if value <= MAX_ID else None


class FolderBlobs:
    """Content-addressed files: ``blobs/ab/cd/<sha256>``; written atomically."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, sha: str) -> Path:
        return self.root / sha[:2] / sha[2:4] / sha

    def put(self, sha: str, data: bytes, conn=None) -> bool:
        """Store; returns True when this call created the file."""
        path = self._path(sha)
        if path.exists():
            return False
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
        return True

    def get(self, sha: str, conn=None) -> bytes | None:
        try:
            return self._path(sha).read_bytes()
        except FileNotFoundError:
            return None

    def delete(self, sha: str, conn=None) -> None:
        try:
            self._path(sha).unlink()
        except FileNotFoundError:
            pass

    @contextlib.contextmanager
    def lock(self, sha: str, *, exclusive: bool):
        """An advisory lock on a model file's name, across threads and processes: publishers
        hold it shared from writing the file until their row is committed, a clean-up holds it
        exclusively from checking that no row references the file until deleting it. Without
        it, a failing publish could delete a file that a concurrent publish of the same model
        (on another island) had found in place and was about to reference. 256 lock files
        (by the sha's first two hex digits) in a sibling folder ``<root>.locks``, made on
        first use."""
        folder = self.root.with_name(self.root.name + ".locks")
        folder.mkdir(exist_ok=True)
        fd = os.open(folder / sha[:2], os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            yield
        finally:
            os.close(fd)  # releases the lock

    def all_shas(self, conn=None) -> Iterator[str]:
        for p in self.root.glob("*/*/*"):
            if p.is_file() and not p.name.startswith(".tmp-"):
                yield p.name
        for p in self.root.glob("*/*/.tmp-*"):
            p.unlink(missing_ok=True)


class DatabaseBlobs:
    """Model files inside the database: every server sharing the database sees them."""

    def put(self, sha: str, data: bytes, conn=None) -> bool:
        if conn.execute(sa.select(blobs.c.sha256).where(blobs.c.sha256 == sha)).first():
            return False
        conn.execute(blobs.insert().values(sha256=sha, size=len(data), data=data))
        return True

    def get(self, sha: str, conn=None) -> bytes | None:
        row = conn.execute(sa.select(blobs.c.data).where(blobs.c.sha256 == sha)).first()
        return None if row is None else bytes(row[0])

    def delete(self, sha: str, conn=None) -> None:
        conn.execute(blobs.delete().where(blobs.c.sha256 == sha))

    @contextlib.contextmanager
    def lock(self, sha: str, *, exclusive: bool):
        """Nothing to do: the database's transactions already order put, reference and
        delete of a blob row."""
        yield

    def all_shas(self, conn=None) -> Iterator[str]:
        return iter([r[0] for r in conn.execute(sa.select(blobs.c.sha256))])


# Statements of the per-request hot paths, built once (building a statement costs about as
# much as running it on SQLite).
_ISLAND_HEAD = (sa.select(islands.c.id, islands.c.version, islands.c.kernel_version)
                .where(islands.c.island_key == sa.bindparam("key")))
_new_rows = learnwares.alias("new_rows")
_ISLAND_APPENDED = (
    sa.select(*(islands.c[c] for c in LIVE_TOTALS), _new_rows.c.id, _new_rows.c.spec)
    .select_from(islands.outerjoin(_new_rows, sa.and_(
        _new_rows.c.island_id == islands.c.id, _new_rows.c.deleted_at.is_(None),
        _new_rows.c.id > sa.bindparam("top"))))
    .where(islands.c.id == sa.bindparam("pk")).order_by(_new_rows.c.id))
_NONCE_INSERT = nonces.insert().values(key_id=sa.bindparam("key_id"),
                                       nonce=sa.bindparam("nonce"),
                                       seen_at=sa.bindparam("seen_at"))


#: the live ids' sum of squares is kept modulo this prime (it stays in a BIGINT for any id)
SUMSQ_MOD = 2**61 - 1


def _live_change(pk: int, sign: int) -> dict:
    """The update of an island's live totals when learnware ``pk`` goes live (+1) or away."""
    sq = pk * pk % SUMSQ_MOD
    return {"live_count": islands.c.live_count + sign,
            "live_sum": islands.c.live_sum + sign * pk,
            "live_sumsq": (islands.c.live_sumsq + (sq if sign > 0 else SUMSQ_MOD - sq))
            % SUMSQ_MOD}


def live_totals(ids: Iterable[int]) -> tuple[int, int, int]:
    """What the LIVE_TOTALS columns hold for these live ids."""
    ids = [int(i) for i in ids]
    return len(ids), sum(ids), sum(i * i for i in ids) % SUMSQ_MOD


def _live_on(island_pk: int):
    """The condition "a live learnware of this island"."""
    return sa.and_(learnwares.c.island_id == island_pk, learnwares.c.deleted_at.is_(None))


def _loads(text: str) -> Any:
    return json.loads(text)


def _dumps(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


class Store:
    """All reads and writes of market state. Thread-safe; one per app."""

    def __init__(self, db_url: str, *, blob_store: str = "folder", blob_dir: Path | None = None,
                 db_schema: str | None = None):
        self.db_url = db_url
        kwargs: dict[str, Any] = {"future": True}
        if db_url.startswith("sqlite"):
            kwargs["connect_args"] = {"timeout": 30, "check_same_thread": False}
        else:
            kwargs["pool_pre_ping"] = True
            if db_schema:
                kwargs["connect_args"] = {"options": f"-csearch_path={db_schema}"}
        self.engine = sa.create_engine(db_url, **kwargs)
        if db_url.startswith("sqlite"):
            @event.listens_for(self.engine, "connect")
            def _sqlite_pragmas(dbapi_conn, _record):  # WAL: readers never block the writer
                cur = dbapi_conn.cursor()
                cur.execute("PRAGMA journal_mode=WAL")
                cur.execute("PRAGMA synchronous=NORMAL")
                cur.execute("PRAGMA foreign_keys=ON")
                cur.execute("PRAGMA busy_timeout=30000")
                cur.close()
        self.blobs = DatabaseBlobs() if blob_store == "db" else FolderBlobs(
            blob_dir or Path("./lwm-data/blobs"))
        self.migrate()

    # --- schema ---------------------------------------------------------------------------
    def migrate(self) -> None:
        """Create or upgrade the schema (versioned; each step runs once)."""
        with self.engine.begin() as conn:
            if self.engine.dialect.name == "postgresql":
                # servers starting together on one database migrate one after the other
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext('lwm:migrate'))"))
            metadata.create_all(conn, checkfirst=True)
            current = conn.execute(sa.select(sa.func.max(schema_version.c.version))).scalar()
            if current is None:
                conn.execute(schema_version.insert().values(version=SCHEMA_VERSION,
                                                            applied_at=time.time()))
            elif current > SCHEMA_VERSION:
                raise StorageError(f"database schema version {current} is newer than this "
                                   f"server ({SCHEMA_VERSION}); upgrade the server")
            else:
                if current < 2:
                    ix_island_live.create(conn, checkfirst=True)
                if current < 3:
                    have = {c["name"] for c in sa.inspect(conn).get_columns("islands")}
                    for c in LIVE_TOTALS:
                        if c not in have:
                            conn.execute(sa.text(f"ALTER TABLE islands ADD COLUMN {c} BIGINT "
                                                 f"NOT NULL DEFAULT 0"))
                    live: dict[int, list[int]] = {}
                    for island_pk, pk in conn.execute(
                            sa.select(learnwares.c.island_id, learnwares.c.id)
                            .where(learnwares.c.deleted_at.is_(None))):
                        live.setdefault(island_pk, []).append(pk)
                    for island_pk, ids in live.items():
                        conn.execute(islands.update().where(islands.c.id == island_pk)
                                     .values(dict(zip(LIVE_TOTALS, live_totals(ids)))))
                if current < 4:
                    have = {c["name"] for c in sa.inspect(conn).get_columns("learnwares")}
                    for c, kind in (("withdrawn_reason", "TEXT"), ("withdrawn_by", "VARCHAR(16)")):
                        if c not in have:
                            conn.execute(sa.text(f"ALTER TABLE learnwares ADD COLUMN {c} {kind}"))
                # schemas 5 (deployment, market_keys) and 6 (usage_reports) add tables only:
                # create_all above makes them
                if current < SCHEMA_VERSION:
                    conn.execute(schema_version.insert().values(version=SCHEMA_VERSION,
                                                                applied_at=time.time()))

    # --- deployment record (schema 5) -------------------------------------------------------
    def claim_setting(self, name: str, value: str) -> str:
        """The value the database records for ``name``; ``value`` is recorded when none is
        (the first server to start wins a race, the others read its value)."""
        for _ in range(2):
            with self.engine.connect() as conn:
                found = conn.execute(sa.select(deployment.c.value)
                                     .where(deployment.c.name == name)).scalar()
            if found is not None:
                return found
            try:
                with self.engine.begin() as conn:
                    conn.execute(deployment.insert().values(name=name, value=value,
                                                            set_at=time.time()))
                return value
            except sa.exc.IntegrityError:
                continue  # another server recorded it first: read theirs
        raise StorageError(f"could not record the deployment setting {name}")

    def setting(self, name: str) -> str | None:
        with self.engine.connect() as conn:
            return conn.execute(sa.select(deployment.c.value)
                                .where(deployment.c.name == name)).scalar()

    def set_setting(self, name: str, value: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(deployment.delete().where(deployment.c.name == name))
            conn.execute(deployment.insert().values(name=name, value=value, set_at=time.time()))

    def market_key_chain(self) -> list[tuple[str, dict | None]]:
        """The market's keys in order: ``(public key, rotation statement or None)``."""
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(market_keys).order_by(market_keys.c.seq)).all()
        return [(r.public_key, None if r.rotation is None else _loads(r.rotation)) for r in rows]

    def claim_market_key(self, public_key: str) -> str:
        """The market's current key (the last of its chain); ``public_key`` becomes the first
        when the database has none yet."""
        try:
            with self.engine.begin() as conn:
                if conn.execute(sa.select(sa.func.count()).select_from(market_keys)).scalar() == 0:
                    conn.execute(market_keys.insert().values(seq=0, public_key=public_key,
                                                             rotation=None, added_at=time.time()))
        except sa.exc.IntegrityError:
            pass  # another server recorded its key at the same moment
        return self.market_key_chain()[-1][0]

    def add_rotation(self, rotation: dict) -> None:
        """Append the key ``rotation`` hands over to; refused unless it starts from the
        current key (the caller has verified its signatures)."""
        try:
            with self.engine.begin() as conn:
                last = conn.execute(sa.select(market_keys.c.seq, market_keys.c.public_key)
                                    .order_by(market_keys.c.seq.desc()).limit(1)).first()
                if last is None or last.public_key != rotation["old"]:
                    raise StorageError("the rotation does not start from the market's current "
                                       "key", code="not_current_key", status=409)
                conn.execute(market_keys.insert().values(
                    seq=last.seq + 1, public_key=rotation["new"], rotation=_dumps(rotation),
                    added_at=time.time()))
        except sa.exc.IntegrityError as exc:
            raise StorageError("the new key was already a key of this market",
                               code="key_reused", status=409) from exc

    def collect_orphan_blobs(self) -> int:
        """Remove model files that no learnware row references (left by a crash mid-publish)."""
        with self.engine.begin() as conn:
            referenced = {r[0] for r in conn.execute(sa.select(learnwares.c.model_sha256))}
            candidates = [sha for sha in self.blobs.all_shas(conn) if sha not in referenced]
        removed = 0
        for sha in candidates:  # each under its lock: a publish may be placing it right now
            if self._drop_blob_if_unreferenced(sha):
                removed += 1
        return removed

    # --- islands --------------------------------------------------------------------------
    @staticmethod
    def _island_row(row, learnware_count: int | None = None) -> IslandRow:
        return IslandRow(pk=row.id, island_id=island_public_id(row.id), island_key=row.island_key,
                         semantic=_loads(row.semantic), n_features=row.n_features,
                         kernel=_loads(row.kernel), kernel_version=row.kernel_version,
                         version=row.version, created_at=row.created_at,
                         learnware_count=learnware_count)

    def island_by_key(self, key: str, conn=None) -> IslandRow | None:
        stmt = sa.select(islands).where(islands.c.island_key == key)
        if conn is None:
            with self.engine.connect() as c:
                row = c.execute(stmt).first()
        else:
            row = conn.execute(stmt).first()
        return None if row is None else self._island_row(row)

    def island_head(self, key: str) -> tuple[int, int, int] | None:
        """``(pk, version, kernel_version)`` of the island with this key: the cheap freshness
        check a search makes before using its cached island row and index."""
        with self.engine.connect() as c:
            row = c.execute(_ISLAND_HEAD, {"key": key}).first()
        return None if row is None else (int(row[0]), int(row[1]), int(row[2]))

    def island(self, island_pk: int) -> IslandRow | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(islands).where(islands.c.id == island_pk)).first()
        return None if row is None else self._island_row(row)

    def list_islands(self) -> list[IslandRow]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(islands).order_by(islands.c.id)).all()
        return [self._island_row(r, int(r.live_count)) for r in rows]

    def island_version(self, island_pk: int) -> int | None:
        with self.engine.connect() as conn:
            return conn.execute(sa.select(islands.c.version)
                                .where(islands.c.id == island_pk)).scalar()

    def count_live(self, island_pk: int, conn=None) -> int:
        """The island's live learnwares (its ``live_count``, kept by publish and delete)."""
        stmt = sa.select(islands.c.live_count).where(islands.c.id == island_pk)
        if conn is not None:
            return int(conn.execute(stmt).scalar() or 0)
        with self.engine.connect() as c:
            return int(c.execute(stmt).scalar() or 0)

    def ensure_island(self, key: str, semantic: dict, n_features: int, kernel: dict
                      ) -> IslandRow:
        """The island of ``key``; created with ``kernel`` when it does not exist yet."""
        found = self.island_by_key(key)
        if found is not None:
            return found
        try:
            with self.engine.begin() as conn:
                conn.execute(islands.insert().values(
                    island_key=key, semantic=_dumps(semantic), n_features=n_features,
                    kernel=_dumps(kernel), kernel_version=0, version=0, created_at=time.time()))
        except sa.exc.IntegrityError:
            pass  # another worker created it first
        return self.island_by_key(key)

    def set_kernel(self, island_pk: int, kernel: dict, expected_kernel_version: int) -> bool:
        with self.engine.begin() as conn:
            res = conn.execute(islands.update().where(
                islands.c.id == island_pk, islands.c.kernel_version == expected_kernel_version
            ).values(kernel=_dumps(kernel), kernel_version=expected_kernel_version + 1,
                     version=islands.c.version + 1))
            return res.rowcount == 1

    # --- learnwares -----------------------------------------------------------------------
    def publish(self, *, island_pk: int, developer: str, developer_key_id: str, semantic: dict,
                spec: dict, model_sha256: str, model: bytes, artefact: dict) -> int:
        """Store one learnware atomically; returns its integer id (never reused)."""
        created_blob = False
        try:
            # the blob's shared lock until the row is committed (see FolderBlobs.lock)
            with self.blobs.lock(model_sha256, exclusive=False), self.engine.begin() as conn:
                dup = conn.execute(sa.select(learnwares.c.id).where(
                    learnwares.c.island_id == island_pk, learnwares.c.model_sha256 == model_sha256,
                    learnwares.c.live == 1)).first()
                if dup is not None:
                    raise LearnwareError(
                        f"this model file is already published on the island as "
                        f"{learnware_public_id(dup[0])}", code="duplicate_model", status=409,
                        field="model.sha256")
                created_blob = self.blobs.put(model_sha256, model, conn)
                res = conn.execute(learnwares.insert().values(
                    island_id=island_pk, developer=developer, developer_key_id=developer_key_id,
                    name=semantic.get("name", "")[:200], semantic=_dumps(semantic),
                    spec=_dumps(spec), model_sha256=model_sha256, model_size=len(model),
                    artefact=_dumps(artefact), created_at=time.time(), deleted_at=None, live=1))
                pk = int(res.inserted_primary_key[0])
                conn.execute(islands.update().where(islands.c.id == island_pk)
                             .values(version=islands.c.version + 1, **_live_change(pk, 1)))
            return pk
        except sa.exc.IntegrityError as exc:
            if created_blob and isinstance(self.blobs, FolderBlobs):
                self._drop_blob_if_unreferenced(model_sha256)
            raise LearnwareError("this model file is already published on the island",
                                 code="duplicate_model", status=409,
                                 field="model.sha256") from exc
        except LearnwareError:
            if created_blob and isinstance(self.blobs, FolderBlobs):
                self._drop_blob_if_unreferenced(model_sha256)
            raise
        except sa.exc.SQLAlchemyError as exc:
            if created_blob and isinstance(self.blobs, FolderBlobs):
                self._drop_blob_if_unreferenced(model_sha256)
            raise StorageError(f"the database refused the write: {type(exc).__name__}") from exc
        except OSError as exc:
            raise StorageError(f"could not store the model file: {exc.strerror or exc}") from exc

    def _drop_blob_if_unreferenced(self, sha: str) -> bool:
        """Best effort: when the database is unreachable the file stays, and start-up's
        ``collect_orphan_blobs`` removes it; the caller's error is what the client must see.
        Runs under the blob's exclusive lock (see :meth:`FolderBlobs.lock`)."""
        try:
            with self.blobs.lock(sha, exclusive=True), self.engine.begin() as conn:
                ref = conn.execute(sa.select(learnwares.c.id)
                                   .where(learnwares.c.model_sha256 == sha)).first()
                if ref is None:
                    self.blobs.delete(sha, conn)
                    return True
        except (sa.exc.SQLAlchemyError, OSError):
            pass
        return False

    @staticmethod
    def _learnware_row(row) -> StoredLearnware:
        return StoredLearnware(
            pk=row.id, learnware_id=learnware_public_id(row.id),
            island_pk=row.island_id, island_id=island_public_id(row.island_id),
            developer=row.developer, developer_key_id=row.developer_key_id,
            semantic=_loads(row.semantic), spec=_loads(row.spec),
            model_sha256=row.model_sha256, model_size=row.model_size,
            artefact=_loads(row.artefact), created_at=row.created_at,
            deleted=row.deleted_at is not None,
            withdrawn=None if row.deleted_at is None else {
                "reason": row.withdrawn_reason or "no reason recorded",
                "by": row.withdrawn_by or "developer", "at": int(row.deleted_at)})

    def learnware(self, pk: int) -> StoredLearnware | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(learnwares).where(learnwares.c.id == pk)).first()
        return None if row is None else self._learnware_row(row)

    def island_learnwares(self, island_pk: int, *, include_deleted: bool = False
                          ) -> list[StoredLearnware]:
        stmt = sa.select(learnwares).where(learnwares.c.island_id == island_pk)
        if not include_deleted:
            stmt = stmt.where(learnwares.c.deleted_at.is_(None))
        with self.engine.connect() as conn:
            rows = conn.execute(stmt.order_by(learnwares.c.id)).all()
        return [self._learnware_row(r) for r in rows]

    def island_live_pks(self, island_pk: int) -> list[int]:
        """The ids of an island's live learnwares, in id order (ids only: cheap at any size)."""
        with self.engine.connect() as conn:
            return [r[0] for r in conn.execute(sa.select(learnwares.c.id)
                                               .where(_live_on(island_pk))
                                               .order_by(learnwares.c.id))]

    def learnwares_by_pks(self, pks: list[int]) -> list[StoredLearnware]:
        """Full rows of these learnwares (those that exist), in id order."""
        out = []
        with self.engine.connect() as conn:
            for i in range(0, len(pks), 500):
                out.extend(conn.execute(sa.select(learnwares).where(
                    learnwares.c.id.in_(pks[i:i + 500]))).all())
        return [self._learnware_row(r) for r in sorted(out, key=lambda r: r.id)]

    def island_appended(self, island_pk: int, top: int, sums: tuple[int, int, int]
                        ) -> list[LiveSpec] | None:
        """The live learnwares published after id ``top`` (with their specs, id
        order) when the live ids up to ``top`` are still exactly those an index holds (their
        count, sum and sum of squares are ``sums``); None when anything else changed (a
        delete, a late commit), and the caller lists the island in full.

        One statement (one snapshot on every engine): the island's live totals joined with
        the rows after ``top``; the check is that ``sums`` plus the new rows give the totals."""
        with self.engine.connect() as conn:
            rows = conn.execute(_ISLAND_APPENDED, {"pk": island_pk, "top": top}).all()
        if not rows:
            return None
        new = [r for r in rows if r.id is not None]
        added = live_totals(r.id for r in new)
        seen = (sums[0] + added[0], sums[1] + added[1], (sums[2] + added[2]) % SUMSQ_MOD)
        if seen != tuple(int(v) for v in rows[0][:3]):
            return None
        return [LiveSpec(r.id, learnware_public_id(r.id), _loads(r.spec)) for r in new]

    def island_specs(self, island_pk: int, known: set[int]) -> list[LiveSpec]:
        """Live learnwares of an island in id order; the spec
        is read and decoded only for ids not in ``known`` (a refresh after a kernel change or a
        delete re-reads no spec it holds; after publishes alone, :meth:`island_appended` is
        cheaper still)."""
        live = _live_on(island_pk)
        with self.engine.connect() as conn:
            pks = [r[0] for r in conn.execute(
                sa.select(learnwares.c.id).where(live).order_by(learnwares.c.id))]
            new = [pk for pk in pks if pk not in known]
            specs: dict[int, Any] = {}
            for i in range(0, len(new), 500):
                chunk = new[i:i + 500]
                specs.update({r.id: _loads(r.spec) for r in conn.execute(
                    sa.select(learnwares.c.id, learnwares.c.spec)
                    .where(learnwares.c.id.in_(chunk)))})
        return [LiveSpec(pk, learnware_public_id(pk), specs.get(pk)) for pk in pks]

    def all_live_learnwares(self, limit: int = 100_000) -> list[LiveSemantic]:
        stmt = (sa.select(learnwares.c.id, learnwares.c.island_id, learnwares.c.semantic)
                .where(learnwares.c.deleted_at.is_(None)).order_by(learnwares.c.id).limit(limit))
        with self.engine.connect() as conn:
            return [LiveSemantic(r.id, learnware_public_id(r.id), _loads(r.semantic),
                                 island_public_id(r.island_id)) for r in conn.execute(stmt)]

    def live_text_since(self, top: int) -> tuple[tuple[int, int, int], list[LiveSemantic]]:
        """The live totals over every island and the live learnwares after id ``top``
        (with their semantic specifications): what the text index refreshes from. When the
        totals are those of its ids plus the new ones, nothing else changed."""
        c, s, q = (islands.c[c] for c in LIVE_TOTALS)
        # summed in the database (one row, not one per island): the sum of squares (each
        # below 2**61) in two halves of 32 bits so that no sum can overflow a BIGINT
        sums = sa.select(sa.func.sum(c), sa.func.sum(s),
                         sa.func.sum(q.op(">>")(sa.literal_column("32"))),
                         sa.func.sum(q.op("&")(sa.literal_column("4294967295"))))
        with self.engine.connect() as conn:
            count, total, high, low = conn.execute(sums).one()
            count, total = int(count or 0), int(total or 0)
            sumsq = ((int(high or 0) << 32) + int(low or 0)) % SUMSQ_MOD
            rows = conn.execute(sa.select(learnwares.c.id, learnwares.c.semantic)
                                .where(learnwares.c.deleted_at.is_(None), learnwares.c.id > top)
                                .order_by(learnwares.c.id)).all()
        return (count, total, sumsq), [LiveSemantic(r.id, learnware_public_id(r.id),
                                                    _loads(r.semantic)) for r in rows]

    def live_in_island(self, island_pk: int, learnware_ids: Iterable[str]) -> set[str]:
        """Those of ``learnware_ids`` that are live learnwares of the island: one indexed query
        (localisation checks the ids a user reports on, without building the search index)."""
        pks = {pk for pk in (parse_id(i, "lw") for i in learnware_ids) if pk is not None}
        if not pks:
            return set()
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(learnwares.c.id).where(
                learnwares.c.island_id == island_pk, learnwares.c.deleted_at.is_(None),
                learnwares.c.id.in_(sorted(pks))))
            return {learnware_public_id(r[0]) for r in rows}

    def live_ids(self) -> list[int]:
        with self.engine.connect() as conn:
            return [r[0] for r in conn.execute(sa.select(learnwares.c.id)
                                               .where(learnwares.c.deleted_at.is_(None)))]

    def live_semantics(self, pks: list[int]) -> list[LiveSemantic]:
        """These learnwares (the live ones) with their semantic specifications, read 500 at
        a time."""
        out = []
        with self.engine.connect() as conn:
            for i in range(0, len(pks), 500):
                out.extend(LiveSemantic(r.id, learnware_public_id(r.id), _loads(r.semantic))
                           for r in conn.execute(
                    sa.select(learnwares.c.id, learnwares.c.semantic)
                    .where(learnwares.c.id.in_(pks[i:i + 500]),
                           learnwares.c.deleted_at.is_(None))))
        return out

    def tombstone(self, pk: int, *, reason: str = "", by: str = "developer") -> bool:
        """Mark withdrawn (the id is never reused), with the reason and who withdrew it. The
        record and the model file stay; the market no longer serves the file for this id."""
        with self.engine.begin() as conn:
            row = conn.execute(sa.select(learnwares.c.island_id, learnwares.c.deleted_at)
                               .where(learnwares.c.id == pk)).first()
            if row is None or row.deleted_at is not None:
                return False
            conn.execute(learnwares.update().where(learnwares.c.id == pk)
                         .values(deleted_at=time.time(), live=None, withdrawn_reason=reason,
                                 withdrawn_by=by))
            conn.execute(islands.update().where(islands.c.id == row.island_id)
                         .values(version=islands.c.version + 1, **_live_change(pk, -1)))
        return True

    def model_bytes(self, sha: str) -> bytes | None:
        if isinstance(self.blobs, DatabaseBlobs):
            with self.engine.connect() as conn:
                return self.blobs.get(sha, conn)
        return self.blobs.get(sha)

    def model_withdrawal(self, sha: str) -> StoredLearnware | None:
        """Why the market must not serve model file ``sha``: the withdrawal of a learnware it
        backs, when no live learnware has the same file (None when one does, or none at all)."""
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(learnwares).where(learnwares.c.model_sha256 == sha)
                                .order_by(learnwares.c.id.desc())).all()
        if not rows or any(r.deleted_at is None for r in rows):
            return None
        return self._learnware_row(rows[0])

    def has_model(self, sha: str) -> bool:
        with self.engine.connect() as conn:
            return conn.execute(sa.select(learnwares.c.id)
                                .where(learnwares.c.model_sha256 == sha)).first() is not None

    # --- nonces ---------------------------------------------------------------------------
    def check_and_store(self, key_id: str, nonce: str, ts_ms: int, window_s: float) -> bool:
        """The shared nonce store: an insert that fails on a duplicate means a replay."""
        now = time.time()
        try:
            with self.engine.begin() as conn:
                conn.execute(_NONCE_INSERT, {"key_id": key_id, "nonce": nonce, "seen_at": now})
                if int(now * 1000) % 97 == 0:  # occasional purge of nonces out of the window
                    conn.execute(nonces.delete().where(nonces.c.seen_at < now - 2 * window_s))
            return True
        except sa.exc.IntegrityError:
            return False

    # --- rate limits ----------------------------------------------------------------------
    def rate_hit(self, action: str, key_id: str, limit: int, window_s: float = 60.0
                 ) -> float | None:
        """Count one request of ``key_id`` against ``limit`` per ``window_s`` (shared by all
        workers): None when allowed (and recorded), else the seconds until the next one is."""
        now = time.time()
        try:
            with self.engine.begin() as conn:
                if self.engine.dialect.name == "postgresql":  # one check at a time per key
                    conn.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext(:k))"),
                                 {"k": f"rate:{action}:{key_id}"})
                # a write first: on SQLite it takes the database's write lock, serialising
                # concurrent checks of every worker
                conn.execute(rate_hits.delete().where(
                    rate_hits.c.action == action, rate_hits.c.key_id == key_id,
                    rate_hits.c.at <= now - window_s))
                recent = [r[0] for r in conn.execute(
                    sa.select(rate_hits.c.at).where(rate_hits.c.action == action,
                                                    rate_hits.c.key_id == key_id)
                    .order_by(rate_hits.c.at).limit(limit))]
                if len(recent) >= limit:
                    return max(0.0, window_s - (now - recent[0]))
                conn.execute(rate_hits.insert().values(action=action, key_id=key_id, at=now))
                if int(now * 1000) % 97 == 0:  # occasional purge of keys that went quiet
                    conn.execute(rate_hits.delete().where(rate_hits.c.at <= now - window_s))
            return None
        except sa.exc.SQLAlchemyError as exc:
            raise StorageError(f"the database refused the write: {type(exc).__name__}") from exc

    # --- usage reports (market_server/reports.py) ------------------------------------------
    def put_report(self, *, learnware_pk: int, island_pk: int, reporter_key_id: str,
                   metric: str, value: float, n_rows: int, reuse: str,
                   comment: str | None) -> bool:
        """Store a usage report; the same key's earlier report on this learnware is replaced
        (True). One transaction; a concurrent first report of the same key is replaced on the
        retry."""
        values = dict(metric=metric, value=float(value), n_rows=int(n_rows), reuse=reuse,
                      comment=comment, created_at=time.time())
        mine = sa.and_(usage_reports.c.learnware_id == learnware_pk,
                       usage_reports.c.reporter_key_id == reporter_key_id)
        for _ in range(2):
            try:
                with self.engine.begin() as conn:
                    # a replacement is a new row (a new, higher id): text indexes see it as a
                    # change by the ids alone (report_ids_since)
                    replaced = conn.execute(usage_reports.delete().where(mine)).rowcount > 0
                    conn.execute(usage_reports.insert().values(
                        learnware_id=learnware_pk, island_id=island_pk,
                        reporter_key_id=reporter_key_id, **values))
                    return replaced
            except sa.exc.IntegrityError:
                continue  # the same key's report arrived at the same moment: update it
            except sa.exc.SQLAlchemyError as exc:
                raise StorageError(f"the database refused the write: {type(exc).__name__}"
                                   ) from exc
        raise StorageError("the report could not be stored; try again")

    def reports(self, *, learnware_pks: Iterable[int] | None = None,
                island_pk: int | None = None, limit: int = 100_000) -> list[dict]:
        """Usage reports of these learnwares, or of an island's (live) learnwares, newest
        first: ``{learnware_pk, reporter_key_id, metric, value, n_rows, reuse, comment, at}``."""
        c = usage_reports.c
        stmt = sa.select(c.learnware_id, c.reporter_key_id, c.metric, c.value, c.n_rows, c.reuse,
                         c.comment, c.created_at)
        if learnware_pks is not None:
            pks = sorted({int(p) for p in learnware_pks})
            if not pks:
                return []
            stmt = stmt.where(c.learnware_id.in_(pks))
        if island_pk is not None:
            stmt = stmt.where(c.island_id == island_pk, c.learnware_id.in_(
                sa.select(learnwares.c.id).where(_live_on(island_pk))))
        stmt = stmt.order_by(c.created_at.desc(), c.id.desc()).limit(int(limit))
        with self.engine.connect() as conn:
            rows = conn.execute(stmt).all()
        return [{"learnware_pk": r[0], "reporter_key_id": r[1], "metric": r[2], "value": r[3],
                 "n_rows": int(r[4]), "reuse": r[5], "comment": r[6], "at": r[7]} for r in rows]

    def report_ids_since(self, after: int) -> list[tuple[int, int]]:
        """``[(report id, learnware pk)]`` of the reports stored after id ``after``: a range of
        the primary key, so a text index can ask on every query."""
        c = usage_reports.c
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(c.id, c.learnware_id).where(c.id > int(after))).all()
        return [(int(r[0]), int(r[1])) for r in rows]

    def dispose(self) -> None:
        self.engine.dispose()
