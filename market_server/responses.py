"""Signed responses and errors: every answer of the market is an envelope it signs."""
from __future__ import annotations

import math

from flask import Response, current_app, request

from protocol.envelope import seal
from protocol.errors import LearnwareError


def market():
    return current_app.extensions["learnware_market"]


def signed(message_type: str, body: dict, status: int = 200, reply_to: str | None = None) -> Response:
    """The market's signed answer. Its body is not validated against the schema here (a third
    of a millisecond per request): the market builds it, and every client validates what it
    opens, which is where the tests check every response type."""
    app_state = market()
    data = seal(app_state.identity, message_type, body, reply_to=reply_to, validate=False)
    return Response(data, status=status, mimetype="application/json")


def _text(value, limit: int | None = None) -> str:
    """``str(value)`` made encodable: an error may echo request text (a field name), which can
    hold a lone surrogate the market could not encode (and sign) as UTF-8."""
    text = str(value)[:limit]
    return text.encode("utf-8", "replace").decode("utf-8")


def error_response(exc: LearnwareError) -> Response:
    body = {"code": _text(exc.code, 100) or "error", "message": _text(exc.message, 20_000)}
    if exc.field is not None:
        body["field"] = _text(exc.field, 1000)
    if isinstance(exc.details, list):
        body["details"] = [{"code": _text(d.get("code", "")),
                            "message": _text(d.get("message", "")),
                            "field": None if d.get("field") is None else _text(d["field"])}
                           for d in exc.details if isinstance(d, dict)][:100]
    reply_to = getattr(request, "lwm_nonce", None)
    status = exc.status if 400 <= exc.status < 600 else 400
    resp = signed("error", body, status=status, reply_to=reply_to)
    retry_after = getattr(exc, "retry_after", None)
    if retry_after is not None:  # a 429 says when to come back
        resp.headers["Retry-After"] = str(max(1, math.ceil(retry_after)))
    return resp
