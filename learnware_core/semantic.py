"""Semantic specifications: validation, the island key, and tolerant text matching.

An island is one function space X -> Y w.r.t. an objective: the same data type, task type,
input features (names, in order), target and objective. Its key is the SHA-256 of exactly those
fields in canonical form, so every client and market computes the same key.
"""
from __future__ import annotations

import unicodedata
from difflib import SequenceMatcher

from protocol.artefact import content_hash
from protocol.schemas import SEMANTIC, SEMANTIC_QUERY

ISLAND_FIELDS = ("data_type", "task_type", "input_features", "target", "objective")


def validate_semantic(semantic: dict, *, query: bool = False) -> None:
    (SEMANTIC_QUERY if query else SEMANTIC).check(semantic, "semantic")


def island_part(semantic: dict) -> dict:
    return {f: semantic[f] for f in ISLAND_FIELDS}


def island_key(semantic: dict) -> str:
    return content_hash(island_part(semantic))


def normalize_text(text: str) -> str:
    """Case-, accent- and width-insensitive form used by text search."""
    text = unicodedata.normalize("NFKC", text)
    text = "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))
    return " ".join(text.casefold().split())


def text_score(query: str, semantic: dict) -> float:
    """How well ``query`` matches a learnware's name/description/tags, in [0, 1].

    Token-level fuzzy matching so that case and small typos do not matter.
    """
    q_tokens = normalize_text(query).split()
    if not q_tokens:
        return 0.0
    doc = " ".join([semantic.get("name", ""), semantic.get("description", ""),
                    " ".join(semantic.get("tags", []))])
    d_tokens = set(normalize_text(doc).split())
    if not d_tokens:
        return 0.0
    total = 0.0
    for q in q_tokens:
        best = 0.0
        for d in d_tokens:
            if q == d:
                best = 1.0
                break
            if abs(len(q) - len(d)) <= 2:
                best = max(best, SequenceMatcher(None, q, d).ratio())
        total += best if best >= 0.75 else 0.0
    return total / len(q_tokens)
