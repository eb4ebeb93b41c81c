"""What an anchor request costs the market: CPU (market process + sandbox workers) and peak RSS.

An ``anchor_request`` is cheap to send (any fresh key may) and makes the market build the island's
anchor profile (market_server/profiles.py, anchors.py). For each island size N the island is
written straight into the store (benchmarks/search_bench.py::fill_island: ridge models, one
cluster per learnware), then a fresh market process answers:

* ``first``: the first anchor request (a full profile build over at most
  ``max_profile_learnwares`` learnwares);
* ``again``: the same request again (the cached profile);
* ``after publish``: one more learnware published (straight into the store), then the request
  (the profile is updated for the learnware that joined, or kept when it did not join).

CPU is user + system time of the market process and of its sandbox workers (from /proc); peak
RSS is each process's high-water mark (VmHWM) at the end.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/anchor_cost_bench.py [--sizes 100 1000 10000]
        [--cap 128] [--data /tmp/anchor-cost]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))


def _proc_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _proc_hwm_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _publish_one(store, island_pk: int, n: int) -> None:
    """One more learnware like fill_island's, straight into the store."""
    import numpy as np
    from sklearn.linear_model import Ridge
    from protocol.artefact import sha256_hex, sign_artefact
    from protocol.encoding import encode_array
    from protocol.identity import Identity
    from learnware_core.island import base_kernel
    from learnware_core.modelfile import dump_model
    from search_bench import D, K, SEMANTIC

    rng = np.random.default_rng(n + 12345)
    gamma, scales = base_kernel(np.ones(D), D)
    model = Ridge().fit(rng.normal(size=(20, D)), rng.normal(size=20))
    model.intercept_ = float(n) + 0.5
    data = dump_model(model)
    sha = sha256_hex(data)
    spec = {"z": encode_array(rng.normal(size=(K, D)) * 3), "beta":
            encode_array(np.full(K, 1.0 / K)), "gamma": gamma, "scales": encode_array(scales),
            "n_features": D}
    me = Identity.generate()
    store.publish(island_pk=island_pk, developer=me.public_key_b64, developer_key_id=me.key_id,
                  semantic=SEMANTIC, spec=spec, model_sha256=sha, model=data,
                  artefact=sign_artefact(me, SEMANTIC, spec, sha))


def measure(data_dir: Path, cap: int | None) -> dict:
    """In this (fresh) process: the three requests of the module docstring."""
    from market_server.app import create_app
    from market_server.config import ServerConfig
    from search_bench import SEMANTIC

    extra = {} if cap is None else {"max_profile_learnwares": cap}
    app = create_app(ServerConfig(data_dir=data_dir, refine_at=(), **extra))
    market = app.extensions["learnware_market"].market
    body = {"semantic": SEMANTIC, "max_anchors": 8}
    out = {}

    def timed(name):
        pids = [w.proc.pid for w in market.sandbox._workers]
        before = time.process_time(), {p: _proc_cpu(p) for p in pids}
        t0 = time.perf_counter()
        res = market.anchor_set(body)
        wall = time.perf_counter() - t0
        worker_cpu = sum(_proc_cpu(w.proc.pid) - before[1].get(w.proc.pid, 0.0)
                         for w in market.sandbox._workers)
        out[name] = {"wall_s": round(wall, 3),
                     "market_cpu_s": round(time.process_time() - before[0], 3),
                     "sandbox_cpu_s": round(worker_cpu, 3), "anchors": len(res["anchors"])}

    timed("first")
    timed("again")
    island = market.island_for(SEMANTIC)
    _publish_one(market.store, island.pk, market.store.count_live(island.pk))
    timed("after publish")
    prof = market.profile(market.island_for(SEMANTIC))
    out["profile_learnwares"] = prof.n
    out["market_peak_rss_mb"] = round(_proc_hwm_mb(os.getpid()), 1)
    out["sandbox_peak_rss_mb"] = round(max((_proc_hwm_mb(w.proc.pid)
                                            for w in market.sandbox._workers), default=0.0), 1)
    market.sandbox.close()
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[100, 1000, 10_000])
    ap.add_argument("--cap", type=int, default=None, help="max_profile_learnwares (default: "
                    "the ServerConfig default)")
    ap.add_argument("--data", type=Path, default=Path("/tmp/anchor-cost"))
    ap.add_argument("--timeout", type=float, default=600.0)
    ap.add_argument("--measure", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.measure is not None:
        print(json.dumps(measure(args.measure, args.cap)))
        return 0
    import shutil

    from search_bench import fill_island
    for n in args.sizes:
        folder = args.data / f"n{n}"
        if not (folder / "filled").exists():  # the island is written once, reused by every run
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(parents=True)
            fill_island(folder, n)
            (folder / "filled").touch()
        work = args.data / f"n{n}-run"  # a copy: the measurement publishes one more
        shutil.rmtree(work, ignore_errors=True)
        shutil.copytree(folder, work)
        cmd = [sys.executable, __file__, "--measure", str(work)]
        if args.cap is not None:
            cmd += ["--cap", str(args.cap)]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
        except subprocess.TimeoutExpired:
            print(f"N = {n:>6}: did not finish in {args.timeout:g} s")
            continue
        if done.returncode != 0:
            print(f"N = {n:>6}: failed: {done.stderr.strip().splitlines()[-1:]}")
            continue
        r = json.loads(done.stdout.strip().splitlines()[-1])
        print(f"N = {n:>6} (profile over {r['profile_learnwares']}), peak RSS market "
              f"{r['market_peak_rss_mb']:.0f} MB, sandbox {r['sandbox_peak_rss_mb']:.0f} MB")
        for name in ("first", "again", "after publish"):
            m = r[name]
            print(f"    {name:14s} wall {m['wall_s']:7.3f} s   CPU market {m['market_cpu_s']:7.3f} s"
                  f" + sandbox {m['sandbox_cpu_s']:7.3f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
