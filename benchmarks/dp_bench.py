"""Differentially private specs (issue #19), measured: privacy, search quality, small data.

1. **Membership inference** (the attack of tests/test_rkme_privacy.py:
   ``client_sdk.rkme.membership_inference_auc``, "x was a training row if it lies near a reduced
   point"): the 5-component mixture of that test, d = 5, train and fresh rows from the same
   distribution, n = 30, 100, 1,000; the default spec (refused below 50 rows) and DP specs at
   epsilon 0.5, 1, 4 (delta 1e-5; epsilon 4 needs the non-DP minimum of 50 rows). Mean AUC
   (+- its standard deviation across data sets) over max(``--trials``, 3000 / n) data sets
   (and, for DP, fresh noise each time).
2. **Search quality on txhousing** (the demo's data, splits, users and developer models:
   client_sdk/demo/): every developer with at least 50 training rows publishes a spec under
   the island's base kernel (declared scales of the first developer); each held-out user's
   requirement (non-DP, from all its inputs, as in the demo) ranks the specs by exact MMD; top-1
   closure = (market_mean - top1) / (market_mean - oracle) of the mean test RMSEs. Default specs
   vs DP specs at epsilon = 1 (mean and spread over ``--trials`` noise draws). DP bounds are
   public ranges: month sin/cos [-1, 1], year [2000, 2016], log median price [10.5, 13],
   log1p listings [0, 11], inventory [0, 30] months, d1..d3 [-2, 2].
3. **A 30-row developer is found**: a synthetic island of ``--devs`` developers, each with 30
   rows of its own distribution (d = 5, centres uniform in [-6, 6]^5, unit noise), each
   publishes a DP spec at epsilon = 1 (the default spec refuses 30 rows); a user with 200 rows
   from developer i's distribution searches (non-DP requirement); share of users whose top-1
   is their developer (chance: 1 / devs).

Run: OMP_NUM_THREADS=1 .venv/bin/python benchmarks/dp_bench.py [--trials 5] [--quick]
Goals (issue #19): AUC <= 0.55 at epsilon = 1 for every n; top-1 closure at epsilon = 1
within 10 points of the default's.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from client_sdk.demo import datasets  # noqa: E402
from client_sdk.demo.run import developer_model  # noqa: E402
from client_sdk.rkme import MIN_ROWS, RKMESpec, membership_inference_auc  # noqa: E402
from learnware_core.island import base_kernel, robust_scales  # noqa: E402
from learnware_core.kernels import mmd2  # noqa: E402
from learnware_core.metrics import evaluate  # noqa: E402
from protocol.errors import DataError  # noqa: E402

EPSILONS = (0.5, 1.0, 4.0)
DELTA = 1e-5
TX_BOUNDS = (np.array([-1, -1, 2000, 10.5, 0, 0, -2, -2, -2], float),
             np.array([1, 1, 2016, 13, 11, 30, 2, 2, 2], float))


def mixture(n, d, seed=0, components=5, spread=3.0):
    """The data of tests/test_rkme_privacy.py."""
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(99 + d).normal(scale=spread, size=(components, d))
    return centres[rng.integers(components, size=n)] + rng.normal(size=(n, d))


def membership(trials: int, sizes=(30, 100, 1000), d: int = 5) -> None:
    print("\n== membership inference AUC (mixture data, d = 5; 0.5 = chance) ==")
    bounds = (-12.0, 12.0)  # public: the mixture's documented range
    gamma, scales = base_kernel(np.full(d, 6.0), d)  # scales from the bounds: (hi - lo) / 4
    head = f"{'n':>6} | {'default':>15} | " + " | ".join(f"eps = {e:<9g}" for e in EPSILONS)
    print(head)
    print("-" * len(head))
    for n in sizes:
        cells = []
        for eps in (None,) + EPSILONS:
            aucs = []
            # small n: an AUC over 2 x 30 rows has a std of ~0.07; more data sets to average
            for t in range(max(trials, 3000 // n)):
                X = mixture(2 * n, d, seed=1000 * t + n)
                train, fresh = X[:n], X[n:]
                try:
                    if eps is None:
                        spec = RKMESpec.fit(train, random_state=t)
                    else:
                        spec = RKMESpec.fit(train, epsilon=eps, delta=DELTA, bounds=bounds,
                                            gamma=gamma, scales=scales, random_state=t)
                except DataError as exc:
                    aucs = f"refused ({exc.details.get('min_rows')} rows min)"
                    break
                aucs.append(membership_inference_auc(spec, train, fresh))
            cells.append(aucs if isinstance(aucs, str)
                         else f"{np.mean(aucs):.3f} +- {np.std(aucs):.3f}")
        print(f"{n:>6} | {cells[0]:>15} | " + " | ".join(f"{c:<15}" for c in cells[1:]))


def txhousing(trials: int, seed: int = 0, quick: bool = False) -> None:
    print("\n== txhousing: top-1 closure of default vs DP (epsilon = 1) specs ==")
    t0 = time.perf_counter()
    island = datasets.load_txhousing()
    users, developers = datasets.choose_users(island, n_users=10, random_state=seed)
    splits = datasets.split_island(island, test_size=24, random_state=seed)
    feats = island.feature_names
    devs = [d for d in developers if len(splits[d].y_train) >= MIN_ROWS]
    if quick:
        devs = devs[:12]
    Xd = {d: splits[d].X_train[feats].to_numpy() for d in devs}
    models = {d: developer_model("regression", "rmse", Xd[d], splits[d].y_train, True, seed)
              for d in devs}
    gamma, scales = base_kernel(robust_scales(Xd[devs[0]]), len(feats))
    specs = {d: RKMESpec.fit(Xd[d], k=max(5, min(100, len(Xd[d]) // 5)), gamma=gamma,
                             scales=scales, random_state=seed) for d in devs}
    reqs, scores = {}, {}
    for u in users:
        sp = splits[u]
        X_all = np.vstack([sp.X_train[feats].to_numpy(), sp.X_test[feats].to_numpy()])
        reqs[u] = RKMESpec.fit(X_all, k=100, gamma=gamma, scales=scales, random_state=seed)
        X_test = sp.X_test[feats].to_numpy()
        scores[u] = {d: float(evaluate("rmse", sp.y_test, models[d].predict(X_test)))
                     for d in devs}

    def closure(spec_of) -> tuple[float, float]:
        top1, mean, oracle = [], [], []
        for u in users:
            mmd = {d: mmd2(reqs[u].z, reqs[u].beta, spec_of[d].z, spec_of[d].beta, gamma,
                           scales) for d in devs}
            best = min(devs, key=lambda d: (mmd[d], devs.index(d)))
            top1.append(scores[u][best])
            mean.append(np.mean(list(scores[u].values())))
            oracle.append(min(scores[u].values()))
        m, o, t = np.mean(mean), np.mean(oracle), np.mean(top1)
        return float((m - t) / (m - o)), float(t)

    base_c, base_t = closure(specs)
    dp_c, dp_t = [], []
    for t in range(trials):
        dp_specs = {d: RKMESpec.fit(Xd[d], epsilon=1.0, delta=DELTA, bounds=TX_BOUNDS,
                                    gamma=gamma, scales=scales, random_state=seed + t)
                    for d in devs}
        c, r = closure(dp_specs)
        dp_c.append(c)
        dp_t.append(r)
    print(f"{len(devs)} developers (>= {MIN_ROWS} training rows), {len(users)} users, "
          f"base kernel; {time.perf_counter() - t0:.0f} s")
    print(f"default specs      : top-1 RMSE {base_t:.4f}, closure {100 * base_c:5.1f}%")
    print(f"DP specs, eps = 1  : top-1 RMSE {np.mean(dp_t):.4f}, closure "
          f"{100 * np.mean(dp_c):5.1f}% +- {100 * np.std(dp_c):.1f} (over {trials} noise draws; "
          f"min {100 * min(dp_c):.1f}%, max {100 * max(dp_c):.1f}%)")
    print(f"difference         : {100 * (np.mean(dp_c) - base_c):+.1f} points")


def small_developers(trials: int, n_devs: int, d: int = 5, rows: int = 30) -> None:
    print(f"\n== {rows}-row developers with DP specs (epsilon = 1): is each found by its user? ==")
    hits, hits_default = [], []
    gamma, scales = base_kernel(np.ones(d), d)
    bounds = (-10.0, 10.0)
    for t in range(trials):
        rng = np.random.default_rng(500 + t)
        centres = rng.uniform(-6, 6, size=(n_devs, d))
        specs = [RKMESpec.fit(c + rng.normal(size=(rows, d)), epsilon=1.0, delta=DELTA,
                              bounds=bounds, gamma=gamma, scales=scales, random_state=t)
                 for c in centres]
        for i, c in enumerate(centres):
            req = RKMESpec.fit(c + rng.normal(size=(200, d)), k=50, gamma=gamma, scales=scales,
                               random_state=i)
            mmd = [mmd2(req.z, req.beta, s.z, s.beta, gamma, scales) for s in specs]
            hits.append(int(np.argmin(mmd)) == i)
        try:
            RKMESpec.fit(centres[0] + rng.normal(size=(rows, d)), gamma=gamma, scales=scales)
        except DataError:
            hits_default.append("refused")
    print(f"{n_devs} developers x {trials} islands: top-1 = own developer for "
          f"{100 * np.mean(hits):.1f}% of users (chance {100 / n_devs:.1f}%); the default spec: "
          f"{hits_default[0] if hits_default else 'accepted'}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--trials", type=int, default=5)
    ap.add_argument("--devs", type=int, default=40)
    ap.add_argument("--quick", action="store_true", help="fewer developers (a smoke run)")
    ap.add_argument("--part", choices=("all", "mia", "txhousing", "small"), default="all")
    args = ap.parse_args()
    if args.part in ("all", "mia"):
        membership(args.trials)
    if args.part in ("all", "txhousing"):
        txhousing(args.trials, quick=args.quick)
    if args.part in ("all", "small"):
        small_developers(args.trials, args.devs)


if __name__ == "__main__":
    main()
