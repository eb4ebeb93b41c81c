"""The workbench's costs (issue #17): what recording every request and auditing it cost.

An in-process market (the whole Flask app through httpx's WSGI transport) holds three txhousing
city learnwares; a user holds another city (172 rows x 10 columns). Measured, each as a median:

* a search round trip through ``MarketClient`` with the workbench's recording transport, and the
  baseline in the same script: the same search through the bare transport (ratio = overhead);
* the privacy audit of the whole session recorded (islands, search, localisation with its
  anchor downloads, one publish with its model file) against the user's table, and against a
  table at the audit's cap of distinct values (``MAX_VALUES``), with its ratio to one search;
* the "What left this machine" page through the workbench app: first view (audit computed) and
  later views (audit cached).

Run: OMP_NUM_THREADS=1 .venv/bin/python benchmarks/workbench_bench.py [--repeat 15]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from client_sdk import Identity, MarketClient  # noqa: E402
from client_sdk.demo.datasets import load_txhousing, semantic_for  # noqa: E402
from client_sdk.workbench import audit as wb_audit  # noqa: E402
from client_sdk.workbench import create_app as create_workbench  # noqa: E402
from market_server import ServerConfig, create_app  # noqa: E402

CITIES, USER = ["Austin", "Dallas", "Houston"], "San Antonio"
PORT, TOKEN = 40000, "bench-token"


def median_ms(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=15)
    args = ap.parse_args()
    from sklearn.linear_model import Ridge
    island = load_txhousing()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        import os
        os.environ["LWM_CONFIG_DIR"] = str(tmp / "config")
        app = create_app(ServerConfig(data_dir=tmp / "market", refine_at=(),
                                      rate_limit_address=""))
        url = "http://market.bench"
        for i, city in enumerate(CITIES):
            g = island[city]
            MarketClient(url, Identity.generate(), transport=httpx.WSGITransport(app=app),
                         cache_dir=tmp / f"dev-{i}").publish(
                Ridge().fit(g.X.to_numpy(), g.y), g.X, semantic_for(island, name=city))
        user = island[USER]
        sem = semantic_for(island)
        # the workbench app; its own client (through its recording transport) runs the session
        wapp = create_workbench(url, Identity.generate(), port=PORT, token=TOKEN,
                                transport=httpx.WSGITransport(app=app), cache_dir=tmp / "wb")
        w = wapp.extensions["lwm_workbench"]
        recorded = w.client
        plain = MarketClient(url, Identity.generate(), transport=httpx.WSGITransport(app=app),
                             cache_dir=tmp / "plain")
        plain.search(user.X, sem)
        recorded.search(user.X, sem)
        t_plain, t_rec = [], []
        for i in range(args.repeat):  # interleaved, alternating who goes first
            pair = [(t_plain, plain), (t_rec, recorded)][::1 if i % 2 else -1]
            for times, client in pair:
                times.append(median_ms(lambda: client.search(user.X, sem), 1))
        base, withrec = statistics.median(t_plain), statistics.median(t_rec)
        print(f"search round trip: bare transport {base:.1f} ms, recording transport "
              f"{withrec:.1f} ms (ratio {withrec / base:.3f})")

        # one whole session recorded: searches (above), localise, publish
        recorded.localize(user.X, user.y, sem)
        g = island["El Paso"]
        recorded.publish(Ridge().fit(g.X.to_numpy(), g.y), g.X,
                         semantic_for(island, name="El Paso"))
        sent = [(s.method, s.url, s.headers, s.body) for s in w.recorder.sent()]
        nbytes = sum(len(s[3]) for s in sent)
        table = np.concatenate([user.X.to_numpy().ravel(), user.y])
        t_user = median_ms(lambda: wb_audit.audit(sent, table), max(3, args.repeat // 3))
        big = np.random.default_rng(0).normal(size=wb_audit.MAX_VALUES) * 1000
        t_big = median_ms(lambda: wb_audit.audit(sent, big), 3)
        rep = wb_audit.audit(sent, table)
        print(f"audit of {len(sent)} requests ({nbytes / 1024:.0f} KB): user's table "
              f"({rep.checked} values looked for, {rep.found} found) {t_user:.0f} ms "
              f"= {t_user / base:.1f} searches; {wb_audit.MAX_VALUES:,} values {t_big:.0f} ms "
              f"= {t_big / base:.1f} searches")

        # the panel through the workbench app
        w.owner_load(data=user.X.assign(yoy=user.y).to_csv(index=False).encode(), name="u.csv")
        c = wapp.test_client()
        base_url = f"http://127.0.0.1:{PORT}"
        c.get(f"/?token={TOKEN}", base_url=base_url)

        def first():
            w.forget_audit()  # the first view computes the audit
            assert c.get("/sent", base_url=base_url).status_code == 200
        t_first = median_ms(first, 5)
        t_later = median_ms(lambda: c.get("/sent", base_url=base_url), args.repeat)
        print(f"'What left this machine' page ({len(sent)} requests): first view {t_first:.0f} ms"
              f", later views {t_later:.1f} ms (ratio {t_first / t_later:.1f})")


if __name__ == "__main__":
    main()
