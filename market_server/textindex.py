"""Text search as an index: words and their character trigrams -> posting lists.

Scanning every word of every learnware per query made text search cost CPU in proportion to
the whole market (one long query against one long description took over a second:
docs/RESULTS.md, "Numeric kernels"). Here
a query costs O(query trigrams x postings touched), and every part of it is bounded: the query
(characters, distinct words, word length), the words indexed per learnware, the fuzzy and
prefix candidates per query word, and the posting entries one query may scan in total.

Ranking: per query word, the best match in a learnware counts (exact word 1.0 > prefix 0.9 >
typo-tolerant 0.8 x similarity, found through shared trigrams and confirmed with the same
``SequenceMatcher`` ratio >= 0.75 the market always used), weighted by the field it is in (name
1.0 > tags 0.8 > description 0.6); the score is the mean over query words, in [0, 1]; ties go
to the older learnware. One index per process, refreshed incrementally from the store.
"""
from __future__ import annotations

import heapq
import re
import threading
from collections import Counter
from dataclasses import dataclass
from difflib import SequenceMatcher
from itertools import islice

from learnware_core.semantic import normalize_text

from .storage import SUMSQ_MOD, live_totals

MAX_QUERY_CHARS = 500
MAX_QUERY_TOKENS = 16
MAX_TOKEN_CHARS = 32
#: distinct words indexed per learnware (name and tags first, then the description's)
MAX_DOC_TOKENS = 128
MAX_FUZZY_CANDIDATES = 32
MAX_PREFIX_EXPANSIONS = 32
#: posting entries (trigram lists, prefix buckets, document lists) one query may scan
MAX_POSTINGS = 100_000

FIELD_WEIGHTS = (("name", 1.0), ("tags", 0.8), ("description", 0.6))
EXACT, PREFIX, FUZZY = 1.0, 0.9, 0.8
MIN_RATIO = 0.75
_WORD = re.compile(r"\w+")


def tokens(text: str) -> list[str]:
    """Normalised words (case, accents, width folded), each cut to MAX_TOKEN_CHARS."""
    return [w[:MAX_TOKEN_CHARS] for w in _WORD.findall(normalize_text(text))]


def query_tokens(query: str) -> list[str]:
    """The distinct words of a query that are considered (bounded in number and length)."""
    return list(dict.fromkeys(tokens(query[:MAX_QUERY_CHARS])))[:MAX_QUERY_TOKENS]


def trigrams(token: str) -> set[str]:
    padded = f"\x01{token}\x02"
    return {padded[i:i + 3] for i in range(len(padded) - 2)}


def _prefix_keys(token: str) -> list[str]:
    return [token[:n] for n in (3, 5) if len(token) > n]


def _pieces(text: str, size: int = 1000):
    """``text`` in pieces of about ``size`` characters cut at white space: a long description
    is normalised only as far as its first MAX_DOC_TOKENS distinct words reach."""
    start = 0
    while start < len(text):
        end = start + size
        if end < len(text):
            cut = text.rfind(" ", start, end)
            end = cut + 1 if cut > start else end
        yield text[start:end]
        start = end


def document_tokens(semantic: dict) -> dict[str, float]:
    """word -> weight of the best field it appears in, at most MAX_DOC_TOKENS words."""
    out: dict[str, float] = {}
    for name, weight in FIELD_WEIGHTS:
        value = semantic.get(name) or ""
        text = " ".join(value) if isinstance(value, list) else str(value)
        for piece in _pieces(text):
            for t in tokens(piece):
                if t not in out:
                    if len(out) >= MAX_DOC_TOKENS:
                        return out
                    out[t] = weight
    return out


@dataclass
class QueryStats:
    """What one query cost: the work the bounds cap (tests and benchmarks read it)."""
    postings_scanned: int = 0
    candidates_checked: int = 0
    truncated: bool = False


def doc_name(semantic: dict) -> str:
    """A learnware's name as text search answers it."""
    return str(semantic.get("name", ""))[:200]


@dataclass
class _Doc:
    learnware_id: str
    name: str
    words: dict[str, float]


