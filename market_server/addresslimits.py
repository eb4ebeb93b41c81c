"""Per-address request budgets on every endpoint (GETs included), with Flask-Limiter.

Keys are free, so per-key budgets (ratelimit.py) alone do not stop one machine that signs each
request with a fresh key, and unsigned reads carry no key at all: these budgets count requests
per client address. The counters live in a ``limits`` storage: ``memory://`` counts in this
process (one worker), ``redis://host:port`` is shared by every worker and server pointed at it.
Behind a reverse proxy every request comes from the proxy's address; ``trusted_proxies`` = N
takes the client address from the N-th last X-Forwarded-For entry instead (werkzeug ProxyFix),
only when the operator says there are N proxies that set it.
"""
from __future__ import annotations

import math
import time

from flask import Flask
from flask_limiter import Limiter, RateLimitExceeded
from limits import parse_many
from werkzeug.middleware.proxy_fix import ProxyFix

from protocol.errors import LearnwareError

from .config import ServerConfig
from .ratelimit import RateLimited
from .responses import error_response


def _limit(value: str | None, name: str) -> str | None:
    """A limit string ("600 per minute", "10/second;600/hour"), or None when off."""
    value = (value or "").strip()
    if value.lower() in ("", "0", "off", "none"):
        return None
    try:
        parse_many(value)
    except ValueError as exc:
        raise LearnwareError(f"{name} {value!r} is not a rate limit such as '600 per minute' "
                             f"({exc})", code="bad_config", field=name) from exc
    return value


def client_address() -> str:
    from flask import request
    return request.remote_addr or "unknown"


def install_address_limits(app: Flask, config: ServerConfig, prefix: str = "lwm"
                           ) -> Limiter | None:
    """Wire the per-address budgets of ``config`` into ``app``; None when all are off.
    ``prefix`` names the market's counters in a shared storage (one Redis, many markets)."""
    if config.trusted_proxies:
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=config.trusted_proxies, x_proto=0,
                                x_host=0, x_port=0, x_prefix=0)
    every = _limit(config.rate_limit_address, "rate_limit_address")
    text = _limit(config.rate_limit_address_text, "rate_limit_address_text")
    publish = _limit(config.rate_limit_address_publish, "rate_limit_address_publish")
    report = _limit(config.rate_limit_address_report, "rate_limit_address_report")
    if not (every or text or publish or report):
        return None
    limiter = Limiter(client_address, app=app, application_limits=[every] if every else [],
                      storage_uri=config.rate_limit_storage,
                      strategy="sliding-window-counter", headers_enabled=False,
                      key_prefix=prefix, in_memory_fallback_enabled=True)
    views = app.view_functions
    if text:  # the API's text searches and the catalogue's search page share one budget
        shared_text = limiter.shared_limit(text, scope="text")
        for endpoint in ("learnwares.text_search", "web.search", "search.describe"):
            if endpoint in views:
                views[endpoint] = shared_text(views[endpoint])
    if publish:  # publishes and deletes of one address share one budget
        shared = limiter.shared_limit(publish, scope="publish")
        for endpoint in ("learnwares.publish", "learnwares.delete_learnware"):
            views[endpoint] = shared(views[endpoint])
    if report and "learnwares.post_report" in views:  # usage reports of one address
        views["learnwares.post_report"] = limiter.shared_limit(report, scope="report")(
            views["learnwares.post_report"])

    @app.errorhandler(RateLimitExceeded)
    def _too_many(exc: RateLimitExceeded):
        current = limiter.current_limit
        window = exc.limit.limit.get_expiry()
        wait = (min(window, max(1, math.ceil(current.reset_at - time.time()))) if current
                else window)
        err = RateLimited(f"too many requests from this address: the limit is "
                          f"{exc.limit.limit}; retry in {wait} s", field=None)
        err.retry_after = wait
        return error_response(err)

    return limiter
