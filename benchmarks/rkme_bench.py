"""RKME engine benchmark: fit time, memory, quality, QP accuracy, privacy and the search hot path.

Set-up mirrors the reference figures (``/work/shared/reference-figures.md``: learnware 0.4,
``RKMETableSpecification``, K = 100, steps = 3, Gaussian kernel gamma = 0.1 on raw features):
``RKMESpec.fit(X, k=100, gamma=0.1, scales=ones, steps=3)``.

Data: a Gaussian mixture of 5 equally likely components, centres ~ N(0, 16 I), unit isotropic
noise. Its "K random rows" column lands where the reference's does (the kernel is as narrow for
these data as for the reference's), but the rows themselves are not the reference's.

Per (n, d):

* fit time: median of ``--repeats`` wall-clock fits (1 for n = 1M), with CPU time and the k-means++
  seeding part ("init");
* peak memory: tracemalloc peak during one fit (every numpy buffer is traced), beside the size of X;
* squared MMD between the RKME and the empirical embedding of all of X, computed exactly (every
  pair, float64, chunked); for n = 1M against a 50,000-row subsample (whose own distance to the
  full embedding is about (1 - E k)/50,000 = 2e-5);
* the same for K = 100 random rows with equal weights (what the RKME must beat; those would be raw
  data, which we never send).

Then: the KKT residual of the QP (worst over every QP of the fits, plus a scipy cross-check), the
membership-inference AUC at the defaults (attack "x lies within r of some z"; training rows against
fresh rows of the same distribution), and the search hot path (N = 10,000 embeddings, k = 50,
d = 10).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/rkme_bench.py [--skip-1m] [--repeats 5]
"""
from __future__ import annotations

import argparse
import os
import sys
import time
import tracemalloc

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from client_sdk.rkme import RKMESpec, membership_inference_auc  # noqa: E402
from learnware_core.kernels import embedding_inner  # noqa: E402
from market_server.embedding_stack import EmbeddingStack, mmd2_to_many  # noqa: E402
from learnware_core.simplex import simplex_qp  # noqa: E402

GAMMA = 0.1
K = 100
STEPS = 3
REFERENCE = {  # learnware 0.4.0.post1 on this kind of machine: time s, init s, MMD, random MMD
    (1_000, 10): (0.051, 0.005, 0.0046, 0.0092),
    (10_000, 10): (0.404, 0.211, 0.0093, 0.0094),
    (10_000, 50): (0.612, 0.165, 0.0351, 0.0099),
    (50_000, 20): (5.26, 4.23, 0.0280, 0.0101),
}


def make_data(n: int, d: int, seed: int = 0, components: int = 5) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=4.0, size=(components, d))
    labels = rng.integers(components, size=n)
    X = rng.standard_normal((n, d))
    X += centres[labels]
    return X


def self_inner_exact(X: np.ndarray, gamma: float, block: int = 2048) -> float:
    """<mu_X, mu_X> over every pair (symmetric blocks, float64)."""
    n = X.shape[0]
    sq = np.einsum("ij,ij->i", X, X)
    total = 0.0
    for a in range(0, n, block):
        Xa, sa = X[a:a + block], sq[a:a + block]
        for b in range(a, n, block):
            G = Xa @ X[b:b + block].T
            G *= 2.0
            G -= sa[:, None]
            G -= sq[None, b:b + block]
            np.minimum(G, 0.0, out=G)
            G *= gamma
            np.exp(G, out=G)
            total += (1.0 if a == b else 2.0) * float(G.sum())
    return total / (n * n)


def mmd2_to_data(z, b, X, x_self: float, gamma: float) -> float:
    w = np.full(X.shape[0], 1.0 / X.shape[0])
    return max(embedding_inner(z, b, z, b, gamma) + x_self
               - 2.0 * embedding_inner(z, b, X, w, gamma), 0.0)


