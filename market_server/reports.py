"""Users' signed usage reports (reviews): stored, aggregated robustly, and fed to localisation.

A user who reused a learnware may send a signed ``usage_report``: the learnware id, the island
objective's value on its own labelled rows (computed and rounded by the SDK), the row count
(coarsened to the 1-2-5 grid), how it reused it and an optional short comment -- nothing else
about its data. Rules, all checked here before anything is written:

* one report per (reporter key, learnware); a new one from the same key replaces it, and no
  other key can touch it (the store's unique constraint, keyed by the *signing* key);
* a developer cannot report on its own learnwares (same signing key as the publisher);
* a withdrawn learnware refuses reports (410); the metric must be the island's objective, its
  value within the objective's range (422);
* rate-limited per key (``ServerConfig.rate_limit_report``) and per address
  (``rate_limit_address_report``), on top of the market-wide address budget.

Aggregates are robust (count, median, quartiles; one vote per reporter whatever its row count),
so a few fake reports move them little; localisation weighs a reporter by a saturating
function of its row count (see ``anchors.report_prior``). Threats and what these bounds do
and do not stop: docs/SECURITY.md ("Usage reports").
"""
from __future__ import annotations

import threading
from typing import Iterable

import numpy as np

from protocol.errors import LearnwareError, WithdrawnError
from protocol.objectives import OBJECTIVE_RANGES

from . import anchors
from .rows import IslandRow, StoredLearnware
from .storage import Store, learnware_public_id, parse_id

__all__ = ["UsageReports", "summarize", "MAX_LISTED", "MAX_REPORTERS"]

#: reports listed by ``GET /v1/learnwares/<id>/reports`` (newest first)
MAX_LISTED = 200
#: the most recent reports of an island that localisation reads (bounds its work)
MAX_REPORTERS = 400


def summarize(values: Iterable[float], n_rows: Iterable[int], metric: str) -> dict:
    """``{count, metric, median, q1, q3, rows}`` of reported values (median/quartiles: one
    report, one vote; None without reports)."""
    v = np.asarray(list(values), dtype=float)
    rows = int(sum(int(n) for n in n_rows))
    if v.size == 0:
        return {"count": 0, "metric": metric, "median": None, "q1": None, "q3": None, "rows": 0}
    q1, med, q3 = np.percentile(v, [25, 50, 75])
    return {"count": int(v.size), "metric": metric, "median": float(med), "q1": float(q1),
            "q3": float(q3), "rows": min(rows, 2**53)}


