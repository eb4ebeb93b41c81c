"""Reuse benchmark: 10,000 user rows, 3 learnwares of a 3-cluster task.

Task: three Gaussian clusters in d = 10 (centres ``sep`` apart from the origin); inside each
cluster the 3-class label is the argmax of a cluster-specific random linear map (3% label noise).
Learnware c is a LogisticRegression trained on 2,000 rows of cluster c only; its RKME spec is
``RKMESpec.fit(X_c, k=100, gamma=0.1)``. The user's 10,000 rows come equally from the three
clusters. "Oracle" routes every row to the learnware of the cluster it was drawn from.

Prints predict time (median over ``--repeats``) and accuracy for Averaging, JobSelector and
oracle routing, next to the reference numbers of the ``learnware`` package's reusers (measured by
the project on its own 3-cluster task; not re-run here, and that task is not this one -- compare
accuracy *gaps to the oracle*, not raw accuracies).

    OMP_NUM_THREADS=1 python benchmarks/reuse_bench.py [--rows 10000] [--repeats 5] [--sep 4]
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sklearn.linear_model import LogisticRegression  # noqa: E402

from client_sdk.learnware import Learnware  # noqa: E402
from client_sdk.reuse import Averaging, JobSelector  # noqa: E402
from client_sdk.rkme import RKMESpec  # noqa: E402

REFERENCE = {  # learnware package, 10,000 rows, 3 learnwares, 3-cluster task
    "Averaging": (0.0025, 0.748),
    "JobSelector": (115.0, 0.965),
    "oracle routing": (None, 0.965),
    "Bayes routing": (None, None),
}


def make_task(d=10, n_train=2000, n_user=10_000, sep=4.0, noise=0.03, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(3, d))
    centers *= sep / np.linalg.norm(centers, axis=1, keepdims=True)
    W = rng.normal(size=(3, 3, d))

    def sample(c, n):
        X = centers[c] + rng.normal(size=(n, d))
        y = np.argmax((X - centers[c]) @ W[c].T, axis=1)
        flip = rng.random(n) < noise
        y[flip] = rng.integers(0, 3, flip.sum())
        return X, y

    learnwares = []
    spec_seconds = 0.0
    for c in range(3):
        X, y = sample(c, n_train)
        model = LogisticRegression(max_iter=1000).fit(X, y)
        t0 = time.perf_counter()
        spec = RKMESpec.fit(X, k=100, gamma=0.1)
        spec_seconds += time.perf_counter() - t0
        learnwares.append(Learnware(f"cluster-{c}", model, spec,
                                    {"task_type": "classification", "classes": [0, 1, 2]}))
    sizes = [n_user // 3 + (1 if c < n_user % 3 else 0) for c in range(3)]
    parts = [sample(c, m) for c, m in enumerate(sizes)]
    X_user = np.vstack([p[0] for p in parts])
    y_user = np.concatenate([p[1] for p in parts])
    owner = np.concatenate([np.full(m, c) for c, m in enumerate(sizes)])
    return learnwares, X_user, y_user, owner, spec_seconds, centers


def oracle_predict(learnwares, X, owner):
    out = np.empty(X.shape[0], dtype=np.int64)
    for c, lw in enumerate(learnwares):
        rows = owner == c
        out[rows] = lw.model.predict(X[rows])
    return out


def timed(fn, repeats):
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def run(rows, repeats, sep, seed, compare_selectors):
    learnwares, X, y, owner, spec_s, centers = make_task(n_user=rows, sep=sep, seed=seed)
    print(f"task: {rows} user rows, d={X.shape[1]}, 3 learnwares (LogisticRegression per "
          f"cluster), cluster separation {sep}, seed {seed}; RKME fits took {spec_s:.2f} s; "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}; median of {repeats} repeats")
    results = {}

    av = Averaging(learnwares).fit(X)
    t, pred = timed(lambda: av.predict(X), repeats)
    results["Averaging"] = (t, float(np.mean(pred == y)), None)

    fit_times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        js = JobSelector(learnwares, random_state=seed).fit(X)
        fit_times.append(time.perf_counter() - t0)
    t, pred = timed(lambda: js.predict(X), repeats)
    route_acc = float(np.mean(js.route(X) == owner))
    results["JobSelector"] = (t, float(np.mean(pred == y)),
                              f"fit {statistics.median(fit_times):.2f} s, routing accuracy "
                              f"{route_acc:.4f}")

    t, pred = timed(lambda: oracle_predict(learnwares, X, owner), repeats)
    results["oracle routing"] = (t, float(np.mean(pred == y)), None)

    # The best any label-free router can do: the true cluster densities (equal spreads, so the
    # nearest centre), which the learnwares' specs only approximate.
    bayes = np.argmin(((X[:, None, :] - centers[None]) ** 2).sum(axis=2), axis=1)
    pred = oracle_predict(learnwares, X, bayes)
    results["Bayes routing"] = (None, float(np.mean(pred == y)),
                                f"true densities, routing accuracy "
                                f"{np.mean(bayes == owner):.4f}")

    print(f"\n{'reuser':<16}{'predict s':>11}{'accuracy':>10}   {'reference s':>11}"
          f"{'ref acc':>9}   notes")
    for name, (t, acc, note) in results.items():
        ref_t, ref_acc = REFERENCE[name]
        ref_t_s = "-" if ref_t is None else f"{ref_t:g}"
        ref_acc_s = "-" if ref_acc is None else f"{ref_acc:.3f}"
        t_s = "-" if t is None else f"{t:.4f}"
        print(f"{name:<16}{t_s:>11}{acc:>10.4f}   {ref_t_s:>11}{ref_acc_s:>9}   {note or ''}")
    js_t, js_acc, _ = results["JobSelector"]
    oracle_acc = results["oracle routing"][1]
    bayes_acc = results["Bayes routing"][1]
    print(f"\nJobSelector: {js_t:.4f} s for {rows} rows (goal < 2 s; reference 115 s, "
          f"{115.0 / js_t:,.0f}x faster); accuracy gap to oracle {oracle_acc - js_acc:+.4f} "
          f"(reference gap +0.000), to Bayes routing {bayes_acc - js_acc:+.4f}")

    if compare_selectors:
        from sklearn.discriminant_analysis import QuadraticDiscriminantAnalysis
        from sklearn.ensemble import HistGradientBoostingClassifier
        from sklearn.neighbors import KNeighborsClassifier
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import PolynomialFeatures, StandardScaler
        selectors = {
            "QDA (default)": make_pipeline(StandardScaler(),
                                           QuadraticDiscriminantAnalysis(reg_param=0.1)),
            "logistic": make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)),
            "quadratic logistic": make_pipeline(StandardScaler(), PolynomialFeatures(2),
                                                StandardScaler(),
                                                LogisticRegression(max_iter=2000)),
            "15-NN": make_pipeline(StandardScaler(), KNeighborsClassifier(15)),
            "HistGradientBoosting": HistGradientBoostingClassifier(),
        }
        print(f"\nselector comparison (n_herd=500):\n{'selector':<22}{'fit s':>8}"
              f"{'predict s':>11}{'routing':>9}{'accuracy':>10}")
        for name, sel in selectors.items():
            t0 = time.perf_counter()
            js = JobSelector(learnwares, selector=sel, random_state=seed).fit(X)
            fit_s = time.perf_counter() - t0
            t, pred = timed(lambda: js.predict(X), repeats)
            print(f"{name:<22}{fit_s:>8.2f}{t:>11.4f}{np.mean(js.route(X) == owner):>9.4f}"
                  f"{np.mean(pred == y):>10.4f}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=10_000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--sep", type=float, nargs="+", default=[4.0, 3.0],
                    help="cluster separation(s); 3 overlaps the clusters noticeably")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--compare-selectors", action="store_true")
    args = ap.parse_args(argv)
    for i, sep in enumerate(args.sep):
        if i:
            print("\n" + "-" * 88 + "\n")
        run(args.rows, args.repeats, sep, args.seed, args.compare_selectors)


if __name__ == "__main__":
    main()
