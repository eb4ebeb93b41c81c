"""Does the market's island-kernel rule pick better models? An in-process study on real data.

The Texas home-sales island (``client_sdk.demo.load_txhousing``): one developer per city, a seeded
set of held-out cities plays the users. No server: the same numerics the market runs.

Per seed:

* every city is split by time: past = train, the last 24 months = test (never seen by anyone
  until scoring);
* the base kernel is what the first publisher declares (``learnware_core.island.robust_scales`` of its
  own past features, ``gamma = 1/(2d)``); every developer trains a typical model
  (``HistGradientBoostingRegressor(max_iter=100)``) on its past and fits an RKME (``k = 50``,
  capped at n/5 by the SDK) under the base kernel. Cities with fewer than 50 past rows cannot
  publish an RKME (the SDK refuses) and take no part;
* kernels compared (all MMDs recomputed on the stored specs under each kernel):
  ``declared`` -- the base kernel; ``uniform`` -- island spread of each feature, equal weights
  (the refined rule with all relevances equal); ``refined`` -- ``market_server.island_kernel.
  refine_kernel`` (default rule); ``lags-only`` -- only d1, d2, d3 count (chosen by hand with
  hindsight: the "cheating" reference);
* each user has ``n`` unlabelled rows of its past (``all`` of them, or ``50`` drawn at random),
  fits its RKME under the kernel, and the market ranks learnwares by MMD. Scored on the user's
  24 test months: the top-1 learnware's rmse against ``market_mean`` (mean rmse of all
  learnwares) and ``oracle`` (the best learnware in hindsight);
  ``gap closed = (market_mean - top1) / (market_mean - oracle)``. ``mixture``: weights from the
  simplex QP of the user's embedding onto the learnwares' embeddings (``learnware_core.simplex``),
  prediction = weighted mean of the models. ``avg-all``: the plain mean of every model (no
  search), for reference.

``--design-check`` runs the rule's variants on developer data only (each developer's past split
again in time: earlier part to train and fit, its last 24 past months to score; each developer in
turn plays the user against the others). That is how the rule's options were chosen -- nothing
about users' test months enters the rule.

``own-model*`` is a diagnostic that uses the user's labels: the model the user would train on its
own labelled past, scored like a top-1. If it does not beat the market mean, the most similar data
set does not make the best model on this island and no similarity search can close much of the
gap with a single model. ``--model ridge`` gives every developer a scaled ridge regression instead
(models that extrapolate, so similarity matters).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/island_kernel_study.py [--seeds 0 1 2]
        [--n all 50] [--model hgb|ridge] [--design-check]

Runtime on one core: about 4 minutes for the default 5 seeds, 10 minutes for --design-check
with 3 seeds.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from sklearn.ensemble import HistGradientBoostingRegressor  # noqa: E402
from sklearn.linear_model import RidgeCV  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

from client_sdk.demo import choose_users, load_txhousing, split_group  # noqa: E402
from client_sdk.demo.datasets import GroupData  # noqa: E402
from client_sdk.rkme import MIN_ROWS, RKMESpec  # noqa: E402
from market_server.island_kernel import base_kernel, refine_kernel  # noqa: E402
from learnware_core.island import robust_scales  # noqa: E402
from learnware_core.kernels import embedding_inner  # noqa: E402
from learnware_core.simplex import simplex_qp  # noqa: E402

TEST_MONTHS = 24
K_POINTS = 50
LAGS = ("d1", "d2", "d3")


MODEL = "hgb"


def developer_model(X, y):
    """What a typical developer trains (``--model``): gradient boosting, or a scaled ridge."""
    if MODEL == "ridge":
        return make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-2, 3, 11))).fit(X, y)
    return HistGradientBoostingRegressor(max_iter=100, random_state=0).fit(X, y)


def rmse(a, b) -> float:
    return float(np.sqrt(np.mean((np.asarray(a) - np.asarray(b)) ** 2)))


def fixed_relevance_kernel(info: dict, feature_names, keep, floor=1e-8):
    """Scales = island spread / sqrt(d * r) with r uniform on ``keep`` (the hand-picked kernel)."""
    d = len(feature_names)
    rel = np.array([1.0 if f in keep else floor for f in feature_names])
    rel /= rel.sum()
    scales = info["spread"] / np.sqrt(d * rel)
    pool = info["pool"]
    rng = np.random.default_rng(0)
    i, j = rng.integers(0, len(pool), 20000), rng.integers(0, len(pool), 20000)
    med = np.median((((pool[i] - pool[j]) / scales) ** 2).sum(1)[i != j])
    return 1.0 / med, scales


class Island:
    """Developers of one run: models, specs (base kernel) and the kernels under study."""

    def __init__(self, data: dict, feature_names, seed: int, first: str, k: int = K_POINTS,
                 variants: dict | None = None):
        # data: name -> (X_train, y_train) of each developer
        self.names = sorted(data)
        self.features = list(feature_names)
        d = len(self.features)
        declared = robust_scales(data[first][0])  # the first publisher declares its spread
        self.gamma0, self.scales0 = base_kernel(declared, d)
        self.models, self.specs = {}, {}
        for c in self.names:
            X, y = data[c]
            self.models[c] = developer_model(X, y)
            self.specs[c] = RKMESpec.fit(X, k=k, gamma=self.gamma0, scales=self.scales0,
                                         random_state=seed)
        lws = [(self.specs[c], self.models[c]) for c in self.names]
        self.kernels = {"declared": (self.gamma0, self.scales0)}
        t0 = time.perf_counter()
        g, s, info = refine_kernel(lws, self.scales0, "regression", random_state=seed,
                                   return_info=True)
        self.refine_seconds = time.perf_counter() - t0
        self.relevance = info["relevance"]
        self.kernels["refined"] = (g, s)
        g, s, uinfo = refine_kernel(lws, self.scales0, "regression", random_state=seed,
                                    relevance="uniform", return_info=True)
        self.kernels["uniform"] = (g, s)
        self.kernels["lags-only"] = fixed_relevance_kernel(_with_pool(uinfo, lws, seed),
                                                           self.features, LAGS)
        for name, kw in (variants or {}).items():
            self.kernels[name] = refine_kernel(lws, self.scales0, "regression",
                                               random_state=seed, **kw)

    def evaluate(self, X_user, X_test, y_test, market: list[str], seed: int, k: int = K_POINTS,
                 own=None):
        """Per kernel: (market_mean, oracle, top1, mixture, avg_all) rmse for one user.

        ``own`` = (X, y) of the user's labelled past: a diagnostic row ``own-model`` scores the
        model the user would train on it (its "top1"), the best a pure similarity search could
        hope for if the most similar data made the best model."""
        preds = np.array([self.models[c].predict(X_test) for c in market])
        errs = np.array([rmse(p, y_test) for p in preds])
        avg_all = rmse(preds.mean(0), y_test)
        out = {}
        if own is not None:
            e = rmse(developer_model(*own).predict(X_test), y_test)
            out["own-model*"] = (errs.mean(), errs.min(), e, np.nan, avg_all)
        for kname, (g, s) in self.kernels.items():
            user = RKMESpec.fit(X_user, k=k, gamma=g, scales=s, random_state=seed)
            specs = [self.specs[c].with_kernel(g, s) for c in market]
            mmd = np.array([user.mmd(sp) for sp in specs])
            top1 = errs[int(np.argmin(mmd))]
            G = np.array([[embedding_inner(a.z, a.beta, b.z, b.beta, g, s) for b in specs]
                          for a in specs])
            c = np.array([embedding_inner(user.z, user.beta, sp.z, sp.beta, g, s)
                          for sp in specs])
            w, _ = simplex_qp(G, c)
            mix = rmse(w @ preds, y_test)
            out[kname] = (errs.mean(), errs.min(), top1, mix, avg_all)
        return out


def _with_pool(info: dict, lws, seed: int) -> dict:
    """Pooled herded samples for the hand-picked kernel's median heuristic."""
    from learnware_core.kernels import herd
    rng = np.random.default_rng(seed)
    pool = np.vstack([herd(sp.z, sp.beta, sp.gamma, sp.scales, 200,
                           random_state=int(rng.integers(2**31))) for sp, _ in lws])
    return dict(info, pool=pool)


