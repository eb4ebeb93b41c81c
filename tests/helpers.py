"""Plain helpers for the tests (no fixtures: those are in ``tests/conftest.py``, which builds on
these): in-process markets (:class:`MarketEnv`, :class:`MarketFactory`), toy data and tasks,
publish/search envelopes built by hand (for refusals the SDK would never send), readers of signed
error answers, and hand-written zip files.
"""
from __future__ import annotations

import base64
import io
import itertools
import struct
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from client_sdk import Identity, MarketClient, RKMESpec
from protocol.artefact import sha256_hex, sign_artefact
from protocol.encoding import decode_array, encode_array
from protocol.envelope import open_envelope, seal
from learnware_core.island import base_kernel, robust_scales
from learnware_core.modelfile import dump_model

_counter = itertools.count(1)


def _pg_exec(url: str, sql: str) -> None:
    import psycopg
    with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
        conn.execute(sql)



# --------------------------------------------------------------------------------------------
# markets
# --------------------------------------------------------------------------------------------
@dataclass
class MarketEnv:
    """One market app in-process, with everything a test needs to poke at it."""

    backend: str
    config: Any
    app: Any
    root: Path
    url: str
    siblings: list = field(default_factory=list)

    @property
    def state(self):
        return self.app.extensions["learnware_market"]

    @property
    def store(self):
        return self.state.store

    @property
    def market_key(self) -> str:
        return self.state.identity.public_key_b64

    @property
    def key_id(self) -> str:
        """The market's key id: the ``aud`` every signed request to it names."""
        return self.state.identity.key_id

    @property
    def transport(self) -> httpx.WSGITransport:
        return httpx.WSGITransport(app=self.app)

    def http(self) -> httpx.Client:
        """A plain HTTP client (no signing, no verification) for raw requests."""
        return httpx.Client(base_url=self.url, transport=self.transport)

    def client(self, identity: Identity | None = None, *, cache_dir=None, transport=None,
               **kw) -> MarketClient:
        n = next(_counter)
        return MarketClient(self.url, identity or Identity.generate(),
                            transport=transport or self.transport,
                            cache_dir=cache_dir or self.root / f"client-cache-{n}", **kw)

    def sibling(self, **overrides) -> "MarketEnv":
        """A second app (another worker, or another machine for PostgreSQL) on the same
        database, signing with the same market identity."""
        from market_server import ServerConfig, create_app
        cfg = dict(vars(self.config))
        if self.backend == "postgresql":  # other machine: own data dir, shared DB and key
            cfg["data_dir"] = self.root / f"sibling-{next(_counter)}"
        cfg["identity_path"] = Path(self.config.data_dir) / "market_key.pem" \
            if self.config.identity_path is None else self.config.identity_path
        cfg.update(overrides)
        app = create_app(ServerConfig(**cfg))
        env = MarketEnv(self.backend, app.extensions["learnware_market"].config, app, self.root,
                        self.url)
        self.siblings.append(env)
        return env

    def reply(self, resp: httpx.Response) -> tuple[str, dict]:
        """(type, body) of a signed answer, after checking the market's signature."""
        env = open_envelope(resp.content, nonce_store=None, expected_sender=self.market_key,
                            window_s=3600)  # (raw requests send no nonce: answers are unbound)
        return env.type, env.body

    def close(self) -> None:
        for s in self.siblings:
            s.close()
        self.state.market.sandbox.close()  # its model worker processes
        self.store.dispose()


