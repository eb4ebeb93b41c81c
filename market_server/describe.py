"""Requirements in words: rank islands and learnwares for a user's text (issue #18).

The index holds the public texts of every live learnware (:func:`learnware_texts`: its name,
description, tags, feature names, target and, when a specification carries them, per-feature
descriptions and a model card). Two rankers over it:

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
"""
from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np

from learnware_core.semantic import island_key
from learnware_core.words import BM25Ranker, score_mix, semantic_texts, words
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
#: the lexical ranker's weight in the hybrid (its BM25 scaled by the query's best; the rest is
#: the cosine): equal weights, not tuned (0.3 to 0.7 all rank within 0.01: docs/RESULTS.md)
LEXICAL_WEIGHT = 0.5
#: passages the background thread embeds at a time: a query's own embedding waits for the
#: model at most this long (one batch, ~0.2 s on one core)
EMBED_BATCH = 16
#: query embeddings kept
QUERY_CACHE = 256


class QueryTooLong(LearnwareError):
    code = "query_too_long"
    status = 400


def learnware_texts(semantic: dict) -> dict[str, str]:
    """The public texts of one learnware, field -> text: what the index reads. Texts held
    elsewhere than the semantic specification (usage-report comments) join here."""
    return semantic_texts(semantic)


def passages(texts: dict[str, str]) -> list[tuple[str, str]]:
    """(field, passage) pairs to embed: the short fields as one passage, the long ones cut
    at PASSAGE_WORDS words; at most MAX_PASSAGES."""
    out: list[tuple[str, str]] = []
    head = ". ".join(texts[f] for f in ("name", "tags") if f in texts)
    if head:
        out.append(("name", head[:1000]))
    for f in ("description", "feature_descriptions", "model_card", "comments"):
        ws = texts.get(f, "").split()
        for i in range(0, len(ws), PASSAGE_WORDS):
            out.append((f, " ".join(ws[i:i + PASSAGE_WORDS])))
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
    texts: dict[str, str]
    passages: list[tuple[str, str]] = field(default_factory=list)
    words: dict[str, list[str]] = field(default_factory=dict)


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
        self._lexical: tuple[list[int], BM25Ranker] | None = None
        self._matrix: tuple[int, np.ndarray, np.ndarray, list[str]] | None = None
        self._version = 0  # bumped when docs or vectors change
        self._lock = threading.RLock()
        self._worker: threading.Thread | None = None
        self._queries: OrderedDict[str, np.ndarray] = OrderedDict()

    def __len__(self) -> int:
        return len(self.docs)

    # --- maintenance ----------------------------------------------------------------------
    def add(self, pk: int, learnware_id: str, semantic: dict) -> None:
        if pk in self.docs or len(self.docs) >= MAX_DOCS:
            return
        texts = learnware_texts(semantic)
        doc = _Doc(pk, learnware_id, str(semantic.get("name", ""))[:200],
                   island_key(semantic), texts, passages(texts),
                   {f: words(t) for f, t in texts.items()})
        self.docs[pk] = doc
        if self.embedder is not None:
            self._pending.extend(t for _, t in doc.passages if _hash(t) not in self._vectors)
        self._version += 1

    def remove(self, pk: int) -> None:
        if self.docs.pop(pk, None) is not None:
            self._version += 1

    def refresh(self, store) -> None:
        """Catch up with the store as the text index does (textindex.py): the learnwares
        published since, or, when anything else changed, a diff of the live ids."""
        with self._lock:
            gone = catch_up(self, store)
            if gone:  # the vectors of passages no live learnware holds any more
                keep = {_hash(t) for d in self.docs.values() for _, t in d.passages}
                self._vectors = {h: v for h, v in self._vectors.items() if h in keep}
            if any(d.island_key not in self._islands for d in self.docs.values()):
                self._islands = {i.island_key: (i.island_id, dict(i.semantic))
                                 for i in store.list_islands()}
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
                self._version += 1

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
        key = self._version
        if self._lexical is None or self._lexical[0] != key:
            pks = sorted(self.docs)
            ranker = BM25Ranker().fit_words([self.docs[pk].words for pk in pks])
            self._lexical = (key, pks, ranker)
        return self._lexical[1], self._lexical[2]

    def _passage_matrix(self, pks: list[int]):
        """(vectors, passage -> doc position, passage fields) of the embedded passages."""
        if self._matrix is None or self._matrix[0] != self._version:
            rows, owner, fields = [], [], []
            for i, pk in enumerate(pks):
                for f, t in self.docs[pk].passages:
                    v = self._vectors.get(_hash(t))
                    if v is not None:
                        rows.append(v)
                        owner.append(i)
                        fields.append(f)
            mat = np.vstack(rows) if rows else np.zeros((0, DIM), dtype=np.float32)
            self._matrix = (self._version, mat, np.asarray(owner, dtype=np.int64), fields)
        return self._matrix[1], self._matrix[2], self._matrix[3]

    def _query_vector(self, text: str) -> np.ndarray:
        """The query's embedding; the last QUERY_CACHE ones are kept (a user refining a
        search, the catalogue and the CLI asking the same words)."""
        v = self._queries.pop(text, None)
        if v is None:
            v = self.embedder.encode([text])[0]
        self._queries[text] = v
        while len(self._queries) > QUERY_CACHE:
            self._queries.popitem(last=False)
        return v

    def query(self, text: str, limit: int = 10, ranker: str = "auto") -> dict:
        """Ranked islands and learnwares for ``text``; see the module docstring."""
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
        with self._lock:
            pks, lex = self._lexical_ranker()
            n = len(pks)
            if n == 0:
                return self._answer(text, used, [], [], {}, 0)
            bm25 = lex.score(text)
            cos = np.full(n, -np.inf)
            best_field: dict[int, str] = {}
            pending = len(self._pending) if self.embedder is not None else 0
            if used != "lexical":
                mat, owner, fields = self._passage_matrix(pks)
                if len(owner):
                    sims = mat @ self._query_vector(text)
                    np.maximum.at(cos, owner, sims.astype(np.float64))
                    best = np.flatnonzero(sims >= cos[owner])  # each document's best passage
                    for p in best[::-1]:  # the first of equal passages wins
                        best_field[int(owner[p])] = fields[p]
            has_vec = np.isfinite(cos)
            if used == "lexical":
                score = bm25
                order = np.lexsort((np.arange(n), -bm25))
                order = [i for i in order if bm25[i] > 0]
            else:
                if used == "semantic":
                    score = np.where(has_vec, cos, 0.0)
                    order = [i for i in np.argsort(-score, kind="stable") if has_vec[i]]
                else:
                    score = score_mix(bm25, np.where(has_vec, cos, np.nan), LEXICAL_WEIGHT)
                    order = [i for i in np.argsort(-score, kind="stable")
                             if bm25[i] > 0 or has_vec[i]]
            hits = []
            for i in order:
                doc = self.docs[pks[i]]
                hits.append((i, doc))
            return self._answer(text, used, hits, [score, bm25, cos], best_field, pending,
                                lex=lex, limit=limit)

    def _answer(self, text, used, hits, arrays, best_field, pending, lex=None, limit=10):
        learnwares, islands = [], {}
        for i, doc in hits:
            score, bm25, cos = (float(a[i]) for a in arrays)
            island_id, fields = self._islands.get(doc.island_key, (None, {}))
            if island_id is None:
                continue
            if len(learnwares) < limit:
                why = {f: ws[:64] for f, ws in lex.why(text, i).fields.items()}
                learnwares.append({"learnware_id": doc.learnware_id, "island_id": island_id,
                                   "name": doc.name, "score": score, "lexical": bm25,
                                   "cosine": cos if np.isfinite(cos) else None,
                                   "matched_words": why,
                                   "best_passage": best_field.get(i)})
            isl = islands.get(island_id)
            if isl is None:
                if len(islands) < limit:
                    islands[island_id] = {
                        "island_id": island_id, "score": score,
                        "best_learnware_id": doc.learnware_id, "matching_learnwares": 1,
                        "task_type": fields.get("task_type", ""),
                        "target": str(fields.get("target", ""))[:200],
                        "n_features": len(fields.get("input_features", ()))}
            else:
                isl["matching_learnwares"] += 1
        return {"query": text, "ranker": used, "learnwares": learnwares,
                "islands": list(islands.values()), "indexed": len(self.docs),
                "pending": int(pending), "embedding": self.status()}

    def status(self) -> str:
        if self.embedder is None:
            return "off"
        return self.embedder.status
