"""``lwm admin``: the operator's commands on a market's storage (backup, restore, key rotation).

They open the market's database and blob store the way ``lwm serve`` does (same ``--data-dir``,
``--db``, ``--db-schema``, ``--blob-store``, ``--market-key-file``) and run next to serving
servers: a backup reads one snapshot, a rotation is one row.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from protocol.errors import LearnwareError

from .config import ServerConfig


def _storage_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", default="./lwm-data",
                   help="the market's data folder (default ./lwm-data)")
    p.add_argument("--db", default=None, help="database URL (default: SQLite in --data-dir)")
    p.add_argument("--db-schema", default=None, help="PostgreSQL schema of the market")
    p.add_argument("--blob-store", choices=["folder", "db"], default=None,
                   help="where model files live (default: folder for SQLite, db for PostgreSQL)")
    p.add_argument("--market-key-file", default=None, metavar="PEM",
                   help="the market key (default $LWM_MARKET_KEY_FILE, else "
                   "DATA_DIR/market_key.pem)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lwm admin", description="Operator commands on a "
                                "market's storage; see docs/DEPLOY.md.")
    sub = p.add_subparsers(dest="command", required=True)
    sp = sub.add_parser("backup", help="a consistent copy of rows, model files and key, while "
                        "the market serves")
    sp.add_argument("dest", help="a new folder to write the backup to")
    _storage_options(sp)
    sp = sub.add_parser("restore", help="restore a backup into an empty market (any engine "
                        "and blob store: also how a market moves from SQLite to PostgreSQL)")
    sp.add_argument("src", help="the backup folder")
    _storage_options(sp)
    sp.add_argument("--create-schema", action="store_true",
                    help="create the PostgreSQL --db-schema when it does not exist")
    sp = sub.add_parser("rotate-key", help="hand the market over to a new key, in a statement "
                        "the old key signs (pinned clients follow it)")
    _storage_options(sp)
    sp.add_argument("--new-key-file", required=True, metavar="PEM",
                    help="the new market key (create it with `lwm keygen --out FILE`)")
    return p


def _config(args) -> ServerConfig:
    return ServerConfig(data_dir=Path(args.data_dir), db_url=args.db, blob_store=args.blob_store,
                        db_schema=args.db_schema)


def _store(cfg: ServerConfig):
    from .deploy_checks import open_store
    return open_store(cfg)


def _contents(summary: dict) -> str:
    rows = summary["tables"]
    return (f"{rows['islands']['rows']} islands, {rows['learnwares']['rows']} learnwares, "
            f"{summary['blobs']} model files")


def cmd_backup(args) -> str:
    from .backup import backup
    from .deploy_checks import key_path, schema_exists
    cfg = _config(args)
    schema_exists(cfg)
    path, _ = key_path(cfg, args.market_key_file, os.environ)
    store = _store(cfg)
    try:
        s = backup(store, path, Path(args.dest))
    finally:
        store.dispose()
    return f"backup of market {s['market_key_id']} in {args.dest}: " + _contents(s)


def cmd_restore(args) -> str:
    from .backup import restore
    from .deploy_checks import key_path, schema_exists
    cfg = _config(args)
    schema_exists(cfg, create=args.create_schema)
    path, _ = key_path(cfg, args.market_key_file, os.environ)
    Path(cfg.data_dir).mkdir(parents=True, exist_ok=True)
    store = _store(cfg)
    try:
        s = restore(Path(args.src), store, path)
    finally:
        store.dispose()
    return f"restored market {s['market_key_id']} (key in {path}): " + _contents(s)


def cmd_rotate_key(args) -> str:
    from protocol.identity import Identity
    from protocol.rotation import sign_rotation, verify_rotation
    from .deploy_checks import DeployError, key_path, schema_exists
    cfg = _config(args)
    schema_exists(cfg)
    path, _ = key_path(cfg, args.market_key_file, os.environ)
    old, new = Identity.load(path), Identity.load(Path(args.new_key_file).expanduser())
    store = _store(cfg)
    try:
        current = store.claim_market_key(old.public_key_b64)
        if current != old.public_key_b64:
            raise DeployError(f"the key in {path} (id {old.key_id}) is not the market's "
                              f"current key: a rotation starts from the current key")
        rotation = sign_rotation(old, new)
        verify_rotation(rotation, old=old.public_key_b64)
        store.add_rotation(rotation)
    finally:
        store.dispose()
    return (f"market key {old.key_id} handed over to {new.key_id}: restart every server with "
            f"--market-key-file {args.new_key_file}; pinned clients follow the rotation")


def main(argv: list[str] | None = None) -> int:
    import sqlalchemy as sa
    from .deploy_checks import DeployError
    args = build_parser().parse_args(argv)
    command = {"backup": cmd_backup, "restore": cmd_restore,
               "rotate-key": cmd_rotate_key}[args.command]
    try:
        print(command(args))
    except sa.exc.SQLAlchemyError as exc:
        print(f"lwm admin {args.command}: the database refused: "
              f"{str(getattr(exc, 'orig', exc)).strip().splitlines()[0]}", file=sys.stderr)
        return 1
    except (DeployError, LearnwareError, OSError) as exc:
        print(f"lwm admin {args.command}: {getattr(exc, 'message', None) or exc}",
              file=sys.stderr)
        return 1
    return 0
