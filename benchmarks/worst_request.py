"""The worst cheap request (issue 13, "Done means"): what one small hostile request costs the
server, in CPU time and memory, on a realistic market.

A real server process (``python -m market_server serve``, one worker, SQLite, per-address limits
off so nothing is cut short) over a data dir holding an island of N learnwares (written straight
into the store, ``search_bench.fill_island``) plus a few learnwares published through HTTP with
10,000-character descriptions and 100 tags (so text search has work to do). Then a catalogue of
cheap hostile requests (each at most 1 MB, one request; signed ones by a fresh free key) is
sent one at a time, each repeated with fresh nonces and keys. For each request:

* CPU: utime + stime + cutime + cstime (``/proc/<pid>/stat`` fields 14-17) summed over the
  server's process tree (the server, the sandbox's fork server and its model workers), after
  minus before. Children that exit in between count through their parent's cutime/cstime.
* Memory: the peak is reset (``echo 5 > /proc/<pid>/clear_refs``) in every process of the
  tree before the request; after it, each process's VmHWM minus its VmRSS before (a process
  born during the request: minus its parent's RSS before, since a fork starts out sharing the
  parent's pages; a process with no parent in the tree: minus 0). ``peak`` is the largest of
  those, ``total`` their sum (an upper bound on the tree's peak: the per-process peaks need
  not coincide). PASS needs < 1 s CPU and a ``total`` < 200 MB for every request's max.

Some costs arise once per state of the market, not per request: the first text search after a
start builds the text index, the first search the island index, and the first anchor request
(or metrics report) after any publish rebuilds the island's anchor profile. Those rows say
"cold" and prepare that state (unmeasured) before each repetition, where a request can cause it.

Run: OMP_NUM_THREADS=1 .venv/bin/python benchmarks/worst_request.py [--n 1000] [--repeats 3]
Exit status 1 when some request is over budget (the script always finishes).
"""
from __future__ import annotations

import argparse
import base64
import io
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from client_sdk import Identity, MarketClient  # noqa: E402
from client_sdk.demo.server import ServerProcess  # noqa: E402
from protocol.artefact import sha256_hex, sign_artefact  # noqa: E402
from protocol.encoding import encode_array  # noqa: E402
from protocol.envelope import new_nonce, seal  # noqa: E402
from learnware_core.island import base_kernel  # noqa: E402
from learnware_core.modelfile import dump_model  # noqa: E402
from learnware_core.semantic import island_key  # noqa: E402
from hostile_models import nested_sum_gpr, rezip, zip_entries  # noqa: E402
from search_bench import D, SEMANTIC, centers, fill_island  # noqa: E402

CPU_BUDGET_S = 1.0
MEMORY_BUDGET_MB = 200.0
MAX_REQUEST_BYTES = 1 << 20
TICK = os.sysconf("SC_CLK_TCK")
ISLAND_QUERY = {k: SEMANTIC[k] for k in ("data_type", "task_type", "input_features", "target",
                                         "objective")}


