"""Issue 13 item 5: a hostile market reconstructs a user's labelled rows through ``localize``.

The attack. The market (a real market server whose ``anchor_set``/``localize`` handlers are
replaced, so every answer is still properly signed and bound) publishes, with a valid developer
signature, learnwares whose models are decision stumps ``c * [x0 <= t]`` (scikit-learn
``DecisionTreeRegressor``, allow-listed), for 31 thresholds t over [-5, 5] (bins 0.32 wide) and
c = +C, -C, plus one model predicting 0. It names them all as anchors, coarse to fine (the order
that serves it best when a client evaluates only the first few), and asks for more in every
round. For rmse, with N(t) rows below t and label sum S(t) there:

    rmse(c, t)^2 - rmse(0)^2 = (c^2 N(t) - 2 c S(t)) / n

so each pair of values gives N(t)/n and S(t)/n; n comes from ``n_rows`` (or, when that is
bucketed, as the smallest n that makes every N(t)/n a multiple of 1/n). A bin holding one row
gives that row: x0 within the bin, y = S difference.

Printed: rows recovered with y exact (1e-6 relative) and with y close (within 5% of the labels'
sd), x0 bin width, anchors evaluated, over several users per size n, before (no budget) and
after (the SDK's default :class:`client_sdk.disclosure.MetricBudget`, and variants).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/localize_attack.py [--users 5]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
from sklearn.tree import DecisionTreeRegressor  # noqa: E402

from client_sdk.client import MarketClient  # noqa: E402
from client_sdk.disclosure import MetricBudget  # noqa: E402
from protocol.identity import Identity  # noqa: E402

FEATURES = ("x0", "x1")
SEMANTIC = {"name": "stumps", "description": "crafted anchors", "data_type": "table",
            "task_type": "regression", "input_features": list(FEATURES), "target": "y",
            "objective": "rmse"}
LO, HI, N_THRESHOLDS, C = -5.0, 5.0, 31, 10.0
THRESHOLDS = [LO + (HI - LO) * (k + 1) / N_THRESHOLDS for k in range(N_THRESHOLDS)]


def stump(t: float, c: float) -> DecisionTreeRegressor:
    """``c * [x0 <= t]`` (a constant 0 when c = 0): the tree splits at the midpoint t."""
    X = np.array([[t - 1.0, 0.0], [t + 1.0, 0.0]])
    return DecisionTreeRegressor(max_depth=1).fit(X, [c, 0.0])


def coarse_to_fine(k: int) -> list[int]:
    """Threshold indices, the one covering every row first, then halving the bins."""
    last = k - 1
    rest = sorted(range(last), key=lambda i: (-((i + 1) & -(i + 1)), i))
    return [last] + rest


@dataclass
class HostileMarket:
    """A market server turned hostile: it names every crafted stump as an anchor, in every
    round, and keeps every ``metrics_report`` it receives."""

    app: object
    url: str
    baseline: str = ""
    pairs: dict = field(default_factory=dict)        # threshold -> (id of +C, id of -C)
    order: list = field(default_factory=list)
    island_id: str = ""
    reports: list = field(default_factory=list)

    def publish_stumps(self, cache_dir: Path) -> None:
        dev = self.client(cache_dir)
        X = np.random.default_rng(0).uniform(LO, HI, size=(60, 2))
        self.baseline = dev.publish(stump(0.0, 0.0), X, dict(SEMANTIC), k=10)
        for t in THRESHOLDS:
            self.pairs[t] = tuple(dev.publish(stump(t, c), X, dict(SEMANTIC), k=10)
                                  for c in (C, -C))
        self.order = [self.baseline] + [i for k in coarse_to_fine(N_THRESHOLDS)
                                        for i in self.pairs[THRESHOLDS[k]]]
        self.island_id = dev.island(SEMANTIC)["island_id"]

    def client(self, cache_dir: Path) -> MarketClient:
        """A client of this market, its key pinned (no trust-on-first-use file is touched)."""
        key = self.app.extensions["learnware_market"].identity.public_key_b64
        return MarketClient(self.url, Identity.generate(), market_key=key,
                            transport=_transport(self.app), cache_dir=cache_dir)

    def install(self) -> None:
        market = self.app.extensions["learnware_market"].market
        market.anchor_set = self._anchor_set
        market.localize = self._localize

    def _anchor_set(self, body: dict) -> dict:
        return {"island_id": self.island_id, "anchors": self.order[:64], "objective": "rmse",
                "round": 0}

    def _localize(self, body: dict) -> dict:
        self.reports.append(body)
        return {"island_id": self.island_id, "single": [], "mixture": None,
                "objective": "rmse", "round": body["round"],
                "next_anchors": [i for i in self.order if i not in body["values"]][:100]}

    # --- reconstruction -------------------------------------------------------------------------
    def reconstruct(self, report: dict) -> list[tuple[float, float, float]]:
        """Rows (x0 low, x0 high, y) that ``report`` reveals: bins holding exactly one row."""
        vals = report["values"]
        if self.baseline not in vals:
            return []
        s2 = vals[self.baseline] ** 2
        fr = []
        for t, (p, m) in self.pairs.items():
            if p in vals and m in vals:
                mp, mm = vals[p] ** 2 - s2, vals[m] ** 2 - s2
                fr.append((t, (mp + mm) / (2 * C * C), (mm - mp) / (4 * C)))
        if not fr:
            return []
        fr.sort()
        a = np.array([f[1] for f in fr])
        n0 = int(report["n_rows"])
        cands = list(range(n0, int(2.5 * n0) + 2))
        score = [float(np.max(np.abs(a * n - np.rint(a * n)))) for n in cands]
        ok = [n for n, s in zip(cands, score) if s <= 0.15]
        n = ok[0] if ok else cands[int(np.argmin(score))]
        rows, prev_t, prev_N, prev_S = [], LO, 0, 0.0
        for t, ai, bi in fr:
            N, S = int(np.rint(ai * n)), bi * n
            if N - prev_N == 1:
                rows.append((prev_t, t, S - prev_S))
            prev_t, prev_N, prev_S = t, N, S
        return rows


def _transport(app):
    import httpx
    return httpx.WSGITransport(app=app)


def user_rows(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1000 + seed)
    X = np.column_stack([rng.uniform(LO + 0.2, HI - 0.2, n), rng.normal(size=n)])
    return X, 3.0 * X[:, 0] + 2.0 * X[:, 1] + 0.5 * rng.normal(size=n)


def score(rows, X: np.ndarray, y: np.ndarray) -> dict:
    """Recovered rows matched to the true ones: a claim counts when its bin holds exactly one
    true row; exact: y within 1e-6 relative, close: within 5% of the labels' sd."""
    exact = close = 0
    widths = []
    sd = float(np.std(y)) or 1.0
    for lo, hi, yy in rows:
        inside = np.nonzero((X[:, 0] > lo) & (X[:, 0] <= hi))[0]
        if len(inside) != 1:
            continue
        err = abs(yy - y[inside[0]])
        exact += err <= 1e-6 * max(1.0, abs(y[inside[0]]))
        if err <= 0.05 * sd:
            close += 1
            widths.append(hi - lo)
    return {"exact": int(exact), "close": int(close), "claimed": len(rows),
            "width": float(np.median(widths)) if widths else float("nan")}


