"""Requirements in words: rank islands and learnwares for a user's text (issue #18).

The index holds the public texts of every live learnware (:func:`learnware_texts`: its name,
description, tags, feature names, target and, when a specification carries them, per-feature
descriptions and a model card; and the comments of its usage reports, read from
market_server/reports.py as reports arrive or are replaced). Two rankers over it:

* lexical, always: BM25 over normalised, stemmed words (learnware_core/words.py);
* semantic, when the ``words`` extra is installed: the cosine of the query's all-MiniLM-L6-v2
  embedding with the best passage of each learnware (passages of at most PASSAGE_WORDS words,
  at most MAX_PASSAGES per learnware, cached by their text's hash).

With both, the answer mixes their scores with equal weights ("hybrid": BM25 scaled by the
query's best, plus the cosine). Passages are embedded in a
background thread after the index learns of a learnware: a query never waits for them, and
ranks the ones not yet embedded by their words alone (the answer counts them as ``pending``).
An island scores as its best learnware. Every query is bounded (MAX_QUERY_CHARS, refused past
it); the index as a whole by the market's size (at most MAX_DOCS learnwares).

A query costs its own embedding (market_server/embedder.py), one sparse BM25 product, one
matrix-vector product over the passages and array operations over the learnwares; Python
loops run over the ``limit`` learnwares answered only, never over the market.
"""
from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np

from learnware_core.semantic import island_key
from learnware_core.words import (MAX_FIELD_CHARS, BM25Ranker, clean_text, score_mix,
                                  semantic_texts, words)
from protocol.errors import LearnwareError

from .embedder import DIM, Embedder
from .storage import live_totals
from .textindex import catch_up

MAX_QUERY_CHARS = 500
MAX_RESULTS = 50
#: live learnwares the index holds (the oldest first)
MAX_DOCS = 100_000
PASSAGE_WORDS = 100
MAX_PASSAGES = 8
#: report comments indexed per learnware (the newest), their characters, their passages
MAX_COMMENTS = 20
MAX_COMMENT_CHARS = 500
COMMENT_PASSAGES = 2
#: the lexical ranker's weight in the hybrid (its BM25 scaled by the query's best; the rest is
#: the cosine): equal weights, not tuned (0.3 to 0.7 all rank within 0.01: docs/RESULTS.md)
LEXICAL_WEIGHT = 0.5
#: passages the background thread embeds at a time: a query's own embedding waits for the
#: model at most this long (one batch, ~0.2 s on one core)
EMBED_BATCH = 16
#: report ids re-read below the newest one read (reports committed out of id order)
REPORT_LAG = 64
#: query embeddings kept
QUERY_CACHE = 256


class QueryTooLong(LearnwareError):
    code = "query_too_long"
    status = 400


def learnware_texts(spec_texts: dict[str, str], comments=()) -> dict[str, str]:
    """The public texts of one learnware, field -> text: what the index reads. Those of its
    semantic specification (:func:`semantic_texts`) and the comments of its usage reports
    (public: the report listing shows them to anyone), the newest MAX_COMMENTS, each cleaned
    and cut to MAX_COMMENT_CHARS, as the field ``comments``."""
    out = dict(spec_texts)
    kept = [c for c in (clean_text(str(c))[:MAX_COMMENT_CHARS] for c in comments) if c][
        :MAX_COMMENTS]
    if kept:
        out["comments"] = "\n".join(kept)[:MAX_FIELD_CHARS]
    else:
        out.pop("comments", None)
    return out


def passages(texts: dict[str, str]) -> list[tuple[str, str]]:
    """(field, passage) pairs to embed: the short fields as one passage, the long ones cut
    at PASSAGE_WORDS words; at most MAX_PASSAGES, of which up to COMMENT_PASSAGES are kept for
    report comments (they come after a long description, which alone could fill them all)."""
    def cut(f: str) -> list[tuple[str, str]]:
        ws = texts.get(f, "").split()
        return [(f, " ".join(ws[i:i + PASSAGE_WORDS])) for i in range(0, len(ws), PASSAGE_WORDS)]

    head = ". ".join(texts[f] for f in ("name", "tags") if f in texts)
    out = [("name", head[:1000])] if head else []
    comments = cut("comments")[:COMMENT_PASSAGES]
    long = [p for f in ("description", "feature_descriptions", "model_card") for p in cut(f)]
    out += long[:max(0, MAX_PASSAGES - len(out) - len(comments))] + comments
    feats = " ".join(texts[f] for f in ("input_features", "target") if f in texts)
    if feats:
        out.append(("input_features", " ".join(feats.split()[:PASSAGE_WORDS])))
    return out[:MAX_PASSAGES]


