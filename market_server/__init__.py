"""The market server: a thin Flask app an institution self-hosts.

It holds only specifications and models, never data: semantic/island matching, RKME search
(single and mixture), anchor selection and localisation, and publish-time checks.
"""
from .app import create_app
from .config import ServerConfig

__all__ = ["create_app", "ServerConfig"]
