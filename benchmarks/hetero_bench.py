"""Heterogeneous learnwares (issue #15): users whose columns match no island exactly, served by
the islands their features connect to, side by side with the homogeneous market.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/hetero_bench.py [--island txhousing|vote|all]
        [--quick] [--seed 0] [--out hetero-out]

Prints, per island: the table (mean over the held-out users) of every method on the demo's n
grid; the filling rules side by side (auto = chosen from spec evidence, conditional, median);
the share of the market_mean -> oracle gap that top-1 and averaging close; whether the best
market method beats scratch at n <= 20; and the improvement over market_mean the same users get
from the heterogeneous market as a share of what the homogeneous market gives them.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from client_sdk.demo.hetero import hetero_report

if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--island", default="all", choices=["txhousing", "vote", "all"])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="hetero-out")
    a = ap.parse_args()
    t0 = time.time()
    hetero_report(Path(a.out), a.island, quick=a.quick, seed=a.seed, progress=False)
    print(f"\ntotal {time.time() - t0:.0f} s")