class UsageReports:
    """The market's usage reports: one per ``Market`` (``market.reports``)."""

    def __init__(self, store: Store):
        self.store = store
        self._priors: dict[int, tuple[tuple, anchors.ReportPrior]] = {}
        self._lock = threading.Lock()

    # --- writing ----------------------------------------------------------------------------
    def submit(self, envelope, row: StoredLearnware, island: IslandRow) -> dict:
        body = envelope.body
        if row.withdrawn is not None:
            w = row.withdrawn
            raise WithdrawnError(f"{row.learnware_id} was withdrawn by its {w['by']}: "
                                 f"{w['reason']}; it takes no reports", field="learnware_id")
        if envelope.sender_key_id == row.developer_key_id or envelope.sender == row.developer:
            raise LearnwareError("a developer cannot report on its own learnwares",
                                 code="own_learnware", status=403, field="learnware_id")
        objective = island.semantic["objective"]
        if body["metric"] != objective:
            raise LearnwareError(f"the island's objective is {objective}; the report was "
                                 f"computed as {body['metric']}", code="wrong_metric",
                                 status=422, field="metric")
        lo, hi = OBJECTIVE_RANGES[objective]
        value = float(body["value"])
        if not lo <= value <= hi:
            raise LearnwareError(f"a {objective} value is in [{lo:g}, {hi:g}], got {value:g}",
                                 code="bad_metrics", status=422, field="value")
        comment = body.get("comment")
        comment = comment.strip() or None if comment is not None else None
        replaced = self.store.put_report(
            learnware_pk=row.pk, island_pk=row.island_pk,
            reporter_key_id=envelope.sender_key_id, metric=objective, value=value,
            n_rows=int(body["n_rows"]), reuse=body["reuse"], comment=comment)
        return {"learnware_id": row.learnware_id, "replaced": bool(replaced),
                "summary": self.summary(row.pk, objective)}

    # --- reading ----------------------------------------------------------------------------
    def summary(self, learnware_pk: int, metric: str) -> dict:
        return self.summaries([learnware_pk], metric)[learnware_pk]

    def summaries(self, learnware_pks: Iterable[int], metric: str) -> dict[int, dict]:
        """The aggregate of each learnware's reports, in one query (search results)."""
        pks = [int(p) for p in learnware_pks]
        got: dict[int, list[dict]] = {p: [] for p in pks}
        for r in self.store.reports(learnware_pks=pks):
            if r["metric"] == metric:
                got[r["learnware_pk"]].append(r)
        return {p: summarize([r["value"] for r in rs], [r["n_rows"] for r in rs], metric)
                for p, rs in got.items()}

    def annotate(self, matches: list[dict], metric: str) -> None:
        """Add ``reports`` (the aggregate) to each ranked match that has any."""
        pks = {m["learnware_id"]: parse_id(m["learnware_id"], "lw") for m in matches}
        sums = self.summaries([p for p in pks.values() if p is not None], metric)
        for m in matches:
            s = sums.get(pks[m["learnware_id"]])
            if s and s["count"]:
                m["reports"] = s

    def listing(self, row: StoredLearnware, metric: str) -> dict:
        """A learnware's reports as anyone may read them: the aggregate and the newest
        ``MAX_LISTED`` reports (reporters by key id, comments as written)."""
        rs = [r for r in self.store.reports(learnware_pks=[row.pk]) if r["metric"] == metric]
        out = []
        for r in rs[:MAX_LISTED]:
            item = {"reporter": r["reporter_key_id"], "value": float(r["value"]),
                    "n_rows": int(r["n_rows"]), "reuse": r["reuse"], "at": int(r["at"])}
            if r["comment"]:
                item["comment"] = r["comment"]
            out.append(item)
        return {"learnware_id": row.learnware_id,
                "summary": summarize([r["value"] for r in rs], [r["n_rows"] for r in rs], metric),
                "reports": out}

    def public_texts(self, learnware_ids: Iterable[str]) -> dict[str, dict]:
        """``{learnware_id: {"model_card": str | None, "comments": [str]}}``: the public texts
        of live learnwares that a text index may embed (model cards and report comments; the
        same texts the catalogue and the signed API show anyone). Unknown ids are left out."""
        pks = {i: parse_id(i, "lw") for i in learnware_ids}
        pks = {i: p for i, p in pks.items() if p is not None}
        rows = {r.pk: r for r in self.store.learnwares_by_pks(list(pks.values()))}
        comments = self.public_comments(pks.values())
        return {learnware_public_id(p): {"model_card": rows[p].semantic.get("model_card"),
                                         "comments": comments.get(p, [])}
                for p in pks.values() if p in rows and not rows[p].deleted}

    # --- text search (market_server/describe.py reads these) ---------------------------------
    def ids_since(self, after: int) -> list[tuple[int, int]]:
        """``[(report id, learnware pk)]`` of the reports stored (a replacement is a new
        report) after report id ``after``."""
        return self.store.report_ids_since(after)

    def public_comments(self, learnware_pks: Iterable[int]) -> dict[int, list[str]]:
        """``{learnware_pk: [comment]}``: the comments among each learnware's newest
        MAX_LISTED reports, newest first -- what the report listing shows anyone; a replaced
        report's comment is gone with it. Learnwares without a comment are left out."""
        out: dict[int, list[str]] = {}
        seen: dict[int, int] = {}
        for r in self.store.reports(learnware_pks=learnware_pks):
            pk = r["learnware_pk"]
            seen[pk] = seen.get(pk, 0) + 1
            if r["comment"] and seen[pk] <= MAX_LISTED:
                out.setdefault(pk, []).append(r["comment"])
        return out

    # --- localisation -----------------------------------------------------------------------
    def island_reporters(self, island: IslandRow) -> list[tuple[dict, int]]:
        """``[({learnware_id: value}, n_rows)]``, one per reporter key: its reports on the
        island's live learnwares (the newest ``MAX_REPORTERS`` reports in all); its row count
        is the median of its reports' counts."""
        metric = island.semantic["objective"]
        by_key: dict[str, tuple[dict, list[int]]] = {}
        for r in self.store.reports(island_pk=island.pk, limit=MAX_REPORTERS):
            if r["metric"] != metric:
                continue
            vals, ns = by_key.setdefault(r["reporter_key_id"], ({}, []))
            vals[learnware_public_id(r["learnware_pk"])] = float(r["value"])
            ns.append(int(r["n_rows"]))
        return [(vals, int(np.median(ns))) for vals, ns in by_key.values()]

    def prior(self, island: IslandRow, profile) -> anchors.ReportPrior | None:
        """:func:`anchors.report_prior` of the island's reports on ``profile``; cached until a
        report or the profile changes; None without reports."""
        reporters = self.island_reporters(island)
        if not reporters:
            return None
        key = (id(profile), tuple(profile.ids),
               tuple(sorted((tuple(sorted(v.items())), n) for v, n in reporters)))
        with self._lock:
            hit = self._priors.get(island.pk)
        if hit is not None and hit[0] == key:
            return hit[1]
        prior = anchors.report_prior(profile, reporters)
        if prior.reporters == 0:
            prior = None
        with self._lock:
            self._priors[island.pk] = (key, prior)
        return prior