def _hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "replace")).hexdigest()[:32]


@dataclass
class _Doc:
    pk: int
    learnware_id: str
    name: str
    island_key: str
    semantic_texts: dict[str, str]
    texts: dict[str, str] = field(default_factory=dict)
    passages: list[tuple[str, str]] = field(default_factory=list)
    words: dict[str, list[str]] = field(default_factory=dict)

    def set_comments(self, comments: list[str]) -> None:
        """(Re)derive the indexed texts from the specification's and these comments."""
        self.texts = learnware_texts(self.semantic_texts, comments)
        self.passages = passages(self.texts)
        self.words = {f: words(t) for f, t in self.texts.items()}


@dataclass
class _View:
    """What a query reads, rebuilt only when the documents, their vectors or the islands
    changed: per document (in ``pks`` order) its island's position (-1: not known yet), and the
    embedded passages as one matrix whose rows are grouped by document."""
    key: tuple
    pks: list[int]
    lex: BM25Ranker
    islands: list[tuple[str, dict]]  # (island_id, island fields)
    island_pos: np.ndarray
    mat: np.ndarray  # (passages, DIM)
    fields: list[str]  # each row's field
    vec_docs: np.ndarray  # documents with at least one embedded passage, ascending
    starts: np.ndarray  # their first row (rows of one document are contiguous)
    ends: np.ndarray


