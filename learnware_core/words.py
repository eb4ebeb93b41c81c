"""Requirements in words: the public texts of a learnware, their words, and a BM25 ranker.

Pure numeric/text code (no I/O): the market indexes with it, and a client could rank a
catalogue it holds with the same code. The lexical ranker is always available; the sentence
embedding (market_server/embedder.py) is an optional extra, mixed with it by :func:`score_mix`
(equal weights; reciprocal-rank fusion, also here, ranked a little worse: docs/RESULTS.md).

Words are normalised (case, accents, width), split at anything that is not a letter or digit
(``log_median`` -> ``log``, ``median``), English stop words dropped, and lightly stemmed so that
"sales" matches "sale" and "prices" matches "price" (a few suffix rules, not a full Porter
stemmer: over-stemming hurts short queries more than it helps).
"""
from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

import numpy as np
from scipy import sparse
from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

from .semantic import normalize_text

#: characters of one field's text that are indexed (a description holds at most 10,000)
MAX_FIELD_CHARS = 12_000
#: words of one field that are indexed
MAX_FIELD_WORDS = 2_000
#: characters of a word kept
MAX_WORD_CHARS = 32

#: The public fields of a semantic specification, in the order "why" names them, with their
#: weight in the lexical ranker (repeated term frequency, a BM25F in its simplest form).
#: ``feature_descriptions`` and ``model_card`` are read when a specification carries them.
FIELDS = (("name", 3), ("tags", 2), ("description", 1), ("feature_descriptions", 1),
          ("input_features", 1), ("target", 1), ("model_card", 1), ("comments", 1))

_WORD = re.compile(r"[^\W_]+")
_STOP = frozenset(ENGLISH_STOP_WORDS)


def stem(word: str) -> str:
    """A light English stem: plural and a few verb endings folded (sales -> sale)."""
    if len(word) <= 3 or word.isdigit():
        return word
    for suffix, repl, min_len in (("ies", "y", 5), ("sses", "ss", 5), ("ing", "", 6),
                                  ("ed", "", 5), ("es", "e", 5), ("s", "", 4)):
        if word.endswith(suffix) and len(word) >= min_len:
            if suffix == "s" and word[-2] in "su":  # "class", "census" stay
                return word
            if suffix == "es" and not word[-3] in "cgsvz":  # "houses" -> "house"; "boxes" no
                continue
            return word[: len(word) - len(suffix)] + repl
    return word


def words(text: str) -> list[str]:
    """Normalised, stemmed content words of ``text`` (bounded in number and length)."""
    text = normalize_text(text[:MAX_FIELD_CHARS])
    out = []
    for w in _WORD.findall(text):
        if w in _STOP or len(w) < 2 and not w.isdigit():
            continue
        out.append(stem(w[:MAX_WORD_CHARS]))
        if len(out) >= MAX_FIELD_WORDS:
            break
    return out


def clean_text(text: str) -> str:
    """Public text as the index holds it: control characters become spaces, invisible format
    characters (zero-width joiners, direction overrides) are dropped, runs of spaces
    collapse; lines are kept. Whatever a publisher or reporter typed, the index reads words."""
    lines = []
    for line in text.replace("\r\n", "\n").split("\n"):
        if not line.isprintable():  # rare: the slow path, one character at a time
            line = "".join(" " if unicodedata.category(c)[0] in "CZ" else c for c in line
                           if unicodedata.category(c) != "Cf")
        lines.append(" ".join(line.split()))
    return "\n".join(lines).strip()


def _as_text(value) -> str:
    if value is None:
        return ""
    if isinstance(value, dict):  # per-feature descriptions: "feature: description"
        return "\n".join(f"{k}: {v}" for k, v in value.items() if isinstance(v, str))
    if isinstance(value, (list, tuple)):
        return "\n".join(_as_text(v) for v in value)
    return str(value)


def _feature_info_texts(info) -> dict[str, str] | None:
    """feature -> "description (unit)" of a specification's ``feature_info``: the per-feature
    descriptions the publish schema carries."""
    if not isinstance(info, dict):
        return None
    out = {}
    for f, d in info.items():
        if isinstance(d, dict):
            text = " ".join(str(d[k]) if k == "description" else f"({d[k]})"
                            for k in ("description", "unit") if isinstance(d.get(k), str))
            if text:
                out[str(f)] = text
    return out or None


def semantic_texts(semantic: dict) -> dict[str, str]:
    """The public texts of one learnware's semantic specification, field -> text (non-empty
    only). The hook where new public texts join: a field named in :data:`FIELDS` is indexed as
    soon as a specification carries it (``feature_descriptions`` as a list aligned with
    ``input_features`` or a mapping, else read from ``feature_info``; ``model_card`` as
    markdown). Every text is cleaned (:func:`clean_text`) and bounded (MAX_FIELD_CHARS)."""
    out = {}
    for name, _ in FIELDS:
        value = semantic.get(name)
        if name == "feature_descriptions" and value is None:
            value = _feature_info_texts(semantic.get("feature_info"))
        if name == "feature_descriptions" and isinstance(value, list):
            feats = semantic.get("input_features") or []
            value = {str(f): d for f, d in zip(feats, value) if isinstance(d, str) and d}
        text = clean_text(_as_text(value)[:MAX_FIELD_CHARS])
        if text:
            out[name] = text[:MAX_FIELD_CHARS]
    return out


