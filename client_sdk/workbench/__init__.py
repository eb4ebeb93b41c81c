"""``lwm ui``: a local workbench, served on 127.0.0.1 where the data are.

A data owner loads a table, sees the specification built from it, searches the market, reuses
learnwares and exports predictions; a developer publishes a model -- without writing code. The
"What left this machine" panel lists every request sent to the market, decoded, and runs the
privacy audit on them. Talks to the market only through :class:`client_sdk.MarketClient`."""
from .app import create_app, serve

__all__ = ["create_app", "serve"]
