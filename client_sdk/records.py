"""Typed records of what the market answers (``IslandInfo``, ``Manifest``) and what the client
prepares (``PreparedSpec``).

The fields are those of the schemas in :mod:`protocol.schemas` (``ISLAND_INFO``,
``DOWNLOAD_MANIFEST``); answers are validated against them before they become records. Nested
parts that are signed over as sent (a manifest's ``semantic``, ``spec`` and ``artefact``) stay
the dicts the market sent. ``record["field"]`` and ``record.get("field")`` still work, for code
written when these were dicts.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING, Any, Mapping

if TYPE_CHECKING:  # pragma: no cover
    from .rkme import RKMESpec


class _Record:
    """Read-only mapping access to a frozen dataclass's fields."""

    def __getitem__(self, key: str) -> Any:
        if key not in self._names():
            raise KeyError(key)
        return getattr(self, key)

    def get(self, key: str, default: Any = None) -> Any:
        return getattr(self, key) if key in self._names() else default

    def __contains__(self, key: object) -> bool:
        return key in self._names()

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def _names(cls) -> frozenset[str]:
        return frozenset(f.name for f in fields(cls))

    @classmethod
    def from_body(cls, body: Mapping[str, Any]):
        """The record of a (schema-checked) answer body; fields it does not know are ignored."""
        names = cls._names()
        return cls(**{k: v for k, v in body.items() if k in names})


@dataclass(frozen=True)
class IslandInfo(_Record):
    """An island: the semantic part every learnware on it shares, and its current kernel
    (``kernel = {"gamma", "scales" (encoded array), "version"}``)."""

    island_id: str
    semantic_key: str
    semantic: dict
    kernel: dict
    n_features: int
    learnware_count: int
    anchor_count: int | None = None
    created_at: int | None = None


@dataclass(frozen=True)
class Manifest(_Record):
    """A learnware's signed record. ``deleted`` is true once it is withdrawn; ``withdrawn``
    then says by whom (``developer`` or ``operator``), why and when."""

    learnware_id: str
    island_id: str
    semantic: dict
    spec: dict
    model_sha256: str
    model_size: int
    developer: str
    artefact: dict
    deleted: bool
    created_at: int | None = None
    withdrawn: dict | None = None
    #: the aggregate of users' usage reports ({count, metric, median, q1, q3, rows}), if any
    reports: dict | None = None


@dataclass(frozen=True)
class PreparedSpec:
    """An RKME fitted ahead of a publish (:meth:`MarketClient.island_spec`), with the semantic
    specification it was fitted for: ``feature_scales`` filled in from the data for a new
    island (they define its base kernel), dropped for an existing one (its kernel rules)."""

    spec: RKMESpec
    semantic: dict

    def to_dict(self) -> dict:
        """The spec's wire form (as ``RKMESpec.to_dict``)."""
        return self.spec.to_dict()


@dataclass(frozen=True)
class ReportReceipt:
    """What ``MarketClient.report`` measured and sent: ``value`` the exact metric on the
    user's rows (kept here), ``sent`` the rounded/jittered value the market got, ``n_rows_sent``
    the coarsened row count; ``replaced`` when it replaced this key's earlier report;
    ``summary`` the learnware's aggregate after it."""

    learnware_id: str
    metric: str
    value: float
    sent: float
    n_rows_sent: int
    reuse: str
    replaced: bool
    summary: dict
