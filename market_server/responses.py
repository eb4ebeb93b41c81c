"""Signed responses and errors: every answer of the market is an envelope it signs.

Every answer is bound to its request by ``reply_to``: the envelope's nonce for POST/DELETE, for
GET the client's ``X-LWM-Nonce`` header bound to the path and query asked (so an old answer, or
one about another resource, is refused by the client). Such answers are per request:
``Cache-Control: no-store`` keeps shared caches from serving one to another request."""
from __future__ import annotations

import logging
import math

from flask import Response, current_app, request

from protocol.envelope import get_reply_to, seal
from protocol.errors import LearnwareError

NONCE_HEADER = "X-LWM-Nonce"
_HEX = frozenset("0123456789abcdef")

log = logging.getLogger("market_server")

#: the answer when the market cannot encode (and sign) its own answer: its bug, never the
#: request's fault (a 400 ``bad_encoding`` would blame the client).
UNENCODABLE = {"code": "internal_error",
               "message": "the market could not encode its answer; this is a market bug, "
                          "nothing was changed"}


def market():
    return current_app.extensions["learnware_market"]


def signed(message_type: str, body: dict, status: int = 200, reply_to: str | None = None) -> Response:
    """The market's signed answer. Its body is not validated against the schema here (a third
    of a millisecond per request): the market builds it, and every client validates what it
    opens, which is where the tests check every response type.

    When the body cannot be encoded (a number the encoder refuses, say), that is logged and
    answered with a signed 500 ``internal_error``: the schemas bound every request so that no
    accepted one leads here."""
    app_state = market()
    if reply_to is None:
        reply_to = getattr(request, "lwm_nonce", None)
    try:
        data = seal(app_state.identity, message_type, body, reply_to=reply_to, validate=False)
    except Exception:  # noqa: BLE001 - whatever the encoder refused, it is the market's bug
        log.exception("could not encode the market's %s answer", message_type)
        data = seal(app_state.identity, "error", UNENCODABLE, reply_to=reply_to,
                    validate=False)
        status = 500
    resp = Response(data, status=status, mimetype="application/json")
    resp.headers["Cache-Control"] = "no-store"
    return resp


def read_get_nonce() -> None:
    """(before each request) The nonce a GET sends in ``X-LWM-Nonce``, which its signed answer
    names in ``reply_to``; a malformed one is refused before any work (that error is unbound)."""
    if request.method not in ("GET", "HEAD"):
        return
    nonce = request.headers.get(NONCE_HEADER)
    if nonce is None:
        return
    if len(nonce) != 32 or not _HEX.issuperset(nonce):
        raise LearnwareError(f"the {NONCE_HEADER} header must be 32 lowercase hex characters",
                             code="bad_nonce", field=NONCE_HEADER)
    request.lwm_nonce = get_reply_to(nonce, request.path, request.query_string)


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
    kernel = getattr(exc, "kernel", None)
    if isinstance(kernel, dict):  # kernel_changed carries the island's current kernel
        body["kernel"] = kernel
    reply_to = getattr(request, "lwm_nonce", None)
    status = exc.status if 400 <= exc.status < 600 else 400
    resp = signed("error", body, status=status, reply_to=reply_to)
    retry_after = getattr(exc, "retry_after", None)
    if retry_after is not None:  # a 429 says when to come back
        resp.headers["Retry-After"] = str(max(1, math.ceil(retry_after)))
    return resp
