"""The main job: a market of per-city sales models helps new users (the seed's Figure 5).

Every developer (one per city) trains on its own past and publishes through ``MarketClient``;
held-out cities play the users. Each user holds the inputs of all its months (unlabelled) and the
labels of only its ``n`` most recent past months, and wants predictions for its last
``test_months`` months. Methods that use no labels (``rkme_top1``, ``averaging``,
``job_selector``) do not depend on ``n``; ``scratch`` and the label-using reuse methods do. The
server runs as its own process on loopback and is reached only through the SDK.
"""
from __future__ import annotations

import csv
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from protocol.identity import Identity
from learnware_core.metrics import evaluate, greater_is_better

from ..client import MarketClient
from ..disclosure import MetricBudget
from ..rkme import MIN_ROWS
from ..reuse import Averaging, EnsemblePruning, FeatureAugment, JobSelector
from . import datasets
from .server import ServerProcess

N_GRID = (0, 5, 10, 20, 50, 100, 200)
METHODS = ("scratch", "market_mean", "oracle", "rkme_top1", "averaging", "job_selector",
           "feature_augment", "ensemble_pruning", "anchors")


@dataclass
class IslandSetup:
    name: str
    load: callable
    n_users: int
    test_size: float | int


ISLANDS = {"txhousing": IslandSetup("txhousing", datasets.load_txhousing, 10, 24),
           "vote": IslandSetup("vote", datasets.load_vote, 10, 0.3)}


def _progress(it, desc: str, enabled: bool, total: int | None = None):
    from tqdm.auto import tqdm
    return tqdm(it, desc=desc, total=total, disable=None if enabled else True, leave=False)


def _candidates(task: str, random_state: int):
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
    from sklearn.linear_model import LogisticRegression, RidgeCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    if task == "regression":
        return [make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-2, 3, 12))),
                HistGradientBoostingRegressor(max_iter=150, learning_rate=0.05,
                                              min_samples_leaf=10, random_state=random_state)]
    return [make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=2000)),
            HistGradientBoostingClassifier(max_iter=150, learning_rate=0.05,
                                           min_samples_leaf=20, random_state=random_state)]


#: developer models already fitted in this process, by everything the fit depends on: the
#: heterogeneous scenario that follows the main job fits the developers who keep every feature
#: on the very same rows with the same seed (bounded: the demo holds a few dozen per island)
_FITTED: dict[str, object] = {}
_FITTED_MAX = 512


def _fit_key(task, objective, X, y, time_ordered, random_state) -> str:
    import hashlib
    h = hashlib.sha256(repr((task, objective, bool(time_ordered), int(random_state))).encode())
    for a in (np.ascontiguousarray(X), np.ascontiguousarray(y)):
        h.update(repr((a.dtype.str, a.shape)).encode())
        h.update(a.tobytes())
    return h.hexdigest()


def developer_model(task: str, objective: str, X: np.ndarray, y: np.ndarray,
                    time_ordered: bool, random_state: int = 0):
    """What a careful developer does with its own rows: pick a linear model or gradient
    boosting by validation on its own most recent rows (or a seeded holdout), then refit.
    The same inputs give the same (deterministic) fit, so a second call reuses the first."""
    key = _fit_key(task, objective, X, y, time_ordered, random_state)
    if key not in _FITTED:
        if len(_FITTED) >= _FITTED_MAX:
            _FITTED.clear()
        _FITTED[key] = _fit_developer_model(task, objective, X, y, time_ordered,
                                            random_state)
    return _FITTED[key]


def _fit_developer_model(task, objective, X, y, time_ordered, random_state):
    from sklearn.base import clone
    n = len(y)
    n_val = max(12, n // 5)
    if time_ordered:
        tr, va = np.arange(n - n_val), np.arange(n - n_val, n)
    else:
        perm = np.random.default_rng(random_state).permutation(n)
        tr, va = perm[n_val:], perm[:n_val]
    sign = -1.0 if greater_is_better(objective) else 1.0
    best, best_loss = None, np.inf
    for cand in _candidates(task, random_state):
        try:
            m = clone(cand).fit(X[tr], y[tr])
            loss = sign * float(evaluate(objective, y[va], m.predict(X[va])))
        except ValueError:
            continue
        if loss < best_loss:
            best, best_loss = cand, loss
    return clone(best).fit(X, y)


def scratch_model(task: str, X: np.ndarray, y: np.ndarray, random_state: int = 0):
    """A sensible model from the user's n rows only (None when it cannot be fitted)."""
    from sklearn.linear_model import LogisticRegressionCV, RidgeCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.dummy import DummyClassifier
    if task == "regression":
        model = make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-2, 3, 12)))
        return model.fit(X, y)
    classes, counts = np.unique(y, return_counts=True)
    if len(classes) < 2 or counts.min() < 2:
        return DummyClassifier(strategy="most_frequent").fit(X, y)
    cv = int(min(5, counts.min()))
    model = make_pipeline(StandardScaler(), LogisticRegressionCV(Cs=8, cv=cv, max_iter=2000))
    return model.fit(X, y)


