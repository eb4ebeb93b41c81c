"""Shared fixtures: in-process markets on SQLite and PostgreSQL, and clients bound to them. The
plain helpers they use (and tests import) live in ``tests/helpers.py``.

* ``config_dir`` (function) points ``LWM_CONFIG_DIR`` at a fresh directory, so pinned market keys
  never leak between tests; a session-wide fallback directory is set as well, so no test ever
  writes to the real ``~/.config``.
* ``market`` is one fresh market, parametrised over SQLite (a tmp dir) and PostgreSQL (a throw-away
  schema in database ``test`` on 127.0.0.1:5432, dropped afterwards; skipped with a reason when
  the server is unreachable). ``make_market(**config)`` builds more (same backend);
  ``env.sibling()`` starts a second app ("worker") on the same database.
* ``make_module_market`` is the same factory shared by a whole module (read-only tests).
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.helpers import MarketEnv, MarketFactory

os.environ.setdefault("OMP_NUM_THREADS", "1")

PG_HOST = "127.0.0.1:5432"
PG_DB = "test"
PG_USERS = ("root", "postgres")


# --------------------------------------------------------------------------------------------
# configuration directory
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="session", autouse=True)
def _session_config_dir(tmp_path_factory):
    """Fallback for every test of the session: never touch the real user config directory."""
    old = os.environ.get("LWM_CONFIG_DIR")
    os.environ["LWM_CONFIG_DIR"] = str(tmp_path_factory.mktemp("lwm-config-session"))
    yield
    if old is None:
        os.environ.pop("LWM_CONFIG_DIR", None)
    else:
        os.environ["LWM_CONFIG_DIR"] = old


@pytest.fixture
def config_dir(tmp_path, monkeypatch) -> Path:
    """A fresh ``LWM_CONFIG_DIR`` for this test (where clients remember market keys)."""
    d = tmp_path / "lwm-config"
    monkeypatch.setenv("LWM_CONFIG_DIR", str(d))
    return d


# --------------------------------------------------------------------------------------------
# PostgreSQL
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def pg_url() -> str:
    """``postgresql://<user>@127.0.0.1:5432/test`` for the first user that connects."""
    try:
        import psycopg
    except ImportError:  # pragma: no cover - psycopg is a dev dependency
        pytest.skip("psycopg is not installed: PostgreSQL backend not tested")
    errors = []
    for user in PG_USERS:
        url = f"postgresql://{user}@{PG_HOST}/{PG_DB}"
        try:
            with psycopg.connect(url, connect_timeout=3) as conn:
                conn.execute("SELECT 1")
            return url
        except Exception as exc:  # noqa: BLE001 - any failure means "not reachable"
            errors.append(f"{user}: {str(exc).strip().splitlines()[0] if str(exc) else exc}")
    pytest.skip(f"PostgreSQL at {PG_HOST}/{PG_DB} is unreachable ({'; '.join(errors)})")


BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


@pytest.fixture(params=BACKENDS)
def backend(request) -> str:
    return request.param


@pytest.fixture
def make_market(backend, tmp_path, config_dir, request):
    """Factory: ``make_market(**ServerConfig fields)`` -> a fresh :class:`MarketEnv` with its own
    database (SQLite file or PostgreSQL schema). ``refine_at=()`` unless given."""
    url = request.getfixturevalue("pg_url") if backend == "postgresql" else None
    factory = MarketFactory(backend, tmp_path, url)
    yield factory.make
    factory.close()


@pytest.fixture
def market(make_market) -> MarketEnv:
    return make_market()


@pytest.fixture(scope="module", params=BACKENDS)
def module_backend(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def make_module_market(module_backend, tmp_path_factory, request):
    """Like ``make_market`` but shared by a whole module (for read-only tests)."""
    url = request.getfixturevalue("pg_url") if module_backend == "postgresql" else None
    factory = MarketFactory(module_backend, tmp_path_factory.mktemp("module-markets"), url)
    yield factory.make
    factory.close()
