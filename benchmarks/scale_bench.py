"""Search at scale (issue #8; N = 10,000 goal of issue #4): sketch pre-selection + exact re-rank.

Islands of N = 10,000 and 100,000 learnwares (k = 50 reduced points, d = 10). The island is
built straight from arrays with ``IslandIndex.from_points`` (filling the database with 100,000
signed rows would take far longer than the search itself and only measures the store) and put
into a real ``Market`` (its store holds the island, the index is installed as the island's
current one), so every timed search goes through ``Market.search`` in process: island lookup,
requirement checks, sketch ranking, exact re-rank of the candidates, fit labels and mixture.

The island is clustered so that many learnwares are near one another: N / 10 cluster centres
(so ~10 learnwares per cluster, Poisson sizes), centres close enough that neighbouring clusters
overlap, each learnware = its centre + its own offset + unit noise. A requirement is an RKME
(k = 50) of 500 rows drawn from one learnware's distribution.

Reported per N: index build time (and the time to re-index after one publish, reusing the
sketches), index memory and process RSS, p50 / p90 of Market.search, the time of the exact
scan over all N for comparison, and recall@10: the share of the exact top 10 (full MMD over all
N, float32 blocks, computed once per query) that the coarse stage kept among its candidates and
that the search returned in its top 10. Recall at smaller candidate counts shows it is not
trivially 1.

Run: OMP_NUM_THREADS=1 .venv/bin/python benchmarks/scale_bench.py [--sizes 10000 100000]
Goals: N = 100,000 p50 <= 150 ms with recall@10 >= 0.95; N = 10,000 p50 <= 100 ms.
"""
from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from client_sdk import RKMESpec  # noqa: E402
from market_server import ServerConfig, create_app  # noqa: E402
from market_server.search import IslandIndex  # noqa: E402
from learnware_core.island import base_kernel  # noqa: E402
from learnware_core.semantic import island_key  # noqa: E402

D, K = 10, 50
SEMANTIC = {"data_type": "table", "task_type": "regression",
            "input_features": [f"x{i}" for i in range(D)], "target": "y", "objective": "rmse"}