def summarize(rows: list[dict], kernels: list[str]) -> list[tuple]:
    table = []
    for kname in kernels:
        r = np.array([row[kname] for row in rows])  # users x (mean, oracle, top1, mix, avg)
        den = r[:, 0] - r[:, 1]
        gc_top = (r[:, 0] - r[:, 2]) / den
        gc_mix = (r[:, 0] - r[:, 3]) / den
        gc_avg = (r[:, 0] - r[:, 4]) / den
        table.append((kname, len(r), r[:, 0].mean(), r[:, 1].mean(), r[:, 2].mean(),
                      gc_top.mean(), gc_top.std(ddof=1) / np.sqrt(len(r)), np.median(gc_top),
                      (r[:, 0] - r[:, 2]).sum() / den.sum(),
                      r[:, 3].mean(), gc_mix.mean(), gc_avg.mean()))
    return table


def print_table(title: str, table: list[tuple]) -> None:
    print(f"\n{title}")
    print(f"{'kernel':<14}{'users':>6}{'mkt_mean':>9}{'oracle':>8}{'top1':>8}"
          f"{'gap_top1':>9}{'(se)':>7}{'median':>8}{'pooled':>8}{'mixture':>9}{'gap_mix':>8}"
          f"{'avg_all':>8}")
    for (k, n, mm, orc, top, gct, se, gcm, gcp, mix, gcx, gca) in table:
        mixs = "      -" if np.isnan(mix) else f"{mix:>9.4f}"
        gcxs = "       -" if np.isnan(gcx) else f"{gcx:>8.1%}"
        print(f"{k:<14}{n:>6}{mm:>9.4f}{orc:>8.4f}{top:>8.4f}{gct:>9.1%}{se:>7.1%}{gcm:>8.1%}"
              f"{gcp:>8.1%}{mixs:>9}{gcxs:>8}{gca:>8.1%}")
    print("gap_top1 = mean over user-runs of (market_mean - top1) / (market_mean - oracle), se its"
          " standard error; pooled = sum of numerators / sum of denominators; gap_mix the same for"
          " the QP mixture; avg_all = plain mean of all models. * = diagnostic, uses the user's"
          " labels.")


