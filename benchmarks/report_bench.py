"""Usage reports feed anchor localisation: the Texas home-sales island of anchor_bench.py, with
earlier users' reports (in-process, no server).

Set-up as in ``benchmarks/anchor_bench.py`` (one gradient-boosted developer per city, 12 held-out
cities play the users, their test rows are their last 24 months). New here: **reporting users**.
A reporter holds ``--reporter-rows`` labelled rows of its city's past (its own random draw), is
localised with the island's anchors (round 1), reuses what it was given and then reports, as
``MarketClient.report`` does, one value per learnware it used -- the anchors it ran, the members
of its recommended mixture and ``--explore`` k learnwares the market handed it beside the
anchors (the least reported so far, ``anchors.coverage_anchors``; the market's
``report_coverage_anchors``) -- measured on its report rows: ``--report-rows future`` (default:
the months the learnwares forecast for it, the city's last 24; a report comes after use) or
``past`` (the rows it labelled). Who reports (``--reporters``): ``distinct`` (default) one user
per city, the held-out cities and the developers' cities (a developer never reports its own
learnware), in a random order fixed per seed; ``city`` (the first design) ``--per-city`` users
of each held-out city, whose reports share the city's 24 future rows -- near-duplicates, so R
counts fewer independent users than it says. Values go through the SDK's disclosure budget
(``--budget``, as anchor_bench: off by default).

A new user (held-out city u) is localised from n labelled rows with the reports of the first R
reporters not of its own city, R = 0, 5, 10, 20, 40. Reported per R, at n = 10 by default, the
share of the random -> oracle gap closed (mean over users x draws) by:

* ``pick``      the localisation's single pick (round 1) -- secondary
* ``mix heaviest`` the heaviest member of its mixture
* ``mixture``   its recommended mixture (round 1) -- the localisation's answer
* ``by count``  a fixed list ranked by report count (ties: lower median reported value): its top
* ``by median`` the learnware with the best median reported value (>= 2 reports)
* ``fixed best`` the best single learnware for these users in hindsight (the ceiling of any
                pick that is the same for every user; independent of R)
* ``complete``  the learnware with the lowest mean log test rmse over the *other* held-out
                cities: a pick from reports if every other city reported every learnware on its
                future rows (fixed best also sees the user's own test rows)
* ``complete mix`` the same ranking's top 5, averaged: a population mixture from complete reports
* ``reported mix`` the same restricted to the learnwares the R reporters reported on: what any
                ranking from their reports could reach
* ``oracle 3nn`` / ``oracle 3nn mix`` pick / top-5 average by the 3 other cities whose future rmse
                vectors correlate best with u's own (unknowable: u's future)
* ``anchor 3nn`` / ``anchor 3nn mix`` the same with the similarity a market could measure: u's
                anchor values (n past rows) against the other cities' anchor values on their
                futures (kNN collaborative filtering between the user and reporters)
* ``tau``       Kendall tau between the localisation's predicted ranking of every learnware and
                the true ranking by test rmse (mean over users x draws)

The bounds (complete, oracle/anchor 3nn) use every other held-out city whatever R.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/report_bench.py [--seeds 0,3,4,5,6,7,8,9]
        [--draws 10] [--n 10] [--reporters distinct|city] [--explore 8]
        [--report-rows future|past] [--budget off|default] [--shrink S] [--blend B]
"""
from __future__ import annotations

import argparse
import os
import sys
import time
import zlib
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
from scipy.stats import kendalltau  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.anchor_bench import (FEATURES, fit_spec, load_txhousing, make_model,  # noqa: E402
                                     rmse, split)
from client_sdk.disclosure import MetricBudget  # noqa: E402
from market_server.anchors import (build_island_profile, coverage_anchors,  # noqa: E402
                                   localize, report_prior, select_anchors)

R_VALUES = (0, 5, 10, 20, 40)
METHODS = ("pick", "mix heaviest", "mixture", "by count", "by median", "fixed best", "complete",
           "prior pick", "oracle 3nn", "anchor 3nn", "complete mix", "reported mix",
           "oracle 3nn mix", "anchor 3nn mix")


