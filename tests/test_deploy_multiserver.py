"""Several servers behind one address (issue 20), for real: nginx from Debian's package on
loopback (its own prefix, config, pid and log files, run as the current user) in front of two
``lwm serve`` processes with their own data folders, one PostgreSQL schema (model files in the
database) and one market key. Clients publish and search through nginx; one server is killed
(its whole process group, as when a machine dies) in the middle of the load.

What must hold: every answer a client accepts is signed by the one market key and bound to its
request (the SDK checks both), so the only failure a client may see is the lost answer of a
request in flight on the killed server, and one retry gets through; every acknowledged publish
is there afterwards (and nothing else is); both servers (the killed one restarted) answer the
same search identically."""
from __future__ import annotations

import os
import re
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

from client_sdk import Identity, MarketClient
from client_sdk.demo.server import NO_ADDRESS_LIMIT_ARGS, free_port, stop_process
from protocol.errors import LearnwareError, ProtocolError
from tests.helpers import _pg_exec, blob, fitted_ridge, linear_task, semantic

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

NGINX = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if os.path.exists(p)),
                                      None)
ROOT = Path(__file__).resolve().parents[1]
SEM = semantic("behind a proxy")
THREADS, ROUNDS, KILL_AFTER = 3, 6, 5


class Server:
    """One ``lwm serve`` process (its own session: killed with its model workers)."""

    def __init__(self, args: list[str], port: int, log: Path):
        self.args, self.port, self.log = args, port, log
        self.url = f"http://127.0.0.1:{port}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> "Server":
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "market_server", "serve", *self.args,
                 "--port", str(self.port)], stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
                env={**os.environ, "OMP_NUM_THREADS": "1"}, start_new_session=True)
        _wait_healthy(self.url, self.proc, self.log)
        return self

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        if self.proc is not None:
            try:  # the model workers of a killed server
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def _wait_healthy(url: str, proc: subprocess.Popen, log: Path, timeout: float = 90) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args[:3]} exited at start:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not come up; see {log}")


NGINX_CONF = """\
{user}worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 256; }}
http {{
    access_log {prefix}/access.log;
    client_body_temp_path {prefix}/client_body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    client_max_body_size 64m;
    upstream market {{
        server 127.0.0.1:{port1} max_fails=1 fail_timeout=5s;
        server 127.0.0.1:{port2} max_fails=1 fail_timeout=5s;
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://market;
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_next_upstream error timeout;
            proxy_connect_timeout 2s;
            proxy_read_timeout 120s;
        }}
    }}
}}
"""