# -------------------------------------------------------------------------------- /proc probes
def _stat(pid: int) -> tuple[int, int, str] | None:
    """(ppid, utime+stime+cutime+cstime in ticks, state) of a process, None when it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    rest = raw[raw.rindex(")") + 2:].split()  # fields from 3 (state) on
    return int(rest[1]), sum(int(x) for x in rest[11:15]), rest[0]


def _status_kb(pid: int, key: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def process_tree(root: int) -> dict[int, tuple[int, int, str]]:
    """pid -> (ppid, CPU ticks, state) of ``root`` and all its descendants."""
    procs = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            st = _stat(int(entry))
            if st is not None:
                procs[int(entry)] = st
    tree, frontier = {}, [root]
    while frontier:
        pid = frontier.pop()
        if pid in procs and pid not in tree:
            tree[pid] = procs[pid]
            frontier.extend(p for p, (pp, _, _) in procs.items() if pp == pid)
    return tree


@dataclass
class Cost:
    status: int
    cpu_s: float
    peak_mb: float  # largest per-process rise of the peak RSS
    total_mb: float  # sum of per-process rises
    wall_s: float
    sent: int
    new_procs: int
    peak_in: str  # the process of the largest rise: server, forkserver or worker
    code: str  # the error code of a refusal


def measure(server_pid: int, send: Callable[[], httpx.Response], sent: int) -> Cost:
    before = process_tree(server_pid)
    rss0 = {pid: _status_kb(pid, "VmRSS") for pid in before}
    for pid in before:
        try:
            Path(f"/proc/{pid}/clear_refs").write_text("5")
        except OSError:
            pass
    t0 = time.perf_counter()
    code = ""
    try:
        resp = send()
        status = resp.status_code
        if status >= 400:
            body = json.loads(resp.content).get("body", {})
            details = body.get("details") or [{}]  # a refused publish: its first reason
            code = str(details[0].get("code") or body.get("code", ""))
    except httpx.HTTPError:  # the server dropped the connection: recorded as status 0
        status = 0
    except ValueError:
        code = "(not json)"
    wall = time.perf_counter() - t0
    time.sleep(0.02)  # let the server's thread finish its bookkeeping after the answer
    after = process_tree(server_pid)
    for _ in range(100):  # a killed worker counts (in its parent's cutime) once reaped
        if not any(state == "Z" for _, _, state in after.values()):
            break
        time.sleep(0.02)
        after = process_tree(server_pid)
    cpu = sum(c for _, c, _ in after.values()) - sum(c for _, c, _ in before.values())
    rises = {}
    for pid, (ppid, _, _) in after.items():
        base = rss0[pid] if pid in rss0 else rss0.get(ppid, 0)
        rises[pid] = max(0, _status_kb(pid, "VmHWM") - base)
    top = max(rises, key=rises.get)
    where = ("server" if top == server_pid else
             "forkserver" if after[top][0] == server_pid else "worker")
    return Cost(status, cpu / TICK, rises[top] / 1024, sum(rises.values()) / 1024, wall, sent,
                len(set(after) - set(before)), where if rises[top] else "-", code)


# ------------------------------------------------------------------------- hostile material
def ridge_bytes(seed: int) -> bytes:
    from sklearn.linear_model import Ridge
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(50, D))
    return dump_model(Ridge().fit(X, X.sum(1) + seed))


def padded_model(pad_mib: int) -> bytes:
    """An honest Ridge file plus an entry of ``pad_mib`` MiB of zeros that no node refers to."""
    return rezip(zip_entries(ridge_bytes(0)) + [("pad.npy", bytes(pad_mib << 20))], level=9)


def inflated_model(mib: int) -> bytes:
    """A Ridge file whose coefficient array is replaced by ``mib`` MiB of zeros (referenced):
    a small file declaring a huge uncompressed size."""
    parts = zip_entries(ridge_bytes(0))
    name = next(n for n, _ in parts if n.endswith(".npy"))
    big = io.BytesIO()
    np.save(big, np.zeros((mib << 20) // 8), allow_pickle=False)
    return rezip([(n, big.getvalue() if n == name else b) for n, b in parts], level=9)


VOCAB_RNG = np.random.default_rng(7)
#: words over a small alphabet, so they share many trigrams (the text index's fuzzy stage)
VOCAB = ["".join(VOCAB_RNG.choice(list("abcdefgh"), size=int(VOCAB_RNG.integers(6, 15))))
         for _ in range(3000)]


def near_miss_query(seed: int, chars: int = 500) -> str:
    """Many distinct vocabulary words with one letter changed (typo-tolerant matching), plus
    the filled island's own words mistyped; ``chars`` characters."""
    rng = np.random.default_rng(seed)
    words = ["bemch", "synthetik", "islamd"]
    while sum(len(w) + 1 for w in words) < chars:
        w = list(VOCAB[int(rng.integers(len(VOCAB)))])
        w[int(rng.integers(len(w)))] = "abcdefgh"[int(rng.integers(8))]
        words.append("".join(w))
    return " ".join(words)[:chars]


