"""Islands' anchor profiles: bounded in size, updated in place, one build per island at a time.

An anchor profile predicts every model of the island on samples herded from every learnware's
spec: N models x N t rows, an N x N x t array (market_server/anchors.py). Built over a whole big
island that is minutes of CPU and gigabytes, and any fresh key can ask for anchors. So:

* **Bounded.** A profile covers at most ``cap`` learnwares (``ServerConfig.max_profile_learnwares``):
  the live ones with the smallest sha256 of their public id. The choice is deterministic and
  stable as the island grows: one publish changes the subset by at most one learnware (it joins
  and the one with the largest hash leaves). Beyond the cap, anchors are chosen and the user is
  localised over that subset (a uniform hash sample of the island).
* **Updated, not rebuilt.** After publishes and deletes the cached profile keeps the predictions
  it has and computes only the learnwares that joined (``anchors.add_learnware``: the new model
  on every task, every model on the new task) and drops those that left; a full build only when
  there is no profile yet or more than ``MAX_UPDATES`` join at once. A publish that does not
  enter the subset costs nothing here.
* **Failures are not fatal.** A model that fails, or overruns its sandbox budget, while the
  profile is built is left out of it (a log line) and remembered, so it is tried once per
  process; the next learnware by hash takes its place. One hostile model cannot switch off an
  island's anchors.
* **One build per island at a time.** A request that finds a build running gets the previous
  profile when there is one, or waits for the build: N simultaneous anchor requests cost one build.
"""
from __future__ import annotations

import hashlib
import heapq
import logging
import threading
from dataclasses import dataclass, field
from typing import Callable

from protocol.errors import LearnwareError

from . import anchors
from .rows import IslandRow
from .storage import Store, learnware_public_id, parse_id

__all__ = ["ProfileCache", "profile_subset"]

log = logging.getLogger("market_server")


def profile_rank(learnware_id: str) -> bytes:
    """A learnware's place in the order that picks profile members: sha256 of its public id."""
    return hashlib.sha256(learnware_id.encode("utf-8")).digest()


def profile_subset(live_pks: list[int], excluded: set[str], cap: int) -> list[int]:
    """The ``cap`` live learnwares (not ``excluded``) with the smallest sha256 of their public
    id, in id order (publish order, as an island's learnwares are everywhere else)."""
    ranked = ((profile_rank(learnware_public_id(pk)), pk) for pk in live_pks
              if learnware_public_id(pk) not in excluded)
    return sorted(pk for _, pk in heapq.nsmallest(max(int(cap), 1), ranked))


@dataclass
class _Entry:
    version: int
    profile: anchors.IslandProfile
    excluded: set[str] = field(default_factory=set)


class ProfileCache:
    """The anchor profile of each island, for one ``Market``.

    ``learnware_arrays(rows, on_failure)`` turns store rows into the ``(id, model, z, beta,
    gamma, scales)`` tuples the profile needs (models as sandbox proxies), calling
    ``on_failure(id, error)`` for a model it cannot load."""

    #: more learnwares than this joining at once: one full build instead of updates
    MAX_UPDATES = 16

    def __init__(self, store: Store, learnware_arrays: Callable, cap: int):
        self.store, self._arrays, self.cap = store, learnware_arrays, int(cap)
        self._entries: dict[int, _Entry] = {}
        self._building: dict[int, threading.Lock] = {}
        self._lock = threading.Lock()
        self.builds = 0   # full builds (the costly kind), for tests and benchmarks
        self.updates = 0  # learnwares added to an existing profile

    def get(self, island: IslandRow) -> anchors.IslandProfile:
        pk, version = island.pk, island.version
        with self._lock:
            entry = self._entries.get(pk)
            building = self._building.setdefault(pk, threading.Lock())
        if entry is not None and entry.version >= version:
            return entry.profile
        if not building.acquire(blocking=entry is None):
            return entry.profile  # a build is running: the previous profile meanwhile
        try:
            with self._lock:
                entry = self._entries.get(pk)
            if entry is not None and entry.version >= version:
                return entry.profile  # built while this request waited
            try:
                entry = self._refresh(island, entry)
            except ValueError as exc:  # no learnware of the island could take part
                raise LearnwareError(f"cannot build the island's anchor profile: {exc}"[:1000],
                                     code="profile_unavailable", status=422) from None
            with self._lock:
                self._entries[pk] = entry
            return entry.profile
        finally:
            building.release()

    # --- building -------------------------------------------------------------------------
    def _refresh(self, island: IslandRow, entry: _Entry | None) -> _Entry:
        excluded = set(entry.excluded) if entry is not None else set()

        def failed(lw_id: str, exc: Exception) -> None:
            excluded.add(lw_id)
            log.warning("island %s: learnware %s left out of the anchor profile: %s",
                        island.island_id, lw_id, str(exc)[:300])

        live = self.store.island_live_pks(island.pk)
        if not live:
            raise LearnwareError("the island has no live learnwares", code="empty_island",
                                 status=404)
        prof = entry.profile if entry is not None else None
        for _ in range(len(live) + 1):  # a pass ends it, or leaves one more learnware out
            want = [learnware_public_id(p) for p in profile_subset(live, excluded, self.cap)]
            if not want:
                raise ValueError("every model of the island failed on herded samples")
            if prof is not None and prof.ids == want:
                break
            before = len(excluded)
            have = set(prof.ids) if prof is not None else set()
            joining = [i for i in want if i not in have]
            if prof is None or len(joining) > self.MAX_UPDATES or not have & set(want):
                prof = self._build(island, want, failed)
            else:
                prof = self._update(prof, want, joining, failed)
            if len(excluded) == before and prof is not None:
                break
        if prof is None:
            raise ValueError("every model of the island failed on herded samples")
        return _Entry(island.version, prof, excluded)

    def _build(self, island: IslandRow, want: list[str], failed) -> anchors.IslandProfile:
        self.builds += 1
        rows = self.store.learnwares_by_pks([_pk(i) for i in want])
        return anchors.build_island_profile(self._arrays(rows, failed),
                                            island.semantic["objective"],
                                            island.semantic["task_type"], random_state=0,
                                            on_failure=failed)

    def _update(self, prof, want: list[str], joining: list[str], failed):
        """``prof`` without the learnwares not in ``want``, plus ``joining``, in ``want``'s
        order; None when nothing of it would be left (the caller builds afresh)."""
        keep = set(want)
        for lw_id in [i for i in prof.ids if i not in keep]:
            if prof.n == 1:
                return None
            prof = anchors.remove_learnware(prof, lw_id)
        rows = self.store.learnwares_by_pks([_pk(i) for i in joining])
        for lw in self._arrays(rows, failed):
            while True:
                try:
                    prof = anchors.add_learnware(prof, lw)
                    self.updates += 1
                    break
                except anchors.ModelFailure as exc:
                    failed(exc.lw_id, exc)
                    if exc.lw_id == lw[0]:
                        break
                    if prof.n == 1:  # the only model left failed on the new task
                        return None
                    prof = anchors.remove_learnware(prof, exc.lw_id)
        return anchors.reorder_profile(prof, [i for i in want if i in set(prof.ids)])


def _pk(learnware_id: str) -> int:
    pk = parse_id(learnware_id, "lw")
    assert pk is not None, learnware_id  # made by learnware_public_id
    return pk