def attack(market: HostileMarket, X, y, budget: MetricBudget, cache_dir: Path,
           rounds: int = 3) -> dict:
    """One user localises against the hostile market; returns the score of the reconstruction
    from the last (cumulative) report, plus what the client sent."""
    user = market.client(cache_dir)
    market.reports.clear()
    if budget.max_rounds is not None:
        rounds = min(rounds, budget.max_rounds)
    res = user.localize(X, y, dict(SEMANTIC), rounds=rounds, budget=budget)
    report = market.reports[-1]
    out = score(market.reconstruct(report), X, y)
    out.update(sent=len(report["values"]), ignored=res.anchors_ignored,
               n_rows=report["n_rows"])
    return out


BUDGETS = {
    "none (before)": MetricBudget.unlimited(),
    "caps only": MetricBudget(significant_digits=None, bucket_n_rows=False, jitter=0.0),
    "caps + 3 digits + n grid": MetricBudget(jitter=0.0),
    "default (+ jitter 0.5)": MetricBudget(),
    "default, epsilon=10 clip=30": MetricBudget(epsilon=10.0, clip=30.0),
}


def make_market(root: Path) -> HostileMarket:
    from market_server import ServerConfig, create_app
    # the attacker runs the market: no per-address budget stops it publishing its 63 stumps
    app = create_app(ServerConfig(data_dir=root / "data", refine_at=(), rate_limit_address="",
                                  rate_limit_address_text="", rate_limit_address_publish=""))
    market = HostileMarket(app, "http://hostile.test")
    market.publish_stumps(root / "dev-cache")
    market.install()
    return market


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--users", type=int, default=5, help="users per size n")
    ap.add_argument("--sizes", type=int, nargs="+", default=[6, 20, 100])
    args = ap.parse_args(argv)
    t0 = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        market = make_market(root)
        print(f"hostile market: {len(market.order)} crafted anchors (1 constant + "
              f"{N_THRESHOLDS} thresholds x 2), bins {(HI - LO) / N_THRESHOLDS:.2f} wide; "
              f"published in {time.time() - t0:.1f}s")
        print(f"{'budget':<30}{'n':>5}{'sent':>6}{'ignored':>8}{'n_rows':>7}"
              f"{'y exact':>10}{'y close':>10}{'bin':>6}")
        for name, budget in BUDGETS.items():
            for n in args.sizes:
                runs = [attack(market, *user_rows(n, s), budget, root / "user-cache")
                        for s in range(args.users)]
                tot = n * len(runs)
                ex = sum(r["exact"] for r in runs)
                cl = sum(r["close"] for r in runs)
                widths = [r["width"] for r in runs if r["close"]]
                print(f"{name:<30}{n:>5}{runs[0]['sent']:>6}{runs[0]['ignored']:>8}"
                      f"{runs[0]['n_rows']:>7}{ex / tot:>10.0%}{cl / tot:>10.0%}"
                      f"{(np.median(widths) if widths else float('nan')):>6.2f}")
    print(f"(rows as a share of all users' rows; {args.users} users per n; "
          f"total {time.time() - t0:.0f}s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
