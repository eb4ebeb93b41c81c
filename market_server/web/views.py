"""Catalogue pages: home, island, learnware, developer, text search, API documentation.

Read-only (GET only) and built from what the signed API already gives anyone. Every answer
carries a Content-Security-Policy that allows only the market's own scripts, styles and
images (no inline script, no other origin, no framing); bad query parameters are a 400 page
naming the parameter; an unknown id is a 404 page, never a traceback."""
from __future__ import annotations

import logging
import re
import time

from flask import Blueprint, Response, current_app, render_template, request
from werkzeug.exceptions import HTTPException

from markupsafe import Markup

from learnware_core.markdown import render_markdown
from protocol.errors import LearnwareError

from ..catalogue import ORDERS, SORTS, Catalogue
from ..openapi import openapi_document
from . import apidoc
from .params import choice_param, int_param, query_param

log = logging.getLogger("market_server")

web = Blueprint("web", __name__, template_folder="templates", static_folder="static",
                static_url_path="/assets")

#: the policy of every catalogue answer (pages, assets, errors)
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
       "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
SECURITY_HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff",
                    "Referrer-Policy": "no-referrer", "X-Frame-Options": "DENY",
                    "Cross-Origin-Opener-Policy": "same-origin"}
#: rows per table page: default and most
PER_PAGE, MAX_PER_PAGE = 50, 200
#: the island map's drawing area (SVG user units) and margin
MAP_W, MAP_H, MAP_MARGIN = 640, 400, 18
CATALOGUE_KEY = "learnware_catalogue"


@web.record_once
def _attach(setup_state) -> None:
    """One Catalogue per app, next to its Market (state on the app, no globals)."""
    app = setup_state.app
    app.extensions[CATALOGUE_KEY] = Catalogue(app.extensions["learnware_market"].market)


def catalogue() -> Catalogue:
    return current_app.extensions[CATALOGUE_KEY]


@web.after_request
def _headers(resp: Response) -> Response:
    for k, v in SECURITY_HEADERS.items():
        resp.headers[k] = v
    if request.endpoint == "web.static":
        resp.headers["Cache-Control"] = "public, max-age=3600"
    else:
        resp.headers["Cache-Control"] = "no-cache"
    return resp


@web.app_template_filter("utc")
def _utc(ts) -> str:
    if ts is None:
        return "never"
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(float(ts)))


#: invisible characters that change how text reads (bidi overrides and isolates, zero-width
#: marks): in developer text they are shown, not obeyed ("exe.jpg" spelled with U+202E)
INVISIBLE = re.compile("[\u200b-\u200f\u202a-\u202e\u2060-\u2069\ufeff]")


@web.app_template_filter("visible")
def _visible(text) -> str:
    return INVISIBLE.sub(lambda m: f"\u27e8U+{ord(m.group()):04X}\u27e9", str(text))


@web.app_template_filter("isolate")
def _isolate(text) -> str:
    """Developer text where <bdi> cannot go (an SVG tooltip, an attribute): its invisible
    controls shown, the whole wrapped in FIRST STRONG ISOLATE ... POP DIRECTIONAL ISOLATE, so
    right-to-left letters in it cannot reorder what follows."""
    return "\u2068" + _visible(text) + "\u2069"


@web.app_template_filter("markdown")
def _markdown(text) -> Markup:
    """A model card as HTML: our own escaper (learnware_core/markdown.py) builds every tag, so
    the Markup it returns holds no developer-written HTML; invisible controls made visible."""
    return Markup(render_markdown(str(text), heading_offset=2, text_filter=_visible))


@web.app_template_filter("num")
def _num(v, digits: int = 4) -> str:
    return f"{float(v):.{digits}g}"


