"""Features as identities: when two islands (or a user and an island) mean the same column.

A semantic specification may describe its input features (``feature_info``: per feature an
optional description, unit and aliases) and a user may map its columns to known feature names
(``feature_map``). Two feature names denote the same feature when, after
:func:`learnware_core.semantic.normalize_text`, they are equal (``"name"``), one is a declared
alias of the other (``"alias"``), or both carry the same non-empty description (``"description"``;
the unit, when both state one, must agree too). The market and the SDK decide with this module,
so both sides draw the same lines.

Bounded work: a group of islands holds at most ``MAX_FEATURES`` names per island and the
matching is a dictionary lookup per key (no pairwise fuzzy comparison).
"""
from __future__ import annotations

from typing import Iterable

from .semantic import normalize_text

__all__ = ["FeatureMatcher", "feature_keys", "resolve_columns"]


def feature_keys(name: str, info: dict | None) -> list[tuple[str, str]]:
    """The keys under which ``name`` can be found: ``(kind, normalised text)``."""
    info = info or {}
    keys = [("name", normalize_text(name))]
    keys += [("alias", normalize_text(a)) for a in info.get("aliases", ()) if normalize_text(a)]
    desc = normalize_text(info.get("description", ""))
    if desc:
        unit = normalize_text(info.get("unit", ""))
        keys.append(("description", desc + ("|" + unit if unit else "")))
    return keys


def _how(kind: str, other_kind: str) -> str:
    """How a key of ``kind`` matched one stored as ``other_kind``."""
    if kind == "description":
        return "description"
    return "name" if kind == other_kind == "name" else "alias"


class FeatureMatcher:
    """Union-find over feature names: each group is one feature identity (its canonical name is
    the first name seen). ``add(name, info)`` returns the canonical name; ``matches`` lists the
    links made, ``{"feature", "matched", "by"}`` (by name, alias or description)."""

    def __init__(self) -> None:
        self._parent: dict[str, str] = {}
        self._by_key: dict[str, tuple[str, str]] = {}  # slot -> (name, kind it was added as)
        self.matches: list[dict] = []

    def _find(self, name: str) -> str:
        root = name
        while self._parent[root] != root:
            root = self._parent[root]
        while self._parent[name] != root:  # path compression
            self._parent[name], name = root, self._parent[name]
        return root

    def add(self, name: str, info: dict | None = None) -> str:
        if name not in self._parent:
            self._parent[name] = name
        for kind, key in feature_keys(name, info):
            # a name or alias matches any other name or alias; descriptions match descriptions
            slot = ("d:" if kind == "description" else "n:") + key
            hit = self._by_key.get(slot)
            if hit is None:
                self._by_key[slot] = (name, kind)
                continue
            other = hit[0]
            a, b = self._find(other), self._find(name)
            if a != b:
                self._parent[b] = a
                self.matches.append({"feature": name, "matched": other,
                                     "by": _how(kind, hit[1])})
        return self._find(name)

    def canonical(self, name: str) -> str | None:
        return self._find(name) if name in self._parent else None

    def lookup(self, name: str, info: dict | None = None) -> tuple[str | None, str | None]:
        """The canonical feature a (user's) column denotes without adding it, and how it was
        found: ``(canonical, by)`` or ``(None, None)``."""
        if name in self._parent:
            return self._find(name), "name"
        for kind, key in feature_keys(name, info):
            slot = ("d:" if kind == "description" else "n:") + key
            hit = self._by_key.get(slot)
            if hit is not None:
                return self._find(hit[0]), _how(kind, hit[1])
        return None, None

    def canonical_all(self, names: Iterable[str]) -> list[str | None]:
        return [self.canonical(n) for n in names]


def resolve_columns(matcher: FeatureMatcher, columns: list[str], feature_map: dict | None = None,
                    feature_info: dict | None = None) -> tuple[dict[str, str], list[dict]]:
    """A user's columns mapped to canonical features: ``({column: canonical}, matches)``. A
    column is found by the user's ``feature_map`` first, else by its name, alias or
    description; a feature two columns reach is taken by the first. Both the market and the SDK
    call this, so they agree on which column is which feature."""
    fmap, info = feature_map or {}, feature_info or {}
    cols: dict[str, str] = {}
    matches: list[dict] = []
    taken: set[str] = set()
    for col in columns:
        canon, by = None, None
        if col in fmap:
            canon, by = matcher.lookup(fmap[col])[0], "map"
        if canon is None:
            canon, by = matcher.lookup(col, info.get(col))
        if canon is None or canon in taken:
            continue
        taken.add(canon)
        cols[col] = canon
        if by != "name" or canon != col:
            matches.append({"feature": col, "matched": canon, "by": by})
    return cols, matches
