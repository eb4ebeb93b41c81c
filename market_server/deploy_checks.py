"""What ``lwm serve`` checks before it serves: the set-ups that look fine and fail later.

* A PostgreSQL ``--db-schema`` that does not exist: created with ``--create-schema``, else
  refused with the command that creates it (the schema is never created silently: a mistyped
  name would start an empty market next to the real one).
* A market key other than the one the database has been served with: behind one address,
  clients pinned to one key would refuse every answer signed with the other.
* A blob store other than the one the database's model files are in: ``db`` against
  ``folder``, or a folder on another machine (each folder holds a random store id, and the
  database records the id of the folder its files are in; a shared mount passes).

Each refusal is a :class:`DeployError` whose message says what to do instead.
"""
from __future__ import annotations

import os
import re
import socket
import uuid
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa

from protocol.errors import LearnwareError
from protocol.identity import Identity, key_id_of

from .config import ServerConfig
from .storage import Store

#: the file in a blob folder naming it (the database records which folder its files are in)
STORE_ID_FILE = ".store-id"
#: environment variable naming the market key file (when --market-key-file is not given)
KEY_FILE_ENV = "LWM_MARKET_KEY_FILE"
_SCHEMA_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")


class DeployError(Exception):
    """A set-up the server refuses to start with; the message says why and what to do."""


@dataclass
class Deployment:
    """What the checks found: the market key (and where it came from) and the blob store."""

    identity: Identity
    key_path: Path
    blob_store: str


def schema_exists(cfg: ServerConfig, *, create: bool = False) -> bool:
    """Check (or create) ``cfg.db_schema`` on PostgreSQL; True when it was created."""
    url = cfg.resolved_db_url()
    if not url.startswith("postgresql") or not cfg.db_schema:
        return False
    name = cfg.db_schema
    if not _SCHEMA_NAME.fullmatch(name):
        raise DeployError(f"--db-schema {name!r} is not a plain schema name (letters, digits "
                          f"and _, at most 63, not starting with a digit)")
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            found = conn.execute(sa.text("SELECT 1 FROM pg_namespace WHERE nspname = :n"),
                                 {"n": name}).first()
            if found is not None:
                return False
            if not create:
                raise DeployError(
                    f"the PostgreSQL schema {name!r} does not exist in {_where(url)}. Create "
                    f"it once (psql '{cfg.db_url}' -c 'CREATE SCHEMA {name}'), or start with "
                    f"--create-schema to have the server create it")
            conn.execute(sa.text(f'CREATE SCHEMA IF NOT EXISTS "{name}"'))
            return True
    except sa.exc.IntegrityError:
        return False  # another server created it at the same moment
    except sa.exc.SQLAlchemyError as exc:
        raise DeployError(f"cannot reach the database {_where(url)}: "
                          f"{_first_line(exc)}") from exc
    finally:
        engine.dispose()


def key_path(cfg: ServerConfig, key_file: str | None, environ: dict) -> tuple[Path, bool]:
    """The market key file and whether it was named explicitly (``--market-key-file``, else
    ``$LWM_MARKET_KEY_FILE``; else ``<data-dir>/market_key.pem``, created on first start)."""
    named = key_file or environ.get(KEY_FILE_ENV) or None
    if named:
        return Path(named).expanduser(), True
    return Path(cfg.identity_path or Path(cfg.data_dir) / "market_key.pem"), False


def check_deployment(cfg: ServerConfig, *, key_file: str | None = None,
                     environ: dict | None = None, create_schema: bool = False) -> Deployment:
    """Every check, in order; records the key and blob store on a database that has none.
    Raises :class:`DeployError` on the first refusal."""
    environ = os.environ if environ is None else environ
    schema_exists(cfg, create=create_schema)
    path, named = key_path(cfg, key_file, environ)
    if named and not path.is_file():
        raise DeployError(f"the market key file {path} does not exist: copy the key file of "
                          f"the market's first server there, or create a new market key with "
                          f"`lwm keygen --out {path}`")
    store = open_store(cfg)
    try:
        chain = store.market_key_chain()
        if not path.exists() and chain:
            raise DeployError(
                f"this database is already served with market key "
                f"{key_id_of(chain[-1][0])}, and this server has no key at {path}: give every "
                f"server of one market the same key file (--market-key-file, or "
                f"${KEY_FILE_ENV}), copied from the first server")
        identity = _load_identity(path)
        check_market_key(store, identity, path)
        blob_store = check_blob_store(store, cfg)
    finally:
        store.dispose()
    return Deployment(identity, path, blob_store)


