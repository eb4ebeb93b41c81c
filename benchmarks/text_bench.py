"""Text search cost: the two attacks of issue 13 (item 2) before and after the index, and query
latency at 1,000 and 10,000 learnwares with long (10,000-character) descriptions.

"Before" is the old algorithm (``learnware_core.semantic.text_score`` against every live learnware,
what ``Market.text_search`` did), run on the same rows; "after" is the market's endpoint.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/text_bench.py [--sizes 1000,10000]
"""
from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from client_sdk import Identity, MarketClient  # noqa: E402
from market_server import ServerConfig, create_app  # noqa: E402
from learnware_core.semantic import text_score  # noqa: E402

LETTERS = np.array(list("abcdefghijklmnopqrstuvwxyz"))


def words(rng, n, lo=3, hi=6):
    return ["".join(rng.choice(LETTERS, size=int(rng.integers(lo, hi)))) for _ in range(n)]


def old_text_search(store, query, limit=20):
    scored = []
    for r in store.all_live_learnwares():
        s = text_score(query, r.semantic)
        if s > 0:
            scored.append((s, r.pk, r))
    scored.sort(key=lambda t: (-t[0], t[1]))
    return scored[:limit]


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu(fn):
    t0 = time.process_time()
    fn()
    return time.process_time() - t0


def make_app(root: Path, **kw):
    return create_app(ServerConfig(data_dir=root, blob_store="db", refine_at=(),
                                   rate_limit_address="", **kw))


def attacks(root: Path) -> None:
    from sklearn.linear_model import Ridge
    app = make_app(root / "attacks")
    transport = httpx.WSGITransport(app=app)
    client = MarketClient("http://bench.test", Identity.generate(), transport=transport,
                          cache_dir=root / "cache")
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 3))
    sem = {"name": "long description", "description": " ".join(words(rng, 2000))[:10_000],
           "data_type": "table", "task_type": "regression", "input_features": ["a", "b", "c"],
           "target": "y", "objective": "rmse"}
    client.publish(Ridge().fit(X, X @ [1.0, 2.0, 3.0]), X, sem, k=10)
    long_words = ["".join(np.random.default_rng(1000 + i).choice(LETTERS[:10], size=100))
                  for i in range(99)]
    X2 = rng.normal(size=(60, 3)) + 5
    client.publish(Ridge().fit(X2, X2 @ [1.0, 2.0, 3.0]), X2,
                   dict(sem, name="long words", description=" ".join(long_words)), k=10)
    store = app.extensions["learnware_market"].store
    query = " ".join(words(np.random.default_rng(1), 200))[:499]
    tags = ["".join(np.random.default_rng(i).choice(LETTERS[:10], size=100)) for i in range(100)]
    tag_query = " ".join(tags)
    absent = {"name": "nobody", "data_type": "table", "task_type": "regression",
              "input_features": ["p", "q"], "target": "y", "objective": "rmse", "tags": tags}
    client.text_search("warm up")
    print("attack                                        before (CPU s)  after (CPU s)")
    b1 = cpu(lambda: old_text_search(store, query[:500]))
    a1 = cpu(lambda: client.text_search(query))
    print(f"GET text search, 499 chars, 2,000-word desc  {b1:14.3f}  {a1:13.4f}")
    b2 = cpu(lambda: old_text_search(store, "nobody " + tag_query))
    a2 = cpu(lambda: client.search(None, absent))
    print(f"signed search, no island, 100 tags x 100 ch   {b2:14.3f}  {a2:13.4f}")


def scale(root: Path, n: int) -> None:
    app = make_app(root / f"scale-{n}")
    state = app.extensions["learnware_market"]
    store = state.store
    rng = np.random.default_rng(n)
    vocab = words(rng, 20_000, 3, 10)
    zipf = 1.0 / np.arange(1, len(vocab) + 1)
    zipf /= zipf.sum()
    island = store.ensure_island("0" * 64, {"data_type": "table", "task_type": "regression",
                                            "input_features": ["a"], "target": "y",
                                            "objective": "rmse"}, 1,
                                 {"gamma": 0.5, "scales": [1.0], "base_scales": [1.0]})
    t0 = time.perf_counter()
    for i in range(n):
        desc = " ".join(rng.choice(vocab, size=1500, p=zipf))[:10_000]
        name = " ".join(rng.choice(vocab[:2000], size=3))
        model = f"model {i}".encode()
        store.publish(island_pk=island.pk, developer="d" * 44, developer_key_id="k" * 32,
                      semantic={"name": name, "description": desc}, spec={},
                      model_sha256=hashlib.sha256(model).hexdigest(), model=model, artefact={})
    fill = time.perf_counter() - t0
    http = httpx.Client(base_url="http://bench.test", transport=httpx.WSGITransport(app=app))
    rss0 = rss_mb()
    t0 = time.perf_counter()
    http.get("/v1/learnwares", params={"q": "warm"})
    build = time.perf_counter() - t0
    index_mb = rss_mb() - rss0
    qrng = np.random.default_rng(7)
    queries = [" ".join(qrng.choice(vocab[:5000], size=3)) for _ in range(20)]
    queries += [w[:-1] + "x" for w in qrng.choice(vocab[:5000], size=10)]        # typos
    queries += [" ".join(words(qrng, 200))[:499] for _ in range(5)]              # long junk
    lat, work = [], []
    for q in queries:
        t0 = time.perf_counter()
        r = http.get("/v1/learnwares", params={"q": q})
        lat.append(time.perf_counter() - t0)
        assert r.status_code == 200
        work.append(state.market.text.last_stats.postings_scanned)
    lat_ms = sorted(x * 1000 for x in lat)
    print(f"{n:6d} learnwares (fill {fill:.0f} s): first query incl. index build {build:.2f} s "
          f"(RSS +{index_mb:.0f} MB); "
          f"query latency median {statistics.median(lat_ms):.1f} ms, p95 "
          f"{lat_ms[int(0.95 * len(lat_ms)) - 1]:.1f} ms, max {lat_ms[-1]:.1f} ms; "
          f"postings scanned max {max(work)}")
    if n <= 1000:
        b = cpu(lambda: old_text_search(store, queries[0]))
        print(f"{n:6d} learnwares: old scan, one 3-word query: {b:.2f} CPU s")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="1000,10000")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        os.environ["LWM_CONFIG_DIR"] = str(root / "config")  # pinned keys stay in here
        attacks(root)
        for n in (int(s) for s in args.sizes.split(",") if s):
            scale(root, n)


if __name__ == "__main__":
    main()
