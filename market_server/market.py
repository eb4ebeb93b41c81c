"""The market's domain logic, independent of HTTP: publish with checks, search, anchors, delete.

One ``Market`` per app (created by ``create_app``). It owns the store, the market identity, the
per-island search indexes and anchor profiles (caches keyed by the island's version counter in
the database, so every worker sees publishes and deletes made by any other worker).
"""
from __future__ import annotations

import dataclasses
import logging
import threading
from collections import OrderedDict
from typing import Any

import numpy as np

from learnware_core.island import base_kernel
from learnware_core.semantic import ISLAND_FIELDS, island_key
from learnware_core.spec import decode_points, decode_scales, on_simplex
from protocol.encoding import encode_array
from protocol.errors import KernelChangedError, LearnwareError, UnsafeModelError, WithdrawnError
from protocol.identity import PublicKey
from protocol.objectives import OBJECTIVE_RANGES, clip_metric
from protocol.schemas import MAX_ANCHOR_SET

from .config import ServerConfig
from .profiles import ProfileCache
from .publish_checks import MAX_SCALED_COORD, Reason, check_predictions, check_publish
from .publishers import PublishPolicy
from .reports import UsageReports
from .rows import IslandRow, StoredLearnware
from .sandbox import ModelSandbox, SandboxedModel
from .search import IslandIndex
from .storage import NotFound, Store, learnware_public_id, parse_id
from .textindex import TextIndex
from .describe import DescribeIndex
from .embedder import Embedder


log = logging.getLogger("market_server")


def withdrawn_error(row: StoredLearnware) -> WithdrawnError:
    w = row.withdrawn
    return WithdrawnError(f"{row.learnware_id} was withdrawn by its {w['by']}: {w['reason']}",
                          field="learnware_id")


class PublishRefused(LearnwareError):
    code = "publish_refused"
    status = 422


def kernel_wire(kernel: dict, version: int) -> dict:
    return {"gamma": float(kernel["gamma"]), "scales": encode_array(np.asarray(kernel["scales"],
                                                                              dtype=np.float64)),
            "version": int(version)}


class ModelCache:
    """Models by sha256 (LRU): anchors and kernel refinement reuse them. Each is a proxy whose
    ``predict`` runs in the sandbox; the model itself is only ever loaded there."""

    def __init__(self, store: Store, sandbox: ModelSandbox, size: int = 512, *,
                 load_seconds: Any = None, call_seconds: float | None = None):
        self.store, self.sandbox, self.size = store, sandbox, size
        #: CPU budgets: ``load_seconds(file size)`` per load, ``call_seconds`` per predict call
        self.load_seconds, self.call_seconds = load_seconds, call_seconds
        self._items: OrderedDict[str, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, sha: str, size: int | None = None) -> Any:
        with self._lock:
            if sha in self._items:
                self._items.move_to_end(sha)
                return self._items[sha]
        budget = self.load_seconds(size) if self.load_seconds and size is not None else None
        source = self._source(sha)
        model = self.sandbox.load(sha, source, cpu_seconds=budget).with_source(source,
                                                                              self.call_seconds)
        with self._lock:
            self._items[sha] = model
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        return model

    def put(self, sha: str, model: Any) -> None:
        with self._lock:
            self._items[sha] = model.with_source(self._source(sha), self.call_seconds)

    def _source(self, sha: str):
        """Reads the model's bytes from the store when a worker needs them (not held here)."""
        def read() -> bytes:
            data = self.store.model_bytes(sha)
            if data is None:
                raise NotFound(f"model file {sha} is missing from the store")
            return data
        return read


