"""Who may drive the workbench: only the browser that opened its token address, from this
machine, from the workbench's own pages.

* the token: ``/?token=...`` (printed by ``lwm ui``) sets an HttpOnly, SameSite=Strict cookie
  and redirects to the clean address (the token leaves the address bar and history); every
  other request needs that cookie. Other local users and web pages do not know it.
* Host must be ``127.0.0.1:PORT`` or ``localhost:PORT``: a DNS-rebinding page (evil.example
  resolving to 127.0.0.1) sends its own Host and is refused.
* every POST needs Origin = the workbench's own origin and the form's CSRF token.
* every answer carries a Content-Security-Policy without scripts, framing or other origins,
  and Referrer-Policy same-origin (not no-referrer: Chromium then sends ``Origin: null`` with
  the workbench's own forms; links to the market carry no referrer either way).
"""
from __future__ import annotations

import hashlib
import hmac
from urllib.parse import urlsplit

from flask import Flask, Response, abort, current_app, redirect, request

__all__ = ["install_guard", "csrf_token", "cookie_name", "CSP"]

CSP = ("default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
       "base-uri 'none'; frame-ancestors 'none'")
HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff",
           "Referrer-Policy": "same-origin", "X-Frame-Options": "DENY",
           "Cross-Origin-Opener-Policy": "same-origin",
           "Cross-Origin-Resource-Policy": "same-origin", "Cache-Control": "no-store"}


def cookie_name(port: int) -> str:
    """Cookies are not isolated by port: one name per workbench port."""
    return f"lwm_workbench_{port}"


def csrf_token(app: Flask | None = None) -> str:
    app = app or current_app
    return hmac.new(app.config["WORKBENCH_TOKEN"].encode(), b"csrf", hashlib.sha256).hexdigest()


def _allowed_hosts(port: int) -> set[str]:
    return {f"127.0.0.1:{port}", f"localhost:{port}"}


def _refuse(status: int, why: str):
    abort(Response(f"refused: {why}\n", status=status, mimetype="text/plain"))


def _check() -> Response | None:
    app = current_app
    port, token = app.config["WORKBENCH_PORT"], app.config["WORKBENCH_TOKEN"]
    if request.host not in _allowed_hosts(port):
        _refuse(421, f"this workbench answers only at 127.0.0.1:{port} or localhost:{port}, "
                     f"not {request.host[:100]!r}")
    given = request.args.get("token")
    if given is not None and request.method == "GET":
        if not hmac.compare_digest(given.encode(), token.encode()):
            _refuse(403, "wrong token: open the address `lwm ui` printed")
        resp = redirect(request.path, 303)
        resp.set_cookie(cookie_name(port), token, httponly=True, samesite="Strict",
                        path="/")
        return resp
    cookie = request.cookies.get(cookie_name(port), "")
    if not hmac.compare_digest(cookie.encode(), token.encode()):
        _refuse(403, "no valid token: open the address `lwm ui` printed (with ?token=...)")
    if request.method not in ("GET", "HEAD"):
        origin = request.headers.get("Origin")
        ok = {f"http://{h}" for h in _allowed_hosts(port)}
        if origin not in ok:
            _refuse(403, f"cross-site request refused (Origin {str(origin)[:100]!r})")
        site = request.headers.get("Sec-Fetch-Site")
        if site is not None and site not in ("same-origin", "none"):
            _refuse(403, f"cross-site request refused (Sec-Fetch-Site {site[:40]!r})")
        form_token = request.form.get("csrf", "")
        if not hmac.compare_digest(form_token.encode(), csrf_token(app).encode()):
            _refuse(403, "missing or wrong form token: reload the page and submit again")
    return None


def _headers(resp: Response) -> Response:
    for k, v in HEADERS.items():
        resp.headers[k] = v
    return resp


def install_guard(app: Flask) -> None:
    app.before_request(_check)
    app.after_request(_headers)


def same_origin_url(url: str) -> bool:
    """A redirect target inside this app (a path, no scheme or host)."""
    parts = urlsplit(url)
    return not parts.scheme and not parts.netloc and url.startswith("/")