class Nginx:
    def __init__(self, prefix: Path, port1: int, port2: int):
        self.prefix, self.port = prefix, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        prefix.mkdir(parents=True)
        user = ""
        if os.geteuid() == 0:  # else nginx's workers would drop to "nobody"
            import pwd
            user = f"user {pwd.getpwuid(0).pw_name};\n"
        self.conf = prefix / "nginx.conf"
        self.conf.write_text(NGINX_CONF.format(user=user, prefix=prefix, port=self.port,
                                               port1=port1, port2=port2))
        self.proc: subprocess.Popen | None = None

    def start(self) -> "Nginx":
        self.proc = subprocess.Popen([NGINX, "-p", str(self.prefix), "-c", str(self.conf),
                                      "-e", str(self.prefix / "error.log"), "-g", "daemon off;"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        _wait_healthy(self.url, self.proc, self.prefix / "error.log")
        return self

    def stop(self) -> None:
        stop_process(self.proc)


@pytest.fixture
def cluster(pg_url, tmp_path):
    if NGINX is None:
        pytest.skip("nginx is not installed (Debian: apt-get install nginx-light; "
                    "tools/install-test-deps.sh installs it for make test)")
    schema = f"lwm_cluster_{uuid.uuid4().hex[:12]}"
    key = tmp_path / "market_key.pem"
    Identity.generate().save(key)
    common = ["--db", pg_url, "--db-schema", schema, "--market-key-file", str(key),
              "--refine-at", "none", "--trusted-proxies", "1", *NO_ADDRESS_LIMIT_ARGS]
    servers = [Server([*common, "--data-dir", str(tmp_path / f"machine-{i}")], free_port(),
                      tmp_path / f"server-{i}.log") for i in (1, 2)]
    servers[0].args.append("--create-schema")
    nginx = None
    try:
        for s in servers:
            s.start()
        nginx = Nginx(tmp_path / "nginx", servers[0].port, servers[1].port).start()
        yield servers, nginx, Identity.load(key).public_key_b64
    finally:
        if nginx is not None:
            nginx.stop()
        for s in servers:
            s.kill(signal.SIGTERM)
        _pg_exec(pg_url, f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def _lost_answer(exc: Exception) -> bool:
    """The answer of a request in flight on the killed server: nginx's own (unsigned) 502, or
    a broken connection. Anything else is a wrong answer."""
    return ((isinstance(exc, ProtocolError) and exc.code == "bad_response")
            or isinstance(exc, httpx.TransportError))


def test_two_servers_behind_nginx_lose_one_mid_load(cluster, tmp_path):
    servers, nginx, market_key = cluster
    acked: list[str] = []
    retries: list[str] = []
    failures: list[BaseException] = []
    searched: list[set[str]] = []
    lock = threading.Lock()

    def client(tag: str) -> MarketClient:
        return MarketClient(nginx.url, Identity.generate(), market_key=market_key,
                            cache_dir=tmp_path / f"cache-{tag}", timeout=60)

    def publish(c: MarketClient, rng) -> str:
        X = blob(rng, rng.normal(size=3), n=60)
        model = fitted_ridge(X, linear_task(rng, X, rng.normal(size=3)))
        try:
            return c.publish(model, X, SEM, k=10)
        except Exception as exc:  # noqa: BLE001 - sorted out right here
            if not _lost_answer(exc):
                raise
            with lock:
                retries.append(f"publish: {exc}")
        try:
            return c.publish(model, X, SEM, k=10)
        except LearnwareError as exc:  # the lost answer's publish had been committed
            found = re.search(r"as (lw-\d+)", exc.message) if exc.code == "duplicate_model" \
                else None
            if found is None:
                raise
            return found.group(1)

    def search(c: MarketClient, rng) -> set[str]:
        X = blob(rng, rng.normal(size=3), n=60)
        for attempt in (0, 1):
            try:
                return {m.learnware_id for m in c.search(X, SEM, k=10).single}
            except Exception as exc:  # noqa: BLE001
                if attempt or not _lost_answer(exc):
                    raise
                with lock:
                    retries.append(f"search: {exc}")

    def worker(n: int) -> None:
        rng = np.random.default_rng(100 + n)
        try:
            with client(str(n)) as c:
                for _ in range(ROUNDS):
                    lid = publish(c, rng)
                    with lock:
                        acked.append(lid)
                    found = search(c, rng)
                    with lock:
                        searched.append(found)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            failures.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(THREADS)]
    for t in threads:
        t.start()
    deadline = time.time() + 300
    while len(acked) < KILL_AFTER and time.time() < deadline and any(t.is_alive()
                                                                     for t in threads):
        time.sleep(0.05)
    servers[0].kill()  # a machine dies in the middle of the load
    killed_at = len(acked)
    for t in threads:
        t.join(300)
    assert not failures, failures
    assert len(acked) == THREADS * ROUNDS and killed_at < len(acked)
    assert len(set(acked)) == len(acked)
    print(f"killed after {killed_at} acknowledged publishes; retried: {retries}")
    assert len(retries) <= THREADS, retries  # at most the requests in flight at the kill

    # nothing acknowledged is lost, nothing else is there; every searched id exists
    with client("check") as c:
        (island,) = c.islands()
        assert island.learnware_count == len(acked)
        for lid in acked:
            assert c.download(lid).id == lid  # developer signature and model hash verified
    assert set().union(*searched) <= set(acked)

    # the killed server comes back on the same database: both answer a search identically
    servers[0].start()
    X = blob(np.random.default_rng(7), [0.0, 0.0, 0.0], n=80)
    answers = []
    for s in servers:
        with MarketClient(s.url, Identity.generate(), market_key=market_key,
                          cache_dir=tmp_path / f"cache-{s.port}") as c:
            res = c.search(X, SEM, max_results=10, k=10)
            answers.append(res.single)
            assert c.islands()[0].learnware_count == len(acked)
    # the same ranking; the MMDs agree to float32 rounding (one server built its index
    # incrementally under the load, the restarted one in one go)
    assert [m.learnware_id for m in answers[0]] == [m.learnware_id for m in answers[1]]
    assert len(answers[0]) == 10
    np.testing.assert_allclose([m.mmd for m in answers[0]], [m.mmd for m in answers[1]],
                               rtol=1e-5)