class Market:
    def __init__(self, config: ServerConfig, store: Store):
        if config.operator_key is not None:
            PublicKey(config.operator_key)  # a SignatureError naming the key when it is none
        self.config = config
        self.store = store
        self.sandbox = ModelSandbox(workers=config.sandbox_workers,
                                    memory_bytes=config.sandbox_memory_bytes,
                                    cpu_seconds=config.sandbox_cpu_seconds,
                                    max_model_bytes=config.max_model_bytes)
        self.models = ModelCache(store, self.sandbox, load_seconds=self.model_cpu_seconds,
                                 call_seconds=config.sandbox_island_cpu_seconds)
        self._indexes: dict[int, IslandIndex] = {}
        self.profiles = ProfileCache(store, self._learnware_arrays,
                                     config.max_profile_learnwares)
        self._islands: dict[str, dict] = {}  # semantic key -> island row (any version)
        self.text = TextIndex()
        self.words = DescribeIndex(None if config.describe_embeddings == "off"
                                   else Embedder(config.describe_int8_queries))
        self.reports = UsageReports(store)
        self.publishers = PublishPolicy(config.publishers, config.operator_key)
        self._refreshes = 0
        self._world = None  # (signature, World): rebuilt when an island's version moved
        self._world_baselines: dict = {}  # marginal -> typical MMD, for the current world
        self._world_lock = threading.Lock()
        self._feature_info: dict[str, dict] = {}  # island key -> feature -> declared info
        self._feature_info_top = 0
        self._refining: dict[int, threading.Lock] = {}
        self._lock = threading.Lock()

    def model_cpu_seconds(self, size: int) -> float:
        """CPU budget of a model's load and of its publish check's predict call: what the
        client sent buys it (base + per MB), at most ``sandbox_cpu_seconds``."""
        c = self.config
        return min(c.sandbox_cpu_seconds,
                   c.sandbox_cpu_base_seconds + c.sandbox_cpu_seconds_per_mb * size / (1 << 20))

    # --- islands --------------------------------------------------------------------------
    def island_info(self, island: IslandRow, count: int | None = None) -> dict:
        sem = island.semantic
        return {"island_id": island.island_id, "semantic_key": island.island_key,
                "semantic": {f: sem[f] for f in ISLAND_FIELDS},
                "kernel": kernel_wire(island.kernel, island.kernel_version),
                "n_features": island.n_features,
                "learnware_count": (self.store.count_live(island.pk) if count is None
                                    else count),
                "created_at": int(island.created_at)}

    def island_by_public_id(self, island_id: str) -> IslandRow:
        pk = parse_id(island_id, "isl")
        island = self.store.island(pk) if pk is not None else None
        if island is None:
            raise NotFound(f"no island {island_id!r}", field="island_id")
        return island

    def island_for(self, semantic: dict, island_id: str | None = None
                   ) -> IslandRow | None:
        """The island of ``semantic`` (through the cached row: reads only its head), which
        must be ``island_id`` when one is given."""
        island = self._island_of_key(island_key(semantic))
        if island_id and (island is None or island.island_id != island_id):
            self.island_by_public_id(island_id)  # NotFound when there is no such island
            raise LearnwareError(f"island {island_id} has another semantic key than the "
                                 f"semantic specification given", code="island_mismatch",
                                 status=409, field="island_id")
        return island

    def _island_of_key(self, key: str) -> IslandRow | None:
        """The island row of a semantic key, decoded once per kernel version (cached)."""
        head = self.store.island_head(key)
        if head is None:
            return None
        cached = self._islands.get(key)
        if cached is not None and (cached.pk, cached.kernel_version) == (head[0], head[2]):
            if cached.version != head[1]:  # publishes or deletes: nothing else in the row
                cached = self._islands[key] = dataclasses.replace(cached, version=head[1])
            return cached
        island = self.store.island(head[0])
        if island is not None:
            self._islands[key] = island
        return island

    # --- publish --------------------------------------------------------------------------
    def publish(self, envelope) -> dict:
        self.publishers.check(envelope)  # the operator's policy first: a refusal costs nothing
        body = envelope.body
        semantic, spec, model, artefact = (body["semantic"], body["spec"], body["model"],
                                           body["artefact"])
        key = island_key(semantic)
        island = self._island_of_key(key)
        checked = check_publish(semantic, spec, model, artefact, envelope.sender, island,
                                self.config)
        reasons, model_bytes, z, beta = (checked.reasons, checked.model_bytes, checked.z,
                                         checked.beta)
        declared_scales, d = checked.declared_scales, checked.n_features
        # The model: loads safely and predicts on samples herded from its own spec, in the
        # sandbox, as ONE task under one CPU budget (what the file's size buys): a file that is
        # cheap to load but slow to predict costs no more than the budget in all.
        loaded = None
        if model_bytes and not any(r.field and r.field.startswith("model") for r in reasons):
            sha, budget = model["sha256"], self.model_cpu_seconds(len(model_bytes))
            check = len(reasons)
            if z is not None and not any(r.code.startswith("spec") for r in reasons):
                unloaded = SandboxedModel(self.sandbox, sha, model_bytes, False, budget)
                reasons.extend(check_predictions(unloaded, z, beta, spec, semantic,
                                                 self.config.check_samples))
            if len(reasons) == check:  # the proxy kept (the worker holds the model by now)
                try:
                    loaded = self.sandbox.load(sha, model_bytes, cpu_seconds=budget)
                except UnsafeModelError as exc:
                    reasons.append(Reason(exc.code, exc.message, "model.data"))
        if reasons:
            raise PublishRefused(f"learnware refused: {len(reasons)} problem(s): "
                                 + "; ".join(r.message for r in reasons),
                                 details=[r.to_dict() for r in reasons])
        if island is None:
            gamma0, scales0 = base_kernel(declared_scales, d)
            island = self.store.ensure_island(
                key, {f: semantic[f] for f in ISLAND_FIELDS}, d,
                {"gamma": float(gamma0), "scales": [float(s) for s in scales0],
                 "base_scales": [float(s) for s in scales0]})
            kern = island.kernel
            if not (np.isclose(kern["gamma"], gamma0, rtol=1e-9, atol=0)
                    and np.allclose(kern["scales"], scales0, rtol=1e-9, atol=0)):
                # Another worker created the island a moment ago from another publisher's
                # declared scales: this spec was checked against a kernel the island does not
                # have. Refuse it like any kernel mismatch (the SDK recomputes and retries).
                reason = Reason("kernel_mismatch", "another publisher created this island at the "
                                "same moment with other feature scales; fetch the island info "
                                "and recompute the spec", "spec.gamma")
                raise PublishRefused("learnware refused: 1 problem(s): " + reason.message,
                                     details=[reason.to_dict()])
        pk = self.store.publish(island_pk=island.pk, developer=envelope.sender,
                                developer_key_id=envelope.sender_key_id, semantic=semantic,
                                spec=spec, model_sha256=model["sha256"], model=model_bytes,
                                artefact=artefact)
        self.models.put(model["sha256"], loaded)
        if self._maybe_refine(island.pk, island.kernel):
            island = self.store.island(island.pk)
        return {"learnware_id": learnware_public_id(pk), "island_id": island.island_id,
                "kernel": kernel_wire(island.kernel, island.kernel_version)}

    #: a refinement is due when the island's size is at most this far past a refine size
    REFINE_SLACK = 8

    def _maybe_refine(self, island_pk: int, kernel: dict | None = None) -> bool:
        """Refine the island's kernel from its own models when it has just grown past a refine
        size (within ``REFINE_SLACK``) that the last refinement had not reached. Not "is
        exactly at": two publishes committing together both see the size after the second and
        would skip it. Not "anywhere past" either: an island built without refinements must not
        start one, over all its learnwares, on every concurrent publish. One refinement per
        island at a time in this process; across workers the kernel's compare-and-set keeps
        only one result. ``kernel``: the island's kernel as the caller last read it (re-read
        here only when it says a refinement is due). True when this call refined."""
        count = self.store.count_live(island_pk)

        def due(kern: dict) -> bool:
            done = int(kern.get("refined_count", 1))
            return any(done < t <= count < t + self.REFINE_SLACK for t in self.config.refine_at)

        if kernel is not None and not due(kernel):
            return False
        if not due(self.store.island(island_pk).kernel):
            return False
        with self._lock:
            lock = self._refining.setdefault(island_pk, threading.Lock())
        if lock.acquire(blocking=False):
            try:
                return self.refine_kernel(island_pk)
            finally:
                lock.release()
        return False

    def refine_kernel(self, island_pk: int) -> bool:
        from . import island_kernel
        island = self.store.island(island_pk)
        rows = self.store.island_learnwares(island_pk)
        if not rows:
            return False
        def left_out(lw_id: str, exc: Exception) -> None:
            log.warning("island %s: learnware %s left out of the kernel refinement: %s",
                        island.island_id, lw_id, str(exc)[:300])

        lws = [{"model": model, "z": z, "beta": beta, "gamma": gamma, "scales": sc}
               for _, model, z, beta, gamma, sc in self._learnware_arrays(rows, left_out)]
        base = np.asarray(island.kernel.get("base_scales", island.kernel["scales"]))
        gamma, scales = island_kernel.refine_kernel(lws, base, island.semantic["task_type"],
                                                    random_state=0)
        # The kernel it replaces stays acceptable for specs in flight: a developer who fetched
        # the island a moment before publishes without recomputing. Such a spec is then on the
        # same footing as every spec published before the refinement (raw-unit points,
        # evaluated under the current kernel).
        old = island.kernel
        kernel = dict(old, gamma=float(gamma), scales=[float(s) for s in scales],
                      previous={"gamma": float(old["gamma"]),
                                "scales": [float(s) for s in old["scales"]]},
                      refined_count=len(rows))
        return self.store.set_kernel(island_pk, kernel, island.kernel_version)

    def _learnware_arrays(self, rows: list[StoredLearnware], on_failure=None) -> list[tuple]:
        """(id, loaded model, z, beta, gamma, scales) of store rows: what the island-level
        computations (kernel refinement, anchor profile) work on. A model that no longer loads
        within its budget is left out when ``on_failure(id, error)`` is given."""
        out = []
        for r in rows:
            z, beta = decode_points(r.spec)
            try:
                model = self.models.get(r.model_sha256, r.model_size)
            except (LearnwareError, RuntimeError) as exc:
                if on_failure is None:
                    raise
                on_failure(r.learnware_id, exc)
                continue
            out.append((r.learnware_id, model, z, beta, float(r.spec["gamma"]),
                        decode_scales(r.spec)))
        return out

    # --- read -----------------------------------------------------------------------------
    def learnware_row(self, learnware_id: str) -> StoredLearnware:
        pk = parse_id(learnware_id, "lw")
        row = self.store.learnware(pk) if pk is not None else None
        if row is None:
            raise NotFound(f"no learnware {learnware_id!r}", field="learnware_id")
        return row

    def manifest(self, learnware_id: str) -> dict:
        r = self.learnware_row(learnware_id)
        return {"learnware_id": r.learnware_id, "island_id": r.island_id,
                "semantic": r.semantic, "spec": r.spec, "model_sha256": r.model_sha256,
                "model_size": r.model_size, "developer": r.developer,
                "artefact": r.artefact, "deleted": r.deleted,
                "withdrawn": r.withdrawn, "created_at": int(r.created_at),
                **self._report_summary(r)}

    def _report_summary(self, r: StoredLearnware) -> dict:
        """``{"reports": aggregate}`` when the learnware has usage reports, else ``{}``."""
        summary = self.reports.summary(r.pk, r.semantic["objective"])
        return {"reports": summary} if summary["count"] else {}

    # --- usage reports --------------------------------------------------------------------
    def report(self, envelope, learnware_id: str) -> dict:
        """A user's signed usage report (market_server/reports.py has the rules)."""
        if envelope.body["learnware_id"] != learnware_id:
            raise LearnwareError("the signed learnware_id differs from the one in the URL",
                                 code="id_mismatch", status=400, field="learnware_id")
        row = self.learnware_row(learnware_id)
        return self.reports.submit(envelope, row, self.store.island(row.island_pk))

    def report_listing(self, learnware_id: str) -> dict:
        row = self.learnware_row(learnware_id)
        return self.reports.listing(row, row.semantic["objective"])

    def model_file(self, sha: str) -> bytes:
        """A model file by its sha256; refused (410) when every learnware it backs is withdrawn
        (the same file published again, live, is still served)."""
        data = self.store.model_bytes(sha) if len(sha) == 64 else None
        if data is None or not self.store.has_model(sha):
            raise NotFound(f"no model file with sha256 {sha[:64]!r}", field="sha256")
        gone = self.store.model_withdrawal(sha)
        if gone is not None:
            raise withdrawn_error(gone)
        return data

    def learnware_model(self, learnware_id: str) -> tuple[bytes, str]:
        """(model file, sha256) of a live learnware; 410 for a withdrawn one."""
        row = self.learnware_row(learnware_id)
        if row.withdrawn is not None:
            raise withdrawn_error(row)
        return self.model_file(row.model_sha256), row.model_sha256

    # --- delete ---------------------------------------------------------------------------
    def delete(self, envelope) -> dict:
        """Withdraw a learnware: its developer, or the market's operator (``operator_key``),
        may. The record stays (manifest: who, why, when); its model is no longer served."""
        r = self.learnware_row(envelope.body["learnware_id"])
        if r.developer == envelope.sender:
            by = "developer"
        elif self.config.operator_key and envelope.sender == self.config.operator_key:
            by = "operator"
        else:
            raise LearnwareError("only the learnware's own developer or the market's operator "
                                 "can withdraw it", code="forbidden", status=403,
                                 field="learnware_id")
        if r.deleted:
            raise LearnwareError(f"{r.learnware_id} is already withdrawn", code="gone",
                                 status=410, field="learnware_id")
        reason = envelope.body.get("reason") or f"withdrawn by its {by}"
        self.store.tombstone(r.pk, reason=reason, by=by)
        return {"learnware_id": r.learnware_id, "deleted": True,
                "withdrawn": self.learnware_row(r.learnware_id).withdrawn}

    # --- search ---------------------------------------------------------------------------
    def index(self, island: IslandRow) -> IslandIndex:
        """The island's search index, refreshed when any worker changed the island."""
        pk = island.pk
        with self._lock:
            idx = self._indexes.get(pk)
        if idx is not None and idx.version == island.version:
            return idx
        self._refreshes += 1  # every 64th refresh lists every live id (belt and braces)
        full = self._refreshes % 64 == 0
        new = None
        if (idx is not None and idx.pks and not full
                and idx.kernel_version == island.kernel_version):
            # the usual refresh: learnwares published since, nothing else changed
            added = self.store.island_appended(pk, idx.pks[-1], idx.pk_sums)
            if added:
                new = IslandIndex.build(island.kernel, island.kernel_version, added,
                                        keep=idx, appended=True)
        if new is None:
            known = set(idx.points) if idx is not None else set()
            rows = self.store.island_specs(pk, known)
            new = IslandIndex.build(island.kernel, island.kernel_version, rows, keep=idx)
        new.version = island.version
        with self._lock:
            self._indexes[pk] = new
        return new

    def search(self, body: dict) -> dict:
        semantic = body["semantic"]
        island = self.island_for(semantic, body.get("island_id"))
        # Text matches only help when no island matches.
        text_matches = self._text_matches(semantic) if island is None else []
        if island is None:
            return {"island_id": None, "single": [], "mixture": None, "text_matches": text_matches,
                    "message": "no island matches this semantic specification (data type, task, "
                               "input features, target, objective); see text_matches"}
        max_results = body["max_results"]
        fitted_under = body.get("kernel_version")
        if (body.get("requirement") is not None and fitted_under is not None
                and fitted_under != island.kernel_version):
            raise KernelChangedError(
                f"the requirement was fitted under kernel version {fitted_under}; the island's "
                f"is {island.kernel_version}: refit under the kernel given and search again",
                field="kernel_version",
                kernel=kernel_wire(island.kernel, island.kernel_version))
        idx = self.index(island)
        out: dict[str, Any] = {"island_id": island.island_id, "single": [], "mixture": None,
                               "kernel": kernel_wire(island.kernel, island.kernel_version),
                               "objective": island.semantic["objective"],
                               "baseline_mmd": idx.baseline, "text_matches": text_matches}
        req = body.get("requirement")
        if len(idx) == 0:
            out["message"] = "the island has no live learnwares"
            return out
        if req is None:
            out["message"] = ("no RKME requirement given: learnwares listed in publish order; "
                              "send a requirement, or use the anchor path (localize)")
            out["single"] = [{"learnware_id": i, "mmd": 0.0, "score": 0.0, "fit": "unknown"}
                             for i in idx.ids[:max_results]]
            self._name_matches(out["single"], idx, range(len(out["single"])))
            return out
        z, b = decode_points(req)
        if z.shape[1] != island.n_features:
            raise LearnwareError(f"requirement has {z.shape[1]} features; the island has "
                                 f"{island.n_features}", code="spec_dimension", status=422,
                                 field="requirement.z")
        if z.shape[0] != len(b) or len(b) < 1:
            raise LearnwareError(f"requirement has {z.shape[0]} reduced points and {len(b)} "
                                 "weights; one weight per point (at least one) is needed",
                                 code="spec_dimension", status=422, field="requirement.beta")
        if not on_simplex(b):
            raise LearnwareError("requirement.beta must be non-negative and sum to 1",
                                 code="spec_weights", status=422, field="requirement.beta")
        if not (np.abs(z / idx.scales) <= MAX_SCALED_COORD).all():
            raise LearnwareError("requirement.z has coordinates far outside any data set "
                                 "(more than 1e100 kernel scales)", code="bad_spec", status=422,
                                 field="requirement.z")
        if not (np.isclose(req["gamma"], idx.gamma, rtol=1e-9, atol=0)):
            out["message"] = ("requirement was computed with another kernel than the island's "
                              "current one; MMD evaluated under the island's kernel")
        # best candidates by exact MMD (large islands: sketch pre-selection, exact re-rank)
        q_self = idx.requirement_self(z, b)  # k_q^2 kernel values: once per search
        cand, mmd, cross = idx.rank(z, b, top=max(max_results, 12), with_cross=True,
                                    q_self=q_self)
        if not np.isfinite(mmd).all():
            raise LearnwareError("the requirement gives non-finite distances under the island's "
                                 "kernel", code="bad_spec", status=422, field="requirement")
        for i, v in zip(cand[:max_results], mmd[:max_results]):
            score, label = idx.fit_label(float(v))
            out["single"].append({"learnware_id": idx.ids[i], "mmd": float(v),
                                  "score": score, "fit": label})
        self._name_matches(out["single"], idx, cand[:max_results])
        self.reports.annotate(out["single"], island.semantic["objective"])
        mix = idx.mixture(z, b, mmd, max_size=min(5, max_results), among=cand, cross=cross,
                          q_self=q_self)
        if mix is not None:
            ids, w, v = mix
            score, _ = idx.fit_label(v)
            out["mixture"] = {"learnware_ids": [idx.ids[i] for i in ids],
                              "weights": [float(x) for x in w], "mmd": float(v), "score": score}
        return out

    def _name_matches(self, single: list[dict], idx, positions=()) -> None:
        """Add each ranked learnware's name (from its semantic spec) to its match;
        ``positions``: the matches' places in ``idx``; ``idx`` None: the ids name the rows."""
        if idx is None:
            pks = [parse_id(m["learnware_id"], "lw") for m in single]
        else:
            pks = [None if i is None else idx.pks[i] for i in positions]
        names = self.text.names([pk for pk in pks if pk is not None], self.store)
        for match, pk in zip(single, pks):
            if names.get(pk):
                match["name"] = names[pk]

    def _text_matches(self, semantic: dict, limit: int = 10) -> list[dict]:
        query = " ".join(filter(None, [semantic.get("name", ""),
                                       " ".join(semantic.get("tags", []))]))
        if not query.strip():
            return []
        return self.text_search(query, limit)

    def text_search(self, query: str, limit: int = 20) -> list[dict]:
        """Bounded work whatever the market holds (see textindex.py)."""
        self.text.refresh(self.store)
        return self.text.search(query, limit)

    # --- the specification world (market_server/world.py) -------------------------------
    def world(self):
        """The world of the market's islands, rebuilt whenever any island's version moved
        (publish, withdraw, kernel change; on start it is built on first use)."""
        rows = self.store.list_islands()
        sig = tuple((r.pk, r.version, r.kernel_version) for r in rows)
        cached = self._world
        if cached is not None and cached[0] == sig:
            return cached[1]
        with self._world_lock:  # one rebuild at a time (threaded workers)
            return self._build_world(rows, sig)

    def _build_world(self, rows, sig):
        from .world import IslandNode, World
        cached = self._world
        if cached is not None and cached[0] == sig:
            return cached[1]
        # feature descriptions: read only the learnwares published since the last build
        _, new = self.store.live_text_since(self._feature_info_top)
        for lw in new:
            info = lw.semantic.get("feature_info") if isinstance(lw.semantic, dict) else None
            if info:
                slot = self._feature_info.setdefault(island_key(lw.semantic), {})
                for f, v in info.items():
                    slot.setdefault(f, v)
            self._feature_info_top = max(self._feature_info_top, lw.pk)
        nodes = [IslandNode(r.island_id, r.semantic, float(r.kernel["gamma"]),
                            tuple(float(x) for x in r.kernel["scales"]),
                            int(r.learnware_count or 0), self._feature_info.get(r.island_key, {}))
                 for r in rows if r.learnware_count]
        world = World(nodes)
        self._world = (sig, world)
        self._world_baselines = {}
        return world

    def world_info(self) -> dict:
        return self.world().wire()

    #: most islands a search across islands visits (those sharing most features first)
    WORLD_MAX_ISLANDS = 64

    def world_search(self, body: dict) -> dict:
        """Search every island of the component the user's columns reach, by the marginal MMD
        on the features each island shares with the user (market_server/world_search.py)."""
        from .world_search import MIXTURE_CANDIDATES, WORK_BUDGET, Candidate, WorldSearch
        semantic, req, max_results = body["semantic"], body["requirement"], body["max_results"]
        world = self.world()
        comp, cols, matches = world.resolve_user(semantic)
        out: dict[str, Any] = {"component_id": None, "single": [], "mixture": None,
                               "islands": [], "matches": matches,
                               "objective": semantic["objective"]}
        if comp is None:
            out["message"] = ("no island of this data type, task, target and objective shares "
                              "an input feature with these columns")
            return out
        z, b = decode_points(req, "requirement")
        user_cols = semantic["input_features"]
        if z.shape[1] != len(user_cols) or z.shape[0] != len(b) or len(b) < 1:
            raise LearnwareError(f"requirement has {z.shape[1]} features and {len(b)} weights "
                                 f"for {z.shape[0]} points; it needs one column per input "
                                 f"feature ({len(user_cols)}) and one weight per point",
                                 code="spec_dimension", status=422, field="requirement.z")
        if not on_simplex(b):
            raise LearnwareError("requirement.beta must be non-negative and sum to 1",
                                 code="spec_weights", status=422, field="requirement.beta")
        seen: set[str] = set()
        user_canon = []
        for c in user_cols:  # a feature two columns map to counts once (the first column)
            f = cols.get(c)
            user_canon.append(f if f is not None and f not in seen else None)
            seen.add(f)
        widths = comp.widths
        if not (np.abs(z[:, [j for j, f in enumerate(user_canon) if f]]
                       / np.array([widths[f] for f in user_canon if f])) <= MAX_SCALED_COORD).all():
            raise LearnwareError("requirement.z has coordinates far outside any data set",
                                 code="bad_spec", status=422, field="requirement.z")
        ws = WorldSearch(z, b, user_canon, widths,
                         self._world_baselines.setdefault(comp.component_id, {}))
        islands = sorted(comp.islands, key=lambda n: -len(set(world.canonical(n.island_id))
                                                          & set(ws.ucol)))
        pool: list[Candidate] = []
        work, left_out = 0, 0
        for node in islands[:self.WORLD_MAX_ISLANDS]:
            island = self._island_of_key(island_key(node.semantic))
            if island is None:
                continue
            idx = self.index(island)
            canon = world.canonical(node.island_id)
            taken = 0
            for lw_id, pk in zip(idx.ids, idx.pks):
                zz, bb = idx.points[pk]
                cand = Candidate(lw_id, node.island_id, pk, zz, bb, node.features, canon)
                work += ws.cost(len(b), cand)
                if work > WORK_BUDGET:
                    left_out += 1
                    continue
                pool.append(cand)
                taken += 1
            if taken:
                out["islands"].append(node.island_id)
        left_out += sum(n.learnware_count for n in islands[self.WORLD_MAX_ISLANDS:])
        if left_out:
            out["message"] = (f"{left_out} learnware(s) of the component were not evaluated "
                              f"(the search's work bound); the islands sharing most features "
                              f"with these columns came first")
        out["component_id"] = comp.component_id
        ranked = ws.rank(pool)
        if not np.isfinite([r["mmd"] for r in ranked]).all():
            raise LearnwareError("the requirement gives non-finite distances", code="bad_spec",
                                 status=422, field="requirement")
        inv = {f: c for c, f in zip(user_cols, user_canon) if f is not None}
        for r in ranked[:max_results]:
            cand = r["cand"]
            ratio = r["ratio"]
            score = float(max(0.0, 1.0 - ratio)) if ratio is not None else 0.0
            fit = ("unknown" if ratio is None else "good" if ratio < 0.3 else "fair"
                   if ratio < 0.7 else "poor")
            covered = {cand.features[i]: inv[f] for i, f in enumerate(cand.canonical) if f in inv}
            out["single"].append({"learnware_id": cand.learnware_id, "island_id": cand.island_id,
                                  "mmd": float(r["mmd"]), "score": score, "fit": fit,
                                  "covered": covered,
                                  "fill": [f for f in cand.features if f not in covered],
                                  "baseline_mmd": r["baseline"]})
        self._name_matches(out["single"], None)
        mix = ws.mixture(ranked, max_size=min(MIXTURE_CANDIDATES, max_results))
        if mix is not None:
            chosen, w, v, common = mix
            base = ws.baseline(common, pool)
            out["mixture"] = {"learnware_ids": [r["cand"].learnware_id for r in chosen],
                              "weights": [float(x) for x in w], "mmd": float(v),
                              "score": float(max(0.0, 1.0 - v / base)) if base else 0.0}
            out["mixture_features"] = [inv[f] for f in common]
        return out
    def describe(self, query: str, limit: int = 10, ranker: str = "auto") -> dict:
        """Islands and learnwares ranked for a requirement in words (describe.py)."""
        self.words.refresh(self.store, self.reports)
        return self.words.query(query, limit, ranker)

    # --- anchors --------------------------------------------------------------------------
    def profile(self, island: IslandRow):
        """The island's anchor profile (performance matrix etc.) over at most
        ``max_profile_learnwares`` of its learnwares; cached, updated after publishes and
        deletes, one build per island at a time (market_server/profiles.py)."""
        return self.profiles.get(island)

    def anchor_set(self, body: dict) -> dict:
        from . import anchors
        island = self.island_for(body["semantic"], body.get("island_id"))
        if island is None:
            raise NotFound("no island matches this semantic specification", field="semantic")
        prof = self.profile(island)
        k = min(body.get("max_anchors", self.config.max_anchors), self.config.max_anchors)
        ids = list(anchors.select_anchors(prof, max_anchors=k))
        extra = min(self.config.report_coverage_anchors, MAX_ANCHOR_SET - len(ids))
        if extra > 0:
            ids += anchors.coverage_anchors(prof, self.reports.prior(island, prof), extra,
                                            exclude=ids)
        return {"island_id": island.island_id, "anchors": ids,
                "objective": island.semantic["objective"], "round": 0}

    def localize(self, body: dict) -> dict:
        from . import anchors
        island = self.island_by_public_id(body["island_id"])
        objective = island.semantic["objective"]
        if body["metric"] != objective:
            raise LearnwareError(f"the island's objective is {objective}; metrics were "
                                 f"computed as {body['metric']}", code="wrong_metric",
                                 status=422, field="metric")
        prof = self.profile(island)
        live = self.store.live_in_island(island.pk, body["values"])
        values = body["values"]
        unknown = sorted(set(values) - live)
        if unknown:
            raise LearnwareError(f"not live learnwares of this island: {unknown[:5]}",
                                 code="unknown_anchor", status=422, field="values")
        ids = list(values)
        vals = [float(values[i]) for i in ids]
        lo, hi = OBJECTIVE_RANGES[objective]
        if not ids or not all(lo <= v <= hi for v in vals):
            raise LearnwareError(f"values needs at least one {objective} measurement, each in "
                                 f"[{lo:g}, {hi:g}]", code="bad_metrics", status=422,
                                 field="values")
        # a big island's profile covers a subset, which a publish may have changed since the
        # anchors were sent: measurements of learnwares outside it are set aside
        members = set(prof.ids)
        outside = [i for i in ids if i not in members]
        if outside:
            if len(outside) == len(ids):
                raise LearnwareError(f"none of these learnwares is in the island's anchor "
                                     f"profile (it covers {prof.n} of them); ask for anchors "
                                     f"again", code="unknown_anchor", status=422, field="values")
            vals = [v for i, v in zip(ids, vals) if i in members]
            ids = [i for i in ids if i in members]
        try:
            res = anchors.localize(prof, ids, vals, body["n_rows"],
                                   reports=self.reports.prior(island, prof))
        except ValueError as exc:
            raise LearnwareError(f"cannot localise from these metrics: {exc}",
                                 code="bad_metrics", status=422, field="values") from exc
        max_results = body.get("max_results", 5)
        out = {"island_id": island.island_id, "single": [], "mixture": None,
               "objective": objective, "round": body["round"]}
        # ``anchors.localize`` returns a Localization (ranking of RankedLearnware, a Mixture).
        # Estimates and their intervals are kept in the objective's range (an accuracy above
        # 1 means nothing, and the answer must stay within the protocol's bounds).
        for item in res.ranking[:max_results]:
            low, high = clip_metric(objective, item.low), clip_metric(objective, item.high)
            out["single"].append({"learnware_id": item.id, "mmd": 0.0,
                                  "score": float(item.p_best), "fit": "unknown",
                                  "estimate": clip_metric(objective, item.estimate),
                                  # half-width of the 80% interval, in objective units
                                  "uncertainty": max(0.0, (high - low) / 2.0)})
        self._name_matches(out["single"], None)
        self.reports.annotate(out["single"], objective)
        mix = res.mixture
        if mix is not None and mix.ids:
            out["mixture"] = {"learnware_ids": list(mix.ids),
                              "weights": [float(w) for w in mix.weights], "mmd": 0.0,
                              "score": 0.0, "estimate": clip_metric(objective, mix.expected)}
        if res.summary or outside:
            note = (f" {len(outside)} measurement(s) of learnwares no longer in the island's "
                    f"anchor profile were set aside." if outside else "")
            out["message"] = ((res.summary or "") + note).strip()[:2000]
        more = body.get("more_anchors", 0)
        if more:
            out["next_anchors"] = list(anchors.next_anchors(prof, ids, vals, body["n_rows"],
                                                            k=more, posterior=res.posterior))
        return out
