"""Private search (issue #19): bytes downloaded and time at N = 1,000, 10,000 and 100,000.

The island is built straight from arrays (``IslandIndex.from_points``, as scale_bench.py does:
filling a database with 100,000 signed rows would measure the store, not the search) and
installed as the island's index in a real ``Market``; the client talks to the Flask app through
``httpx.WSGITransport`` (every request and signed answer encoded, signed, verified; no
sockets), wrapped in a transport that counts the bytes of every answer. Learnwares: k = 50
reduced points, d = 10 features, clustered as in scale_bench.py (N / 10 clusters).

Per N:
* baseline, in the same script: ``MarketClient.search`` (the requirement is sent; bytes up
  and down, time);
* first private search from an empty cache (islands below ``IslandIndex.coarse_min`` = 2,000:
  every spec; larger ones: every sketch + self inner product, then exact specs of the
  candidates), and a second one with a new requirement (cache warm, nothing changed), then a
  third after 1% new learnwares and 0.5% withdrawals (the index rebuilt with the sketches
  kept);
* whether the private top-10 equals the market's (ids, every query).

Run: OMP_NUM_THREADS=1 .venv/bin/python benchmarks/private_search_bench.py [--sizes 1000 10000]
  [--k-large 10]  (N = 100,000 with k = 10 points per learnware by default: the in-process
  market's index of 100,000 x 50 points did not fit beside the client on this 2-core box's
  share of memory; the sketch download, which dominates, does not depend on k)
Goal: the second search downloads < 10% of the first at N = 10,000; same ranking.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from client_sdk import Identity, MarketClient  # noqa: E402
from learnware_core.island import base_kernel  # noqa: E402
from learnware_core.semantic import island_key  # noqa: E402
from market_server import ServerConfig, create_app  # noqa: E402
from market_server.search import IslandIndex  # noqa: E402

D = 10
SEMANTIC = {"name": "bench", "description": "private search bench", "data_type": "table",
            "task_type": "regression", "input_features": [f"x{i}" for i in range(D)],
            "target": "y", "objective": "rmse"}


class Counting(httpx.BaseTransport):
    def __init__(self, inner):
        self.inner, self.down, self.up, self.requests = inner, 0, 0, 0

    def handle_request(self, request):
        self.up += len(request.read()) + len(str(request.url))
        resp = self.inner.handle_request(request)
        resp.read()
        self.down += len(resp.content)
        self.requests += 1
        return resp

    def take(self):
        out = (self.down, self.up, self.requests)
        self.down = self.up = self.requests = 0
        return out


def make_points(n: int, k: int, seed: int = 0, first_pk: int = 1):
    rng = np.random.default_rng(seed)
    n_centres = max(1, n // 10)
    side = 3.0 * n_centres ** (1.0 / D)
    centres = rng.uniform(-side, side, size=(n_centres, D))
    mean = centres[rng.integers(n_centres, size=n)] + rng.normal(scale=0.7, size=(n, D))
    pts = {first_pk + i: (mean[i] + rng.normal(size=(k, D)), np.full(k, 1.0 / k))
           for i in range(n)}
    return mean, pts


def run(n: int, k: int, queries: int) -> dict:
    gamma, scales = base_kernel(np.ones(D), D)
    kernel = {"gamma": gamma, "scales": scales.tolist(), "base_scales": scales.tolist()}
    means, points = make_points(n, k)
    t0 = time.perf_counter()
    idx = IslandIndex.from_points(kernel, 1, [f"lw-{p}" for p in points], list(points), points)
    t_build = time.perf_counter() - t0
    out = {"n": n, "k": k, "build": t_build, "mode": "sketch" if idx.S is not None else "specs"}
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["LWM_CONFIG_DIR"] = str(Path(tmp) / "config")  # pinned keys: not the user's
        app = create_app(ServerConfig(data_dir=Path(tmp) / "m", refine_at=(),
                                      rate_limit_address=""))
        ext = app.extensions["learnware_market"]
        market, store = ext.market, ext.store
        sem_key = island_key(SEMANTIC)
        island = store.ensure_island(sem_key, {f: SEMANTIC[f] for f in
                                               ("data_type", "task_type", "input_features",
                                                "target", "objective")}, D, kernel)
        idx.version = island.version
        market._indexes[island.pk] = idx
        counting = Counting(httpx.WSGITransport(app=app))
        client = MarketClient("http://market", Identity.generate(), transport=counting,
                              cache_dir=Path(tmp) / "client", timeout=600)
        client.island(SEMANTIC)  # the island's info, once (both ways need it)
        counting.take()
        rng = np.random.default_rng(1)
        reqs = [means[int(rng.integers(n))] + rng.normal(size=(300, D)) for _ in range(queries)]
        # baseline: the usual search (requirement sent)
        t_base, base_bytes, base_res = [], [], []
        for X in reqs:
            t0 = time.perf_counter()
            base_res.append(client.search(X, SEMANTIC, max_results=10, k=50))
            t_base.append(time.perf_counter() - t0)
            base_bytes.append(counting.take())
        # private: first (cold cache), then warm
        t_priv, priv_bytes, same = [], [], []
        for i, X in enumerate(reqs):
            t0 = time.perf_counter()
            res = client.search(X, SEMANTIC, max_results=10, k=50, private=True)
            t_priv.append(time.perf_counter() - t0)
            priv_bytes.append(counting.take())
            same.append([m.learnware_id for m in res.single]
                        == [m.learnware_id for m in base_res[i].single])
        # changes: 1% published, 0.5% withdrawn (sketches and centre kept: same fingerprint)
        _, extra = make_points(max(1, n // 100), k, seed=7, first_pk=n + 1)
        keep_pks = [p for p in idx.pks if p % 200 != 3]  # 0.5% withdrawn
        pts = {p: idx.points[p] for p in keep_pks}
        pts.update(extra)
        idx2 = IslandIndex.from_points(kernel, 1, [f"lw-{p}" for p in pts], list(pts), pts,
                                       keep=idx)
        island = store.island(island.pk)
        idx2.version = island.version
        market._indexes[island.pk] = idx2
        X = reqs[0]
        t0 = time.perf_counter()
        res = client.search(X, SEMANTIC, max_results=10, k=50, private=True)
        t_third = time.perf_counter() - t0
        third = counting.take()
        base3 = client.search(X, SEMANTIC, max_results=10, k=50)
        counting.take()
        same.append([m.learnware_id for m in res.single]
                    == [m.learnware_id for m in base3.single])
        store.dispose()
    out.update(t_base=float(np.median(t_base)),
               base_down=int(np.median([b[0] for b in base_bytes])),
               base_up=int(np.median([b[1] for b in base_bytes])),
               first_t=t_priv[0], first_down=priv_bytes[0][0], first_req=priv_bytes[0][2],
               warm_t=float(np.median(t_priv[1:])), warm_down=int(np.median(
                   [b[0] for b in priv_bytes[1:]])),
               third_t=t_third, third_down=third[0], same=int(sum(same)), total=len(same))
    return out


def mb(x: float) -> str:
    return f"{x / 2 ** 20:8.2f} MiB"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000])
    ap.add_argument("--queries", type=int, default=5)
    ap.add_argument("--k", type=int, default=50)
    ap.add_argument("--k-large", type=int, default=10, help="points per learnware at N >= 50k")
    args = ap.parse_args()
    for n in args.sizes:
        k = args.k if n < 50_000 else args.k_large
        r = run(n, k, args.queries)
        print(f"\nN = {n:,} (k = {k}, {r['mode']} mode; index built in {r['build']:.1f} s)")
        print(f"  baseline search (requirement sent): {r['t_base'] * 1000:8.1f} ms median, "
              f"{r['base_up'] / 1024:.1f} KiB up, {r['base_down'] / 1024:.1f} KiB down")
        print(f"  private, first (empty cache) : {r['first_t']:8.2f} s, {mb(r['first_down'])} "
              f"down in {r['first_req']} requests ({r['first_t'] / r['t_base']:.0f}x the "
              f"baseline's time)")
        print(f"  private, second (cache warm) : {r['warm_t']:8.2f} s, {mb(r['warm_down'])} down "
              f"= {100 * r['warm_down'] / r['first_down']:.2f}% of the first "
              f"({r['warm_t'] / r['t_base']:.1f}x the baseline's time)")
        print(f"  private, after 1% published + 0.5% withdrawn: {r['third_t']:.2f} s, "
              f"{mb(r['third_down'])} down = {100 * r['third_down'] / r['first_down']:.2f}% of "
              f"the first")
        print(f"  top-10 identical to the market's: {r['same']} / {r['total']} searches")


if __name__ == "__main__":
    main()