def bench_fit(n: int, d: int, repeats: int) -> dict:
    X = make_data(n, d)
    ones = np.ones(d)
    walls, cpus, inits, specs = [], [], [], []
    for r in range(repeats):
        t, c = time.perf_counter(), time.process_time()
        spec = RKMESpec.fit(X, k=K, gamma=GAMMA, scales=ones, steps=STEPS, random_state=0)
        walls.append(time.perf_counter() - t)
        cpus.append(time.process_time() - c)
        inits.append(spec.fit_info["init_seconds"])
        specs.append(spec)
    assert all(np.array_equal(s.z, specs[0].z) for s in specs), "fit is not deterministic"
    tracemalloc.start()
    tracemalloc.reset_peak()
    RKMESpec.fit(X, k=K, gamma=GAMMA, scales=ones, steps=STEPS, random_state=0)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    spec = specs[0]
    if n > 50_000:
        sub = np.random.default_rng(7).choice(n, size=50_000, replace=False)
        Xe, note = X[sub], "vs 50k-row subsample"
    else:
        Xe, note = X, "exact"
    t = time.perf_counter()
    x_self = self_inner_exact(Xe, GAMMA)
    mmd_spec = mmd2_to_data(spec.z, spec.beta, Xe, x_self, GAMMA)
    rows = X[np.random.default_rng(1).choice(n, size=K, replace=False)]
    mmd_rand = mmd2_to_data(rows, np.full(K, 1.0 / K), Xe, x_self, GAMMA)
    return {"n": n, "d": d, "wall": float(np.median(walls)), "wall_min": min(walls),
            "wall_max": max(walls), "cpu": float(np.median(cpus)),
            "init": float(np.median(inits)), "peak_mb": peak / 2**20, "x_mb": X.nbytes / 2**20,
            "mmd": mmd_spec, "mmd_random": mmd_rand, "note": note, "k": spec.k,
            "kkt_max": spec.fit_info["qp_kkt_max"], "passes": spec.fit_info["passes"],
            "pushed": spec.fit_info["n_pushed"], "eval_s": time.perf_counter() - t}


def qp_check() -> dict:
    """simplex_qp against scipy's SLSQP on an RKME-like QP (kernel Gram of 100 points)."""
    from scipy.optimize import minimize

    rng = np.random.default_rng(3)
    Z = make_data(100, 10, seed=3)
    X = make_data(5000, 10, seed=4)
    Kzz = np.exp(-GAMMA * ((Z[:, None] - Z[None]) ** 2).sum(-1))
    c = np.exp(-GAMMA * ((Z[:, None] - X[None]) ** 2).sum(-1)).mean(1)
    t = time.perf_counter()
    b, info = simplex_qp(Kzz, c)
    t_ours = time.perf_counter() - t
    n = len(c)
    t = time.perf_counter()
    ref = minimize(lambda x: 0.5 * x @ Kzz @ x - c @ x, np.full(n, 1.0 / n),
                   jac=lambda x: Kzz @ x - c, bounds=[(0, 1)] * n, method="SLSQP",
                   constraints=[{"type": "eq", "fun": lambda x: x.sum() - 1,
                                 "jac": lambda x: np.ones(n)}],
                   options={"ftol": 1e-15, "maxiter": 2000})
    t_ref = time.perf_counter() - t
    del rng
    return {"kkt": info["kkt"], "gap": info["gap"], "iterations": info["iterations"],
            "seconds": t_ours, "objective_minus_scipy": info["objective"] - ref.fun,
            "scipy_seconds": t_ref}


def mi_check() -> list[dict]:
    out = []
    for n, d, gamma in ((1000, 10, None), (2000, 20, None), (10_000, 10, GAMMA)):
        X = make_data(2 * n, d, seed=11)
        train, fresh = X[:n], X[n:]
        kw = {} if gamma is None else {"gamma": gamma, "scales": np.ones(d)}
        spec = RKMESpec.fit(train, **kw)
        out.append({"n": n, "d": d, "kernel": "default" if gamma is None else f"gamma={gamma}",
                    "k": spec.k, "auc": membership_inference_auc(spec, train, fresh),
                    "min_dist_ratio": spec.fit_info["min_distance"]
                    / spec.fit_info["median_nn_distance"]})
    return out