def run_study(seeds, n_users: int, n_modes, k: int) -> None:
    island = load_txhousing()
    splits = {c: split_group(g, TEST_MONTHS) for c, g in island.groups.items()}
    eligible = [c for c, s in splits.items() if len(s.y_train) >= MIN_ROWS]
    print(f"txhousing: {len(island.groups)} cities, {len(eligible)} with >= {MIN_ROWS} past rows "
          f"(can publish an RKME); test = last {TEST_MONTHS} months; {n_users} users per seed")
    rows = {n: [] for n in n_modes}
    kernels = None
    for seed in seeds:
        t0 = time.perf_counter()
        users, devs = choose_users(island, n_users, seed, eligible=eligible)
        first = devs[np.random.default_rng(seed + 1000).integers(len(devs))]
        isl = Island({c: (splits[c].X_train.to_numpy(), splits[c].y_train) for c in devs},
                     island.feature_names, seed, first, k)
        kernels = list(isl.kernels) + ["own-model*"]
        rel = ", ".join(f"{f}={r:.2f}" for f, r in zip(island.feature_names, isl.relevance))
        print(f"seed {seed}: {len(devs)} developers, users {users}; first publisher {first!r}; "
              f"refine {isl.refine_seconds:.1f}s; relevance {rel}")
        for n in n_modes:
            for u in users:
                s = splits[u]
                X = s.X_train.to_numpy()
                if n != "all":
                    X = X[np.random.default_rng(seed).permutation(len(X))[:int(n)]]
                rows[n].append(isl.evaluate(X, s.X_test.to_numpy(), s.y_test, devs, seed, k,
                                            own=(s.X_train.to_numpy(), s.y_train)))
        print(f"  ({time.perf_counter() - t0:.0f}s)")
    for n in n_modes:
        print_table(f"USERS' TEST MONTHS, n = {n} unlabelled past rows per user, seeds {list(seeds)}"
                    f" ({len(rows[n])} user-runs); gap = share of (market_mean - oracle) closed",
                    summarize(rows[n], kernels))


