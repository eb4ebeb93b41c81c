"""The heterogeneous scenario (issue #15): developers and users hold different feature sets.

Developers publish with one of three feature sets (cycled over the developers), so the market
holds three islands that share features; the held-out users (the demo's users, same seed) hold
yet other sets, one of which no developer used, and one user set names a column differently and
maps it (``feature_map``). Each user searches with ``MarketClient.search`` (which reaches every
connected island), downloads the learnwares, wraps them for its own columns
(``client_sdk.fill.FilledLearnware``: missing inputs filled from each learnware's spec) and reuses
them with the demo's methods on the demo's n grid. ``anchors`` is left out: the anchor path
works on one island. The homogeneous market (every developer with every feature, the demo's
``run_island``) runs for the same users so the two stand side by side.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from learnware_core.metrics import evaluate, greater_is_better
from protocol.identity import Identity

from ..client import MarketClient
from ..fill import fill_for
from ..rkme import MIN_ROWS
from ..reuse import Averaging, EnsemblePruning, FeatureAugment, JobSelector
from . import datasets
from .run import ISLANDS, N_GRID, developer_model, scratch_model, _progress
from .server import ServerProcess

RULES = ("auto", "conditional", "median")
HETERO_METHODS = ("scratch", "market_mean", "oracle", "rkme_top1", "averaging", "job_selector",
                  "feature_augment", "ensemble_pruning")

TX_INFO = {"log_median": {"description": "log of the median sale price", "unit": "USD"},
           "log_listings": {"description": "log1p of the total active listings"},
           "inventory": {"description": "months inventory: time to sell all listings"},
           "d1": {"description": "log sales one month ago minus twelve months ago"}}


def feature_sets(island: str, features: list[str]):
    """``(developer sets, user sets, renamed)``: renamed = {user column: feature} for the
    user set that names a column its own way."""
    def without(*drop):
        return [f for f in features if f not in drop]
    if island == "txhousing":
        devs = [features, without("log_listings", "inventory"), without("d2", "d3")]
        users = [without("inventory"), without("d3", "log_listings"), devs[1]]
        renamed = {1: {"log_median": "price_level"}}
    else:
        devs = [features, without("religimp", "churchatd", "prayerfreq"),
                without("famincr", "ideo")]
        users = [without("bornagain"), without("ideo", "churchatd"), devs[1]]
        renamed = {1: {"pid7na": "party_id"}}
    return devs, users, renamed


def run_hetero_island(name: str, workdir: Path, *, seed: int, quick: bool,
                      progress: bool) -> list[dict]:
    setup = ISLANDS[name]
    island = setup.load()
    task, objective = island.task, island.objective
    users, developers = datasets.choose_users(island, n_users=setup.n_users, random_state=seed)
    if quick:
        users = users[:4]
    splits = datasets.split_island(island, test_size=setup.test_size, random_state=seed)
    dev_sets, user_sets, renamed = feature_sets(name, island.feature_names)
    rows: list[dict] = []
    with ServerProcess(workdir / f"hetero-{name}", address_limits=False) as server:
        ids = []
        for i, dname in enumerate(_progress(developers, f"{name} (hetero): developers publish",
                                            progress)):
            sp = splits[dname]
            if len(sp.y_train) < MIN_ROWS:
                continue
            feats = dev_sets[i % len(dev_sets)]
            with MarketClient(server.url, Identity.generate(), market_key=server.market_key,
                              cache_dir=workdir / "hdev-cache") as dev:
                X = sp.X_train[feats].to_numpy()
                model = developer_model(task, objective, X, sp.y_train, island.time_ordered,
                                        seed)
                sem = datasets.semantic_for(island, name=f"{island.name} model of {dname}")
                sem["input_features"] = list(feats)
                if name == "txhousing":
                    sem["feature_info"] = {f: v for f, v in TX_INFO.items() if f in feats}
                k = max(5, min(100, len(sp.y_train) // 5))
                ids.append(dev.publish(model, sp.X_train[feats], sem, k=k, random_state=seed))
        with MarketClient(server.url, Identity.generate(), market_key=server.market_key,
                          cache_dir=workdir / "huser-cache") as market:
            world = market.world()
            comps = [c for c in world["components"]]
            print(f"{name} (hetero): {len(ids)} learnwares on "
                  f"{sum(len(c['islands']) for c in comps)} islands in {len(comps)} "
                  f"component(s); connecting features: "
                  f"{', '.join(comps[0]['connecting_features'])}")
            lws = {lid: market.download(lid) for lid in ids}
            for u, uname in enumerate(_progress(users, f"{name} (hetero): users", progress)):
                rows.extend(run_hetero_user(market, lws, island, splits[uname],
                                            user_sets[u % len(user_sets)],
                                            renamed.get(u % len(user_sets), {}), seed=seed,
                                            quick=quick, user_set=u % len(user_sets)))
    return rows


def run_hetero_user(market: MarketClient, lws: dict, island, sp, feats: list[str],
                    renamed: dict, *, seed: int, quick: bool, user_set: int) -> list[dict]:
    task, objective = island.task, island.objective
    cols = [renamed.get(f, f) for f in feats]          # the user's own column names
    X_past, y_past = sp.X_train[feats].to_numpy(), sp.y_train
    X_test, y_test = sp.X_test[feats].to_numpy(), sp.y_test
    X_all = np.vstack([X_past, X_test])
    sem = datasets.semantic_for(island, name=f"{island.name} user")
    sem["input_features"] = cols
    if renamed:
        sem["feature_map"] = {c: f for f, c in renamed.items()}
    better = max if greater_is_better(objective) else min

    def score(pred) -> float:
        return float(evaluate(objective, y_test, pred))

    out: list[dict] = []

    def add(n, method, value, rule="auto"):
        out.append({"island": island.name, "user": sp.name, "user_set": user_set,
                    "n_labelled": n, "method": method, "rule": rule, "metric": objective,
                    "value": value})

    res = market.search(X_all, sem, max_results=12, random_state=seed)
    ids = list(lws)
    per_rule = {}
    for rule in RULES:
        filled = dict(zip(ids, fill_for(lws, res, cols, rule=rule, X_user=X_all, ids=ids,
                                            feature_map=sem.get("feature_map"))))
        scores = {i: score(f.model.predict(X_test)) for i, f in filled.items()}
        mix_ids = res.mixture.learnware_ids if res.mixture else [res.single[0].learnware_id]
        mix_w = res.mixture.weights if res.mixture else [1.0]
        mix = [filled[i] for i in mix_ids]
        per_rule[rule] = (filled, scores, mix, mix_w)
        mean, oracle = float(np.mean(list(scores.values()))), float(better(scores.values()))
        top1 = scores[res.single[0].learnware_id]
        avg = score(Averaging(mix, weights=mix_w).fit(X_all).predict(X_test))
        for n in (N_GRID if not quick else (0, 10, 50)):
            add(n, "market_mean", mean, rule)
            add(n, "oracle", oracle, rule)
            add(n, "rkme_top1", top1, rule)
            add(n, "averaging", avg, rule)
    filled, scores, mix, mix_w = per_rule["auto"]
    job = score(JobSelector(mix, random_state=seed).fit(X_all).predict(X_test))
    top = [filled[m.learnware_id] for m in res.single[:5]]
    rng = np.random.default_rng(seed)
    for n in (N_GRID if not quick else (0, 10, 50)):
        add(n, "job_selector", job)
        if n == 0:
            continue
        n_eff = min(n, len(y_past))
        idx = (np.arange(len(y_past))[-n_eff:] if island.time_ordered
               else rng.choice(len(y_past), size=n_eff, replace=False))
        Xn, yn = X_past[idx], y_past[idx]
        add(n, "scratch", score(scratch_model(task, Xn, yn, seed).predict(X_test)))
        add(n, "feature_augment", score(FeatureAugment(top).fit(Xn, yn).predict(X_test)))
        add(n, "ensemble_pruning", score(EnsemblePruning(top, random_state=seed)
                                         .fit(Xn, yn).predict(X_test)))
    return out


def _table(df, isl, rule="auto"):
    s = df[(df["island"] == isl) & (df["rule"] == rule)]
    return s.groupby(["method", "n_labelled"])["value"].mean().unstack()


def hetero_headline(het, hom, isl_name: str) -> list[str]:
    """The issue's figures from the two runs' rows (DataFrames)."""
    lines = []
    t = _table(het, isl_name)
    metric = het[het["island"] == isl_name]["metric"].iloc[0]
    sign = 1.0 if greater_is_better(metric) else -1.0
    mean, oracle = t.loc["market_mean", 0], t.loc["oracle", 0]
    for m in ("rkme_top1", "averaging"):
        gap = (t.loc[m, 0] - mean) / (oracle - mean) if oracle != mean else float("nan")
        lines.append(f"  {m} closes {100 * gap:.0f}% of the market_mean -> oracle gap of the "
                     f"reachable learnwares ({mean:.4f} -> {oracle:.4f}: {t.loc[m, 0]:.4f})")
    market = [m for m in HETERO_METHODS if m not in ("scratch", "market_mean", "oracle")]
    for n in (5, 10, 20):
        if n not in t.columns or pd.isna(t.loc["scratch", n]):
            continue
        best = max(market, key=lambda m: sign * t.loc[m, n])
        beats = sign * t.loc[best, n] > sign * t.loc["scratch", n]
        lines.append(f"  n={n}: best market method {best} {t.loc[best, n]:.4f} "
                     f"{'beats' if beats else 'does not beat'} scratch {t.loc['scratch', n]:.4f}")
    if hom is not None:
        h = hom[hom["island"] == isl_name].groupby(["method", "n_labelled"])["value"] \
            .mean().unstack()
        for m in ("rkme_top1", "averaging", "ensemble_pruning"):
            for n in (0, 10, 50):
                if n not in t.columns or m not in t.index or pd.isna(t.loc[m, n]) \
                        or pd.isna(h.loc[m, n]):
                    continue
                gain_het = sign * (t.loc[m, n] - t.loc["market_mean", n])
                gain_hom = sign * (h.loc[m, n] - h.loc["market_mean", n])
                # the same users' homogeneous market_mean as the common reference
                gain_ref = sign * (t.loc[m, n] - h.loc["market_mean", n])
                lines.append(f"  {m} n={n}: {t.loc[m, n]:.4f} hetero vs {h.loc[m, n]:.4f} "
                             f"homogeneous; improvement over each market's own market_mean "
                             f"{gain_het:+.4f} vs {gain_hom:+.4f} "
                             f"({100 * gain_het / gain_hom:.0f}% kept), over the homogeneous "
                             f"market_mean {gain_ref:+.4f} ({100 * gain_ref / gain_hom:.0f}%)")
    return lines


def hetero_report(out: Path, islands: str = "all", *, quick: bool = False, seed: int = 0,
                  progress: bool = True, homogeneous: bool = True,
                  reference: Path | None = None):
    """Run the heterogeneous scenario (and the homogeneous reference for the same users), write
    ``hetero_results.csv`` and print the tables and the issue's figures. ``reference``: the
    ``results.csv`` of a homogeneous ``lwm demo`` run with the same seed (and ``--quick``), read
    instead of running the homogeneous market again."""
    import tempfile
    import warnings
    from .run import run_island
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", message=".*labelled rows hold a single class.*")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    names = ["txhousing", "vote"] if islands == "all" else [islands]
    het_rows, hom_rows = [], []
    ref = None
    if reference is not None and Path(reference).exists():
        ref = pd.read_csv(reference)
        homogeneous = False
    with tempfile.TemporaryDirectory(prefix="lwm-hetero-") as tmp:
        for name in names:
            het_rows.extend(run_hetero_island(name, Path(tmp), seed=seed, quick=quick,
                                              progress=progress))
            if homogeneous:
                hom_rows.extend(run_island(ISLANDS[name], Path(tmp), seed=seed, quick=quick,
                                           progress=progress))
    het = pd.DataFrame(het_rows)
    hom = pd.DataFrame(hom_rows) if hom_rows else ref
    het.to_csv(out / "hetero_results.csv", index=False, float_format="%.6f")
    pd.set_option("display.width", 160)
    for isl in het["island"].unique():
        t = _table(het, isl).reindex([m for m in HETERO_METHODS])
        print(f"\n{isl}, heterogeneous market ({het[het.island == isl]['metric'].iloc[0]}, "
              f"mean over {het[het.island == isl]['user'].nunique()} held-out users; "
              f"filling: auto)")
        print(t.to_string(float_format=lambda v: f"{v:.4f}"))
        print("filling rules side by side (n = 0):")
        for rule in RULES:
            r = _table(het, isl, rule)
            print(f"  {rule:11s} market_mean {r.loc['market_mean', 0]:.4f} oracle "
                  f"{r.loc['oracle', 0]:.4f} top1 {r.loc['rkme_top1', 0]:.4f} averaging "
                  f"{r.loc['averaging', 0]:.4f}")
        by_set = het[(het.island == isl) & (het.rule == "auto") & (het.n_labelled == 0)]
        for us, g in by_set.groupby("user_set"):
            v = g.groupby("method")["value"].mean()
            print(f"  user set {us}: market_mean {v['market_mean']:.4f} oracle "
                  f"{v['oracle']:.4f} top1 {v['rkme_top1']:.4f} averaging {v['averaging']:.4f}")
        if hom is not None:
            h = hom[hom.island == isl].groupby(["method", "n_labelled"])["value"].mean() \
                .unstack().reindex(list(HETERO_METHODS))
            print(f"{isl}, homogeneous market, same users:")
            print(h.to_string(float_format=lambda v: f"{v:.4f}"))
        for line in hetero_headline(het, hom, isl):
            print(line)
    return het, hom
