"""Signed responses and errors: every answer of the market is an envelope it signs."""
from __future__ import annotations

import logging

from flask import Response, current_app, request

from protocol.envelope import seal
from protocol.errors import LearnwareError

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
    try:
        data = seal(app_state.identity, message_type, body, reply_to=reply_to, validate=False)
    except Exception:  # noqa: BLE001 - whatever the encoder refused, it is the market's bug
        log.exception("could not encode the market's %s answer", message_type)
        data = seal(app_state.identity, "error", UNENCODABLE, reply_to=reply_to,
                    validate=False)
        status = 500
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
    return signed("error", body, status=status, reply_to=reply_to)