@web.app_template_filter("size")
def _size(n) -> str:
    n = float(n)
    for unit in ("bytes", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


@web.context_processor
def _context() -> dict:
    return {"market_url": request.host_url.rstrip("/"), "sorts": sorted(SORTS)}


# --- errors: an HTML page, with the status and what was wrong -------------------------------
def _error_page(status: int, code: str, message: str, field: str | None = None):
    return render_template("web/error.html", status=status, code=code, message=message,
                           field=field), status


@web.errorhandler(LearnwareError)
def _learnware_error(exc: LearnwareError):
    status = exc.status if 400 <= exc.status < 600 else 400
    return _error_page(status, exc.code, exc.message, exc.field)


@web.errorhandler(HTTPException)
def _http_error(exc: HTTPException):
    return _error_page(exc.code or 400, exc.name.lower().replace(" ", "_"),
                       exc.description or exc.name)


@web.errorhandler(429)
def _too_many(exc: HTTPException):
    """A per-address budget ran out (the app answers the API's 429 with a signed error)."""
    return _error_page(429, "rate_limited", f"too many requests from this address: the limit "
                                            f"is {exc.description}; try again later")


@web.errorhandler(Exception)
def _unexpected(exc: Exception):
    log.exception("catalogue page failed")
    return _error_page(500, "internal_error", "the market hit an unexpected error showing this "
                                              "page; nothing was changed")


# --- pages ----------------------------------------------------------------------------------
def _table_args(default_sort: str = "published") -> dict:
    args = request.args
    return {"sort": choice_param(args, "sort", default_sort, SORTS),
            "order": choice_param(args, "order", "desc", ORDERS),
            "page": int_param(args, "page", 1, 1, 10**9),
            "per_page": max(10, int_param(args, "per_page", PER_PAGE, 1, MAX_PER_PAGE))}


@web.get("/")
def home():
    cat = catalogue()
    islands = sorted(cat.islands(), key=lambda s: (-s.count, s.island.pk))
    return render_template("web/home.html", islands=islands, connections=cat.connections(),
                           total=sum(s.count for s in islands))


@web.get("/islands/<island_id>")
def island(island_id: str):
    cat = catalogue()
    isl = cat.island(island_id)
    table = _table_args()
    withdrawn = choice_param(request.args, "withdrawn", "hide", ("hide", "show")) == "show"
    page = cat.learnwares(isl, withdrawn=withdrawn, **table)
    imap, points = cat.island_map(isl)
    side = min(MAP_W, MAP_H) - 2 * MAP_MARGIN
    ox, oy = (MAP_W - side) / 2, (MAP_H - side) / 2
    drawn = [(p, round(ox + p.x * side, 1), round(oy + (1 - p.y) * side, 1)) for p in points]
    return render_template("web/island.html", island=isl, kernel=cat.kernel(isl), page=page,
                           withdrawn=withdrawn, imap=imap, points=drawn, map_w=MAP_W,
                           map_h=MAP_H, count=cat.store.count_live(isl.pk))


@web.get("/learnwares/<learnware_id>")
def learnware(learnware_id: str):
    cat = catalogue()
    row = cat.learnware(learnware_id)
    isl = cat.island(row.island_id)
    others = cat.by_developer(row.developer_key_id, per_page=10)
    return render_template("web/learnware.html", lw=row, island=isl,
                           spec=cat.spec_summary(row, isl), others=others,
                           reports=cat.usage_reports(row),
                           model_type=None if row.withdrawn else cat.model_type(row.model_sha256))


@web.get("/developers/<key_id>")
def developer(key_id: str):
    cat = catalogue()
    page = cat.by_developer(key_id, **_table_args())
    return render_template("web/developer.html", key_id=key_id[:64], page=page)


@web.get("/search")
def search():
    q = query_param(request.args)
    results = catalogue().text_search(q) if q.strip() else []
    return render_template("web/search.html", q=q, results=results)


@web.get("/api")
def api():
    doc = openapi_document()
    return render_template("web/api.html", doc=doc, ops=apidoc.operations(doc),
                           schemas=apidoc.schemas(doc))