DESIGN_VARIANTS = {
    "r:between": dict(spread="between"),
    "r:own-perm": dict(permute="own"),
    "r:own-spread": dict(spread="own", permute="own"),
    "r:base-spread": dict(spread="base"),
    "r:gamma-base": dict(gamma_rule="base"),
    "r:floor0.001": dict(floor=0.001),
    "r:floor0.1": dict(floor=0.1),
}


def run_design_check(seeds, n_users: int, n_modes, k: int) -> None:
    """Developer data only: each developer's past, split again in time; LOO over developers."""
    island = load_txhousing()
    splits = {c: split_group(g, TEST_MONTHS) for c, g in island.groups.items()}
    eligible = [c for c, s in splits.items() if len(s.y_train) >= MIN_ROWS]
    rows = {n: [] for n in n_modes}
    kernels = None
    for seed in seeds:
        t0 = time.perf_counter()
        _, devs = choose_users(island, n_users, seed, eligible=eligible)
        inner = {}
        for c in devs:
            s = splits[c]
            g = GroupData(c, s.X_train, s.y_train, s.dates_train)
            if len(s.y_train) - TEST_MONTHS >= MIN_ROWS:
                inner[c] = split_group(g, TEST_MONTHS)
        names = sorted(inner)
        first = names[np.random.default_rng(seed + 1000).integers(len(names))]
        isl = Island({c: (inner[c].X_train.to_numpy(), inner[c].y_train) for c in names},
                     island.feature_names, seed, first, k, variants=DESIGN_VARIANTS)
        kernels = list(isl.kernels)
        for n in n_modes:
            for u in names:
                s = inner[u]
                X = s.X_train.to_numpy()
                if n != "all":
                    X = X[np.random.default_rng(seed).permutation(len(X))[:int(n)]]
                market = [c for c in names if c != u]
                rows[n].append(isl.evaluate(X, s.X_test.to_numpy(), s.y_test, market, seed, k))
        print(f"design seed {seed}: {len(names)} developers ({time.perf_counter() - t0:.0f}s)")
    for n in n_modes:
        print_table(f"DESIGN CHECK (developers' own past only), n = {n}, seeds {list(seeds)} "
                    f"({len(rows[n])} pseudo-user runs)", summarize(rows[n], kernels))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--users", type=int, default=10)
    ap.add_argument("--k", type=int, default=K_POINTS)
    ap.add_argument("--n", nargs="+", default=["all", "50"])
    ap.add_argument("--model", choices=["hgb", "ridge"], default="hgb",
                    help="developers' model (default: HistGradientBoostingRegressor(max_iter=100))")
    ap.add_argument("--design-check", action="store_true")
    args = ap.parse_args(argv)
    global MODEL
    MODEL = args.model
    print(f"developers' model: {args.model}")
    t0 = time.perf_counter()
    if args.design_check:
        run_design_check(args.seeds, args.users, args.n, args.k)
    else:
        run_study(args.seeds, args.users, args.n, args.k)
    print(f"\ntotal {time.perf_counter() - t0:.0f}s")


if __name__ == "__main__":
    main()
