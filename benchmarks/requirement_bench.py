"""What a search costs as the requirement grows (issue 13 item 3).

An island of N learnwares (k = 50, d = 10; written straight into the store, as in
``search_bench.py``) is searched through the full signed request path (Flask test client:
envelope checks, schema, search, signed answer) with requirements of k_q reduced points:
100 (the SDK's default), 1,000, the protocol's cap (``protocol.limits.MAX_SPEC_POINTS``) and
40,000 (past the cap: the market must refuse it at the schema, before any kernel sum).

Run: OMP_NUM_THREADS=1 .venv/bin/python benchmarks/requirement_bench.py [--n 200] [--trials 3]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.search_bench import D, SEMANTIC, centers, fill_island  # noqa: E402
from client_sdk import Identity  # noqa: E402
from market_server import ServerConfig, create_app  # noqa: E402
from protocol.encoding import encode_array  # noqa: E402
from protocol.envelope import seal  # noqa: E402
from learnware_core.island import base_kernel  # noqa: E402

QUERY = {k: SEMANTIC[k] for k in ("data_type", "task_type", "input_features", "target",
                                  "objective")}


def requirement(n_learnwares: int, k_q: int, seed: int) -> dict:
    """k_q points around one learnware's cluster, uniform weights (built directly: the SDK
    itself refuses to fit more than the cap)."""
    gamma, scales = base_kernel(np.ones(D), D)
    rng = np.random.default_rng(seed)
    z = centers(n_learnwares)[seed % n_learnwares] + rng.normal(size=(k_q, D))
    return {"z": encode_array(z), "beta": encode_array(np.full(k_q, 1.0 / k_q)),
            "gamma": gamma, "scales": encode_array(scales), "n_features": D}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=200, help="learnwares on the island")
    ap.add_argument("--trials", type=int, default=3)
    ap.add_argument("--k", type=int, nargs="*", default=[100, 1000, 2000, 40000])
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        fill_island(Path(tmp), args.n)
        app = create_app(ServerConfig(data_dir=Path(tmp), refine_at=()))
        http = app.test_client()
        me = Identity.generate()
        warm = seal(me, "search", {"semantic": QUERY, "max_results": 5,
                                   "requirement": requirement(args.n, 50, 0)}, validate=False)
        assert http.post("/v1/search", data=warm).status_code == 200
        print(f"island of {args.n} learnwares (k=50, d={D}); search through the signed path")
        for k_q in args.k:
            req = requirement(args.n, k_q, 1)
            times, statuses = [], set()
            for _ in range(args.trials if k_q <= 2000 else 1):
                data = seal(me, "search", {"semantic": QUERY, "max_results": 5,
                                           "requirement": req}, validate=False)
                t0 = time.perf_counter()
                r = http.post("/v1/search", data=data)
                times.append(time.perf_counter() - t0)
                statuses.add(r.status_code)
            print(f"k_q={k_q:>6}  request {len(data) / 1e6:6.2f} MB  status {sorted(statuses)}  "
                  f"median {statistics.median(times) * 1000:9.1f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
