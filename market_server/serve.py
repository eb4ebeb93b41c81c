"""``lwm serve``: run the market (werkzeug for one worker, gunicorn for several)."""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from .config import ServerConfig


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="lwm serve", description="Run a learnware market server. It stores only "
        "specifications and models: SQLite plus a blob folder under --data-dir by default, or "
        "PostgreSQL with --db postgresql://...")
    p.add_argument("--data-dir", default="./lwm-data", help="database, blobs and the market key "
                   "(default ./lwm-data)")
    p.add_argument("--db", default=None, help="database URL: sqlite:///path.db or "
                   "postgresql://user@host/db (default: SQLite in --data-dir)")
    p.add_argument("--db-schema", default=None,
                   help="PostgreSQL schema holding the market's tables (default: the "
                   "database's search_path, usually public); several servers given the same "
                   "--db and --db-schema share one market")
    p.add_argument("--create-schema", action="store_true",
                   help="create the PostgreSQL --db-schema when it does not exist (without "
                   "it, a missing schema is refused: a mistyped name would start an empty "
                   "market)")
    p.add_argument("--market-key-file", default=None, metavar="PEM",
                   help="the market's signing key (default: $LWM_MARKET_KEY_FILE, else "
                   "DATA_DIR/market_key.pem, created on first start); every server of one "
                   "market needs the same key (docs/DEPLOY.md)")
    p.add_argument("--blob-store", choices=["folder", "db"], default=None,
                   help="where model files live (default: folder for SQLite, db for PostgreSQL)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8765)
    p.add_argument("--workers", type=int, default=1, help="worker processes (gunicorn when > 1)")
    p.add_argument("--threads", type=int, default=1,
                   help="threads per gunicorn worker (default 1: gunicorn's sync workers, "
                        "measured fastest here; put a buffering reverse proxy in front for slow "
                        "clients, or use 2+ threads)")
    p.add_argument("--refine-at", default=None,
                   help="island sizes at which the island's kernel is refined from its models, "
                        "comma-separated, or 'none' (default 4,8,16,...,256)")
    p.add_argument("--rate-limit-publish", type=int, default=0, help="publishes per minute per key")
    p.add_argument("--rate-limit-search", type=int, default=0, help="searches per minute per key")
    d = ServerConfig()
    p.add_argument("--rate-limit-address", default=d.rate_limit_address,
                   help=f"requests per client address, all endpoints together ('' or off = "
                   f"none; default {d.rate_limit_address!r})")
    p.add_argument("--rate-limit-address-text", default=d.rate_limit_address_text,
                   help=f"text searches per address (default {d.rate_limit_address_text!r})")
    p.add_argument("--rate-limit-address-publish", default=d.rate_limit_address_publish,
                   help=f"publishes and deletes per address (default "
                   f"{d.rate_limit_address_publish!r})")
    p.add_argument("--rate-limit-report", type=int, default=d.rate_limit_report,
                   help=f"usage reports per minute per key (default {d.rate_limit_report})")
    p.add_argument("--rate-limit-address-report", default=d.rate_limit_address_report,
                   help=f"usage reports per address (default {d.rate_limit_address_report!r})")
    p.add_argument("--rate-limit-storage", default=d.rate_limit_storage,
                   help="where per-address counts live: memory:// (this process) or "
                   "redis://host:6379 (shared by every worker and server: use it with --workers "
                   "> 1 or several servers)")
    p.add_argument("--trusted-proxies", type=int, default=0,
                   help="reverse proxies in front that set X-Forwarded-For (default 0: the "
                   "client address is the connection's)")
    p.add_argument("--publishers", default="open",
                   help="who may publish: open (default), allow:FILE (public keys or key ids, "
                   "one a line) or certified (certificates from lwm certify)")
    p.add_argument("--operator-key", default=None, metavar="KEY_OR_FILE",
                   help="the market operator's base64 Ed25519 public key, or a file holding "
                        "it: the operator may withdraw any learnware (lwm withdraw) and "
                        "certify publishers (--publishers certified, lwm certify)")
    return p


def operator_key(text: str | None) -> str | None:
    """The operator's public key from ``--operator-key`` (the key, or a file holding it)."""
    if text is None:
        return None
    from protocol.errors import LearnwareError
    from protocol.identity import PublicKey
    path = Path(text)
    try:
        if path.is_file():
            text = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise SystemExit(f"--operator-key: cannot read {path}: {exc}")
    if "PRIVATE KEY" in text:
        raise SystemExit("--operator-key takes the operator's PUBLIC key (base64), never a "
                         "private key file")
    try:
        return PublicKey(text).b64
    except LearnwareError:
        raise SystemExit("--operator-key is not a base64 Ed25519 public key (44 characters), "
                         "nor a file holding one")


def _refine_at(text: str | None) -> tuple[int, ...] | None:
    if text is None:
        return None
    if text.strip().lower() == "none":
        return ()
    try:
        return tuple(sorted({int(x) for x in text.split(",") if x.strip()}))
    except ValueError:
        raise SystemExit(f"--refine-at takes comma-separated integers or 'none', got {text!r}")


def config_from_args(args: argparse.Namespace) -> ServerConfig:
    cfg = ServerConfig(data_dir=Path(args.data_dir), db_url=args.db, blob_store=args.blob_store,
                       db_schema=args.db_schema,
                       rate_limit_publish=args.rate_limit_publish,
                       rate_limit_search=args.rate_limit_search,
                       rate_limit_address=args.rate_limit_address,
                       rate_limit_address_text=args.rate_limit_address_text,
                       rate_limit_address_publish=args.rate_limit_address_publish,
                       rate_limit_report=args.rate_limit_report,
                       rate_limit_address_report=args.rate_limit_address_report,
                       rate_limit_storage=args.rate_limit_storage,
                       trusted_proxies=args.trusted_proxies, publishers=args.publishers,
                       operator_key=operator_key(args.operator_key))
    refine = _refine_at(args.refine_at)
    if refine is not None:
        cfg.refine_at = refine
    return cfg


def _config_to_env(cfg: ServerConfig) -> str:
    return json.dumps({"data_dir": str(cfg.data_dir), "db_url": cfg.db_url,
                       "refine_at": list(cfg.refine_at),
                       "blob_store": cfg.blob_store, "db_schema": cfg.db_schema,
                       "identity_path": None if cfg.identity_path is None
                       else str(cfg.identity_path),
                       "rate_limit_publish": cfg.rate_limit_publish,
                       "rate_limit_search": cfg.rate_limit_search,
                       **{k: getattr(cfg, k) for k in (
                           "rate_limit_address", "rate_limit_address_text",
                           "rate_limit_address_publish", "rate_limit_storage",
                           "rate_limit_report", "rate_limit_address_report",
                           "trusted_proxies", "publishers", "operator_key")}})


def app_from_env():
    """Entry point for gunicorn workers (config passed through LWM_SERVER_CONFIG)."""
    from .app import create_app
    raw = json.loads(os.environ["LWM_SERVER_CONFIG"])
    raw["data_dir"] = Path(raw["data_dir"])
    if raw.get("identity_path"):
        raw["identity_path"] = Path(raw["identity_path"])
    if "refine_at" in raw:
        raw["refine_at"] = tuple(raw["refine_at"])
    app = create_app(ServerConfig(**raw))
    app.extensions["learnware_market"].market.sandbox.warm()
    _freeze_startup_objects()
    return app


def _freeze_startup_objects() -> None:
    """Move everything allocated at start-up (modules, the app) out of the garbage
    collector's reach: a full collection over those ~10^5 objects took ~0.1 s in the middle
    of requests (an index refresh measured 6 ms, and 119 ms when a collection hit it)."""
    import gc
    gc.collect()
    gc.freeze()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cfg = config_from_args(args)
    from .deploy_checks import DeployError, check_deployment
    try:
        found = check_deployment(cfg, key_file=args.market_key_file,
                                 create_schema=args.create_schema)
    except DeployError as exc:
        print(f"lwm serve: refusing to start: {exc}", file=sys.stderr)
        return 1
    cfg.identity_path = found.key_path
    from .app import create_app
    app = create_app(cfg)  # creates schema and key before any worker starts
    state = app.extensions["learnware_market"]
    removed = state.store.collect_orphan_blobs()
    url = f"http://{args.host}:{args.port}"
    print(f"learnware market at {url}  market key id {state.identity.key_id}  "
          f"db {cfg.resolved_db_url().split('@')[-1]}  workers {args.workers}"
          + (f"  (removed {removed} orphan model file(s))" if removed else ""), flush=True)
    print(f"catalogue (open in a browser): {url}/", flush=True)
    if args.workers <= 1:
        from werkzeug.serving import run_simple
        import logging
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        state.market.sandbox.warm()  # the first publish must not wait for the model workers
        _freeze_startup_objects()
        run_simple(args.host, args.port, app, threaded=True, use_reloader=False)
        return 0
    state.store.dispose()
    if cfg.rate_limit_storage.startswith("memory"):
        print("note: per-address rate limits are counted per worker with memory:// storage; "
              "give --rate-limit-storage redis://... to share them", file=sys.stderr)
    os.environ["LWM_SERVER_CONFIG"] = _config_to_env(cfg)
    try:
        from gunicorn.app.wsgiapp import run as gunicorn_run
    except ImportError:
        print("--workers > 1 needs gunicorn: pip install 'learnware-market[server]'",
              file=sys.stderr)
        return 2
    sys.argv = ["gunicorn", "-w", str(args.workers), "-b", f"{args.host}:{args.port}",
                "--threads", str(max(1, args.threads)), "--log-level", "warning", "--timeout", "120",
                "market_server.serve:app_from_env()"]
    gunicorn_run()
    return 0
