"""The catalogue's read model: what the web pages show, read-only, from the market's public data.

Everything here is what the signed API already gives anyone (island info, manifests, text
search), arranged for people: pages of an island's learnwares in a chosen order, a developer
key's learnwares, a summary of a spec, the type of a model file, the island map. The web views
(market_server/web/) call only this object; the SQL lives here, on the store's public tables
and engine, so the views never touch the store.
"""
from __future__ import annotations

import io
import json
import logging
import math
import threading
import zipfile
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np
import sqlalchemy as sa

from learnware_core.kernels import embedding_inner
from learnware_core.spec import decode_points
from protocol.errors import LearnwareError

from . import storage
from .islandmap import (MAP_LEARNWARES, MAP_POINTS, MAP_WORK, IslandMap, island_map,
                        point_budget, rank_key, sample_pks)
from .market import Market
from .rows import IslandRow, StoredLearnware

log = logging.getLogger("market_server")

LW = storage.learnwares
#: the orders an island's (or a developer's) table can be sorted in: name -> column
SORTS = {"published": LW.c.id, "name": LW.c.name, "size": LW.c.model_size,
         "developer": LW.c.developer_key_id}
ORDERS = ("asc", "desc")
#: characters of a description shown in a table cell (the learnware page shows it all)
SNIPPET_CHARS = 160
#: a model file's schema.json read for its type at most (bytes, uncompressed)
MAX_SCHEMA_READ = 4 << 20


@dataclass(frozen=True)
class LearnwareLine:
    """One learnware as a table row shows it."""

    learnware_id: str
    name: str
    snippet: str
    island_id: str
    developer_key_id: str
    created_at: float
    model_size: int
    withdrawn: bool
    score: float | None = None


@dataclass(frozen=True)
class Page:
    """One page of a sorted table: ``page`` is 1-based and within ``[1, pages]``."""

    rows: list[LearnwareLine]
    total: int
    page: int
    pages: int
    per_page: int
    sort: str
    order: str


@dataclass(frozen=True)
class IslandSummary:
    island: IslandRow
    count: int
    withdrawn: int
    last_publish: float | None


@dataclass(frozen=True)
class FeatureScale:
    name: str
    base: float
    current: float

    @property
    def relevance(self) -> float:
        """How much more the refined kernel weighs this feature than the base kernel did
        (base scale / current scale: above 1, the feature matters more)."""
        return self.base / self.current if self.current > 0 else 0.0


@dataclass(frozen=True)
class KernelView:
    gamma: float
    version: int
    features: list[FeatureScale]
    refined_count: int | None
    previous_gamma: float | None
    next_refine_at: int | None


@dataclass(frozen=True)
class SpecSummary:
    k: int
    effective_k: float
    max_weight: float
    self_inner: float | None  # None: not computed (too many points x features)
    gamma: float
    under_current_kernel: bool
    features: list[tuple[str, float, float]]  # name, weighted mean, weighted sd of z
    dp: dict | None = None  # the (epsilon, delta) budget the developer declared (issue #19)


@dataclass(frozen=True)
class MapPoint:
    learnware_id: str
    name: str
    x: float
    y: float


def _snippet(text: str) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= SNIPPET_CHARS else text[:SNIPPET_CHARS - 1] + "\u2026"


def _line(r, score: float | None = None) -> LearnwareLine:
    sem = json.loads(r.semantic) if isinstance(r.semantic, str) else r.semantic
    return LearnwareLine(storage.learnware_public_id(r.id), str(sem.get("name", "")),
                         _snippet(sem.get("description", "")),
                         storage.island_public_id(r.island_id), r.developer_key_id,
                         float(r.created_at), int(r.model_size), r.deleted_at is not None, score)


_LINE_COLUMNS = (LW.c.id, LW.c.island_id, LW.c.semantic, LW.c.developer_key_id,
                 LW.c.created_at, LW.c.model_size, LW.c.deleted_at)


def _check_order(sort: str, order: str) -> None:
    if sort not in SORTS or order not in ORDERS:
        raise ValueError(f"sort must be one of {sorted(SORTS)} and order one of {ORDERS}")


def page_bounds(total: int, page: int, per_page: int) -> tuple[int, int]:
    """(pages, page clamped into [1, pages]): a page past the end shows the last one."""
    pages = max(1, math.ceil(total / per_page))
    return pages, min(max(1, page), pages)