class TextIndex:
    def __init__(self):
        self.docs: dict[int, _Doc] = {}
        self.postings: dict[str, dict[int, float]] = {}  # word -> {pk: field weight}
        self.grams: dict[tuple[str, int], set[str]] = {}  # (trigram, word length) -> words
        self.prefixes: dict[str, set[str]] = {}  # first 3 / 5 characters -> longer words
        self.top = 0  # highest learnware id held
        self.totals = live_totals(())
        self.last_stats = QueryStats()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.docs)

    # --- maintenance ------------------------------------------------------------------------
    def add(self, pk: int, learnware_id: str, semantic: dict) -> None:
        if pk in self.docs:
            return
        words = document_tokens(semantic)
        self.docs[pk] = _Doc(learnware_id, doc_name(semantic), words)
        for w, weight in words.items():
            plist = self.postings.get(w)
            if plist is None:
                plist = self.postings[w] = {}
                for g in trigrams(w):
                    self.grams.setdefault((g, len(w)), set()).add(w)
                for p in _prefix_keys(w):
                    self.prefixes.setdefault(p, set()).add(w)
            plist[pk] = weight

    def remove(self, pk: int) -> None:
        doc = self.docs.pop(pk, None)
        if doc is None:
            return
        for w in doc.words:
            plist = self.postings.get(w)
            if plist is None:
                continue
            plist.pop(pk, None)
            if not plist:
                del self.postings[w]
                for g in trigrams(w):
                    self._discard(self.grams, (g, len(w)), w)
                for p in _prefix_keys(w):
                    self._discard(self.prefixes, p, w)

    @staticmethod
    def _discard(table: dict, key, word: str) -> None:
        bucket = table.get(key)
        if bucket is not None:
            bucket.discard(word)
            if not bucket:
                del table[key]

    def refresh(self, store) -> None:
        """Catch up with the store: the learnwares published since (the live totals of every
        island say whether that is all that changed), else a listing of the live ids, reading
        the text of only the ones not held."""
        with self._lock:
            catch_up(self, store)

    # --- query ------------------------------------------------------------------------------
    def names(self, pks: list[int], store) -> dict[int, str]:
        """The names of these live learnwares: from the index where it holds them, the others
        read from the store (only those: building the whole index for a search's few names
        would put a text-index build on the first search after a start)."""
        with self._lock:
            out = {pk: self.docs[pk].name for pk in pks if pk in self.docs}
        missing = [pk for pk in pks if pk not in out]
        if missing:
            out.update((r.pk, doc_name(r.semantic)) for r in store.live_semantics(missing))
        return out

    def search(self, query: str, limit: int = 20) -> list[dict]:
        with self._lock:
            return self._search(query, limit)

    def _search(self, query: str, limit: int) -> list[dict]:
        stats = self.last_stats = QueryStats()
        qs = query_tokens(query)
        if not qs:
            return []
        budget = [MAX_POSTINGS]

        def spend(n: int) -> int:
            """How many of n entries may still be scanned (and count them)."""
            take = min(n, budget[0])
            budget[0] -= take
            stats.postings_scanned += take
            if take < n:
                stats.truncated = True
            return take

        best: dict[int, list[float]] = {}
        for qi, q in enumerate(qs):
            for word, quality in self._matches(q, spend, stats).items():
                plist = self.postings[word]
                for pk, weight in islice(plist.items(), spend(len(plist))):
                    s = quality * weight
                    row = best.get(pk)
                    if row is None:
                        row = best[pk] = [0.0] * len(qs)
                    if s > row[qi]:
                        row[qi] = s
        scored = sorted(((sum(row) / len(qs), pk) for pk, row in best.items()),
                        key=lambda t: (-t[0], t[1]))
        return [{"learnware_id": self.docs[pk].learnware_id, "name": self.docs[pk].name,
                 "score": float(s)} for s, pk in scored[:limit]]

    def _matches(self, q: str, spend, stats: QueryStats) -> dict[str, float]:
        """Indexed words matching query word q, with the quality of the match."""
        out: dict[str, float] = {}
        if q in self.postings:
            out[q] = EXACT
        if len(q) >= 3:
            bucket = self.prefixes.get(q[:5] if len(q) >= 5 else q[:3], ())
            found = 0
            for w in islice(bucket, spend(len(bucket))):
                if w != q and w.startswith(q):
                    out[w] = PREFIX
                    found += 1
                    if found >= MAX_PREFIX_EXPANSIONS:
                        break
        shared: Counter = Counter()
        for g in trigrams(q):
            for n in range(max(1, len(q) - 2), len(q) + 3):
                bucket = self.grams.get((g, n))
                if bucket:
                    shared.update(islice(bucket, spend(len(bucket))))
        # most shared trigrams first; ties by the word itself (stable across processes)
        for w, _ in heapq.nsmallest(MAX_FUZZY_CANDIDATES, shared.items(),
                                    key=lambda t: (-t[1], t[0])):
            if w in out:
                continue
            stats.candidates_checked += 1
            ratio = SequenceMatcher(None, q, w).ratio()
            if ratio >= MIN_RATIO:
                out[w] = FUZZY * ratio
        return out


def catch_up(index, store) -> list[int]:
    """Bring an incremental index of live learnwares (``docs``, ``top``, ``totals``, ``add``,
    ``remove``: this module's index and describe.py's) up to the store: the learnwares
    published since ``top`` when the islands' live totals say that is all that changed, else a
    diff of the live ids, reading the text of only the ones not held. Returns the pks removed.
    The caller holds the index's lock."""
    totals, rows = store.live_text_since(index.top)
    added = live_totals(r.pk for r in rows)
    seen = (index.totals[0] + added[0], index.totals[1] + added[1],
            (index.totals[2] + added[2]) % SUMSQ_MOD)
    gone: list[int] = []
    if seen == totals and not rows:
        return gone  # nothing changed: the common case, kept O(1) in the index's size
    if seen == totals:
        for r in rows:
            index.add(r.pk, r.learnware_id, r.semantic)
    else:
        live = set(store.live_ids())
        gone = [pk for pk in index.docs if pk not in live]
        for pk in gone:
            index.remove(pk)
        for r in store.live_semantics(sorted(pk for pk in live if pk not in index.docs)):
            index.add(r.pk, r.learnware_id, r.semantic)
    index.top = max(index.docs, default=0)
    index.totals = live_totals(index.docs)
    return gone