def hot_path(repeats: int = 7) -> dict:
    N, k, d = 10_000, 50, 10
    rng = np.random.default_rng(5)
    owner = np.repeat(np.arange(N), k)
    Z = rng.normal(size=(N, d))[owner] + rng.normal(size=(N * k, d))
    B = rng.random(N * k)
    B /= np.bincount(owner, weights=B)[owner]
    z = rng.normal(size=(k, d))
    b = np.full(k, 1.0 / k)
    t = time.perf_counter()
    stack = EmbeddingStack(Z, B, owner, GAMMA)
    t_build = time.perf_counter() - t
    stack.mmd2_to(z, b)
    times = {}
    for label, fn in (("stack (float32 block)", lambda: stack.mmd2_to(z, b)),
                      ("stack precision=double", lambda: stack.mmd2_to(z, b, precision="double")),
                      ("mmd2_to_many() function",
                       lambda: mmd2_to_many(z, b, Z, B, owner, stack.self_inner, GAMMA))):
        ts, cs = [], []
        for _ in range(repeats):
            t, c = time.perf_counter(), time.process_time()
            fn()
            ts.append(time.perf_counter() - t)
            cs.append(time.process_time() - c)
        times[label] = (float(np.median(ts)), float(np.median(cs)))
    err = float(np.max(np.abs(stack.mmd2_to(z, b) - stack.mmd2_to(z, b, precision="double"))))
    return {"build": t_build, "times": times, "single_vs_double": err}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--skip-1m", action="store_true", help="skip n = 1,000,000")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    sizes = [(1_000, 10), (10_000, 10), (10_000, 50), (50_000, 20)]
    if not args.skip_1m:
        sizes.append((1_000_000, 20))
    print(f"RKME fit: K={K}, steps={STEPS}, gamma={GAMMA}, raw features (scales = 1); "
          f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    print(f"{'n':>9} {'d':>3} | {'wall s (min/max)':>22} {'cpu s':>7} {'init s':>7} | "
          f"{'peak MiB':>8} {'X MiB':>6} | {'MMD2 RKME':>9} {'MMD2 rand':>9} | "
          f"{'ref s':>6} {'ref MMD2':>8} {'speed-up':>8} | notes")
    rows = []
    kkt = 0.0
    for n, d in sizes:
        r = bench_fit(n, d, 1 if n >= 1_000_000 else args.repeats)
        rows.append(r)
        kkt = max(kkt, r["kkt_max"])
        ref = REFERENCE.get((n, d))
        ref_s = f"{ref[0]:6.3f}" if ref else "     -"
        ref_m = f"{ref[2]:8.4f}" if ref else "       -"
        speed = f"{ref[0] / r['wall']:7.1f}x" if ref else "       -"
        print(f"{n:>9,} {d:>3} | {r['wall']:7.3f} ({r['wall_min']:.3f}/{r['wall_max']:.3f}) "
              f"{r['cpu']:7.3f} {r['init']:7.3f} | {r['peak_mb']:8.1f} {r['x_mb']:6.1f} | "
              f"{r['mmd']:9.5f} {r['mmd_random']:9.5f} | {ref_s} {ref_m} {speed} | "
              f"{r['note']}, k={r['k']}, passes={r['passes']}, pushed={r['pushed']}",
              flush=True)
    q = qp_check()
    print(f"\nQP (simplex_qp, 100 variables): KKT residual {q['kkt']:.2e}, Frank-Wolfe gap "
          f"{q['gap']:.2e}, {q['iterations']} iterations, {q['seconds'] * 1e3:.1f} ms; objective "
          f"minus scipy SLSQP {q['objective_minus_scipy']:+.2e} (SLSQP {q['scipy_seconds']:.2f} s)."
          f" Worst KKT residual over every QP of the fits above: {kkt:.2e}")
    print("\nMembership inference (attack: x within r of some z; AUC over r, train vs fresh rows):")
    for m in mi_check():
        print(f"  n={m['n']:>6,} d={m['d']:>2} kernel={m['kernel']:<9} k={m['k']:>3}: "
              f"AUC {m['auc']:.3f}; nearest row to any z at {m['min_dist_ratio']:.2f} x the "
              f"median row-to-row NN distance")
    h = hot_path()
    print(f"\nSearch hot path, N=10,000 embeddings x k=50, d=10 (stack built once in "
          f"{h['build']:.2f} s):")
    for label, (w, c) in h["times"].items():
        print(f"  {label:<26} {w * 1e3:7.1f} ms wall, {c * 1e3:7.1f} ms cpu")
    print(f"  max |float32 block - float64| over the N squared MMDs: {h['single_vs_double']:.1e}")


if __name__ == "__main__":
    main()
