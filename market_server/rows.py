"""The rows the store hands out, typed: one shape per kind of row, whoever asks.

Before these, islands and learnwares travelled as dicts whose keys depended on which store
method built them; a typo in a key was a KeyError at request time. Frozen: a row is a snapshot of
the database (a cached island is refreshed with :func:`dataclasses.replace`, never mutated).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class IslandRow:
    """One island: its semantic key and specification, and the kernel its specs live under.
    ``version`` is bumped by every publish, delete and kernel change; ``learnware_count`` is
    filled only by :meth:`Store.list_islands` (elsewhere it is read fresh, or not needed)."""
    pk: int
    island_id: str
    island_key: str
    semantic: dict
    n_features: int
    kernel: dict
    kernel_version: int
    version: int
    created_at: float
    learnware_count: int | None = None


@dataclass(frozen=True, slots=True)
class StoredLearnware:
    """One learnware as stored, live or withdrawn: what its manifest, its model file and the
    island-level computations (kernel refinement, anchor profile) read. ``withdrawn`` is
    ``{reason, by, at}`` once deleted, else None."""
    pk: int
    learnware_id: str
    island_pk: int
    island_id: str
    developer: str
    developer_key_id: str
    semantic: dict
    spec: dict
    model_sha256: str
    model_size: int
    artefact: dict
    created_at: float
    deleted: bool
    withdrawn: dict | None


@dataclass(frozen=True, slots=True)
class LiveSpec:
    """A live learnware as the search index reads it: ``spec`` is None when the caller
    said it already holds the decoded spec (:meth:`Store.island_specs`)."""
    pk: int
    learnware_id: str
    spec: dict | None = None


@dataclass(frozen=True, slots=True)
class LiveSemantic:
    """A live learnware as the text index reads it (its semantic specification)."""
    pk: int
    learnware_id: str
    semantic: Any
    island_id: str | None = None
