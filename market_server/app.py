"""``create_app(config)``: the Flask app factory (no global state)."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from flask import Flask
from werkzeug.exceptions import HTTPException

from protocol.errors import LearnwareError
from protocol.identity import Identity

from .addresslimits import install_address_limits
from .api import islands, learnwares, meta, search
from .config import ServerConfig
from .market import Market
from .private_api import private
from .ratelimit import RateLimiter
from .responses import error_response, read_get_nonce
from .storage import Store
from .web import web

log = logging.getLogger("market_server")


@dataclass
class AppState:
    config: ServerConfig
    store: Store
    identity: Identity
    market: Market
    limiter: RateLimiter


def load_or_create_identity(path: Path) -> Identity:
    path = Path(path)
    if path.exists():
        return Identity.load(path)
    try:
        Identity.generate().save(path)
    except LearnwareError:
        pass  # another worker created it at the same moment
    return Identity.load(path)


def create_app(config: ServerConfig | dict | None = None) -> Flask:
    if config is None:
        config = ServerConfig()
    elif isinstance(config, dict):
        config = ServerConfig(**config)
    data_dir = Path(config.data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    store = Store(config.resolved_db_url(), blob_store=config.resolved_blob_store(),
                  blob_dir=data_dir / "blobs", db_schema=config.db_schema)
    identity = load_or_create_identity(config.identity_path or data_dir / "market_key.pem")
    state = AppState(config, store, identity, Market(config, store),
                     RateLimiter({"publish": config.rate_limit_publish,
                                  "search": config.rate_limit_search,
                                  "report": config.rate_limit_report}, store=store))
    app = Flask("market_server")
    app.config["MAX_CONTENT_LENGTH"] = config.max_message_bytes
    # Werkzeug answers "//" in a path with an unsigned HTML 308 redirect (routing redirects skip
    # the error handlers); without merging, such a path is a plain signed 404.
    app.url_map.merge_slashes = False
    app.extensions["learnware_market"] = state
    for bp in (meta, learnwares, islands, search, private):
        app.register_blueprint(bp)
    app.register_blueprint(web)  # the HTML catalogue (market_server/web/), read-only
    app.before_request(read_get_nonce)
    install_address_limits(app, config, prefix=f"lwm:{identity.key_id}")

    @app.errorhandler(LearnwareError)
    def _learnware_error(exc: LearnwareError):
        return error_response(exc)

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        codes = {404: "not_found", 405: "method_not_allowed", 413: "message_too_large"}
        return error_response(LearnwareError(exc.description or exc.name,
                                             code=codes.get(exc.code, "bad_request"),
                                             status=exc.code or 400))

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        log.exception("unexpected error")
        return error_response(LearnwareError("the market hit an unexpected error; nothing was "
                                             "changed", code="internal_error", status=500))

    return app
