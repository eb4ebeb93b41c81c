"""Faults and scale-out (issue #8): kill -9 of a real server in the middle of publishes, blob and
database failures, rate limits, several gunicorn workers on one SQLite database, and two servers
sharing one PostgreSQL schema. Real servers listen on 127.0.0.1 only; every loop is bounded."""
from __future__ import annotations

import errno
import hashlib
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import httpx
import numpy as np
import pytest
import sqlalchemy as sa

from client_sdk import Identity, MarketClient
from client_sdk.demo.server import free_port
from market_server.storage import Store
from protocol.errors import LearnwareError

from tests.helpers import (_pg_exec, blob, count_rows, error_body, fitted_ridge, linear_task,
                           publish_envelope, publish_parts, query, seal_request,
                           search_envelope, semantic, stored_blobs)

SEM = semantic("fault cases")


# --------------------------------------------------------------------------------------------
# a real server process that can be killed with SIGKILL (whole process group: master + workers)
# --------------------------------------------------------------------------------------------
class Server:
    def __init__(self, data_dir: Path, workers: int = 1, extra: list[str] | None = None):
        self.data_dir = Path(data_dir)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.args = [sys.executable, "-m", "market_server", "serve", "--data-dir",
                     str(self.data_dir), "--host", "127.0.0.1", "--port", str(self.port),
                     "--workers", str(workers), *(extra or [])]
        self.proc: subprocess.Popen | None = None
        self.log_path = self.data_dir.parent / f"server-{self.port}.log"

    def start(self) -> "Server":
        self.data_dir.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, OMP_NUM_THREADS="1")
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(self.args, stdout=self._log, stderr=subprocess.STDOUT,
                                     env=env, start_new_session=True)
        deadline = time.time() + 60
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("server exited at start:\n" + self.log())
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError("server did not come up within 60 s:\n" + self.log())

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:]

    @property
    def key_id(self) -> str:
        """The market's key id: the ``aud`` of every signed request to it."""
        return httpx.get(self.url + "/v1/market", timeout=5).json()["market_key_id"]

    def kill9(self) -> None:
        """SIGKILL to the whole process group, as a power cut would."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(10)
        self._log.close()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        if not self._log.closed:
            self._log.close()

    def __enter__(self) -> "Server":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _job(seed: int, center=(0.0, 0.0, 0.0)):
    rng = np.random.default_rng(seed)
    X = blob(rng, center, n=80)
    return fitted_ridge(X, linear_task(rng, X, rng.normal(size=3))), X


def _client(url: str, root: Path, identity: Identity | None = None) -> MarketClient:
    return MarketClient(url, identity or Identity.generate(), timeout=30,
                        cache_dir=root / f"cache-{uuid.uuid4().hex[:8]}")


def _fresh_post(url: str, path: str, data: bytes) -> httpx.Response:
    """One request on a new connection (so a multi-worker server may hand it to any worker)."""
    with httpx.Client(base_url=url, timeout=60) as http:
        return http.post(path, content=data, headers={"Connection": "close"})


def _sqlite_rows(data_dir: Path) -> list[tuple[int, str]]:
    eng = sa.create_engine(f"sqlite:///{data_dir / 'market.db'}")
    try:
        with eng.connect() as conn:
            return [(r[0], r[1]) for r in conn.execute(
                sa.text("SELECT id, model_sha256 FROM learnwares ORDER BY id"))]
    finally:
        eng.dispose()


def _blob_files(data_dir: Path) -> dict[str, Path]:
    root = data_dir / "blobs"
    return ({p.name: p for p in root.rglob("*") if p.is_file() and p.name != ".store-id"}
            if root.exists() else {})  # .store-id names the folder (deploy_checks.py)


# --------------------------------------------------------------------------------------------
# kill -9 during concurrent publishes
# --------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_kill_9_during_concurrent_publishes_loses_nothing_acknowledged(tmp_path, config_dir):
    data = tmp_path / "data"
    rounds, threads, per_thread = 5, 4, 25
    rnd = random.Random(8)
    jobs = [_job(i, center=(i % 5, 0.0, -(i % 3))) for i in range(rounds * threads * per_thread)]
    acked: dict[int, int] = {}  # id -> round
    max_before = 0
    in_flight_kills = 0
    server = Server(data).start()
    try:
        for rnd_no in range(rounds):
            stop = threading.Event()
            got: list[int] = []
            failures: list[str] = []
            lock = threading.Lock()

            def work(t: int) -> None:
                c = _client(server.url, tmp_path)
                base = (rnd_no * threads + t) * per_thread
                for i in range(per_thread):  # bounded in count ...
                    if stop.is_set():
                        return
                    model, X = jobs[base + i]
                    try:
                        lid = c.publish(model, X, SEM, k=8)
                    except (httpx.HTTPError, LearnwareError) as exc:
                        with lock:
                            failures.append(f"{type(exc).__name__}: {exc}")
                        if isinstance(exc, httpx.HTTPError):
                            return  # the server is gone
                        continue
                    with lock:
                        got.append(int(lid.split("-")[1]))

            ts = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
            for t in ts:
                t.start()
            time.sleep(rnd.uniform(0.8, 2.0))  # ... and in time
            server.kill9()
            stop.set()
            for t in ts:
                t.join(30)
                assert not t.is_alive()
            in_flight_kills += any("HTTPError" in f or "Error" in f for f in failures)
            # ids of this round are unique and above everything that existed before it
            assert len(got) == len(set(got))
            assert all(i > max_before for i in got), (max_before, sorted(got))
            for i in got:
                acked[i] = rnd_no
            # restart (one worker or two, by turns): orphan files are collected at start, every
            # acknowledged learnware is complete; the restarted server serves the next round
            server = Server(data, workers=1 + rnd_no % 2).start()
            rows = _sqlite_rows(data)
            ids = [r[0] for r in rows]
            assert set(acked) <= set(ids), "an acknowledged learnware was lost"
            files = _blob_files(data)
            assert not any(n.startswith(".tmp-") for n in files), "a temporary file stayed"
            referenced = {sha for _, sha in rows}
            assert set(files) == referenced, "orphan (or missing) model files after restart"
            for _, sha in rows:  # no half-written learnware: every row has its whole file
                assert hashlib.sha256(files[sha].read_bytes()).hexdigest() == sha
            c = _client(server.url, tmp_path)
            for lid in sorted(i for i, r in acked.items() if r == rnd_no):
                lw = c.download(f"lw-{lid}")  # manifest, artefact signature and hash checked
                assert lw.id == f"lw-{lid}" and lw.model is not None
            max_before = max(ids, default=0)
            removed = sum(int(w) for w in server.log().split("(removed ")[1:2]
                          for w in w.split()[:1])
            print(f"round {rnd_no}: {len(got)} acknowledged, {len(ids)} learnwares, "
                  f"{removed} orphan file(s) collected at restart, failures in flight: "
                  f"{len(failures)}")
    finally:
        server.stop()
    assert len(acked) >= rounds, f"too few publishes were acknowledged: {len(acked)}"
    assert in_flight_kills >= 1, "no kill hit a publish in flight"


# --------------------------------------------------------------------------------------------
# blob write and database failures (in-process app)
# --------------------------------------------------------------------------------------------
def _state(env) -> dict:
    return {"rows": count_rows(env.store, "learnwares"), "blobs": stored_blobs(env),
            "islands": count_rows(env.store, "islands"),
            "version": env.store.island_version(1),
            "tmp": sorted(p.name for p in (Path(env.config.data_dir) / "blobs").rglob(".tmp-*"))}


def _raw_publish(env, seed: int) -> tuple[httpx.Response, bytes]:
    model, X = _job(seed)
    me = Identity.generate()
    sem, spec, mb = publish_parts(env.client(), X, SEM, model=model, k=8)
    data = publish_envelope(me, sem, spec, mb, to=env)
    with env.http() as http:
        return http.post("/v1/learnwares", content=data), data


def _assert_storage_error(env, resp: httpx.Response) -> dict:
    assert resp.status_code == 503, (resp.status_code, resp.content[:300])
    assert resp.headers["content-type"].startswith("application/json")
    mtype, body = env.reply(resp)
    assert mtype == "error" and body["code"] == "storage_error", body
    assert body["message"]
    return body


def test_blob_write_failure_is_a_clear_503_and_leaves_nothing(market, monkeypatch):
    env = market
    env.client().publish(*_job(1), SEM, k=8)  # the island exists
    before = _state(env)
    if env.backend == "sqlite":  # the disk fills while the model file is written
        def no_space(fd):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        monkeypatch.setattr(os, "fsync", no_space)
        resp, _ = _raw_publish(env, 2)
        monkeypatch.undo()
    else:  # database blobs: the blob row cannot be written
        def fail_blob(conn, cursor, statement, parameters, context, executemany):
            if statement.lstrip().upper().startswith("INSERT INTO BLOBS"):
                raise sa.exc.OperationalError(statement, parameters,
                                              RuntimeError("could not extend file: no space"))
        sa.event.listen(env.store.engine, "before_cursor_execute", fail_blob)
        try:
            resp, _ = _raw_publish(env, 2)
        finally:
            sa.event.remove(env.store.engine, "before_cursor_execute", fail_blob)
    body = _assert_storage_error(env, resp)
    if env.backend == "sqlite":
        assert "No space left" in body["message"]
    assert _state(env) == before, "something of the failed publish stayed"
    # the same learnware publishes fine once the disk has room again
    resp, _ = _raw_publish(env, 2)
    assert resp.status_code == 201, resp.content[:300]


def test_database_down_after_the_blob_write_is_a_503_and_restart_collects_the_file(
        market, monkeypatch):
    """The database fails for the insert AND for the clean-up that follows it: the client still
    gets storage_error (not an internal error), and the left model file is collected at the
    next start."""
    env = market
    env.client().publish(*_job(1), SEM, k=8)
    before = _state(env)
    down = {"on": False}
    real_put = env.store.blobs.put

    def put_then_crash_db(sha, data, conn=None):
        created = real_put(sha, data, conn)
        down["on"] = True
        return created

    monkeypatch.setattr(env.store.blobs, "put", put_then_crash_db)

    def db_down(conn, cursor, statement, parameters, context, executemany):
        if down["on"]:
            raise sa.exc.OperationalError(statement, parameters,
                                          RuntimeError("server closed the connection"))

    sa.event.listen(env.store.engine, "before_cursor_execute", db_down)
    try:
        resp, _ = _raw_publish(env, 2)
    finally:
        sa.event.remove(env.store.engine, "before_cursor_execute", db_down)
        monkeypatch.undo()
    _assert_storage_error(env, resp)
    assert count_rows(env.store, "learnwares") == before["rows"]
    assert env.store.island_version(1) == before["version"]
    env.store.collect_orphan_blobs()  # what `lwm serve` does at start
    assert _state(env) == before


# --------------------------------------------------------------------------------------------
# rate limits
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", ["sqlite"])
def test_rate_limit_fourth_search_is_429_other_key_unaffected(make_market):
    env = make_market(rate_limit_search=3)
    env.client().publish(*_job(1), SEM, k=8)
    a, b = Identity.generate(), Identity.generate()
    with env.http() as http:
        for _ in range(3):
            r = http.post("/v1/search", content=search_envelope(a, SEM, to=env))
            assert r.status_code == 200
        resp = http.post("/v1/search", content=search_envelope(a, SEM, to=env))
        assert resp.status_code == 429
        body = error_body(env, resp)
        assert body["code"] == "rate_limited"
        assert "limit is 3 per minute" in body["message"] and "retry in" in body["message"]
        r = http.post("/v1/search", content=search_envelope(b, SEM, to=env))
        assert r.status_code == 200
    # the SDK raises it as a LearnwareError with the same code
    c = env.client(a)
    with pytest.raises(LearnwareError) as exc:
        c.search(None, SEM)
    assert exc.value.code == "rate_limited" and exc.value.status == 429


# --------------------------------------------------------------------------------------------
# several workers on one SQLite database
# --------------------------------------------------------------------------------------------
def _search_ids(server: "Server", me: Identity, requirement: dict | None) -> set[str]:
    from protocol.envelope import open_envelope
    body = {"semantic": query(SEM), "max_results": 5}
    if requirement is not None:
        body["requirement"] = requirement
    resp = _fresh_post(server.url, "/v1/search", seal_request(me, "search", body, to=server))
    assert resp.status_code == 200, resp.content[:300]
    out = open_envelope(resp.content, nonce_store=None, window_s=3600).body
    ids = {m["learnware_id"] for m in out["single"]}
    if out.get("mixture"):
        ids |= set(out["mixture"]["learnware_ids"])
    return ids


@pytest.mark.slow
def test_four_workers_share_caches_nonces_and_rate_limits(tmp_path, config_dir):
    with Server(tmp_path / "data", workers=4, extra=["--rate-limit-search", "3"]) as server:
        dev = _client(server.url, tmp_path)
        first = dev.publish(*_job(1, center=(0, 0, 0)), SEM, k=8)
        model, X = _job(2, center=(6, 6, 6))
        req = dev.requirement(X, SEM, k=8)[0].to_dict()
        # (a fresh key per search below: the search limit is 3 per minute and key)
        for _ in range(16):  # every worker builds (and caches) its index of the island
            assert _search_ids(server, Identity.generate(), req) == {first}
        new = dev.publish(model, X, SEM, k=8)
        for _ in range(16):
            assert new in _search_ids(server, Identity.generate(), req), \
                "a worker served a stale index"
        assert dev.delete(new)
        for _ in range(16):
            assert new not in _search_ids(server, Identity.generate(), req), \
                "a deleted learnware came back"
        # replays are refused whichever worker receives the copy
        for _ in range(8):
            data = search_envelope(Identity.generate(), SEM, to=server)
            assert _fresh_post(server.url, "/v1/search", data).status_code == 200
            again = _fresh_post(server.url, "/v1/search", data)
            assert again.status_code == 409, again.content[:300]
            assert b"replayed_nonce" in again.content
        # the rate limit counts a key's searches on every worker together
        busy = Identity.generate()
        aud = server.key_id
        codes = [_fresh_post(server.url, "/v1/search",
                             search_envelope(busy, SEM, to=aud)).status_code for _ in range(8)]
        assert codes == [200] * 3 + [429] * 5, codes


# --------------------------------------------------------------------------------------------
# two servers sharing one PostgreSQL schema (blobs in the database)
# --------------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.postgres
def test_two_servers_share_one_postgresql_schema(tmp_path, config_dir, pg_url):
    schema = f"lwm_test_{uuid.uuid4().hex[:16]}"
    _pg_exec(pg_url, f'CREATE SCHEMA "{schema}"')
    extra = ["--db", pg_url, "--db-schema", schema]
    try:
        with Server(tmp_path / "a", extra=extra) as a:
            # the second machine gets the market's key (same market, two front ends)
            (tmp_path / "b").mkdir()
            shutil.copy(tmp_path / "a" / "market_key.pem", tmp_path / "b" / "market_key.pem")
            with Server(tmp_path / "b", extra=extra) as b:
                assert not (tmp_path / "a" / "blobs").exists() or not any(
                    (tmp_path / "a" / "blobs").rglob("*"))
                dev_a, dev_b = _client(a.url, tmp_path), _client(b.url, tmp_path)
                user_a, user_b = _client(a.url, tmp_path), _client(b.url, tmp_path)
                for i, (pub, user) in enumerate([(dev_a, user_b), (dev_b, user_a),
                                                 (dev_a, user_b)]):
                    model, X = _job(10 + i, center=(3 * i, -i, i))
                    lid = pub.publish(model, X, SEM, k=8)
                    res = user.search(X, SEM, k=8)  # at once, through the other server
                    assert res.single and res.single[0].learnware_id == lid
                    lw = user.download(lid)
                    np.testing.assert_allclose(lw.model.predict(X[:5]), model.predict(X[:5]))
        # both servers wrote into the one schema: three learnwares, three model blobs
        store = Store(pg_url.replace("postgresql://", "postgresql+psycopg://", 1),
                      blob_store="db", db_schema=schema)
        try:
            assert count_rows(store, "learnwares") == 3 and count_rows(store, "blobs") == 3
        finally:
            store.dispose()
    finally:
        _pg_exec(pg_url, f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
