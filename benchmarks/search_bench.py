"""Search latency, publish throughput and top-1 accuracy of the market (issue #4).

Islands of N learnwares (k = 50 reduced points, d = 10) are written straight into the store
(publishing 10,000 learnwares through the checks would only measure publishing); searches then
go through the Market object in-process and through HTTP to a real server process. Publish
throughput is measured through the full signed HTTP path with all checks, with the RKME fitted
before the clock (what the market absorbs) and inside it (end to end on the same 2 cores).

Run: OMP_NUM_THREADS=1 .venv/bin/python benchmarks/search_bench.py [--sizes 1000 10000]
Goals: N=1,000 p50 <= 20 ms; N=10,000 p50 <= 100 ms; >= 50x faster than the reference at
N=1,000 (reference 0.205 s, ../shared/reference-figures.md); publish >= 20/s; top-1 >= 95%.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from client_sdk import Identity, MarketClient, RKMESpec  # noqa: E402
from client_sdk.demo.server import ServerProcess  # noqa: E402
from market_server import ServerConfig, create_app  # noqa: E402
from protocol.artefact import sha256_hex, sign_artefact  # noqa: E402
from protocol.encoding import encode_array  # noqa: E402
from protocol.envelope import seal  # noqa: E402
from learnware_core.island import base_kernel  # noqa: E402
from learnware_core.modelfile import dump_model  # noqa: E402
from learnware_core.semantic import island_key  # noqa: E402

D, K = 10, 50
REFERENCE_S = {100: 0.059, 1000: 0.205, 5000: 0.99}
SEMANTIC = {"name": "bench", "description": "synthetic island", "data_type": "table",
            "task_type": "regression", "input_features": [f"x{i}" for i in range(D)],
            "target": "y", "objective": "rmse"}


def centers(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-20, 20, size=(n, D))


def fill_island(target: Path | ServerConfig, n: int, seed: int = 0) -> None:
    """N learnwares, each a cluster of the island: spec points drawn from it, uniform weights.
    ``target``: a data folder (SQLite) or a full ServerConfig (e.g. PostgreSQL)."""
    from sklearn.linear_model import Ridge
    cfg = target if isinstance(target, ServerConfig) else ServerConfig(data_dir=target,
                                                                        refine_at=())
    app = create_app(cfg)
    store = app.extensions["learnware_market"].store
    gamma, scales = base_kernel(np.ones(D), D)
    island = store.ensure_island(island_key(SEMANTIC), {k: SEMANTIC[k] for k in
                                 ("data_type", "task_type", "input_features", "target",
                                  "objective")}, D,
                                 {"gamma": gamma, "scales": scales.tolist(),
                                  "base_scales": scales.tolist()})
    rng = np.random.default_rng(seed)
    C = centers(n, seed)
    me = Identity.generate()
    base = Ridge().fit(rng.normal(size=(20, D)), rng.normal(size=20))
    for i in range(n):
        base.intercept_ = float(i)  # a distinct model file per learnware
        model = dump_model(base)
        sha = sha256_hex(model)
        spec = {"z": encode_array(C[i] + rng.normal(size=(K, D))),
                "beta": encode_array(np.full(K, 1.0 / K)), "gamma": gamma,
                "scales": encode_array(scales), "n_features": D}
        store.publish(island_pk=island.pk, developer=me.public_key_b64,
                      developer_key_id=me.key_id, semantic=SEMANTIC, spec=spec,
                      model_sha256=sha, model=model,
                      artefact=sign_artefact(me, SEMANTIC, spec, sha))
    store.dispose()


def requirement(n_learnwares: int, which: int, seed: int) -> dict:
    gamma, scales = base_kernel(np.ones(D), D)
    X = centers(n_learnwares)[which] + np.random.default_rng(seed).normal(size=(500, D))
    return RKMESpec.fit(X, k=50, gamma=gamma, scales=scales, random_state=seed).to_dict()


def bench_in_process(data_dir: Path, n: int, trials: int) -> tuple[list[float], float]:
    app = create_app(ServerConfig(data_dir=data_dir, refine_at=()))
    market = app.extensions["learnware_market"].market
    query = {k: SEMANTIC[k] for k in ("data_type", "task_type", "input_features", "target",
                                      "objective")}
    market.search({"semantic": query, "max_results": 5,
                   "requirement": requirement(n, 0, 99)})  # warm the island index
    rng = np.random.default_rng(1)
    times, hits = [], 0
    for t in range(trials):
        which = int(rng.integers(n))
        body = {"semantic": query, "max_results": 5, "requirement": requirement(n, which, t)}
        t0 = time.perf_counter()
        res = market.search(body)
        times.append(time.perf_counter() - t0)
        hits += res["single"][0]["learnware_id"] == f"lw-{which + 1}"
    return times, hits / trials


def bench_http(data_dir: Path, n: int, trials: int) -> list[float]:
    query = {k: SEMANTIC[k] for k in ("data_type", "task_type", "input_features", "target",
                                      "objective")}
    reqs = [requirement(n, i % n, i) for i in range(min(trials, 20))]
    me = Identity.generate()
    times = []
    with ServerProcess(data_dir, address_limits=False) as server, httpx.Client(base_url=server.url, timeout=300) as http:
        aud = http.get("/v1/market").json()["market_key_id"]  # every request names its market
        for i in range(trials + 3):
            body = {"semantic": query, "max_results": 5, "requirement": reqs[i % len(reqs)]}
            data = seal(me, "search", body, audience=aud)
            t0 = time.perf_counter()
            r = http.post("/v1/search", content=data)
            dt = time.perf_counter() - t0
            assert r.status_code == 200, r.text[:300]
            if i >= 3:  # the first requests build the index
                times.append(dt)
    return times


def bench_publish(count: int, clients: int, *, prepared: bool, workers: int = 1,
                  prefill: int = 0) -> float:
    """Learnwares per second through the real server (``workers`` processes), ``clients``
    publishing at once from threads of this process (each with its own identity).

    ``prepared``: the RKME of each learnware is fitted before the clock (``island_spec``) and
    sent as is, so the figure is what the market absorbs; otherwise each publish fits its
    spec inside the clock (end to end, client and server sharing the machine's 2 cores).
    Every check runs either way, and the island's kernel refinements happen in the timed
    window (the island grows from ``prefill + 1`` to ``prefill + 1 + count`` learnwares).
    A prepared spec that a refinement made stale is recomputed by the SDK inside the clock."""
    from concurrent.futures import ThreadPoolExecutor
    from sklearn.linear_model import Ridge
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        with ServerProcess(Path(tmp) / "m", workers=workers, address_limits=False) as server:
            cls = [MarketClient(server.url, Identity.generate(), cache_dir=Path(tmp) / f"c{i}",
                                timeout=300) for i in range(clients)]
            X0 = rng.normal(size=(500, D))
            cls[0].publish(Ridge().fit(X0, X0[:, 0]), X0, SEMANTIC, k=50)
            for i in range(prefill):
                X = rng.normal(loc=i % 5, size=(500, D))
                cls[0].publish(Ridge(alpha=0.5 + i).fit(X, X[:, 1] - i), X, SEMANTIC, k=50)
            jobs = []
            for i in range(count):
                X = rng.normal(loc=i % 7, size=(500, D))
                sem = dict(SEMANTIC)
                spec = cls[0].island_spec(X, sem, k=50, max_age_s=0.0) if prepared else None
                jobs.append((Ridge(alpha=1.0 + i).fit(X, X[:, 0] + i), X, sem, spec))

            def work(c):
                for model, X, sem, spec in jobs[c::clients]:
                    cls[c].publish(model, X, sem, k=50, spec=spec)

            t0 = time.perf_counter()
            with ThreadPoolExecutor(clients) as ex:
                list(ex.map(work, range(clients)))
            return count / (time.perf_counter() - t0)


def p(xs, q):
    return float(np.percentile(xs, q)) * 1000


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="*", default=[1000, 10000])
    ap.add_argument("--trials", type=int, default=60)
    ap.add_argument("--publish", type=int, default=100)
    ap.add_argument("--publish-clients", type=int, default=2)
    ap.add_argument("--prefill", type=int, default=0,
                    help="learnwares published before the timed window")
    args = ap.parse_args()
    print(f"island: k = {K}, d = {D}; latencies in ms (p50 / p90), server-side = in process")
    for n in args.sizes:
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.time()
            fill_island(Path(tmp), n)
            fill = time.time() - t0
            ts, top1 = bench_in_process(Path(tmp), n, args.trials)
            th = bench_http(Path(tmp), n, args.trials)
        ref = REFERENCE_S.get(n)
        speed = f"{ref / statistics.median(ts):6.0f}x the reference ({ref * 1000:.0f} ms)" \
            if ref else "(no reference figure at this N)"
        print(f"N = {n:6d}: in-process p50 {p(ts, 50):7.1f}  p90 {p(ts, 90):7.1f} | HTTP p50 "
              f"{p(th, 50):7.1f}  p90 {p(th, 90):7.1f} | top-1 {top1:.3f} | {speed} "
              f"[island built in {fill:.0f} s]")
    if args.publish <= 0:
        return
    print(f"publish through signed HTTP, every check, kernel refinements in the window "
          f"({args.publish} publishes onto an island of {args.prefill + 1}):")
    for workers in (1, 2):
        for clients in sorted({1, args.publish_clients}):
            for prepared in (True, False):
                rate = bench_publish(args.publish, clients, prepared=prepared, workers=workers,
                                     prefill=args.prefill)
                what = ("specs fitted before the clock" if prepared else
                        "end to end, RKME fit in the clock")
                print(f"  {workers} worker(s), {clients} client(s), {what}: {rate:5.1f} "
                      "learnwares/s")


if __name__ == "__main__":
    main()
