"""The web catalogue: server-rendered HTML pages of what the market holds (read-only).

``web`` is a Flask blueprint (registered by ``create_app``); its pages call only the
:class:`~market_server.catalogue.Catalogue`, its templates escape everything (Jinja autoescape)
and every asset is served by the market itself under ``/assets`` (no CDN)."""
from .views import web

__all__ = ["web"]