@dataclass(frozen=True)
class Match:
    """Why a document matched: the query words found, by field."""
    fields: dict[str, list[str]]


class BM25Ranker:
    """Okapi BM25 over field-weighted word counts (sparse; sklearn conventions).

    ``fit(docs)`` takes one ``{field: text}`` per document; ``score(query)`` returns one score
    per document (0 where no query word occurs). ``k1`` and ``b`` are the usual constants.
    """

    def __init__(self, k1: float = 1.2, b: float = 0.75):
        self.k1, self.b = k1, b

    def fit(self, docs: list[dict[str, str]]) -> "BM25Ranker":
        return self.fit_words([{f: words(t) for f, t in doc.items()} for doc in docs])

    def fit_words(self, docs: list[dict[str, list[str]]]) -> "BM25Ranker":
        """``fit`` on documents already split by :func:`words` (an index keeps them)."""
        weights = dict(FIELDS)
        vocab: dict[str, int] = {}
        rows, cols, vals = [], [], []
        self.doc_words_: list[dict[str, set[str]]] = []
        lengths = np.zeros(len(docs))
        for i, doc in enumerate(docs):
            counts: dict[int, float] = {}
            per_field: dict[str, set[str]] = {}
            for field, ws in doc.items():
                per_field[field] = set(ws)
                w = weights.get(field, 1)
                for t in ws:
                    j = vocab.setdefault(t, len(vocab))
                    counts[j] = counts.get(j, 0.0) + w
                lengths[i] += w * len(ws)
            self.doc_words_.append(per_field)
            rows.extend([i] * len(counts))
            cols.extend(counts)
            vals.extend(counts.values())
        n = len(docs)
        tf = sparse.csr_matrix((vals, (rows, cols)), shape=(n, len(vocab)), dtype=np.float64)
        df = np.bincount(tf.indices, minlength=len(vocab)) if n else np.zeros(0)
        self.idf_ = np.log1p((n - df + 0.5) / (df + 0.5))
        avgdl = lengths.mean() if n and lengths.mean() > 0 else 1.0
        norm = self.k1 * (1 - self.b + self.b * lengths / avgdl)
        tf = tf.tocoo()
        w = tf.data * (self.k1 + 1) / (tf.data + norm[tf.row]) * self.idf_[tf.col]
        self.weights_ = sparse.csc_matrix((w, (tf.row, tf.col)), shape=tf.shape)
        self.vocabulary_ = vocab
        return self

    def query_terms(self, query: str) -> list[str]:
        """The distinct query words the index knows."""
        return [t for t in dict.fromkeys(words(query)) if t in self.vocabulary_]

    def score(self, query: str) -> np.ndarray:
        terms = self.query_terms(query)
        n = self.weights_.shape[0]
        if not terms:
            return np.zeros(n)
        cols = [self.vocabulary_[t] for t in terms]
        return np.asarray(self.weights_[:, cols].sum(axis=1)).ravel()

    def why(self, query: str, i: int) -> Match:
        """The query words found in document ``i``, by field."""
        terms = set(words(query))
        return Match({f: sorted(ws & terms) for f, ws in self.doc_words_[i].items()
                      if ws & terms})


def ranks(scores: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """1-based rank of each score (higher first; ties by position); ``inf`` where not
    ``valid``."""
    order = np.argsort(-scores, kind="stable")
    r = np.empty(len(scores))
    r[order] = np.arange(1, len(scores) + 1)
    if valid is not None:
        r[~valid] = np.inf
    return r


def score_mix(lexical: np.ndarray, cosine: np.ndarray, weight: float = 0.5) -> np.ndarray:
    """``weight`` x BM25 / (the query's best BM25) + (1 - weight) x cosine: both in about
    [0, 1] for one query. A cosine that is not known yet (``nan``) counts 0."""
    top = float(lexical.max()) if len(lexical) else 0.0
    lex = lexical / top if top > 0 else np.zeros_like(lexical)
    return weight * lex + (1 - weight) * np.nan_to_num(cosine, nan=0.0)


def reciprocal_rank_fusion(rank_lists: list[np.ndarray], weights: list[float] | None = None,
                           k: float = 60.0) -> np.ndarray:
    """Cormack et al.'s RRF: sum of w / (k + rank) over the rankers; a ranker that has no
    rank for a document (``inf``) adds nothing. Scale-free, so a BM25 score and a cosine can be
    fused without calibrating either."""
    weights = weights or [1.0] * len(rank_lists)
    out = np.zeros(len(rank_lists[0]))
    for w, r in zip(weights, rank_lists):
        out += w / (k + r)
    return out
