"""Backups of a serving market (issue 20): how long ``lwm admin backup`` and ``restore`` take on
an island of N learnwares (k = 50, d = 10, as in search_bench.py), and what a backup running
next to the market costs its searches.

A real server (``lwm serve``, one process) serves the island; one client thread sends signed
searches back to back (checking every answer's signature) for a fixed count, first alone (the
baseline), then while ``lwm admin backup`` runs again and again in another process (as an
operator's cron job would). Printed: backup and restore wall times (medians), the backup's
size, and the search latency medians and 90th percentiles in both phases with their ratio.

Run:
  OMP_NUM_THREADS=1 .venv/bin/python benchmarks/backup_bench.py                 # SQLite
  OMP_NUM_THREADS=1 .venv/bin/python benchmarks/backup_bench.py \\
      --db postgresql://root@127.0.0.1:5432/test    # a fresh schema, created and dropped
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from search_bench import SEMANTIC, fill_island, requirement  # noqa: E402  (same island)

QUERY = {k: SEMANTIC[k] for k in ("data_type", "task_type", "input_features", "target",
                                  "objective")}


def _pct(values: list[float], q: float) -> float:
    return sorted(values)[min(len(values) - 1, int(q * len(values)))]


def searches(url: str, market_key: str, reqs: list[dict], count: int) -> list[float]:
    """``count`` signed searches back to back; the latency of each (seconds)."""
    import httpx
    from protocol.envelope import open_envelope, seal
    from protocol.identity import Identity, key_id_of
    me, aud = Identity.generate(), key_id_of(market_key)
    out = []
    with httpx.Client(base_url=url, timeout=60) as http:
        for i in range(count):
            body = {"semantic": QUERY, "max_results": 5, "requirement": reqs[i % len(reqs)]}
            t0 = time.perf_counter()
            resp = http.post("/v1/search", content=seal(me, "search", body, audience=aud))
            out.append(time.perf_counter() - t0)
            env = open_envelope(resp.content, nonce_store=None, expected_sender=market_key,
                                window_s=3600)
            if resp.status_code != 200 or not env.body["single"]:
                raise RuntimeError(f"search failed: {resp.status_code} {env.body}")
    return out


def admin(*args: str) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "market_server", "admin", *args], check=True,
                   capture_output=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=1000, help="learnwares on the island")
    p.add_argument("--db", default=None, help="postgresql://... (default SQLite)")
    p.add_argument("--searches", type=int, default=300, help="searches per phase")
    p.add_argument("--trials", type=int, default=3, help="timed backups and restores")
    args = p.parse_args()

    import httpx
    from client_sdk.demo.server import ServerProcess
    from market_server.config import ServerConfig

    tmp = Path(tempfile.mkdtemp(prefix="lwm-backup-bench-"))
    schema = None
    try:
        data = tmp / "market"
        store_args: list[str] = []
        if args.db:
            import psycopg
            schema = f"lwm_bench_{uuid.uuid4().hex[:12]}"
            with psycopg.connect(args.db, autocommit=True) as conn:
                conn.execute(f'CREATE SCHEMA "{schema}"')
            store_args = ["--db", args.db, "--db-schema", schema]
            cfg = ServerConfig(data_dir=data, db_url=args.db, db_schema=schema, refine_at=())
        else:
            cfg = ServerConfig(data_dir=data, refine_at=())
        t0 = time.perf_counter()
        fill_island(cfg, args.n)
        print(f"island of {args.n} learnwares written in {time.perf_counter() - t0:.1f} s "
              f"({'PostgreSQL' if args.db else 'SQLite'})")
        reqs = [requirement(args.n, (i * 37) % args.n, i) for i in range(20)]
        dirs = ["--data-dir", str(data), *store_args]

        backup_s, restore_s = [], []
        for t in range(args.trials):
            backup_s.append(admin("backup", str(tmp / f"bk-{t}"), *dirs))
        size = sum(f.stat().st_size for f in (tmp / "bk-0").rglob("*") if f.is_file())
        for t in range(args.trials):  # restore into a fresh SQLite market each time
            restore_s.append(admin("restore", str(tmp / "bk-0"), "--data-dir",
                                   str(tmp / f"restored-{t}")))
        print(f"backup  median {statistics.median(backup_s):.2f} s  "
              f"({size / 1e6:.1f} MB, {args.trials} runs: "
              f"{', '.join(f'{s:.2f}' for s in backup_s)})")
        print(f"restore median {statistics.median(restore_s):.2f} s into SQLite "
              f"({', '.join(f'{s:.2f}' for s in restore_s)})")

        with ServerProcess(data, extra_args=[*store_args, "--refine-at", "none"],
                           address_limits=False) as server:
            market_key = httpx.get(server.url + "/v1/market").json()["market_key"]
            searches(server.url, market_key, reqs, 20)  # warm the index
            alone = searches(server.url, market_key, reqs, args.searches)
            stop, runs = threading.Event(), []

            def backups():
                i = 0
                while not stop.is_set():
                    runs.append(admin("backup", str(tmp / f"loop-{i}"), *dirs))
                    shutil.rmtree(tmp / f"loop-{i}", ignore_errors=True)
                    i += 1

            t = threading.Thread(target=backups)
            t.start()
            try:
                time.sleep(1.0)  # the first backup is under way
                during = searches(server.url, market_key, reqs, args.searches)
            finally:
                stop.set()
                t.join()
        m0, m1 = statistics.median(alone), statistics.median(during)
        print(f"search alone          median {m0 * 1e3:.1f} ms  p90 {_pct(alone, .9) * 1e3:.1f} ms"
              f"  ({len(alone)} searches)")
        print(f"search during backups median {m1 * 1e3:.1f} ms  p90 {_pct(during, .9) * 1e3:.1f} "
              f"ms  ({len(during)} searches, {len(runs)} backups ran)")
        print(f"ratio during/alone: median {m1 / m0:.2f}x  p90 "
              f"{_pct(during, .9) / _pct(alone, .9):.2f}x")
    finally:
        if schema is not None:
            import psycopg
            with psycopg.connect(args.db, autocommit=True) as conn:
                conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