def long_text_semantic(i: int) -> dict:
    rng = np.random.default_rng(100 + i)
    desc = " ".join(VOCAB[int(j)] for j in rng.integers(len(VOCAB), size=2000))[:10_000]
    tags = [" ".join(VOCAB[int(j)] for j in rng.integers(len(VOCAB), size=12))[:100]
            for _ in range(100)]
    return dict(SEMANTIC, name=f"text doc {i} " + VOCAB[i], description=desc, tags=tags)


# ---------------------------------------------------------------------------------- the cases
@dataclass
class Request:
    method: str
    path: str
    content: bytes | None = None
    params: dict | None = None


@dataclass
class Case:
    name: str
    build: Callable[[int], Request]  # repetition -> a fresh request
    prepare: Callable[[int], None] | None = None  # unmeasured, before each repetition
    once: bool = False  # a state only the first request after the start meets
    results: list[Cost] = field(default_factory=list)


class Bench:
    def __init__(self, server: ServerProcess, work: Path, n: int):
        self.server, self.work, self.n = server, work, n
        self.http = httpx.Client(base_url=server.url, timeout=900)
        self.aud = self.http.get("/v1/market").json()["market_key_id"]
        self.me = MarketClient(server.url, Identity.generate(), cache_dir=work / "cache-me",
                               timeout=900)
        self.rng = np.random.default_rng(0)
        self.gamma, self.scales = base_kernel(np.ones(D), D)
        self.island_id = self.me.island(SEMANTIC)["island_id"]
        self.published = 0

    # --- helpers -------------------------------------------------------------------------
    def signed(self, message_type: str, body, identity: Identity | None = None) -> bytes:
        return seal(identity or Identity.generate(), message_type, body, audience=self.aud,
                    validate=False)

    def honest_publish(self, *_args, semantic: dict | None = None) -> str:
        """An honest learnware on the big island through the SDK (unmeasured preparation)."""
        from sklearn.linear_model import Ridge
        self.published += 1
        X = centers(self.n)[self.published % self.n] + self.rng.normal(size=(300, D))
        y = X @ self.rng.normal(size=D)
        return self.me.publish(Ridge().fit(X, y), X, semantic or SEMANTIC, k=50)

    def spec(self, z: np.ndarray, gamma: float | None = None) -> dict:
        k = len(z)
        return {"z": encode_array(np.asarray(z, dtype=np.float64)),
                "beta": encode_array(np.full(k, 1.0 / k)),
                "gamma": float(self.gamma if gamma is None else gamma),
                "scales": encode_array(self.scales), "n_features": D}

    def publish_request(self, model: bytes, z: np.ndarray | None = None,
                        semantic: dict | None = None) -> Request:
        me = Identity.generate()
        sem = semantic or SEMANTIC
        if z is None:
            z = centers(self.n)[0] + self.rng.normal(size=(50, D))
        spec = self.spec(z)
        sha = sha256_hex(model)
        body = {"semantic": sem, "spec": spec,
                "model": {"format": "skops", "sha256": sha, "size": len(model),
                          "data": base64.b64encode(model).decode()},
                "artefact": sign_artefact(me, sem, spec, sha)}
        return Request("POST", "/v1/learnwares", self.signed("publish", body, me))

    def search_request(self, z: np.ndarray | None, *, semantic: dict | None = None,
                       max_results: int = 5, gamma: float | None = None,
                       **extra) -> Request:
        body = {"semantic": semantic or ISLAND_QUERY, "max_results": max_results, **extra}
        if z is not None:
            body["requirement"] = self.spec(z, gamma)
        return Request("POST", "/v1/search", self.signed("search", body))

    def get(self, path: str, **params) -> Callable[[int], Request]:
        return lambda _r: Request("GET", path, params=params or None)

    def live_ids(self, count: int) -> list[str]:
        return [f"lw-{i}" for i in range(1, count + 1)]

    # --- catalogue -----------------------------------------------------------------------
    def cases(self) -> list[Case]:
        n = self.n
        C = centers(n)
        k = 2000  # the protocol's cap on reduced points
        spread_z = lambda r: C[np.random.default_rng(r).integers(n, size=k)] \
            + np.random.default_rng(r).normal(size=(k, D))  # noqa: E731
        far_z = lambda r: np.random.default_rng(r).uniform(-1e6, 1e6, size=(k, D))  # noqa: E731
        same_z = lambda r: np.tile(C[r % n], (k, 1))  # noqa: E731
        bound_z = lambda r: 0.99e100 * self.scales * np.random.default_rng(r).choice(  # noqa: E731
            [-1.0, 1.0], size=(k, D))
        ghost = dict(ISLAND_QUERY, input_features=[f"ghost{i}" for i in range(D)],
                     name="g" * 200, description="d" * 10_000,
                     tags=[("t%d " % i) + near_miss_query(i, 96) for i in range(100)])
        sha1 = self.http.get("/v1/learnwares/lw-1").json()["body"]["model_sha256"]
        live256 = self.live_ids(min(256, n))
        metrics = lambda r: {i: float(v) for i, v in zip(  # noqa: E731
            live256, np.random.default_rng(r).uniform(0, 1e12, size=len(live256)))}
        metrics_body = lambda r: {"island_id": self.island_id, "metric": "rmse",  # noqa: E731
                                  "n_rows": 10**9, "values": metrics(r), "round": 100,
                                  "more_anchors": 64, "max_results": 100}
        anchor_body = {"semantic": ISLAND_QUERY, "max_anchors": 64}

        def publish_then_delete(r: int) -> None:
            self._own = self.honest_publish()
            self.me.delete(self._own, "bench")

        def own_learnware(r: int) -> None:
            self._own = self.honest_publish()

        def delete_own(r: int) -> Request:
            body = {"learnware_id": self._own, "reason": "x" * 1000}
            return Request("DELETE", f"/v1/learnwares/{self._own}",
                           self.signed("delete", body, self.me.identity))

        def replayed(r: int) -> Request:
            data = self.search_request(None).content
            self.http.post("/v1/search", content=data)  # first use (unmeasured)
            return Request("POST", "/v1/search", data)

        def bad_signature(r: int) -> Request:
            data = bytearray(self.search_request(spread_z(r)).content)
            i = data.index(b'"sig":"') + 8
            data[i] = ord("A") if data[i] != ord("A") else ord("B")
            return Request("POST", "/v1/search", bytes(data))

        def wrong_audience(r: int) -> Request:
            body = {"semantic": ISLAND_QUERY, "max_results": 5,
                    "requirement": self.spec(spread_z(r))}
            return Request("POST", "/v1/search", seal(Identity.generate(), "search", body,
                                                      audience="0" * 64, validate=False))

        many_keys = lambda r: self.signed("search", {  # noqa: E731
            "semantic": ISLAND_QUERY, "max_results": 5,
            "junk": {f"k{i}": i for i in range(60_000)}})
        many_floats = lambda r: self.signed("search", {  # noqa: E731
            "semantic": ISLAND_QUERY, "max_results": 5,
            "junk": np.random.default_rng(r).normal(size=45_000).round(6).tolist()})

        def garbage_model(r: int) -> Request:
            return self.publish_request(os.urandom(700_000))

        def publish_spec_2000(r: int) -> Request:
            return self.publish_request(ridge_bytes(1000 + r), spread_z(r))

        def publish_spec_bound(r: int) -> Request:
            return self.publish_request(ridge_bytes(2000 + r), bound_z(r))

        def publish_new_island(r: int) -> Request:
            """A model on a fresh island whose 2,000-point spec was fitted far apart."""
            sem = dict(SEMANTIC, target=f"fresh{r}-{time.time_ns()}",
                       feature_scales=encode_array(np.ones(D)))
            return self.publish_request(ridge_bytes(3000 + r), far_z(r), sem)

        gpr40 = nested_sum_gpr(40, n_features=D)
        padded, inflated = padded_model(500), inflated_model(400)

        G = lambda p, **q: self.get(p, **q)  # noqa: E731
        return [
            # -- states only the first request after the start meets
            Case("GET text search, 500-char near-miss query (cold: builds the text index)",
                 lambda r: Request("GET", "/v1/learnwares",
                                   params={"q": near_miss_query(r), "limit": 100}), once=True),
            Case("search, 2,000-pt requirement over all centres (cold: builds the island index)",
                 lambda r: self.search_request(spread_z(r), max_results=100), once=True),
            # -- reads
            Case("GET /healthz", G("/healthz")),
            Case("GET /v1/market", G("/v1/market")),
            Case("GET /openapi.json", G("/openapi.json")),
            Case("GET /v1/islands", G("/v1/islands")),
            Case("GET island by id", G(f"/v1/islands/{self.island_id}")),
            Case("GET island by key", G(f"/v1/islands/by-key/{island_key(SEMANTIC)}")),
            Case("GET manifest lw-1", G("/v1/learnwares/lw-1")),
            Case("GET manifest of a 10,000-char-description learnware",
                 G(f"/v1/learnwares/{self.text_ids[0]}")),
            Case("GET model bytes by learnware", G("/v1/learnwares/lw-1/model")),
            Case("GET model bytes by sha256", G(f"/v1/models/{sha1}")),
            Case("GET not-found learnware", G("/v1/learnwares/lw-99999999")),
            Case("GET not-found model", G(f"/v1/models/{'0' * 64}")),
            Case("GET 5,000-char id", G("/v1/learnwares/" + "a" * 5000)),
            Case("GET text search, 500-char near-miss query",
                 lambda r: Request("GET", "/v1/learnwares",
                                   params={"q": near_miss_query(100 + r), "limit": 100})),
            Case("GET text search, 16 x 32-char words of a 3-letter alphabet",
                 lambda r: Request("GET", "/v1/learnwares", params={"q": " ".join(
                     "".join(np.random.default_rng(r * 16 + j).choice(list("abc"), 32))
                     for j in range(16)), "limit": 100})),
            Case("GET text search, 60,000-char query string",
                 lambda r: Request("GET", "/v1/learnwares",
                                   params={"q": near_miss_query(r, 60_000)})),
            # -- searches
            Case("search: no such island, 200-char name + 100 tags of 100 chars",
                 lambda r: self.search_request(None, semantic=ghost)),
            Case("search: 2,000-pt requirement over all centres, max_results 100",
                 lambda r: self.search_request(spread_z(r), max_results=100)),
            Case("search: 2,000 pts far apart (uniform +-1e6)",
                 lambda r: self.search_request(far_z(r), max_results=100)),
            Case("search: 2,000 identical pts", lambda r: self.search_request(same_z(r))),
            Case("search: 2,000 pts at the scale bound (0.99e100 scales)",
                 lambda r: self.search_request(bound_z(r))),
            Case("search: stale kernel (gamma x 7, kernel_version 0), 2,000 pts",
                 lambda r: self.search_request(spread_z(r), gamma=self.gamma * 7,
                                               kernel_version=0, max_results=100)),
            Case("search after own publish+delete (index refresh), 2,000 pts",
                 lambda r: self.search_request(spread_z(r), max_results=100),
                 prepare=publish_then_delete),
            # -- anchors and localisation
            Case("anchor_request, 64 anchors (cold: first after a publish, builds the profile)",
                 lambda r: Request("POST", "/v1/anchors",
                                   self.signed("anchor_request", anchor_body)),
                 prepare=self.honest_publish),
            Case("anchor_request, 64 anchors (profile cached)",
                 lambda r: Request("POST", "/v1/anchors",
                                   self.signed("anchor_request", anchor_body))),
            Case("metrics_report, 256 values, 64 more anchors (profile cached)",
                 lambda r: Request("POST", "/v1/localize",
                                   self.signed("metrics_report", metrics_body(r)))),
            Case("metrics_report, 256 values (cold: first after a publish)",
                 lambda r: Request("POST", "/v1/localize",
                                   self.signed("metrics_report", metrics_body(r))),
                 prepare=self.honest_publish),
            # -- publishes
            Case("publish: 40-level nested Sum(k, k) GPR (few KB)",
                 lambda r: self.publish_request(gpr40)),
            Case("publish: GPR costly only at predict (depth 12, 3,000 rows)",
                 lambda r: self.publish_request(nested_sum_gpr(12, 3000, n_features=D, seed=r))),
            Case("publish: GPR costly only at predict (depth 13, 3,000 rows)",
                 lambda r: self.publish_request(nested_sum_gpr(13, 3000, n_features=D, seed=100 + r))),
            Case(f"publish: padded zip ({len(padded) // 1000} KB, 500 MiB unreferenced zeros)",
                 lambda r: self.publish_request(padded)),
            Case(f"publish: inflated array ({len(inflated) // 1000} KB -> 400 MiB)",
                 lambda r: self.publish_request(inflated)),
            Case("publish: 700 KB of random bytes as the model", garbage_model),
            Case("publish: honest model, 2,000-pt spec (accepted)", publish_spec_2000),
            Case("publish: 2,000-pt spec at the scale bound", publish_spec_bound),
            Case("publish: new island, 2,000-pt spec far apart", publish_new_island),
            # -- what an accepted predict-costly model does to the island's profile
            # (a profile that cannot be built is not cached: every request tries again)
            Case("anchor_request on the island holding the depth-12 GPR (no publish between)",
                 lambda r: Request("POST", "/v1/anchors",
                                   self.signed("anchor_request", anchor_body))),
            # -- deletes
            Case("delete someone else's learnware", lambda r: Request(
                "DELETE", "/v1/learnwares/lw-1",
                self.signed("delete", {"learnware_id": "lw-1", "reason": "x" * 1000}))),
            Case("delete own learnware", delete_own, prepare=own_learnware),
            # -- malformed envelopes
            Case("POST 1 MB of random bytes", lambda r: Request(
                "POST", "/v1/search", os.urandom(MAX_REQUEST_BYTES))),
            Case("POST 1 MB of '[' (deep nesting)", lambda r: Request(
                "POST", "/v1/search", b"[" * MAX_REQUEST_BYTES)),
            Case("POST 1 MB integer literal", lambda r: Request(
                "POST", "/v1/search", b'{"v":' + b"9" * (MAX_REQUEST_BYTES - 6) + b"}")),
            Case("POST signed envelope, 60,000-key junk body",
                 lambda r: Request("POST", "/v1/search", many_keys(r))),
            Case("POST signed envelope, 45,000 floats junk body",
                 lambda r: Request("POST", "/v1/search", many_floats(r))),
            Case("POST search with a bad signature (2,000 pts)", bad_signature),
            Case("POST search for another market (aud)", wrong_audience),
            Case("POST replayed search envelope", replayed),
        ]

    # --- running -------------------------------------------------------------------------
    def send(self, req: Request) -> Callable[[], httpx.Response]:
        headers = {"X-LWM-Nonce": new_nonce()} if req.method == "GET" else {}
        return lambda: self.http.request(req.method, req.path, content=req.content,
                                         params=req.params, headers=headers)

    def run(self, cases: list[Case], repeats: int) -> None:
        pid = self.server.proc.pid
        for case in cases:
            for r in range(1 if case.once else repeats):
                if case.prepare is not None:
                    case.prepare(r)
                req = case.build(r)
                sent = len(req.content or b"") + len(str(req.params or ""))
                if sent > MAX_REQUEST_BYTES + 100:
                    raise AssertionError(f"{case.name}: {sent} bytes is not a cheap request")
                case.results.append(measure(pid, self.send(req), sent))
            c = case.results
            print(f"  {case.name[:74]:<74} {c[-1].status}  cpu max "
                  f"{max(x.cpu_s for x in c):6.2f} s  mem max {max(x.total_mb for x in c):6.1f}"
                  " MB", flush=True)


