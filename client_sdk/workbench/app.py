"""``create_app``: the workbench as a Flask app, and ``serve``: what ``lwm ui`` runs.

The app is bound to 127.0.0.1 only, answers only to the Host names of that address and port,
and only to the browser holding its random token (:mod:`.guard`)."""
from __future__ import annotations

import secrets
import sys
import threading
import webbrowser

from flask import Flask

from .guard import install_guard
from .state import Workbench
from .tables import MAX_TABLE_BYTES
from .views import STATE_KEY, bench

__all__ = ["create_app", "serve"]


def create_app(market_url: str, identity, *, port: int, token: str | None = None,
               transport=None, market_key: str | None = None, cache_dir=None,
               identity_saved: bool = True) -> Flask:
    """The workbench app for ``market_url``. ``port``: the one it is served on (Host check);
    ``transport``: the httpx transport to the market (tests pass an in-process market's)."""
    app = Flask(__name__, static_folder=None)
    app.config.update(WORKBENCH_TOKEN=token or secrets.token_urlsafe(24), WORKBENCH_PORT=port,
                      MAX_CONTENT_LENGTH=MAX_TABLE_BYTES + 64 * 1024 * 1024,
                      MAX_FORM_MEMORY_SIZE=1024 * 1024)
    app.extensions[STATE_KEY] = Workbench(market_url, identity, transport=transport,
                                          market_key=market_key, cache_dir=cache_dir,
                                          identity_saved=identity_saved)
    install_guard(app)
    app.register_blueprint(bench)
    return app


def serve(market_url: str, identity, *, port: int = 0, open_browser: bool = True,
          market_key: str | None = None, identity_saved: bool = True) -> None:
    """Run the workbench on 127.0.0.1 until interrupted; prints (and opens) its address."""
    from werkzeug.serving import make_server
    token = secrets.token_urlsafe(24)
    holder: dict = {}

    def late_app(environ, start_response):  # the port is known once the socket is bound
        return holder["app"](environ, start_response)

    server = make_server("127.0.0.1", port, late_app, threaded=True)
    port = server.server_port
    holder["app"] = create_app(market_url, identity, port=port, token=token,
                               market_key=market_key, identity_saved=identity_saved)
    url = f"http://127.0.0.1:{port}/?token={token}"
    print(f"learnware workbench for the market at {market_url}\n"
          f"open {url}\n(only this address works: it carries the access token; Ctrl-C stops)",
          flush=True)
    if open_browser:
        threading.Timer(0.3, webbrowser.open, args=(url,)).start()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("workbench stopped", file=sys.stderr)
    finally:
        server.server_close()
        holder["app"].extensions[STATE_KEY].close()
