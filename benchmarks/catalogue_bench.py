"""The web catalogue at scale (issue #16): the island page of a 10,000-learnware island.

The island (k = 50 reduced points, d = 10, names from a word list, ~200-character descriptions)
is written into the store's tables in one transaction with the live totals a publish keeps
(publishing 10,000 learnwares through the checks, or even through ``Store.publish`` with a
model file each, would only measure publishing; no model files are written, so the learnware
pages here report the model type as unknown). Then, through the whole Flask app (routing, SQL,
the map cache, Jinja), in process and over HTTP to a real ``lwm serve`` process:

* the island page: default order, by name, by size, deep pages (the mix a person clicks through);
  p50 / p90 with the map cached (the catalogue's path);
* the baseline in the same script: the same requests with the catalogue's caches emptied
  before each one (the MDS over the sample recomputed per view, the order re-read), and one
  unpaginated page of all N rows;
* the first view after a publish (the sample is re-checked; the map is kept unless the new
  learnware enters the sample), the home page and a learnware page.

Run: OMP_NUM_THREADS=1 .venv/bin/python benchmarks/catalogue_bench.py [--n 10000]
     [--pg postgresql://root@127.0.0.1:5432/test]   (PostgreSQL: a throw-away schema)
Goal: island page p50 <= 50 ms at N = 10,000.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import numpy as np
import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from client_sdk import Identity  # noqa: E402
from client_sdk.demo.server import ServerProcess  # noqa: E402
from learnware_core.island import base_kernel  # noqa: E402
from learnware_core.semantic import island_key  # noqa: E402
from market_server import ServerConfig, create_app  # noqa: E402
from market_server import storage  # noqa: E402
from protocol.encoding import encode_array  # noqa: E402

D, K = 10, 50
SEMANTIC = {"data_type": "table", "task_type": "regression",
            "input_features": [f"x{i}" for i in range(D)], "target": "y", "objective": "rmse"}
WORDS = ("austin boston chicago denver seattle houston dallas paso sales listings inventory "
         "median volume weather traffic rainfall crime prices forecast yearly monthly model "
         "ridge boosted forest linear robust").split()


def bench_config(data_dir: Path, pg: str | None, schema: str | None) -> ServerConfig:
    db = {"db_url": pg, "db_schema": schema} if pg else {}
    return ServerConfig(data_dir=data_dir, refine_at=(), rate_limit_address="", **db)


def fill_island(cfg: ServerConfig, n: int, seed: int = 0) -> None:
    """N live learnwares on one island, written in one transaction (see the module doc)."""
    app = create_app(cfg)
    state = app.extensions["learnware_market"]
    store = state.store
    gamma, scales = base_kernel(np.ones(D), D)
    island = store.ensure_island(island_key(SEMANTIC), dict(SEMANTIC), D,
                                 {"gamma": gamma, "scales": scales.tolist(),
                                  "base_scales": scales.tolist()})
    rng = np.random.default_rng(seed)
    n_centres = max(1, n // 10)  # clustered as in scale_bench.py: neighbouring clusters overlap
    centres = rng.uniform(-1, 1, size=(n_centres, D)) * 3.0 * n_centres ** (1.0 / D)
    devs = [Identity.generate() for _ in range(20)]
    now = time.time() - n
    rows = []
    for i in range(n):
        name = " ".join(rng.choice(WORDS, size=3)) + f" {i}"
        sem = dict(SEMANTIC, name=name, description=(f"{name}: " + " ".join(
            rng.choice(WORDS, size=25))), tags=list(rng.choice(WORDS, size=2)))
        z = centres[i % n_centres] + rng.normal(scale=0.7, size=D) + rng.normal(size=(K, D))
        spec = {"z": encode_array(z), "beta": encode_array(np.full(K, 1.0 / K)),
                "gamma": gamma, "scales": encode_array(scales), "n_features": D}
        dev = devs[i % len(devs)]
        rows.append({"island_id": island.pk, "developer": dev.public_key_b64,
                     "developer_key_id": dev.key_id, "name": name, "semantic": json.dumps(sem),
                     "spec": json.dumps(spec), "model_sha256": hashlib.sha256(
                         f"model {i}".encode()).hexdigest(), "model_size": int(
                         rng.integers(2_000, 400_000)), "artefact": "{}",
                     "created_at": now + i, "deleted_at": None, "live": 1})
    with store.engine.begin() as conn:
        conn.execute(storage.learnwares.insert(), rows)
        ids = [r[0] for r in conn.execute(sa.select(storage.learnwares.c.id))]
        conn.execute(storage.islands.update().where(storage.islands.c.id == island.pk).values(
            version=storage.islands.c.version + 1,
            **dict(zip(storage.LIVE_TOTALS, storage.live_totals(ids)))))
    state.market.sandbox.close()
    store.dispose()


def publish_one(store, n: int) -> None:
    """One more learnware (a publish: the island's version and live totals move)."""
    island = store.list_islands()[0]
    with store.engine.begin() as conn:
        row = conn.execute(sa.select(storage.learnwares).where(
            storage.learnwares.c.id == 1)).mappings().first()
        new = dict(row, name=f"fresh publish {n}", created_at=time.time(),
                   model_sha256=hashlib.sha256(f"fresh {n}".encode()).hexdigest())
        new.pop("id")
        pk = conn.execute(storage.learnwares.insert().values(**new)).inserted_primary_key[0]
        conn.execute(storage.islands.update().where(storage.islands.c.id == island.pk)
                     .values(version=storage.islands.c.version + 1,
                             live_count=storage.islands.c.live_count + 1,
                             live_sum=storage.islands.c.live_sum + pk,
                             live_sumsq=(storage.islands.c.live_sumsq + pk * pk)
                             % storage.SUMSQ_MOD))


def requests_mix(n: int, trials: int, per_page: int = 50) -> list[str]:
    """What a person clicks through: first pages in each order, and deep pages."""
    rng = np.random.default_rng(3)
    pages = max(1, n // per_page)
    kinds = ["", "?sort=name&order=asc", "?sort=size&order=desc", "?sort=developer&order=asc",
             "?sort=published&order=asc"]
    out = []
    for t in range(trials):
        q = kinds[t % len(kinds)]
        if t % 3 == 2:  # a deep page
            page = int(rng.integers(2, pages + 1))
            q = (q + "&" if q else "?") + f"page={page}"
        out.append("/islands/isl-1" + q)
    return out


def timed(get, paths, before=None) -> list[float]:
    times = []
    for path in paths:
        if before:
            before()
        t0 = time.perf_counter()
        r = get(path)
        times.append(time.perf_counter() - t0)
        assert r.status_code == 200, (path, r.status_code, r.text[:300])
    return times


def ms(xs, q=50) -> float:
    return float(np.percentile(xs, q)) * 1000


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--trials", type=int, default=60)
    ap.add_argument("--pg", default=None, help="PostgreSQL URL (default: SQLite in a tmp dir)")
    args = ap.parse_args()
    n = args.n
    schema = f"lwm_bench_{uuid.uuid4().hex[:12]}" if args.pg else None
    if args.pg:
        with sa.create_engine(ServerConfig(db_url=args.pg).resolved_db_url()).begin() as c:
            c.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    try:
        run(args, n, schema)
    finally:
        if args.pg:
            with sa.create_engine(ServerConfig(db_url=args.pg).resolved_db_url()).begin() as c:
                c.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))