def run_seed(seed: int, args, data, budget: MetricBudget) -> dict:
    cities = sorted(data)
    rng = np.random.default_rng(seed)
    users = sorted(rng.choice(cities, size=args.users, replace=False).tolist())
    splits = {c: split(*data[c], mode="future", seed=seed) for c in cities}
    devs = [c for c in cities if c not in users and len(splits[c][1]) >= 50]
    scales = np.vstack([splits[c][0] for c in devs]).std(axis=0)
    gamma = 1.0 / len(FEATURES)
    learnwares, models = [], {}
    for c in devs:
        Xtr, ytr, _, _ = splits[c]
        m = make_model().fit(Xtr, ytr)
        spec = fit_spec(Xtr, k=min(100, len(Xtr) // 5), gamma=gamma, scales=scales)
        models[c] = m
        learnwares.append((c, m, spec.z, spec.beta, spec.gamma, spec.scales))
    profile = build_island_profile(learnwares, "rmse", "regression", n_herd=64,
                                   random_state=seed)
    anchors = select_anchors(profile, 8)
    ids = profile.ids
    prior_pick = int(np.argmin(profile.loss.mean(axis=0)))
    P_tr = {u: np.stack([models[j].predict(splits[u][0]) for j in ids]) for u in users}
    P_te = {u: np.stack([models[j].predict(splits[u][2]) for j in ids]) for u in users}
    test_err = {u: np.array([rmse(splits[u][3], p) for p in P_te[u]]) for u in users}
    fixed_best = int(np.argmin(np.mean([test_err[u] for u in users], axis=0)))
    noise = budget.rng()

    # --- reporting users. ``--reporters city`` (default): per held-out city, ``per_city`` of
    # them, each its own past rows, arriving in a fixed order that visits the cities in turn;
    # ``distinct``: one per city, the other held-out cities and the developers' cities (a
    # developer city never reports its own learnware), in a random order fixed per seed
    if args.reporters == "distinct":
        rep_cities = [str(c) for c in rng.permutation(users + devs)]
        per = 1
    else:
        rep_cities, per = list(users), args.per_city
    for c in rep_cities:
        if c not in P_tr:
            P_tr[c] = np.stack([models[j].predict(splits[c][0]) for j in ids])
            P_te[c] = np.stack([models[j].predict(splits[c][2]) for j in ids])
    draws_r: dict[str, list] = {c: [] for c in rep_cities}
    for c in rep_cities:
        ytr = splits[c][1]
        for _ in range(per):
            m = min(args.reporter_rows, len(ytr))
            draws_r[c].append(rng.choice(len(ytr), size=m, replace=False))
    reporters: dict[str, list[tuple[dict, int]]] = {c: [] for c in rep_cities}
    counts = np.zeros(len(ids))  # reports so far, for --explore
    for i in range(per):
        for c in rep_cities:
            Xtr, ytr, _, yte = splits[c]
            idx = draws_r[c][i]
            m = len(idx)
            vals = {j: budget.disclose("rmse", ytr[idx], P_tr[c][k, idx], noise)[1]
                    for k, j in enumerate(ids)}
            loc = localize(profile, anchors, [vals[a] for a in anchors], budget.n_rows(m))
            used = list(dict.fromkeys(list(anchors) + list(loc.mixture.ids)))
            if args.explore:  # the market also hands it the least-reported learnwares
                used += coverage_anchors(profile, counts, args.explore,
                                         exclude=[j for j in used + [c] if j in ids])
            used = [j for j in used if j != c]  # a developer never reports its own
            if args.report_rows == "future":
                y_r, P_r, n_r = yte, P_te[c], len(yte)
            else:
                y_r, P_r, n_r = ytr[idx], P_tr[c][:, idx], m
            report = {j: budget.disclose("rmse", y_r, P_r[ids.index(j)], noise)[1] for j in used}
            reporters[c].append((report, budget.n_rows(n_r)))
            for j in report:
                counts[ids.index(j)] += 1
    order = [reporters[c][i] + (c,) for i in range(per) for c in rep_cities]

    rows = {R: [] for R in R_VALUES}
    chosen_by: dict[int, list] = {R: [] for R in R_VALUES}
    n = args.n
    for u in users:
        Xtr, ytr, Xte, yte = splits[u]
        others = [(vals, nr) for vals, nr, c in order if c != u]
        err = test_err[u]
        # every other held-out city reporting every learnware on its future: the best by mean
        # reported rmse is the ceiling of a pick from reports (fixed best also sees u's rows)
        mean_other = np.mean([np.log(test_err[c]) for c in users if c != u], axis=0)
        complete = int(np.argmin(mean_other))
        # the mixture a report-based ranking reaches with complete reports: the 5 learnwares with
        # the best mean log rmse over the other cities, averaged (cf. the localisation's top 5)
        complete_mix = rmse(yte, P_te[u][np.argsort(mean_other)[:5]].mean(axis=0))
        # a pick that knew which 3 other cities' futures resemble u's (by u's own test rmse
        # vector, unknowable): their best learnware by mean log rmse
        sim = [np.corrcoef(np.log(test_err[c]), np.log(err))[0, 1] for c in users if c != u]
        near = [c for c in users if c != u]
        near = [near[k] for k in np.argsort(sim)[::-1][:3]]
        near_mean = np.mean([np.log(test_err[c]) for c in near], axis=0)
        oracle_nn = int(np.argmin(near_mean))
        oracle_nn_mix = rmse(yte, P_te[u][np.argsort(near_mean)[:5]].mean(axis=0))
        other_cities = [c for c in users if c != u]
        a_idx = [ids.index(a) for a in anchors]
        for R in R_VALUES:
            chosen = others[:R]
            prior = (report_prior(profile, chosen, prior_strength=args.prior_strength,
                                  shrink=args.shrink, blend=args.blend) if chosen else None)
            # the same restricted to the learnwares these reporters reported on: what any
            # ranking from their reports could reach (it knows nothing of the others)
            seen = {j for vals, _ in chosen for j in vals}
            ranked = [k for k in np.argsort(mean_other) if ids[k] in seen][:5] if seen else []
            reported_mix = (rmse(yte, P_te[u][ranked].mean(axis=0)) if ranked
                            else rmse(yte, P_te[u].mean(axis=0)))
            if prior is not None:
                chosen_by[R].append((prior.shrink, prior.blend))
            count = np.zeros(len(ids))
            reported: dict[int, list[float]] = {}
            for vals, _ in chosen:
                for j, v in vals.items():
                    count[ids.index(j)] += 1
                    reported.setdefault(ids.index(j), []).append(v)
            med = np.array([np.median(reported[k]) if len(reported.get(k, [])) >= 2 else np.inf
                            for k in range(len(ids))])
            by_count = int(np.lexsort((med, -count))[0]) if chosen else prior_pick
            by_median = int(np.argmin(med)) if np.isfinite(med).any() else prior_pick
            # the same n rows (and anchor values) for every R: differences are the reports'
            draw_rng = np.random.default_rng([seed, zlib.crc32(u.encode("utf-8"))])
            for _ in range(args.draws):
                idx = draw_rng.choice(len(ytr), size=n, replace=False)
                sent = [budget.disclose("rmse", ytr[idx], P_tr[u][ids.index(a), idx], noise)[1]
                        for a in anchors]
                loc = localize(profile, anchors, sent, budget.n_rows(n), reports=prior)
                # the same from what a market could know: the 3 other cities whose reported
                # anchor values (future) correlate best with u's anchor values (its n past rows)
                ls = np.log(np.asarray(sent, float))
                sim_a = [np.corrcoef(np.log(test_err[c][a_idx]), ls)[0, 1] for c in other_cities]
                knn = [other_cities[k] for k in np.argsort(sim_a)[::-1][:3]]
                knn_mean = np.mean([np.log(test_err[c]) for c in knn], axis=0)
                w = np.zeros(len(ids))
                for i, wt in zip(loc.mixture.ids, loc.mixture.weights):
                    w[ids.index(i)] = wt
                est = {r.id: r.estimate for r in loc.ranking}
                tau = kendalltau([est[j] for j in ids], err).statistic
                heaviest = loc.mixture.ids[int(np.argmax(loc.mixture.weights))]
                rows[R].append({"pick": err[ids.index(loc.best.id)],
                                "mix heaviest": err[ids.index(heaviest)],
                                "mixture": rmse(yte, w @ P_te[u]),
                                "by count": err[by_count], "by median": err[by_median],
                                "fixed best": err[fixed_best], "prior pick": err[prior_pick],
                                "complete": err[complete], "complete mix": complete_mix,
                                "reported mix": reported_mix, "oracle 3nn": err[oracle_nn],
                                "oracle 3nn mix": oracle_nn_mix,
                                "anchor 3nn": err[int(np.argmin(knn_mean))],
                                "anchor 3nn mix": rmse(yte, P_te[u][np.argsort(knn_mean)[:5]]
                                                       .mean(axis=0)),
                                "oracle": err.min(), "random": err.mean(), "tau": tau})
    rows["chosen"] = chosen_by
    return rows


def gap(rows: list[dict], m: str) -> float:
    rnd = np.mean([r["random"] for r in rows])
    return (rnd - np.mean([r[m] for r in rows])) / (rnd - np.mean([r["oracle"] for r in rows]))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="0,3,4,5,6,7,8,9",
                    help="user splits (1 and 2 tuned the anchors: held out by default)")
    ap.add_argument("--users", type=int, default=12)
    ap.add_argument("--draws", type=int, default=10)
    ap.add_argument("--n", type=int, default=10, help="labelled rows of a new user")
    ap.add_argument("--per-city", type=int, default=4, help="reporting users per held-out city")
    ap.add_argument("--reporter-rows", type=int, default=20,
                    help="labelled rows a reporting user localised with")
    ap.add_argument("--reporters", choices=("city", "distinct"), default="distinct",
                    help="city: --per-city reporters per held-out city (same future rows); "
                    "distinct: one per city, held-out and developer cities")
    ap.add_argument("--report-rows", choices=("future", "past"), default="future")
    ap.add_argument("--budget", choices=("off", "default"), default="off")
    ap.add_argument("--prior-strength", type=float, default=float("inf"),
                    help="report_prior: weight of the uniform prior, in reporters (inf, the "
                    "default: no task prior from reports)")
    ap.add_argument("--shrink", type=float, default=None,
                    help="report_prior: pseudo-reports pulling each model's effect to the "
                    "profile's (default: chosen by cross-validation over the reporters)")
    ap.add_argument("--blend", type=float, default=None,
                    help="report_prior: weight of the reporters' model effects against the "
                    "user's own posterior (default: chosen by cross-validation)")
    ap.add_argument("--explore", type=int, default=0,
                    help="each reporter also runs and reports this many of the least-reported "
                    "learnwares (anchors.coverage_anchors; 0: only what it used)")
    args = ap.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    data = load_txhousing()
    t0 = time.time()
    per_seed = {}
    for seed in seeds:
        budget = MetricBudget.unlimited() if args.budget == "off" else MetricBudget(seed=seed)
        per_seed[seed] = run_seed(seed, args, data, budget)
        g = per_seed[seed]
        print(f"seed {seed}: " + "  ".join(
            f"R={R} pick {gap(g[R], 'pick'):+.0%} mix {gap(g[R], 'mixture'):+.0%}"
            for R in R_VALUES) + f"  (fixed best {gap(g[0], 'fixed best'):+.0%})", flush=True)
    print(f"\nshare of the random -> oracle gap closed at n = {args.n}, mean over seeds "
          f"{args.seeds} (each: mean over {args.users} users x {args.draws} draws); reports on "
          f"{args.report_rows} rows, budget {args.budget}")
    print(f"{'method':<12}" + "".join(f"{'R=' + str(R):>9}" for R in R_VALUES))
    for m in METHODS:
        print(f"{m:<12}" + "".join(
            f"{np.mean([gap(per_seed[s][R], m) for s in seeds]):>9.1%}" for R in R_VALUES))
    print(f"{'tau':<12}" + "".join(
        f"{np.mean([np.nanmean([r['tau'] for r in per_seed[s][R]]) for s in seeds]):>9.3f}"
        for R in R_VALUES))
    print(f"{'shrink':<12}" + "".join(
        f"{np.median([c[0] for s in seeds for c in per_seed[s]['chosen'][R]] or [np.nan]):>9.3g}"
        for R in R_VALUES) + "   (chosen by cross-validation unless given; median)")
    print(f"{'blend':<12}" + "".join(
        f"{np.median([c[1] for s in seeds for c in per_seed[s]['chosen'][R]] or [np.nan]):>9.3g}"
        for R in R_VALUES))
    print("\nper seed, R = 20: pick / mixture / fixed best")
    for s in seeds:
        g = per_seed[s][20]
        print(f"  seed {s}: {gap(g, 'pick'):.0%} / {gap(g, 'mixture'):.0%} / "
              f"{gap(g, 'fixed best'):.0%}")
    g20 = [per_seed[s][20] for s in seeds]
    pick, mix, fb = (np.mean([gap(g, m) for g in g20]) for m in ("pick", "mixture", "fixed best"))
    print(f"\ngoal, R = 20: pick reaches fixed best ({pick:.1%} vs {fb:.1%}: "
          f"{'met' if pick >= fb - 0.005 else 'short'}); mixture >= 75% ({mix:.1%}: "
          f"{'met' if mix >= 0.75 else 'short'}). The mixture is the recommended answer.")
    print(f"(reports on {args.report_rows} rows; reporters explore {args.explore} "
          f"least-reported learnwares each)")
    print(f"total {time.time() - t0:.0f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
