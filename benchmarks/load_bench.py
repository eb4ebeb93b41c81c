"""Load on a real multi-worker server (issue #8): many client processes mixing search, download
and publish against an island of 1,000 learnwares (k = 50, d = 10).

The island is written straight into the store (as in search_bench.py), then ``lwm serve
--workers 4`` is started on it and ``--clients`` client PROCESSES drive it for ``--duration``
seconds: about 80% searches (a signed RKME requirement), 10% downloads (signed manifest + model
file, hash checked) and 10% publishes (a fresh model and spec, all checks). Every request goes to
127.0.0.1 only; every loop is bounded in time and count. The clients verify the market's
signature on every answer. They speak HTTP through the standard library by default (a light
load generator: the clients share the 2 cores with the server); ``--http httpx`` uses the
SDK's HTTP client instead, which costs them about 1 ms of CPU more per request.

Run:
  OMP_NUM_THREADS=1 .venv/bin/python benchmarks/load_bench.py                 # SQLite
  OMP_NUM_THREADS=1 .venv/bin/python benchmarks/load_bench.py \
      --db postgresql://root@127.0.0.1:5432/test    # a fresh schema, created and dropped
  OMP_NUM_THREADS=1 .venv/bin/python benchmarks/load_bench.py --profile   # where a search goes

Goal: >= 200 searches/s with 0 errors (16 clients, 4 workers). Options: --threads N (gthread
workers with keep-alive), --search-share / --download-share (the mix), --duration.
"""
from __future__ import annotations

import argparse
import base64
import multiprocessing as mp
import os
import random
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from search_bench import D, K, SEMANTIC, centers, fill_island  # noqa: E402  (same island)

QUERY = {k: SEMANTIC[k] for k in ("data_type", "task_type", "input_features", "target",
                                  "objective")}
MAX_OPS_PER_CLIENT = 200_000  # hard bound next to the time bound


def base_kernel_wire():
    from learnware_core.island import base_kernel
    return base_kernel(np.ones(D), D)


def requirements(n_learnwares: int, count: int) -> list[dict]:
    from client_sdk import RKMESpec
    gamma, scales = base_kernel_wire()
    C = centers(n_learnwares)
    out = []
    for i in range(count):
        X = C[(i * 37) % n_learnwares] + np.random.default_rng(i).normal(size=(300, D))
        out.append(RKMESpec.fit(X, k=K, gamma=gamma, scales=scales, random_state=i).to_dict())
    return out


# --- client processes --------------------------------------------------------------------------
class LightHTTP:
    """A lean HTTP/1.1 client for the load generator (``--http stdlib``): the standard library's
    connection, reopened when the server closes it. httpx, which the SDK uses, costs the
    client processes about 1 ms of CPU more per request, CPU the server then lacks on a
    2-core machine; a load generator should spend as little as it can."""

    class Reply:
        def __init__(self, status: int, content: bytes):
            self.status_code, self.content = status, content

        @property
        def text(self) -> str:
            return self.content.decode("utf-8", "replace")

    def __init__(self, base_url: str, timeout: float):
        import http.client
        from urllib.parse import urlsplit
        u = urlsplit(base_url)
        self._conn = http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)

    def _do(self, method: str, path: str, content: bytes | None = None) -> "LightHTTP.Reply":
        headers = {"Content-Type": "application/json"} if content is not None else {}
        self._conn.request(method, path, body=content, headers=headers)
        resp = self._conn.getresponse()
        data = resp.read()
        if resp.will_close:
            self._conn.close()  # the next request reconnects
        return self.Reply(resp.status, data)

    def post(self, path: str, content: bytes) -> "LightHTTP.Reply":
        return self._do("POST", path, content)

    def get(self, path: str) -> "LightHTTP.Reply":
        return self._do("GET", path)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._conn.close()