def run(args, n: int, schema: str | None) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        cfg = bench_config(data, args.pg, schema)
        t0 = time.perf_counter()
        fill_island(cfg, n)
        print(f"island of N = {n} learnwares (k = {K}, d = {D}) written in "
              f"{time.perf_counter() - t0:.1f} s on {'PostgreSQL' if args.pg else 'SQLite'}; "
              f"latencies in ms (p50 / p90)")
        app = create_app(cfg)
        state = app.extensions["learnware_market"]
        cat = app.extensions["learnware_catalogue"]
        client = app.test_client()
        paths = requests_mix(n, args.trials)
        t0 = time.perf_counter()
        first = client.get("/islands/isl-1")
        cold = time.perf_counter() - t0
        assert first.status_code == 200
        imap, _ = cat.island_map(state.market.island_by_public_id("isl-1"))
        print(f"  first island page view (builds the map of {len(imap.pks)} learnwares, "
              f"stress {imap.stress:.2f}): {cold * 1000:.0f} ms")
        cached = timed(client.get, paths)
        uncached = timed(client.get, paths[: max(10, args.trials // 3)],
                         before=cat.clear_caches)
        t0 = time.perf_counter()
        everything = client.get("/islands/isl-1?per_page=200")  # the most a page holds
        t_200 = time.perf_counter() - t0
        assert everything.status_code == 200
        # baseline: the whole island in one page (no pagination): Catalogue.learnwares with
        # per_page = N, rendered by the same template
        from flask import render_template
        with app.test_request_context("/islands/isl-1"):
            isl = state.market.island_by_public_id("isl-1")
            t0 = time.perf_counter()
            page = cat.learnwares(isl, per_page=n)
            m, pts = cat.island_map(isl)
            html = render_template("web/island.html", island=isl, kernel=cat.kernel(isl),
                                   page=page, withdrawn=False, imap=m,
                                   points=[(p, 0.0, 0.0) for p in pts], map_w=640, map_h=400,
                                   count=n)
            t_all = time.perf_counter() - t0
        print(f"  island page, in process, map cached  : p50 {ms(cached):6.1f}  p90 "
              f"{ms(cached, 90):6.1f}   ({len(cached)} requests: 5 orders, 1 in 3 a deep page)")
        print(f"  baseline: caches emptied every view   : p50 {ms(uncached):6.1f}  p90 "
              f"{ms(uncached, 90):6.1f}   -> cache {ms(uncached) / ms(cached):.1f}x faster")
        print(f"  baseline: all {n} rows on one page  : {t_all * 1000:6.0f} ms "
              f"({len(html) / 1e6:.1f} MB of HTML)  -> pagination "
              f"{t_all * 1000 / ms(cached):.0f}x faster; 200 rows/page: {t_200 * 1000:.0f} ms")
        after = []
        for j in range(5):
            publish_one(state.store, n + j)
            t0 = time.perf_counter()
            assert client.get("/islands/isl-1").status_code == 200
            after.append(time.perf_counter() - t0)
        print(f"  first view after a publish           : p50 {ms(after):6.1f}  (sample re-checked,"
              f" map kept unless the new learnware enters it)")
        home = timed(client.get, ["/"] * 20)
        lw = timed(client.get, [f"/learnwares/lw-{i}" for i in range(1, 21)])
        print(f"  home page                            : p50 {ms(home):6.1f}  p90 "
              f"{ms(home, 90):6.1f}")
        print(f"  learnware page                       : p50 {ms(lw):6.1f}  p90 {ms(lw, 90):6.1f}")
        state.market.sandbox.close()
        state.store.dispose()
        db_args = ["--db", args.pg, "--db-schema", schema] if args.pg else []
        with ServerProcess(data, address_limits=False, extra_args=db_args) as server, \
                httpx.Client(base_url=server.url, timeout=120) as http:
            http.get("/islands/isl-1")  # the server's first view builds its map
            over_http = timed(http.get, paths)
        print(f"  island page over HTTP (lwm serve)    : p50 {ms(over_http):6.1f}  p90 "
              f"{ms(over_http, 90):6.1f}")
        verdict = "PASS" if ms(cached) <= 50 and ms(over_http) <= 50 else "FAIL"
        print(f"goal p50 <= 50 ms at N = {n}: {verdict}")


if __name__ == "__main__":
    main()