class MarketFactory:
    """Builds markets of one backend under ``root``; ``close()`` disposes them and drops their
    PostgreSQL schemas."""

    def __init__(self, backend: str, root: Path, pg_url: str | None):
        self.backend, self.root, self.pg_url = backend, Path(root), pg_url
        self.envs: list[MarketEnv] = []
        self.schemas: list[str] = []

    def make(self, **overrides) -> MarketEnv:
        from market_server import ServerConfig, create_app
        n = next(_counter)
        root = self.root / f"market-{n}"
        cfg = {"data_dir": root / "data", "refine_at": ()}
        if self.backend == "postgresql":
            schema = f"lwm_test_{uuid.uuid4().hex[:16]}"
            _pg_exec(self.pg_url, f'CREATE SCHEMA "{schema}"')
            self.schemas.append(schema)
            cfg.update(db_url=self.pg_url, db_schema=schema)
        cfg.update(overrides)
        app = create_app(ServerConfig(**cfg))
        env = MarketEnv(self.backend, app.extensions["learnware_market"].config, app, root,
                        f"http://market-{n}.test")
        self.envs.append(env)
        return env

    def close(self) -> None:
        for env in self.envs:
            env.close()
        for schema in self.schemas:
            _pg_exec(self.pg_url, f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')



# --------------------------------------------------------------------------------------------
# data and hand-built messages
# --------------------------------------------------------------------------------------------
def semantic(name: str = "toy task", *, features=("a", "b", "c"), task_type: str = "regression",
             objective: str = "rmse", target: str = "y", description: str = "a toy task",
             **extra) -> dict:
    out = {"name": name, "description": description, "data_type": "table",
           "task_type": task_type, "input_features": list(features), "target": target,
           "objective": objective}
    out.update(extra)
    return out


def query(sem: dict) -> dict:
    return {f: sem[f] for f in ("data_type", "task_type", "input_features", "target",
                                "objective")}


def blob(rng: np.random.Generator, center, n: int = 200, spread: float = 1.0) -> np.ndarray:
    center = np.asarray(center, dtype=float)
    return center + spread * rng.normal(size=(n, center.size))


def linear_task(rng, X: np.ndarray, w, noise: float = 0.1) -> np.ndarray:
    return X @ np.asarray(w, dtype=float) + noise * rng.normal(size=len(X))


def fitted_ridge(X, y):
    from sklearn.linear_model import Ridge
    return Ridge(alpha=1e-3).fit(X, y)


def island_kernel_of(client: MarketClient, sem: dict):
    """(gamma, scales) of the island of ``sem``; None when the island does not exist yet."""
    info = client.island(sem)
    if info is None:
        return None
    return (float(info["kernel"]["gamma"]),
            decode_array(info["kernel"]["scales"], field="scales", ndim=1))


def publish_parts(client: MarketClient, X: np.ndarray, sem: dict, *, model=None,
                  model_bytes: bytes | None = None, k: int = 20, gamma: float | None = None,
                  scales=None) -> tuple[dict, dict, bytes]:
    """(semantic, spec dict, model bytes) exactly as the SDK would build them."""
    sem = dict(sem)
    kern = island_kernel_of(client, sem)
    if kern is None:
        sem.setdefault("feature_scales", encode_array(robust_scales(X)))
        g0, s0 = base_kernel(decode_array(sem["feature_scales"], field="fs"), X.shape[1])
    else:
        sem.pop("feature_scales", None)
        g0, s0 = kern
    spec = RKMESpec.fit(X, k=k, gamma=g0 if gamma is None else gamma,
                        scales=s0 if scales is None else scales, random_state=0).to_dict()
    if model_bytes is None:
        model_bytes = dump_model(model)
    return sem, spec, model_bytes


def audience(to) -> str:
    """The ``aud`` of a request to ``to``: a :class:`MarketEnv` (or anything with ``key_id``)
    or a key id."""
    return to if isinstance(to, str) else to.key_id


def seal_request(identity: Identity, message_type: str, body: Any, *, to, **seal_kw) -> bytes:
    """A sealed request addressed to the market ``to`` (see :func:`audience`)."""
    return seal(identity, message_type, body, audience=audience(to), **seal_kw)


def publish_envelope(identity: Identity, sem: dict, spec: dict, model_bytes: bytes, *, to,
                     sha256: str | None = None, size: int | None = None,
                     data: str | None = None, artefact_sha256: str | None = None,
                     validate: bool = True, **seal_kw) -> bytes:
    """A sealed ``publish`` envelope for the market ``to``; every part can be made
    inconsistent on purpose."""
    sha = sha256 or sha256_hex(model_bytes)
    body = {"semantic": sem, "spec": spec,
            "model": {"format": "skops", "sha256": sha,
                      "size": len(model_bytes) if size is None else size,
                      "data": base64.b64encode(model_bytes).decode() if data is None else data},
            "artefact": sign_artefact(identity, sem, spec, artefact_sha256 or sha)}
    return seal_request(identity, "publish", body, to=to, validate=validate, **seal_kw)


def search_envelope(identity: Identity, sem: dict, requirement: dict | None = None,
                    max_results: int = 5, *, to, **seal_kw) -> bytes:
    body = {"semantic": query(sem), "max_results": max_results}
    if requirement is not None:
        body["requirement"] = requirement
    return seal_request(identity, "search", body, to=to, **seal_kw)


def signed_envelope(identity: Identity, message_type: str, body: dict, *, to,
                    validate: bool = False, **seal_kw) -> bytes:
    """A sealed request of any type to the market ``to``; by default unvalidated, so bodies the
    SDK would refuse (past the protocol's bounds) reach the market."""
    return seal_request(identity, message_type, body, to=to, validate=validate, **seal_kw)


def error_body(env: MarketEnv, resp: httpx.Response) -> dict:
    """The body of a signed error answer; fails unless the answer is one (and is a 4xx)."""
    assert 400 <= resp.status_code < 500, (resp.status_code, resp.content[:500])
    assert resp.headers["content-type"].startswith("application/json")
    mtype, body = env.reply(resp)
    assert mtype == "error", (mtype, body)
    assert isinstance(body["code"], str) and body["code"], body
    assert isinstance(body["message"], str) and body["message"], body
    return body


def detail_codes(body: dict) -> set[str]:
    return {d["code"] for d in body.get("details") or []}


def count_rows(store, table: str) -> int:
    import sqlalchemy as sa
    with store.engine.connect() as conn:
        return int(conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar())


def publish_two_rivers(env: MarketEnv):
    """A developer publishes two river learnwares whose texts differ ("river flow: daily river
    discharge", "river levels: river height gauge"); (the developer's client, id a, id b)."""
    dev = env.client()
    X = blob(np.random.default_rng(0), (0, 0, 0), n=60)
    a = dev.publish(fitted_ridge(X, X.sum(axis=1)), X,
                    semantic("river flow", description="daily river discharge"), k=10)
    b = dev.publish(fitted_ridge(X, X.sum(axis=1)), X + 5,
                    semantic("river levels", description="river height gauge"), k=10)
    return dev, a, b


def blob_files(env: MarketEnv) -> set[str]:
    """Names of the model files in the folder blob store (empty for database blobs)."""
    root = Path(env.config.data_dir) / "blobs"
    return ({p.name for p in root.rglob("*") if p.is_file() and p.name != ".store-id"}
            if root.exists() else set())  # .store-id names the folder (deploy_checks.py)


def stored_blobs(env: MarketEnv) -> set[str]:
    """sha256 of every stored model file, whatever the blob store."""
    from market_server.storage import DatabaseBlobs
    if isinstance(env.store.blobs, DatabaseBlobs):
        with env.store.engine.connect() as conn:
            return set(env.store.blobs.all_shas(conn))
    return blob_files(env)


def zip_of_deflated(entries: list[tuple[str, bytes, int, int]]) -> bytes:
    """A zip written by hand from already-deflated streams: (name, raw deflate, crc32, size),
    so a test can put in it what no zip writer would (a lying size, junk after a stream)."""
    out, central = io.BytesIO(), io.BytesIO()
    for name, comp, crc, size in entries:
        offset = out.tell()
        fn = name.encode()
        out.write(struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, 8, 0, 0, crc, len(comp), size,
                              len(fn), 0) + fn + comp)
        central.write(struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, 8, 0, 0, crc,
                                  len(comp), size, len(fn), 0, 0, 0, 0, 0, offset) + fn)
    cd = central.getvalue()
    start = out.tell()
    out.write(cd)
    out.write(struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(entries), len(entries), len(cd),
                          start, 0))
    return out.getvalue()