def model_type(data: bytes) -> str:
    """``module.Class`` of a skops model file, read from its schema.json without loading it
    (the file was checked at publish; this only names what it holds). "unknown" when the
    file does not say."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            info = zf.getinfo("schema.json")
            if info.file_size > MAX_SCHEMA_READ:
                return "unknown"
            with zf.open(info) as fh:
                schema = json.loads(fh.read(MAX_SCHEMA_READ + 1))
    except (zipfile.BadZipFile, KeyError, ValueError, OSError, RuntimeError):
        return "unknown"
    if not isinstance(schema, dict):
        return "unknown"
    cls, mod = schema.get("__class__"), schema.get("__module__")
    if not isinstance(cls, str):
        return "unknown"
    return f"{mod}.{cls}"[:200] if isinstance(mod, str) else cls[:200]


class Catalogue:
    """Read-only views of one market (one per app, next to the ``Market``)."""

    def __init__(self, market: Market, *, map_learnwares: int = MAP_LEARNWARES,
                 map_points: int = MAP_POINTS):
        self.market = market
        self.store = market.store
        self.map_learnwares, self.map_points = map_learnwares, map_points
        self._maps: OrderedDict[int, tuple[int, tuple[int, ...], IslandMap]] = OrderedDict()
        self._types: OrderedDict[str, str] = OrderedDict()
        #: (island pk, with withdrawn, sort) -> (island version, ids in ascending order)
        self._orders: OrderedDict[tuple[int, bool, str], tuple[int, list[int]]] = OrderedDict()
        self._lock = threading.Lock()

    def clear_caches(self) -> None:
        """Forget the maps, table orders and model types kept (the next views rebuild them;
        benchmarks measure that cost with it)."""
        with self._lock:
            self._maps.clear()
            self._orders.clear()
            self._types.clear()

    # --- islands --------------------------------------------------------------------------
    def islands(self) -> list[IslandSummary]:
        """Every island with its live count, withdrawn count and last publication time (two
        grouped queries that the (island, deleted_at, id) indexes answer, then one row per
        island: no scan of the learnwares' rows)."""
        rows = self.store.list_islands()
        with self.store.engine.connect() as conn:
            last = {r[0]: r[1] for r in conn.execute(
                sa.select(LW.c.island_id, sa.func.max(LW.c.id)).group_by(LW.c.island_id))}
            gone = {r[0]: int(r[1]) for r in conn.execute(
                sa.select(LW.c.island_id, sa.func.count()).where(LW.c.deleted_at.is_not(None))
                .group_by(LW.c.island_id))}
            when = {r[0]: float(r[1]) for r in conn.execute(
                sa.select(LW.c.id, LW.c.created_at).where(LW.c.id.in_(list(last.values()))))
                } if last else {}
        return [IslandSummary(isl, int(isl.learnware_count or 0), gone.get(isl.pk, 0),
                              when.get(last.get(isl.pk)))
                for isl in rows]

    def island(self, island_id: str) -> IslandRow:
        return self.market.island_by_public_id(island_id)

    def kernel(self, island: IslandRow) -> KernelView:
        """The island's current kernel, its base (declared) scales and how it was refined."""
        kern = island.kernel
        current = np.asarray(kern["scales"], dtype=np.float64)
        base = np.asarray(kern.get("base_scales", kern["scales"]), dtype=np.float64)
        names = island.semantic["input_features"]
        feats = [FeatureScale(str(n), float(b), float(c)) for n, b, c in zip(names, base, current)]
        refined = kern.get("refined_count")
        done = int(refined or 1)
        live = self.store.count_live(island.pk)
        upcoming = [t for t in self.market.config.refine_at if t > max(done, live)]
        prev = kern.get("previous")
        return KernelView(float(kern["gamma"]), int(island.kernel_version), feats,
                          None if refined is None else int(refined),
                          None if not prev else float(prev["gamma"]),
                          upcoming[0] if upcoming else None)

    def learnwares(self, island: IslandRow, *, sort: str = "published", order: str = "desc",
                   page: int = 1, per_page: int = 50, withdrawn: bool = False) -> Page:
        """One page of the island's learnwares (live ones; ``withdrawn``: all). The island's
        ids in each order are kept per island version (one scan of the sort keys after a
        publish), so any page in any order is a slice and one query for its rows."""
        _check_order(sort, order)
        ids = self._ordered_ids(island, sort, withdrawn)
        total = len(ids)
        pages, page = page_bounds(total, page, per_page)
        if order == "desc":
            ids = ids[::-1]
        return Page(self._lines(ids[(page - 1) * per_page: page * per_page]), total, page,
                    pages, per_page, sort, order)

    def _ordered_ids(self, island: IslandRow, sort: str, withdrawn: bool) -> list[int]:
        """The island's learnware ids in ``sort`` order, ascending (ties by id), as of the
        island's version: publication order straight from the (island, deleted_at, id)
        index; another order from one scan of that column."""
        key = (island.pk, withdrawn, sort)
        with self._lock:
            cached = self._orders.get(key)
        if cached is not None and cached[0] == island.version:
            return cached[1]
        cond = LW.c.island_id == island.pk
        if not withdrawn:
            cond = sa.and_(cond, LW.c.deleted_at.is_(None))
        with self.store.engine.connect() as conn:
            if sort == "published":
                ids = [r[0] for r in conn.execute(sa.select(LW.c.id).where(cond)
                                                  .order_by(LW.c.id))]
            else:
                pairs = conn.execute(sa.select(SORTS[sort], LW.c.id).where(cond)).all()
                ids = [pk for _, pk in sorted(pairs)]
        with self._lock:
            self._orders[key] = (island.version, ids)
            self._orders.move_to_end(key)
            while len(self._orders) > 256:
                self._orders.popitem(last=False)
        return ids

    def _lines(self, pks: list[int]) -> list[LearnwareLine]:
        """Table rows of these learnwares, in this order."""
        if not pks:
            return []
        with self.store.engine.connect() as conn:
            rows = {r.id: r for r in conn.execute(sa.select(*_LINE_COLUMNS)
                                                  .where(LW.c.id.in_(pks)))}
        return [_line(rows[pk]) for pk in pks if pk in rows]

    def by_developer(self, key_id: str, *, sort: str = "published", order: str = "desc",
                     page: int = 1, per_page: int = 50) -> Page:
        """One page of the learnwares published with developer key ``key_id`` (withdrawn
        ones included: they are marked)."""
        cond = LW.c.developer_key_id == key_id[:64]
        return self._page(cond, self._count(cond), sort, order, page, per_page)

    def _count(self, cond) -> int:
        with self.store.engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(LW)
                                    .where(cond)).scalar() or 0)

    def _page(self, cond, total: int, sort: str, order: str, page: int, per_page: int) -> Page:
        """A page straight from SQL (a developer key's learnwares: an indexed few): the ids
        sorted by the key alone, then the page's rows."""
        _check_order(sort, order)
        pages, page = page_bounds(total, page, per_page)
        col = SORTS[sort]
        keys = [col.desc(), LW.c.id.desc()] if order == "desc" else [col.asc(), LW.c.id.asc()]
        stmt = (sa.select(LW.c.id).where(cond).order_by(*keys)
                .limit(per_page).offset((page - 1) * per_page))
        with self.store.engine.connect() as conn:
            ids = [r[0] for r in conn.execute(stmt)]
        return Page(self._lines(ids), total, page, pages, per_page, sort, order)

    # --- the island map -------------------------------------------------------------------
    def island_map(self, island: IslandRow) -> tuple[IslandMap, list[MapPoint]]:
        """The island's map (cached per island and kernel version; recomputed only when the
        kernel or the sample of learnwares drawn changes) and its points with names."""
        with self._lock:
            cached = self._maps.get(island.pk)
        entry = None
        if cached is not None and cached[2].kernel_version == island.kernel_version:
            if cached[0] == island.version:
                entry = cached
            else:  # publishes or withdrawals since: the sample may still be the same
                candidates = tuple(self._sample(self.store.island_live_pks(island.pk)))
                if candidates == cached[1]:
                    entry = (island.version, cached[1], cached[2])
        if entry is None:
            candidates, m = self._build_map(island)
            entry = (island.version, candidates, m)
        with self._lock:
            self._maps[island.pk] = entry
            self._maps.move_to_end(island.pk)
            while len(self._maps) > 256:
                self._maps.popitem(last=False)
        m = entry[2]
        names = self._names(list(m.pks))
        points = [MapPoint(storage.learnware_public_id(pk), names.get(pk, ""), float(x), float(y))
                  for pk, (x, y) in zip(m.pks, m.xy)]
        return m, points

    def _sample(self, pks: list[int], sizes: dict[int, int] | None = None) -> list[int]:
        return sample_pks(pks, sizes, max_learnwares=self.map_learnwares,
                          max_points=self.map_points)

    def _build_map(self, island: IslandRow) -> tuple[tuple[int, ...], IslandMap]:
        """(the candidates: the sample by id alone, the map). The map draws the candidates, in
        sample order, whose reduced points fit in the island's point budget together; their
        specs are read a few at a time (one spec may hold 2 million numbers)."""
        candidates = tuple(self._sample(self.store.island_live_pks(island.pk)))
        budget = min(self.map_points, point_budget(island.n_features))
        emb: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        order = sorted(candidates, key=rank_key)
        for i in range(0, len(order), 8):
            if budget <= 0:
                break
            for r in self.store.learnwares_by_pks(order[i:i + 8]):
                z, beta = decode_points(r.spec)
                if not r.deleted and 0 < len(beta) <= budget and z.shape[0] == len(beta):
                    emb[r.pk] = (z, beta)
                    budget -= len(beta)
        chosen = sorted(emb)
        kern = island.kernel
        return candidates, island_map(chosen, [emb[pk] for pk in chosen], float(kern["gamma"]),
                                      np.asarray(kern["scales"], dtype=np.float64),
                                      island.kernel_version)

    def _names(self, pks: list[int]) -> dict[int, str]:
        out: dict[int, str] = {}
        with self.store.engine.connect() as conn:
            for i in range(0, len(pks), 500):
                out.update({r.id: r.name for r in conn.execute(
                    sa.select(LW.c.id, LW.c.name).where(LW.c.id.in_(pks[i:i + 500])))})
        return out

    # --- one learnware --------------------------------------------------------------------
    def learnware(self, learnware_id: str) -> StoredLearnware:
        return self.market.learnware_row(learnware_id)

    def usage_reports(self, row: StoredLearnware, limit: int = 20) -> dict:
        """The learnware's usage reports as ``GET /v1/learnwares/<id>/reports`` gives them:
        the aggregate and the newest ``limit``."""
        listing = self.market.reports.listing(row, row.semantic["objective"])
        return dict(listing, reports=listing["reports"][:limit])

    def spec_summary(self, row: StoredLearnware, island: IslandRow) -> SpecSummary:
        """k, the weights' spread, the embedding's squared norm under the island's current
        kernel and the weighted mean and sd of the reduced points per feature."""
        z, beta = decode_points(row.spec)
        kern = island.kernel
        gamma, scales = float(kern["gamma"]), np.asarray(kern["scales"], dtype=np.float64)
        b = np.clip(beta, 0.0, None)
        b = b / b.sum() if b.sum() > 0 else np.full(len(b), 1.0 / len(b))
        mean = b @ z
        sd = np.sqrt(np.maximum(b @ (z - mean) ** 2, 0.0))
        names = island.semantic["input_features"]
        fitted = float(row.spec.get("gamma", gamma))
        k, d = z.shape
        # k^2 x d kernel terms: a spec the protocol allows (2,000 points x 1,000 features) would
        # cost seconds on every view, so the norm is left out past the map's work budget
        norm = (float(embedding_inner(z, b, z, b, gamma, scales)) if k * k * d <= MAP_WORK
                else None)
        return SpecSummary(int(len(beta)), float(1.0 / float((b ** 2).sum())), float(b.max()),
                           norm, fitted,
                           bool(np.isclose(fitted, gamma, rtol=1e-9, atol=0)),
                           [(str(n), float(m), float(s)) for n, m, s in zip(names, mean, sd)],
                           dict(row.spec["dp"]) if isinstance(row.spec.get("dp"), dict) else None)

    def model_type(self, sha: str) -> str:
        """The type a model file holds (cached by sha256)."""
        with self._lock:
            if sha in self._types:
                return self._types[sha]
        data = self.store.model_bytes(sha)
        kind = "unknown" if data is None else model_type(data)
        with self._lock:
            self._types[sha] = kind
            while len(self._types) > 4096:
                self._types.popitem(last=False)
        return kind

    # --- text search ----------------------------------------------------------------------
    def text_search(self, query: str, limit: int = 50) -> list[LearnwareLine]:
        """The market's text search (bounded work per query), as table rows."""
        matches = self.market.text_search(query, limit) if query.strip() else []
        scores = {storage.parse_id(m["learnware_id"], "lw"): float(m["score"]) for m in matches}
        pks = [pk for pk in scores if pk is not None]
        if not pks:
            return []
        with self.store.engine.connect() as conn:
            rows = {r.id: r for r in conn.execute(sa.select(*_LINE_COLUMNS)
                                                  .where(LW.c.id.in_(pks)))}
        return [_line(rows[pk], scores[pk]) for pk in pks if pk in rows]

    # --- how islands connect (issue #15) --------------------------------------------------
    def connections(self) -> list[dict] | None:
        """How islands connect (the specification world, market_server/world.py): each
        component of two or more islands, ``{"islands": [island ids], "features": [the features
        that connect them]}``. None when it cannot be read (logged; only that section of the
        home page is left out)."""
        try:
            components = self.market.world_info().get("components", [])
        except (LearnwareError, ValueError, TypeError, RuntimeError, KeyError):
            log.exception("island connections unavailable")
            return None
        return [{"islands": list(c["islands"]), "features": list(c.get("connecting_features", []))}
                for c in components if len(c.get("islands", [])) > 1]