class DescribeIndex:
    """Public texts of the live learnwares, refreshed incrementally from the store."""

    def __init__(self, embedder: Embedder | None = None):
        self.embedder = embedder
        self.docs: dict[int, _Doc] = {}
        self.top = 0
        self.totals = live_totals(())
        self._vectors: dict[str, np.ndarray] = {}  # passage hash -> unit vector
        self._pending: list[str] = []  # passage texts not embedded yet
        self._islands: dict[str, tuple[str, dict]] = {}  # key -> (island_id, island fields)
        self._added: list[int] = []  # documents added since the last refresh read comments
        self._report_top = 0  # the newest usage report whose comments were read
        self._report_window: set[int] = set()  # the report ids read above _report_top - LAG
        self._replaced = False  # a document's texts changed: some vectors may be unused
        self._lexical: tuple[int, list[int], BM25Ranker] | None = None
        self._view: _View | None = None
        # bumped when documents / vectors / islands change: BM25 is refitted only for the first
        self._docs_version = 0
        self._vec_version = 0
        self._islands_version = 0
        self._lock = threading.RLock()
        self._worker: threading.Thread | None = None
        self._queries: OrderedDict[str, np.ndarray] = OrderedDict()
        self._queries_lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.docs)

    # --- maintenance ----------------------------------------------------------------------
    def add(self, pk: int, learnware_id: str, semantic: dict) -> None:
        if pk in self.docs or len(self.docs) >= MAX_DOCS:
            return
        doc = _Doc(pk, learnware_id, str(semantic.get("name", ""))[:200],
                   island_key(semantic), semantic_texts(semantic))
        doc.set_comments([])
        self.docs[pk] = doc
        self._added.append(pk)
        self._queue(doc)
        self._docs_version += 1

    def _queue(self, doc: _Doc) -> None:
        if self.embedder is not None:
            self._pending.extend(t for _, t in doc.passages if _hash(t) not in self._vectors)

    def remove(self, pk: int) -> None:
        if self.docs.pop(pk, None) is not None:
            self._docs_version += 1

    def set_comments(self, pk: int, comments: list[str]) -> None:
        """Replace one learnware's report comments (its other texts stay)."""
        doc = self.docs.get(pk)
        if doc is None:
            return
        before = doc.texts
        doc.set_comments(comments)
        if doc.texts != before:
            self._queue(doc)
            self._replaced = True
            self._docs_version += 1

    def refresh(self, store, reports=None) -> None:
        """Catch up with the store as the text index does (textindex.py): the learnwares
        published since, or, when anything else changed, a diff of the live ids. With
        ``reports`` (market_server/reports.py's ``ids_since`` and ``public_comments``), the
        comments of the learnwares added and of those whose reports changed are read. Report
        ids are read from REPORT_LAG below the newest one read: a report whose transaction
        committed after a later id's (concurrent writers on PostgreSQL) is still seen."""
        with self._lock:
            before = self._docs_version
            gone = catch_up(self, store)
            if reports is not None:
                rows = reports.ids_since(max(0, self._report_top - REPORT_LAG))
                changed = {lw for rid, lw in rows if rid not in self._report_window}
                read = {pk for pk in (*self._added, *changed) if pk in self.docs}
                if read:
                    got = reports.public_comments(sorted(read))
                    for pk in read:
                        self.set_comments(pk, got.get(pk, []))
                self._report_top = max((rid for rid, _ in rows), default=self._report_top)
                self._report_window = {rid for rid, _ in rows
                                       if rid > self._report_top - REPORT_LAG}
            self._added = []
            if gone or self._replaced:  # the vectors of passages no document holds any more
                keep = {_hash(t) for d in self.docs.values() for _, t in d.passages}
                self._vectors = {h: v for h, v in self._vectors.items() if h in keep}
                self._replaced = False
            if self._docs_version != before and any(
                    d.island_key not in self._islands for d in self.docs.values()):
                self._islands = {i.island_key: (i.island_id, dict(i.semantic))
                                 for i in store.list_islands()}
                self._islands_version += 1
        self._start_worker()

    # --- embeddings (background) ------------------------------------------------------------
    def _start_worker(self) -> None:
        if self.embedder is None:
            return
        self.embedder.start()
        with self._lock:
            if not self._pending or (self._worker is not None and self._worker.is_alive()):
                return
            self._worker = threading.Thread(target=self._embed_pending, name="lwm-describe",
                                            daemon=True)
            self._worker.start()

    def _embed_pending(self) -> None:
        if not self.embedder.wait():
            return
        while True:
            with self._lock:
                batch = self._pending[:EMBED_BATCH]
                self._pending = self._pending[EMBED_BATCH:]
            batch = list(dict.fromkeys(t for t in batch if _hash(t) not in self._vectors))
            if not batch:
                with self._lock:
                    if not self._pending:
                        return
                continue
            vecs = self.embedder.encode(batch)
            with self._lock:
                for t, v in zip(batch, vecs):
                    self._vectors[_hash(t)] = v
                self._vec_version += 1

    def wait_embedded(self, timeout: float | None = None) -> bool:
        """Wait until every passage is embedded (tests and benchmarks); False without the
        model."""
        self._start_worker()
        if self.embedder is None or not self.embedder.wait(timeout):
            return False
        worker = self._worker
        if worker is not None:
            worker.join(timeout)
        return not self._pending

    # --- query --------------------------------------------------------------------------------
    def _lexical_ranker(self) -> tuple[list[int], BM25Ranker]:
        if self._lexical is None or self._lexical[0] != self._docs_version:
            pks = sorted(self.docs)
            ranker = BM25Ranker().fit_words([self.docs[pk].words for pk in pks])
            self._lexical = (self._docs_version, pks, ranker)
        return self._lexical[1], self._lexical[2]

    def lexical_ranker(self) -> BM25Ranker:
        """The fitted BM25 ranker the queries read now (benchmarks time it alone)."""
        with self._lock:
            return self._lexical_ranker()[1]

    def _current_view(self) -> _View:
        key = (self._docs_version, self._vec_version, self._islands_version)
        if self._view is not None and self._view.key == key:
            return self._view
        pks, lex = self._lexical_ranker()
        islands = list(self._islands.values())
        pos = {k: i for i, k in enumerate(self._islands)}
        island_pos = np.array([pos.get(self.docs[pk].island_key, -1) for pk in pks],
                              dtype=np.int64)
        rows, fields, vec_docs, starts = [], [], [], []
        for i, pk in enumerate(pks):
            first = len(rows)
            for f, t in self.docs[pk].passages:
                v = self._vectors.get(_hash(t))
                if v is not None:
                    rows.append(v)
                    fields.append(f)
            if len(rows) > first:
                vec_docs.append(i)
                starts.append(first)
        mat = np.vstack(rows) if rows else np.zeros((0, DIM), dtype=np.float32)
        starts_a = np.asarray(starts, dtype=np.int64)
        self._view = _View(key, pks, lex, islands, island_pos, mat, fields,
                           np.asarray(vec_docs, dtype=np.int64), starts_a,
                           np.append(starts_a[1:], len(rows)).astype(np.int64))
        return self._view

    def _query_vector(self, text: str) -> np.ndarray:
        """The query's embedding; the last QUERY_CACHE ones are kept (a user refining a
        search, the catalogue and the CLI asking the same words)."""
        with self._queries_lock:
            v = self._queries.pop(text, None)
        if v is None:
            v = self.embedder.encode_query(text)
        with self._queries_lock:
            self._queries[text] = v
            while len(self._queries) > QUERY_CACHE:
                self._queries.popitem(last=False)
        return v

    def query(self, text: str, limit: int = 10, ranker: str = "auto") -> dict:
        """Ranked islands and learnwares for ``text``; see the module docstring. Vectorised:
        no Python loop over the documents, only over the ``limit`` answered."""
        if len(text) > MAX_QUERY_CHARS:
            raise QueryTooLong(f"the requirement is {len(text)} characters; at most "
                               f"{MAX_QUERY_CHARS} are accepted", field="q")
        if not words(text):
            raise LearnwareError("the requirement has no words to match (stop words alone?)",
                                 code="bad_query", field="q")
        if ranker not in ("auto", "lexical", "semantic", "hybrid"):
            raise LearnwareError("ranker must be one of auto, lexical, semantic, hybrid",
                                 code="bad_query", field="ranker")
        limit = max(1, min(MAX_RESULTS, int(limit)))
        semantic_ok = self.embedder is not None and self.embedder.ready
        if ranker in ("semantic", "hybrid") and not semantic_ok:
            raise LearnwareError(f"the semantic ranker is not available on this market "
                                 f"({self.status()})", code="ranker_unavailable",
                                 status=409, field="ranker")
        used = ("hybrid" if semantic_ok else "lexical") if ranker == "auto" else ranker
        # the query's own embedding is computed outside the index's lock
        qvec = self._query_vector(text) if used != "lexical" else None
        with self._lock:
            pending = len(self._pending) if self.embedder is not None else 0
            if not self.docs:
                return self._answer(text, used, pending)
            view = self._current_view()
            n = len(view.pks)
            bm25 = view.lex.score(text)
            cos = np.full(n, -np.inf)
            sims = None
            if qvec is not None and len(view.vec_docs):
                sims = view.mat @ qvec
                cos[view.vec_docs] = np.maximum.reduceat(sims, view.starts)
            has_vec = np.isfinite(cos)
            if used == "lexical":
                score, keep = bm25, bm25 > 0
            elif used == "semantic":
                score, keep = np.where(has_vec, cos, 0.0), has_vec
            else:
                score = score_mix(bm25, np.where(has_vec, cos, np.nan), LEXICAL_WEIGHT)
                keep = (bm25 > 0) | has_vec
            cand = np.flatnonzero(keep & (view.island_pos >= 0))
            order = cand[np.argsort(-score[cand], kind="stable")]  # ties: the older first
            isl = view.island_pos[order]
            _, first = np.unique(isl, return_index=True)
            first.sort()
            counts = np.bincount(isl, minlength=len(view.islands))
            best_row = {}
            if sims is not None:  # each answered document's best passage (the first of equals)
                for i in order[:limit]:
                    j = int(np.searchsorted(view.vec_docs, i))  # vec_docs is ascending
                    if j < len(view.vec_docs) and view.vec_docs[j] == i:
                        a, b = view.starts[j], view.ends[j]
                        best_row[int(i)] = view.fields[a + int(np.argmax(sims[a:b]))]
            learnwares = []
            for i in order[:limit]:
                doc = self.docs[view.pks[i]]
                c = float(cos[i])
                learnwares.append({
                    "learnware_id": doc.learnware_id,
                    "island_id": view.islands[view.island_pos[i]][0],
                    "name": doc.name, "score": float(score[i]), "lexical": float(bm25[i]),
                    "cosine": c if np.isfinite(c) else None,
                    "matched_words": {f: ws[:64]
                                      for f, ws in view.lex.why(text, i).fields.items()},
                    "best_passage": best_row.get(int(i))})
            islands = []
            for k in first[:limit]:
                i = order[k]
                island_id, fields = view.islands[isl[k]]
                islands.append({
                    "island_id": island_id, "score": float(score[i]),
                    "best_learnware_id": self.docs[view.pks[i]].learnware_id,
                    "matching_learnwares": int(counts[isl[k]]),
                    "task_type": fields.get("task_type", ""),
                    "target": str(fields.get("target", ""))[:200],
                    "n_features": len(fields.get("input_features", ()))})
            return self._answer(text, used, pending, learnwares, islands)

    def _answer(self, text, used, pending, learnwares=(), islands=()):
        return {"query": text, "ranker": used, "learnwares": list(learnwares),
                "islands": list(islands), "indexed": len(self.docs),
                "pending": int(pending), "embedding": self.status()}

    def status(self) -> str:
        if self.embedder is None:
            return "off"
        return self.embedder.status