def run_island(setup: IslandSetup, workdir: Path, *, seed: int, quick: bool,
               progress: bool, refine: bool = True) -> list[dict]:
    island = setup.load()
    task, objective = island.task, island.objective
    users, developers = datasets.choose_users(island, n_users=setup.n_users, random_state=seed)
    if quick:
        users = users[:4]
    splits = datasets.split_island(island, test_size=setup.test_size, random_state=seed)
    features = island.feature_names
    rows: list[dict] = []
    server_args = [] if refine else ["--refine-at", "none"]
    # every simulated developer and user of the experiment is on loopback: one address
    with ServerProcess(workdir / f"market-{setup.name}", extra_args=server_args,
                       address_limits=False) as server:
        # --- developers publish --------------------------------------------------------
        ids, too_small = [], []
        for name in _progress(developers, f"{setup.name}: developers publish", progress):
            sp = splits[name]
            if len(sp.y_train) < MIN_ROWS:
                too_small.append(name)  # an RKME of so few rows would expose them: not published
                continue
            me = Identity.generate()
            with MarketClient(server.url, me, cache_dir=workdir / "dev-cache",
                              market_key=server.market_key) as dev:
                model = developer_model(task, objective, sp.X_train[features].to_numpy(),
                                        sp.y_train, island.time_ordered, seed)
                sem = datasets.semantic_for(island, name=f"{island.name} model of {name}",
                                            description=f"{island.description} Trained on "
                                                        f"{name}.")
                k = max(5, min(100, len(sp.y_train) // 5))
                ids.append(dev.publish(model, sp.X_train[features], sem, k=k,
                                       random_state=seed))
        print(f"{setup.name}: {len(ids)} learnwares published"
              + (f"; {len(too_small)} developer(s) with fewer than {MIN_ROWS} training rows "
                 f"cannot publish an RKME ({', '.join(too_small)})" if too_small else ""))
        # --- users -------------------------------------------------------------------------
        user_sem = datasets.semantic_for(island, name=f"{island.name} user")
        with MarketClient(server.url, Identity.generate(), market_key=server.market_key,
                          cache_dir=workdir / "user-cache") as market:
            market_lws = {lid: market.download(lid) for lid in ids}
            for name in _progress(users, f"{setup.name}: users", progress):
                rows.extend(run_user(market, market_lws, island, splits[name], user_sem,
                                     seed=seed, quick=quick))
    return rows


def run_user(market: MarketClient, market_lws: dict, island, sp, sem: dict, *, seed: int,
             quick: bool) -> list[dict]:
    task, objective, features = island.task, island.objective, island.feature_names
    X_past, y_past = sp.X_train[features].to_numpy(), sp.y_train
    X_test, y_test = sp.X_test[features].to_numpy(), sp.y_test
    X_all = np.vstack([X_past, X_test])  # the user's own inputs, unlabelled

    def score(pred) -> float:
        return float(evaluate(objective, y_test, pred))

    better = max if greater_is_better(objective) else min
    out: list[dict] = []

    def add(n, method, value):
        out.append({"island": island.name, "user": sp.name, "n_labelled": n, "method": method,
                    "metric": objective, "value": value})

    lw_scores = {lid: score(lw.model.predict(X_test)) for lid, lw in market_lws.items()}
    market_mean = float(np.mean(list(lw_scores.values())))
    oracle = better(lw_scores.values())
    res = market.search(X_all, sem, max_results=5, random_state=seed)
    top = [market_lws[m.learnware_id] for m in res.single]
    mix_lws = ([market_lws[i] for i in res.mixture.learnware_ids] if res.mixture else top[:1])
    mix_w = res.mixture.weights if res.mixture else [1.0]
    rkme_top1 = lw_scores[res.single[0].learnware_id]
    averaging = score(Averaging(mix_lws, weights=mix_w).fit(X_all).predict(X_test))
    job = score(JobSelector(mix_lws, random_state=seed).fit(X_all).predict(X_test))
    grid = N_GRID if not quick else (0, 10, 50)
    rng = np.random.default_rng(seed)
    for n in grid:
        n_eff = min(n, len(y_past))
        add(n, "market_mean", market_mean)
        add(n, "oracle", float(oracle))
        add(n, "rkme_top1", rkme_top1)
        add(n, "averaging", averaging)
        add(n, "job_selector", job)
        if n == 0:
            continue
        # The n most recent labelled past rows (time series) / n random ones (no time order).
        idx = (np.arange(len(y_past))[-n_eff:] if island.time_ordered
               else rng.choice(len(y_past), size=n_eff, replace=False))
        Xn, yn = X_past[idx], y_past[idx]
        add(n, "scratch", score(scratch_model(task, Xn, yn, seed).predict(X_test)))
        pool = top[:5]
        add(n, "feature_augment", score(FeatureAugment(pool).fit(Xn, yn).predict(X_test)))
        add(n, "ensemble_pruning", score(EnsemblePruning(pool, random_state=seed)
                                         .fit(Xn, yn).predict(X_test)))
        # the default budget with its noise seeded, so the experiment's CSVs are reproducible
        # (a real user's noise is never seeded: predictable noise protects nothing)
        loc = market.localize(Xn, yn, sem, rounds=2, max_results=5,
                              budget=MetricBudget(seed=seed * 1000 + n))
        add(n, "anchors", lw_scores[loc.single[0].learnware_id])
    return out


def summarise(rows: list[dict]) -> pd.DataFrame:
    df = pd.DataFrame(rows)
    return (df.groupby(["island", "n_labelled", "method"], as_index=False)
            .agg(metric=("metric", "first"), value=("value", "mean"), users=("user", "nunique")))


def headline(summary: pd.DataFrame) -> list[str]:
    """The figures the demo must show, computed from this run's summary."""
    lines = []
    for isl in summary["island"].unique():
        s = summary[summary["island"] == isl]
        metric = s["metric"].iloc[0]
        sign = 1.0 if greater_is_better(metric) else -1.0
        val = {(r.method, r.n_labelled): r.value for r in s.itertuples()}
        mean, oracle, top1 = val[("market_mean", 0)], val[("oracle", 0)], val[("rkme_top1", 0)]
        gap = (top1 - mean) / (oracle - mean) if oracle != mean else float("nan")
        lines.append(f"\n{isl}: rkme_top1 closes {100 * gap:.0f}% of the market_mean -> oracle "
                     f"gap ({mean:.4f} -> {oracle:.4f}, top-1 {top1:.4f})")
        market_methods = [m for m in METHODS if m not in ("scratch", "market_mean", "oracle")]
        for n in sorted(s["n_labelled"].unique()):
            if n == 0 or ("scratch", n) not in val:
                continue
            best = max(((sign * val[(m, n)], m) for m in market_methods if (m, n) in val))
            beats = sign * val[("scratch", n)] < best[0]
            label_users = [m for m in ("feature_augment", "ensemble_pruning", "anchors")
                           if (m, n) in val]
            worst = min(label_users, key=lambda m: sign * val[(m, n)])
            lines.append(f"  n={n:3d}: best market method {best[1]} {val[(best[1], n)]:.4f} "
                         f"{'beats' if beats else 'does not beat'} scratch "
                         f"{val[('scratch', n)]:.4f}; weakest label-using reuse {worst} "
                         f"{val[(worst, n)]:.4f}")
    return lines


def plot(summary: pd.DataFrame, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    islands = list(summary["island"].unique())
    fig, axes = plt.subplots(1, len(islands), figsize=(6.5 * len(islands), 4.8), squeeze=False)
    for ax, isl in zip(axes[0], islands):
        s = summary[summary["island"] == isl]
        for method in METHODS:
            m = s[s["method"] == method].sort_values("n_labelled")
            if m.empty:
                continue
            style = "--" if method in ("market_mean", "oracle") else "-"
            ax.plot(m["n_labelled"], m["value"], style, marker="o", ms=3, label=method)
        ax.set_xscale("symlog", linthresh=5)
        ticks = sorted(s["n_labelled"].unique())
        ax.set_xticks(ticks)
        ax.set_xticklabels([str(t) for t in ticks])
        ax.minorticks_off()
        ax.set_xlabel("labelled rows of the user (n)")
        ax.set_ylabel(s["metric"].iloc[0])
        ax.set_title(f"{isl}: error vs labelled data")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run_demo(out: Path, islands: str = "all", quick: bool = False, seed: int = 0,
             progress: bool = True, refine: bool = True) -> pd.DataFrame:
    import warnings
    warnings.filterwarnings("ignore", category=FutureWarning)  # sklearn deprecation chatter
    # Reuse says so when a user's few labels hold one class; the results table already shows it.
    warnings.filterwarnings("ignore", message=".*labelled rows hold a single class.*")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    names = ["txhousing", "vote"] if islands == "all" else [islands]
    t0 = time.time()
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="lwm-demo-") as tmp:
        for name in names:
            rows.extend(run_island(ISLANDS[name], Path(tmp), seed=seed, quick=quick,
                                   progress=progress, refine=refine))
    with open(out / "results.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["island", "user", "n_labelled", "method", "metric",
                                           "value"])
        w.writeheader()
        for r in rows:
            w.writerow({**r, "value": f"{r['value']:.6f}"})
    summary = summarise(rows)
    summary.to_csv(out / "summary.csv", index=False, float_format="%.6f")
    plot(summary, out / "curves.png")
    pd.set_option("display.width", 160)
    for isl in summary["island"].unique():
        s = summary[summary["island"] == isl]
        table = s.pivot(index="method", columns="n_labelled", values="value")
        table = table.reindex([m for m in METHODS if m in table.index])
        print(f"\n{isl} ({s['metric'].iloc[0]}, mean over {s['users'].max()} held-out users)")
        print(table.to_string(float_format=lambda v: f"{v:.4f}"))
    for line in headline(summary):
        print(line)
    print(f"\nwrote {out / 'results.csv'}, {out / 'summary.csv'}, {out / 'curves.png'} "
          f"in {time.time() - t0:.0f} s")
    return summary