def make_island(n: int, seed: int = 0):
    """Clustered island: (centres of each learnware, points dict pk -> (z, beta))."""
    rng = np.random.default_rng(seed)
    n_centres = max(1, n // 10)
    # box side such that the nearest other centre is ~2-3 point spreads away: clusters overlap
    side = 3.0 * n_centres ** (1.0 / D)
    centres = rng.uniform(-side, side, size=(n_centres, D))
    which = rng.integers(n_centres, size=n)
    mean = centres[which] + rng.normal(scale=0.7, size=(n, D))  # each learnware's own offset
    Z = (mean[:, None, :] + rng.normal(size=(n, K, D))).reshape(n * K, D)
    B = np.full(n * K, 1.0 / K)
    points = {i + 1: (Z[i * K:(i + 1) * K], B[i * K:(i + 1) * K]) for i in range(n)}
    return mean, points


def rss_mb() -> float:
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def index_mb(idx: IslandIndex) -> float:
    st = idx.stack
    arrs = [st._Z, st.B, st.owner, st.self_inner] + list(st._csr or ())
    if idx.S is not None:
        arrs.append(idx.S)
    return sum(a.nbytes for a in arrs) / 2 ** 20


def p(xs, q) -> float:
    return float(np.percentile(xs, q)) * 1000


def run(n: int, trials: int, dim: int) -> dict:
    gamma, scales = base_kernel(np.ones(D), D)
    kernel = {"gamma": gamma, "scales": scales.tolist(), "base_scales": scales.tolist()}
    t0 = time.perf_counter()
    means, points = make_island(n)
    t_gen = time.perf_counter() - t0
    ids = [f"lw-{pk}" for pk in points]
    pks = list(points)
    t0 = time.perf_counter()
    idx = IslandIndex.from_points(kernel, 1, ids, pks, points, sketch_dim=dim)
    t_build = time.perf_counter() - t0
    del points
    # one publish: re-index with the kernel unchanged (points, self inner products and
    # sketches of the N learnwares reused; only the new one is sketched)
    rng = np.random.default_rng(7)
    extra = {pk: idx.points[pk] for pk in idx.pks}
    extra[n + 1] = (means[0] + rng.normal(size=(K, D)), np.full(K, 1.0 / K))
    t0 = time.perf_counter()
    idx2 = IslandIndex.from_points(kernel, 1, ids + [f"lw-{n + 1}"], pks + [n + 1], extra,
                                   keep=idx)
    t_append = time.perf_counter() - t0
    assert np.array_equal(idx2.S[:n], idx.S)
    del idx2, extra
    mem_index, mem_rss = index_mb(idx), rss_mb()

    with tempfile.TemporaryDirectory() as tmp:
        app = create_app(ServerConfig(data_dir=Path(tmp), refine_at=()))
        ext = app.extensions["learnware_market"]
        market, store = ext.market, ext.store
        island = store.ensure_island(island_key(SEMANTIC), dict(SEMANTIC), D, kernel)
        idx.version = island.version
        market._indexes[island.pk] = idx  # the island's current index (built from arrays)
        reqs = []
        qrng = np.random.default_rng(1)
        for t in range(trials + 2):
            w = int(qrng.integers(n))
            X = means[w] + qrng.normal(size=(500, D))
            reqs.append(RKMESpec.fit(X, k=K, gamma=gamma, scales=scales,
                                     random_state=t).to_dict())
        times, results = [], []
        for t, req in enumerate(reqs):
            body = {"semantic": dict(SEMANTIC), "max_results": 10, "requirement": req}
            t0 = time.perf_counter()
            res = market.search(body)
            dt = time.perf_counter() - t0
            if t >= 2:  # the first two warm caches
                times.append(dt)
                results.append(res)
        assert all(r["island_id"] == island.island_id for r in results)
        store.dispose()

    # exact figures, once per query (not timed as search)
    rec_final, rec_coarse, rec_small, t_exact = [], [], {50: [], 100: []}, []
    from market_server.search import decode_spec
    for req, res in zip(reqs[2:], results):
        z, b = decode_spec(req)
        t0 = time.perf_counter()
        exact = idx.mmd_all(z, b)
        t_exact.append(time.perf_counter() - t0)
        top = set(np.argsort(exact, kind="stable")[:10].tolist())
        got = {int(i.split("-")[1]) - 1 for i in (s["learnware_id"] for s in res["single"])}
        rec_final.append(len(top & got) / 10)
        cand, _ = idx.rank(z, b, top=12, widen=False)
        rec_coarse.append(len(top & set(cand.tolist())) / 10)
        for m in rec_small:
            c, _ = idx.rank(z, b, top=10, candidates=m, widen=False)
            rec_small[m].append(len(top & set(c.tolist())) / 10)
    return {"n": n, "gen": t_gen, "build": t_build, "append": t_append, "mem_index": mem_index,
            "rss": mem_rss, "peak": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "p50": p(times, 50), "p90": p(times, 90), "exact_p50": p(t_exact, 50),
            "recall": float(np.mean(rec_final)), "recall_min": float(np.min(rec_final)),
            "coarse": float(np.mean(rec_coarse)),
            "small": {m: float(np.mean(v)) for m, v in rec_small.items()},
            "m": max(200, 20 * 12), "dim": idx.sketch_dim, "err": idx.sketch_err}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[10000, 100000])
    ap.add_argument("--trials", type=int, default=40)
    ap.add_argument("--dim", type=int, default=IslandIndex.SKETCH_DIM)
    args = ap.parse_args()
    print(f"k = {K}, d = {D}; sketch D = {args.dim}; search = Market.search in process "
          f"(max_results 10); index built from arrays (IslandIndex.from_points)")
    for n in args.sizes:
        r = run(n, args.trials, args.dim)
        goal = 100 if n <= 10000 else 150
        print(f"N = {n:6d}: search p50 {r['p50']:6.1f} ms  p90 {r['p90']:6.1f} ms "
              f"(goal p50 <= {goal}) | exact scan of all N p50 {r['exact_p50']:7.1f} ms")
        print(f"    recall@10 of the search {r['recall']:.3f} (worst query {r['recall_min']:.1f});"
              f" coarse stage alone, top {r['m']} / 100 / 50 by sketch: {r['coarse']:.3f} / "
              f"{r['small'][100]:.3f} / {r['small'][50]:.3f}; sketch rms error {r['err']:.4f}")
        print(f"    build {r['build']:.1f} s (data generated in {r['gen']:.1f} s); re-index after"
              f" one publish {r['append']:.2f} s; index {r['mem_index']:.0f} MiB, process RSS "
              f"{r['rss']:.0f} MiB (peak {r['peak']:.0f} MiB)")


if __name__ == "__main__":
    main()