def check_market_key(store: Store, identity: Identity, path: Path) -> None:
    """Refuse a key other than the database's current market key (recording it when the
    database has none)."""
    current = store.claim_market_key(identity.public_key_b64)
    if current == identity.public_key_b64:
        return
    retired = [k for k, _ in store.market_key_chain()[:-1]]
    if identity.public_key_b64 in retired:
        raise DeployError(
            f"the market key in {path} (id {identity.key_id}) was retired by a key rotation; "
            f"this market now signs with key {key_id_of(current)}: start with that key's file")
    raise DeployError(
        f"this database has been served with market key {key_id_of(current)}, and the key in "
        f"{path} is another one (id {identity.key_id}). Every server of one market must sign "
        f"with the same key (clients pinned to one refuse every answer signed with another): "
        f"copy the first server's key file to this machine and pass it with --market-key-file "
        f"(or ${KEY_FILE_ENV}); to change the market's key, use `lwm admin rotate-key`")


def check_blob_store(store: Store, cfg: ServerConfig) -> str:
    """Refuse a blob store other than the one the database's model files are in."""
    kind = cfg.resolved_blob_store()
    where = _host()
    if kind == "db":
        mine, folder = "db", None
    else:
        folder = Path(cfg.data_dir).resolve() / "blobs"
        id_file = folder / STORE_ID_FILE
        store_id = id_file.read_text().strip() if id_file.is_file() else uuid.uuid4().hex
        mine = f"folder:{store_id}"
    recorded = store.claim_setting("blob_store", mine)
    if recorded == mine:
        if folder is not None:
            folder.mkdir(parents=True, exist_ok=True)
            if not (folder / STORE_ID_FILE).is_file():
                (folder / STORE_ID_FILE).write_text(mine.split(":", 1)[1] + "\n")
            store.claim_setting("blob_folder", f"{where}:{folder}")
        return kind
    if recorded == "db":
        raise DeployError("this market's model files are in the database: start with "
                          "--blob-store db (a folder would hold none of them)")
    at = store.setting("blob_folder") or "on another machine"
    if kind == "db":
        raise DeployError(f"this market's model files are in a blob folder ({at}), not in the "
                          f"database: start with --blob-store folder on that machine, or move "
                          f"the market to database blobs with `lwm admin backup` and "
                          f"`lwm admin restore --blob-store db`")
    raise DeployError(
        f"this database's model files are in the blob folder {at}, and this server's folder "
        f"{folder} is another one: a second machine cannot see them. Several machines on one "
        f"database need --blob-store db (model files in the database), or the same folder "
        f"mounted on every machine")


def open_store(cfg: ServerConfig) -> Store:
    """The market's store, or a :class:`DeployError` saying why it cannot be opened."""
    try:
        return Store(cfg.resolved_db_url(), blob_store=cfg.resolved_blob_store(),
                     blob_dir=Path(cfg.data_dir) / "blobs", db_schema=cfg.db_schema)
    except LearnwareError as exc:
        raise DeployError(exc.message) from exc
    except sa.exc.SQLAlchemyError as exc:
        raise DeployError(f"cannot open the database {_where(cfg.resolved_db_url())}: "
                          f"{_first_line(exc)}") from exc


def _load_identity(path: Path) -> Identity:
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            Identity.generate().save(path)
        except LearnwareError:
            pass  # another server process created it at the same moment
    try:
        return Identity.load(path)
    except LearnwareError as exc:
        raise DeployError(f"cannot use the market key: {exc.message}") from exc


def _host() -> str:
    return socket.gethostname()


def _where(url: str) -> str:
    return url.split("@")[-1]


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
