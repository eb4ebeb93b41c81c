"""Why search across islands ranks as it does (issue #15 follow-up): oracle-free diagnosis.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/hetero_diag.py [--island txhousing|vote]
        [--seed 0] [--dump FILE] [--load FILE]

Runs the heterogeneous scenario's market (``client_sdk/demo/hetero.py``: same developers, feature
sets, users and seed), and for every user scores *every* reachable learnware by several rules:
- ``ratio``: the marginal MMD of the reduced specs over the marginal's baseline (what
  ``POST /v1/search/world`` ranked by before this diagnosis; now its fit figure);
- ``raw``: the same marginal MMD, not normalised (what the market ranked by next);
- ``key``: the raw MMD x (1 + the share of the learnware's inputs to fill), what the market
  ranks by now (``market_server/world_search.rank_key``);
- ``island``: the spec-vs-requirement marginal MMD under the learnware's own island kernel
  restricted to the shared features (its gamma and scales, not the component's);
- ``full``: the crude check -- marginal MMD on full samples (the user's rows against the
  developer's training rows) under the component's widths;
- ``full_norm``: ``full`` over the same baseline as ``market``.
Then :func:`compare_rules` sets ranking and averaging rules side by side per filling rule
(from the recorded predictions of every reachable learnware on the user's test rows).
Each rule is judged against the true loss of each learnware on the user's test rows (missing
inputs filled by the ``auto`` rule): the mean Spearman correlation per user, and the share of
the market_mean -> oracle gap its top-1 closes. The loss is used only to judge, never to rank.
``--dump`` saves what was collected (a NumPy ``.npz`` of arrays and a JSON of the rest) so
``--load`` re-runs the analysis without the market.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from client_sdk.client import MarketClient
from client_sdk.demo import datasets
from client_sdk.demo.hetero import TX_INFO, feature_sets
from client_sdk.demo.run import ISLANDS, developer_model
from client_sdk.demo.server import ServerProcess
from client_sdk.fill import fill_for
from client_sdk.rkme import MIN_ROWS
from client_sdk.world_view import requirement_kernel
from learnware_core.kernels import mmd2
from learnware_core.metrics import evaluate, greater_is_better
from protocol.identity import Identity


def collect(name: str, seed: int, workdir: Path) -> dict:
    setup = ISLANDS[name]
    island = setup.load()
    users, developers = datasets.choose_users(island, n_users=setup.n_users, random_state=seed)
    splits = datasets.split_island(island, test_size=setup.test_size, random_state=seed)
    dev_sets, user_sets, renamed = feature_sets(name, island.feature_names)
    lw_info, user_rows = {}, []
    with ServerProcess(workdir / f"diag-{name}", address_limits=False) as server:
        for i, dname in enumerate(developers):
            sp = splits[dname]
            if len(sp.y_train) < MIN_ROWS:
                continue
            feats = dev_sets[i % len(dev_sets)]
            with MarketClient(server.url, Identity.generate(), cache_dir=workdir / "d") as dev:
                X = sp.X_train[feats].to_numpy()
                model = developer_model(island.task, island.objective, X, sp.y_train,
                                        island.time_ordered, seed)
                sem = datasets.semantic_for(island, name=f"{island.name} model of {dname}")
                sem["input_features"] = list(feats)
                if name == "txhousing":
                    sem["feature_info"] = {f: v for f, v in TX_INFO.items() if f in feats}
                k = max(5, min(100, len(sp.y_train) // 5))
                lid = dev.publish(model, sp.X_train[feats], sem, k=k, random_state=seed)
                lw_info[lid] = {"dev": dname, "feats": list(feats), "set": i % len(dev_sets),
                                "X": X}
        with MarketClient(server.url, Identity.generate(), cache_dir=workdir / "u") as market:
            world = market.world()
            comp = world["components"][0]
            lws = {lid: market.download(lid) for lid in lw_info}
            for lid, lw in lws.items():
                lw_info[lid].update(z=np.asarray(lw.spec.z), beta=np.asarray(lw.spec.beta),
                                    gamma=float(lw.spec.gamma),
                                    scales=np.asarray(lw.spec.scales))
            better = max if greater_is_better(island.objective) else min
            for u, uname in enumerate(users):
                sp = splits[uname]
                us = u % len(user_sets)
                feats, ren = user_sets[us], renamed.get(us, {})
                cols = [ren.get(f, f) for f in feats]
                X_all = np.vstack([sp.X_train[feats].to_numpy(), sp.X_test[feats].to_numpy()])
                X_test = sp.X_test[feats].to_numpy()
                sem = datasets.semantic_for(island, name=f"{island.name} user")
                sem["input_features"] = cols
                if ren:
                    sem["feature_map"] = {c: f for f, c in ren.items()}
                res = market.search(X_all, sem, max_results=100, random_state=seed)
                ids = [m.learnware_id for m in res.single]
                preds = {}   # rule -> {"test"|"all": learnwares x rows}
                for rule in ("auto", "conditional", "median"):
                    fl = fill_for(lws, res, cols, rule=rule, X_user=X_all, ids=ids,
                                  feature_map=sem.get("feature_map"))
                    if rule == "auto":
                        filled = dict(zip(ids, fl))
                    preds[rule] = {"test": np.array([_out(f.model, X_test, island.task)
                                                     for f in fl]),
                                   "all": np.array([_out(f.model, X_all, island.task)
                                                    for f in fl])}
                loss = {i: float(evaluate(island.objective, sp.y_test,
                                          f.model.predict(X_test))) for i, f in filled.items()}
                user_rows.append({
                    "user": uname, "set": us, "cols": cols, "feats": list(feats),
                    "X": X_all, "loss": loss, "better": better is max, "ids": ids,
                    "preds": preds, "y_test": np.asarray(sp.y_test, dtype=np.float64),
                    "auto_rule": {i: f.fill_rule for i, f in filled.items()},
                    "fill_evidence": {i: f.fill_evidence for i, f in filled.items()},
                    "n_missing": {i: len(f.missing_features) for i, f in filled.items()},
                    "mixture": ({"ids": res.mixture.learnware_ids,
                                 "weights": list(res.mixture.weights)} if res.mixture
                                else None),
                    "matches": [{"id": m.learnware_id, "score": m.score, "mmd": m.mmd,
                                 "baseline": m.baseline_mmd, "covered": m.covered,
                                 "fill": m.fill} for m in res.single]})
    widths = dict(zip(comp["features"],
                      requirement_kernel(comp, comp["features"])[1].tolist()))
    return {"island": name, "widths": widths, "lw": lw_info, "users": user_rows}


def _out(model, X, task) -> np.ndarray:
    """What averaging combines: P(class 1) for a binary classifier, else the prediction."""
    if task == "classification" and hasattr(model, "predict_proba"):
        p = np.asarray(model.predict_proba(X), dtype=np.float64)
        return p[:, list(model.classes_).index(1)] if 1 in list(model.classes_) \
            else np.zeros(len(X))
    return np.asarray(model.predict(X), dtype=np.float64)


def _spearman(a, b) -> float:
    ra = np.argsort(np.argsort(a)).astype(float)
    rb = np.argsort(np.argsort(b)).astype(float)
    if ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


def _marginal(Xa, Xb, gamma, scales, cap=400, seed=0):
    """MMD^2 between two samples (equal weights), each subsampled to ``cap`` rows."""
    rng = np.random.default_rng(seed)
    if len(Xa) > cap:
        Xa = Xa[rng.choice(len(Xa), cap, replace=False)]
    if len(Xb) > cap:
        Xb = Xb[rng.choice(len(Xb), cap, replace=False)]
    return mmd2(Xa, np.full(len(Xa), 1 / len(Xa)), Xb, np.full(len(Xb), 1 / len(Xb)),
                gamma, scales)


def analyse(data: dict) -> None:
    widths, lw = data["widths"], data["lw"]
    rules = ["ratio", "raw", "key", "island", "full", "full_norm", "full_island"]
    per_rule = {r: {"rho": [], "top1": [], "set": []} for r in rules}
    summary = {"mean": [], "oracle": []}
    for u in data["users"]:
        sign = -1.0 if u["better"] else 1.0        # lower key = better learnware
        ids = [m["id"] for m in u["matches"]]
        loss = np.array([sign * u["loss"][i] for i in ids])
        col = {c: j for j, c in enumerate(u["cols"])}
        keys = {r: [] for r in rules}
        for m in u["matches"]:
            info = lw[m["id"]]
            pairs = [(info["feats"].index(f), col[c]) for f, c in m["covered"].items()]
            shared = [info["feats"][j] for j, _ in pairs]
            li, ui = [j for j, _ in pairs], [c for _, c in pairs]
            g = 1.0 / (2 * len(shared))
            s = np.array([widths[f] for f in shared])
            keys["ratio"].append(m["mmd"] / m["baseline"] if m["baseline"] else np.inf)
            keys["raw"].append(m["mmd"])
            keys["key"].append(m["mmd"] * (1 + len(m["fill"]) / (len(m["fill"]) + len(pairs))))
            # learnware's own island kernel on the shared coordinates (the exact marginal)
            gi, si = info["gamma"], info["scales"][li]
            Xu = u["X"][:, ui]
            zs = info["z"][:, li]
            keys["island"].append(mmd2(zs, info["beta"], Xu, np.full(len(Xu), 1 / len(Xu)),
                                       gi, si))
            full = _marginal(info["X"][:, li], Xu, g, s)
            keys["full"].append(full)
            keys["full_norm"].append(full / m["baseline"] if m["baseline"] else full)
            keys["full_island"].append(_marginal(info["X"][:, li], Xu, gi, si))
        mean, oracle = loss.mean(), loss.min()
        summary["mean"].append(sign * mean)
        summary["oracle"].append(sign * oracle)
        for r in rules:
            k = np.asarray(keys[r])
            per_rule[r]["rho"].append(_spearman(k, loss))
            t = loss[int(np.argmin(k))]
            per_rule[r]["top1"].append(sign * t)
            per_rule[r]["set"].append(u["set"])
    mean, oracle = np.mean(summary["mean"]), np.mean(summary["oracle"])
    print(f"{data['island']}: {len(data['users'])} users, {len(lw)} learnwares; "
          f"market_mean {mean:.4f} oracle {oracle:.4f}")
    for r in rules:
        t1 = np.mean(per_rule[r]["top1"])
        rho = np.nanmean(per_rule[r]["rho"])
        sets = np.array(per_rule[r]["set"])
        by_set = " ".join(f"set{s}:{np.nanmean(np.array(per_rule[r]['rho'])[sets == s]):+.2f}"
                          for s in sorted(set(sets)))
        print(f"  {r:12s} spearman(key, loss) {rho:+.3f} ({by_set})  top-1 {t1:.4f} closes "
              f"{100 * (t1 - mean) / (oracle - mean):.0f}% of the gap")


def _score(island: str, y, pred) -> float:
    """RMSE of a prediction (txhousing) or accuracy of P(class 1) >= 0.5 (vote)."""
    if island == "vote":
        return float(np.mean((np.asarray(pred) >= 0.5).astype(int) == y))
    return float(np.sqrt(np.mean((y - np.asarray(pred)) ** 2)))


def _filled_fraction(u: dict) -> np.ndarray:
    """Per reachable learnware: the share of its inputs the user lacks (to be filled)."""
    out = []
    for m in u["matches"]:
        n_in = len(m["covered"]) + len(m["fill"])
        out.append(len(m["fill"]) / n_in)
    return np.asarray(out)


def _inverse_weights(key: np.ndarray) -> np.ndarray:
    w = 1.0 / np.maximum(key, 1e-6 * max(float(key.max()), 1e-300))
    return w / w.sum()


def compare_rules(data: dict) -> None:
    """Ranking and averaging rules side by side, judged by the share of the market_mean ->
    oracle gap (per filling rule, from the recorded predictions; labels only judge). "The
    market's mixture" is whatever the market that was run answered: the simplex QP before
    commit 96d5953, the best 12 by the key weighed by ``1/key`` since."""
    isl = data["island"]
    for fill in ("auto", "conditional", "median", "median unless 2x"):
        res: dict[str, list[float]] = {}

        def add(name, v):
            res.setdefault(name, []).append(v)
        for u in data["users"]:
            ids, y = u["ids"], u["y_test"]
            if fill == "median unless 2x":
                # the median unless the conditional mean's leave-one-out change is below half
                # of the median's (the same evidence as ``auto``, with a prior for the median)
                P = np.array([u["preds"]["conditional" if ev and ev["conditional"]
                                        < 0.5 * ev["median"] else "median"]["test"][j]
                              for j, ev in enumerate(u["fill_evidence"][i] for i in ids)])
            else:
                P = u["preds"][fill]["test"]
            loss = np.array([_score(isl, y, p) for p in P])
            add("market_mean", loss.mean())
            add("oracle", loss.max() if isl == "vote" else loss.min())
            mmd = np.array([m["mmd"] for m in u["matches"]])
            frac = _filled_fraction(u)
            add("top-1: marginal MMD (before)", loss[np.argmin(mmd)])
            for a in (0.5, 1.0, 2.0):
                add(f"top-1: MMD x (1 + {a:g} filled share)", loss[np.argmin(mmd * (1 + a * frac))])
            mix = u["mixture"]
            mi = [ids.index(i) for i in mix["ids"]]
            add("averaging: the market's mixture, its weights", _score(isl, y,
                                                             np.asarray(mix["weights"]) @ P[mi]))
            for name, key in (("MMD", mmd), ("MMD x (1 + filled share)", mmd * (1 + frac))):
                order = np.argsort(key, kind="stable")
                for k in (5, 12):
                    c = order[:k]
                    add(f"averaging: best {k} by {name}, uniform", _score(isl, y, P[c].mean(0)))
                    w = _inverse_weights(key[c])
                    add(f"averaging: best {k} by {name}, weights 1/key",
                        _score(isl, y, w @ P[c]))
        mean, oracle = np.mean(res.pop("market_mean")), np.mean(res.pop("oracle"))
        print(f"  filling {fill}: market_mean {mean:.4f} oracle {oracle:.4f}")
        for name, v in res.items():
            m = np.mean(v)
            print(f"    {name:55s} {m:.4f} closes {100 * (m - mean) / (oracle - mean):4.0f}%")


def _dump(data: dict, path: Path) -> None:
    arrays, meta = {}, {"island": data["island"], "widths": data["widths"], "lw": {},
                        "users": []}
    for lid, info in data["lw"].items():
        meta["lw"][lid] = {k: v for k, v in info.items() if k in ("dev", "feats", "set",
                                                                     "gamma")}
        for k in ("X", "z", "beta", "scales"):
            arrays[f"lw|{lid}|{k}"] = info[k]
    for n, u in enumerate(data["users"]):
        meta["users"].append({k: v for k, v in u.items() if k not in ("X", "preds", "y_test")})
        arrays[f"user|{n}|X"] = u["X"]
        arrays[f"user|{n}|y_test"] = u["y_test"]
        for rule, pr in u["preds"].items():
            for part, a in pr.items():
                arrays[f"user|{n}|pred|{rule}|{part}"] = a
    np.savez(path.with_suffix(".npz"), **arrays)
    path.with_suffix(".json").write_text(json.dumps(meta))


def _load(path: Path) -> dict:
    meta = json.loads(path.with_suffix(".json").read_text())
    arr = np.load(path.with_suffix(".npz"), allow_pickle=False)
    for lid, info in meta["lw"].items():
        for k in ("X", "z", "beta", "scales"):
            info[k] = arr[f"lw|{lid}|{k}"]
    for n, u in enumerate(meta["users"]):
        u["X"] = arr[f"user|{n}|X"]
        u["y_test"] = arr[f"user|{n}|y_test"]
        u["preds"] = {}
        for key in arr.files:
            parts = key.split("|")
            if parts[:3] == ["user", str(n), "pred"]:
                u["preds"].setdefault(parts[3], {})[parts[4]] = arr[key]
    return meta


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--island", default="txhousing", choices=["txhousing", "vote"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dump", type=Path)
    ap.add_argument("--load", type=Path)
    a = ap.parse_args()
    warnings.filterwarnings("ignore")
    t0 = time.time()
    if a.load:
        data = _load(a.load)
    else:
        with tempfile.TemporaryDirectory(prefix="lwm-diag-") as tmp:
            data = collect(a.island, a.seed, Path(tmp))
        if a.dump:
            _dump(data, a.dump)
    analyse(data)
    if "preds" in data["users"][0]:
        compare_rules(data)
    print(f"total {time.time() - t0:.0f} s")