def client_process(idx: int, url: str, n_island: int, reqs: list[dict], start_at: float,
                   duration: float, mix: tuple[float, float], out: "mp.Queue",
                   http_client: str = "stdlib") -> None:
    """One client: its own identity and connection; runs until start_at + duration."""
    import httpx
    from sklearn.linear_model import Ridge
    from client_sdk import Identity
    from protocol.artefact import sha256_hex, sign_artefact
    from protocol.encoding import encode_array
    from protocol.envelope import open_envelope, seal
    from learnware_core.modelfile import dump_model

    me = Identity.generate()
    rnd = random.Random(idx)
    rng = np.random.default_rng(1000 + idx)
    gamma, scales = base_kernel_wire()
    C = centers(n_island)
    model = Ridge().fit(rng.normal(size=(20, D)), rng.normal(size=20))
    lat: dict[str, list[float]] = {"search": [], "download": [], "publish": []}
    errors: list[str] = []
    market_key = None
    n_pub = 0

    def check(resp, expected, status=200):
        nonlocal market_key
        if resp.status_code != status:
            raise RuntimeError(f"{expected}: HTTP {resp.status_code} {resp.text[:200]}")
        if market_key is None:
            import json
            market_key = json.loads(resp.content)["sender"]
        env = open_envelope(resp.content, nonce_store=None, expected_sender=market_key,
                            window_s=3600)
        if env.type != expected:
            raise RuntimeError(f"expected {expected}, got {env.type}: {env.body}")
        return env.body

    connection = (LightHTTP(url, timeout=60) if http_client == "stdlib"
                  else httpx.Client(base_url=url, timeout=60))
    with connection as http:
        import json
        aud = json.loads(http.get("/v1/market").content)["market_key_id"]  # requests name it
        while time.time() < start_at:
            time.sleep(0.01)
        import resource
        ru0 = resource.getrusage(resource.RUSAGE_SELF)
        cpu0 = ru0.ru_utime + ru0.ru_stime  # CPU spent in the timed window only
        end = start_at + duration
        for _ in range(MAX_OPS_PER_CLIENT):
            if time.time() >= end:
                break
            r = rnd.random()
            kind = "search" if r < mix[0] else "download" if r < mix[0] + mix[1] else "publish"
            t0 = time.perf_counter()
            try:
                if kind == "search":
                    body = {"semantic": QUERY, "max_results": 5,
                            "requirement": reqs[rnd.randrange(len(reqs))]}
                    data = seal(me, "search", body, audience=aud)
                    res = check(http.post("/v1/search", content=data), "search_result")
                    if not res["single"]:
                        raise RuntimeError("search returned no learnware")
                elif kind == "download":
                    lid = f"lw-{rnd.randint(1, n_island)}"
                    man = check(http.get(f"/v1/learnwares/{lid}"), "download_manifest")
                    data = http.get(f"/v1/models/{man['model_sha256']}")
                    if data.status_code != 200 or sha256_hex(data.content) != man["model_sha256"]:
                        raise RuntimeError(f"download {lid}: HTTP {data.status_code} or bad hash")
                else:
                    n_pub += 1
                    model.intercept_ = 1e6 * (idx + 1) + n_pub + 0.5  # a distinct model file
                    mb = dump_model(model)
                    sha = sha256_hex(mb)
                    spec = {"z": encode_array(C[rnd.randrange(n_island)]
                                              + rng.normal(size=(K, D))),
                            "beta": encode_array(np.full(K, 1.0 / K)), "gamma": gamma,
                            "scales": encode_array(scales), "n_features": D}
                    body = {"semantic": SEMANTIC, "spec": spec,
                            "model": {"format": "skops", "sha256": sha, "size": len(mb),
                                      "data": base64.b64encode(mb).decode()},
                            "artefact": sign_artefact(me, SEMANTIC, spec, sha)}
                    check(http.post("/v1/learnwares",
                                    content=seal(me, "publish", body, audience=aud)),
                          "publish_result", status=201)
                lat[kind].append(time.perf_counter() - t0)
            except Exception as exc:  # noqa: BLE001 - every failure is counted and reported
                errors.append(f"{kind}: {type(exc).__name__}: {str(exc)[:300]}")
    import resource
    ru = resource.getrusage(resource.RUSAGE_SELF)
    out.put((idx, lat, errors, ru.ru_utime + ru.ru_stime - cpu0))