def report(cases: list[Case], n: int) -> bool:
    rows = sorted(cases, key=lambda c: max(x.cpu_s for x in c.results), reverse=True)
    print(f"\nWorst cheap requests, island of N = {n:,} (server process tree; "
          f"repeats per row in 'x'):")
    head = (f"{'request':<78} {'status':>7} {'error code':<18} {'KB':>5} {'x':>2} {'cpu med':>8} {'cpu max':>8} "
            f"{'peak MB':>8} {'in':>10} {'total MB':>8} {'wall max':>8} {'new':>3}  verdict")
    print(head)
    print("-" * len(head))
    ok_all = True
    for c in rows:
        cpu = [x.cpu_s for x in c.results]
        ok = max(cpu) < CPU_BUDGET_S and max(x.total_mb for x in c.results) < MEMORY_BUDGET_MB
        ok_all &= ok
        statuses = "/".join(str(s) for s in sorted({x.status for x in c.results}))
        codes = "/".join(sorted({x.code for x in c.results if x.code}))
        print(f"{c.name[:78]:<78} {statuses:>7} {codes[:18]:<18} {max(x.sent for x in c.results) / 1000:5.0f} "
              f"{len(cpu):>2} {statistics.median(cpu):8.2f} {max(cpu):8.2f} "
              f"{max(x.peak_mb for x in c.results):8.1f} "
              f"{max(c.results, key=lambda x: x.peak_mb).peak_in:>10} "
              f"{max(x.total_mb for x in c.results):8.1f} "
              f"{max(x.wall_s for x in c.results):8.2f} "
              f"{max(x.new_procs for x in c.results):3d}  {'ok' if ok else 'OVER'}")
    worst = rows[0]
    worst_mem = max(cases, key=lambda c: max(x.total_mb for x in c.results))
    print(f"\nWorst by CPU: {worst.name}: {max(x.cpu_s for x in worst.results):.2f} s CPU "
          f"(max of {len(worst.results)})")
    print(f"Worst by memory: {worst_mem.name}: "
          f"{max(x.total_mb for x in worst_mem.results):.1f} MB above the RSS before")
    over = [c.name for c in rows if not (max(x.cpu_s for x in c.results) < CPU_BUDGET_S and
                                         max(x.total_mb for x in c.results) < MEMORY_BUDGET_MB)]
    print(f"Budget: < {CPU_BUDGET_S:g} s server CPU and < {MEMORY_BUDGET_MB:g} MB per request: "
          + ("PASS" if ok_all else f"FAIL ({len(over)} over: " + "; ".join(over) + ")"))
    return ok_all


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=1000, help="learnwares on the big island")
    p.add_argument("--repeats", type=int, default=3, help="repetitions per request")
    p.add_argument("--text-docs", type=int, default=10,
                   help="learnwares published through HTTP with 10,000-char descriptions")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="lwm-worst-") as tmp:
        work = Path(tmp)
        os.environ["LWM_CONFIG_DIR"] = str(work / "config")  # pinned market keys stay here
        t0 = time.perf_counter()
        fill_island(work / "market", args.n)
        print(f"island of {args.n:,} learnwares written in {time.perf_counter() - t0:.1f} s",
              flush=True)
        with ServerProcess(work / "market", address_limits=False) as server:
            bench = Bench(server, work, args.n)
            t0 = time.perf_counter()
            bench.text_ids = [bench.honest_publish(semantic=long_text_semantic(i))
                              for i in range(args.text_docs)]
            print(f"{args.text_docs} long-text learnwares published through HTTP in "
                  f"{time.perf_counter() - t0:.1f} s; measuring:", flush=True)
            cases = bench.cases()
            bench.run(cases, args.repeats)
            ok = report(cases, args.n)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