# --- driver ------------------------------------------------------------------------------------
def machine_busy_s() -> float:
    """CPU-seconds all cores have spent busy since boot (/proc/stat: everything but idle and
    iowait)."""
    with open("/proc/stat") as fh:
        vals = [int(v) for v in fh.readline().split()[1:]]
    idle = vals[3] + (vals[4] if len(vals) > 4 else 0)
    return (sum(vals[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def pct(xs: list[float], q: float) -> float:
    return float(np.percentile(xs, q)) * 1000 if xs else float("nan")


def run_load(args) -> int:
    import httpx
    from client_sdk.demo.server import ServerProcess
    from market_server import ServerConfig
    from protocol.envelope import seal
    from client_sdk import Identity

    tmp = Path(tempfile.mkdtemp(prefix="lwm-load-"))
    schema = None
    extra = []
    try:
        if args.db:
            import psycopg
            schema = f"lwm_load_{uuid.uuid4().hex[:12]}"
            with psycopg.connect(args.db, autocommit=True) as conn:
                conn.execute(f'CREATE SCHEMA "{schema}"')
            cfg = ServerConfig(data_dir=tmp / "data", db_url=args.db, db_schema=schema,
                               refine_at=())
            extra = ["--db", args.db, "--db-schema", schema]
        else:
            cfg = ServerConfig(data_dir=tmp / "data", refine_at=())
        t0 = time.time()
        fill_island(cfg, args.n)
        print(f"island of {args.n} learnwares (k={K}, d={D}) built in {time.time() - t0:.0f} s; "
              f"backend {'PostgreSQL schema ' + schema if schema else 'SQLite (WAL)'}",
              flush=True)
        reqs = requirements(args.n, 16)
        if args.threads > 1:
            extra += ["--threads", str(args.threads)]
        # 16 local processes share one address: this measures throughput, not the budgets
        extra += ["--rate-limit-address", "off", "--rate-limit-address-text", "off"]
        with ServerProcess(tmp / "data", workers=args.workers, extra_args=extra) as server:
            # warm every worker's island index: fresh connections land on different workers
            me = Identity.generate()
            aud = httpx.get(server.url + "/v1/market", timeout=60).json()["market_key_id"]
            for i in range(4 * args.workers):
                with httpx.Client(base_url=server.url, timeout=120) as http:
                    r = http.post("/v1/search", content=seal(me, "search", {
                        "semantic": QUERY, "max_results": 5, "requirement": reqs[i % 16]},
                        audience=aud))
                    assert r.status_code == 200, r.text[:300]
            q: mp.Queue = mp.get_context("fork").Queue()
            start_at = time.time() + 3.0
            mix = (args.search_share, args.download_share)
            procs = [mp.get_context("fork").Process(
                target=client_process, args=(i, server.url, args.n, reqs, start_at,
                                             args.duration, mix, q, args.http))
                for i in range(args.clients)]
            for p in procs:
                p.start()
            while time.time() < start_at:
                time.sleep(0.005)
            busy0 = machine_busy_s()
            time.sleep(max(0.0, start_at + args.duration - time.time()))
            busy = machine_busy_s() - busy0  # CPU-seconds the whole machine spent in the window
            results = []
            deadline = start_at + args.duration + 120
            for _ in procs:
                results.append(q.get(timeout=max(1.0, deadline - time.time())))
            for p in procs:
                p.join(timeout=30)
                if p.is_alive():
                    p.kill()
        lat: dict[str, list[float]] = {"search": [], "download": [], "publish": []}
        errors: list[str] = []
        client_cpu = 0.0
        for _, l, e, cpu in results:
            for k in lat:
                lat[k].extend(l[k])
            errors.extend(e)
            client_cpu += cpu
        kind = ("gunicorn sync workers" if args.threads <= 1
                else f"gunicorn gthread workers, {args.threads} threads each, keep-alive")
        print(f"{args.clients} client processes ({args.http} HTTP), {args.workers} server workers, "
              f"{args.duration:.0f} s ({kind}; clients share the machine's {os.cpu_count()} "
              f"cores with the server)")
        for k in ("search", "download", "publish"):
            xs = lat[k]
            print(f"  {k:8s}: {len(xs):6d} ok  {len(xs) / args.duration:7.1f}/s  "
                  f"p50 {pct(xs, 50):7.1f} ms  p99 {pct(xs, 99):7.1f} ms")
        total = sum(len(v) for v in lat.values())
        print(f"  total   : {total:6d} ok  {total / args.duration:7.1f}/s   errors: {len(errors)}")
        cores = os.cpu_count() or 1
        print(f"  CPU in the window: machine {busy / args.duration:.2f} of {cores} cores busy; "
              f"the client processes {client_cpu / args.duration:.2f} cores, the rest (server "
              f"workers, system) {(busy - client_cpu) / args.duration:.2f}")
        for e in errors[:10]:
            print("   ", e)
        return 0 if not errors else 1
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if schema:
            import psycopg
            with psycopg.connect(args.db, autocommit=True) as conn:
                conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def run_profile(args) -> int:
    """Where one search spends its time inside the server (in-process, one thread)."""
    import cProfile
    import pstats
    from client_sdk import Identity
    from market_server import ServerConfig, create_app
    from protocol.envelope import seal
    tmp = Path(tempfile.mkdtemp(prefix="lwm-prof-"))
    try:
        cfg = ServerConfig(data_dir=tmp / "data", refine_at=())
        fill_island(cfg, args.n)
        app = create_app(cfg)
        reqs = requirements(args.n, 16)
        me = Identity.generate()
        client = app.test_client()
        aud = app.extensions["learnware_market"].identity.key_id
        bodies = [seal(me, "search", {"semantic": QUERY, "max_results": 5,
                                      "requirement": reqs[i % 16]}, audience=aud)
                  for i in range(args.trials + 5)]
        for b in bodies[:5]:
            assert client.post("/v1/search", data=b).status_code == 200
        t0 = time.perf_counter()
        prof = cProfile.Profile()
        prof.enable()
        for b in bodies[5:]:
            client.post("/v1/search", data=b)
        prof.disable()
        dt = (time.perf_counter() - t0) / args.trials
        print(f"in-process search through Flask (one thread, profiler on): {dt * 1000:.2f} ms "
              f"per search")
        stats = pstats.Stats(prof)
        stats.sort_stats("cumulative").print_stats(30)
        app.extensions["learnware_market"].store.dispose()
        return 0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=1000, help="learnwares on the island")
    ap.add_argument("--db", default=None, help="postgresql://... (a fresh schema is created "
                    "and dropped); default SQLite")
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--threads", type=int, default=1, help="threads per server worker (lwm serve "
                    "--threads)")
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--http", choices=("stdlib", "httpx"), default="stdlib",
                    help="the client processes' HTTP client (default: the standard library's, "
                         "the lighter load generator; httpx is what the SDK uses)")
    ap.add_argument("--duration", type=float, default=30.0)
    ap.add_argument("--search-share", type=float, default=0.8)
    ap.add_argument("--download-share", type=float, default=0.1)
    ap.add_argument("--profile", action="store_true", help="profile searches in-process instead")
    ap.add_argument("--trials", type=int, default=300)
    args = ap.parse_args()
    if args.db and not args.db.startswith("postgresql://127.0.0.1") and "@127.0.0.1" not in args.db:
        ap.error("--db must point at 127.0.0.1 (network rule)")
    args.duration = min(args.duration, 600.0)
    return run_profile(args) if args.profile else run_load(args)


if __name__ == "__main__":
    sys.exit(main())
