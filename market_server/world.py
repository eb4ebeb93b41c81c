"""The specification world: islands connected into components by the features they share.

Two islands are in one component when they have the same data type, task type, target and
objective and their inputs overlap: at least one input feature of one is the same feature
(:mod:`learnware_core.features`: by name, declared alias or description) as one of the other.
A component is the paradigm's merged island: a user whose columns overlap any of its islands can
be served by all of them (``market_server/world_search.py``).

Kernels that agree: a component has one width per feature. Each island's kernel
``exp(-gamma ||(x - y) / s||^2)`` is first written in the base form
``exp(-||(x - y) / w||^2 / (2 d))`` (``w = s / sqrt(2 d gamma)``; a base kernel has ``w = s``),
so an island's refinement (``market_server/island_kernel.py``: spread / sqrt(relevance), median
gamma) is kept feature by feature; the component's width of a feature is the geometric mean of
the widths of every island holding it, weighted by the island's number of learnwares (the
refinement's average over models, taken across the component). MMDs on shared features then
mean the same thing on both sides of a connection.

Pure: built from :class:`IslandNode` values (what the store holds), no I/O. ``Market.world``
rebuilds it when any island's version moved (publish, withdraw, kernel change) and on start.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np

from learnware_core.features import FeatureMatcher, resolve_columns

GROUP_FIELDS = ("data_type", "task_type", "target", "objective")


@dataclass(frozen=True)
class IslandNode:
    """An island as the world sees it: its id, semantic part, kernel, live count and the
    feature descriptions its learnwares declared (first declaration per feature wins)."""
    island_id: str
    semantic: dict
    gamma: float
    scales: tuple
    learnware_count: int
    feature_info: dict = field(default_factory=dict)

    @property
    def features(self) -> list[str]:
        return list(self.semantic["input_features"])

    @property
    def group(self) -> tuple:
        return tuple(self.semantic[f] for f in GROUP_FIELDS)

    def widths(self) -> np.ndarray:
        """Per-feature widths of the island's kernel in the base form (module docstring)."""
        d = len(self.scales)
        return np.asarray(self.scales, dtype=np.float64) / np.sqrt(2.0 * d * float(self.gamma))


@dataclass
class Component:
    component_id: str
    group: tuple
    islands: list[IslandNode]
    features: list[str]              # canonical features of every island, first-seen order
    connecting: list[str]            # canonical features held by at least two islands
    widths: dict[str, float]         # canonical feature -> the component's width
    info: dict[str, dict]            # canonical feature -> {description, unit, aliases}

    @property
    def learnware_count(self) -> int:
        return sum(i.learnware_count for i in self.islands)

    def wire(self) -> dict:
        from protocol.encoding import encode_array
        return {"component_id": self.component_id, **dict(zip(GROUP_FIELDS, self.group)),
                "islands": [i.island_id for i in self.islands], "features": self.features,
                "connecting_features": self.connecting,
                "scales": encode_array(np.array([self.widths[f] for f in self.features])),
                "learnware_count": self.learnware_count, "feature_info": self.info}


class World:
    """Components of one market's islands. ``canonical(island_id, feature)`` names the feature
    identity of an island's input; ``matcher(group)`` the matcher of a group of islands."""

    def __init__(self, nodes: list[IslandNode]):
        self.nodes = {n.island_id: n for n in nodes}
        self._matchers: dict[tuple, FeatureMatcher] = {}
        self._canon: dict[str, list[str]] = {}
        for n in nodes:  # island order = creation order: canonical names are the oldest ones
            m = self._matchers.setdefault(n.group, FeatureMatcher())
            for f in n.features:
                m.add(f, n.feature_info.get(f))
        for n in nodes:
            self._canon[n.island_id] = [self._matchers[n.group].canonical(f) for f in n.features]
        self.components = self._components(nodes)
        self._component_of = {i.island_id: c for c in self.components for i in c.islands}

    def matcher(self, group: tuple) -> FeatureMatcher | None:
        return self._matchers.get(group)

    def canonical(self, island_id: str) -> list[str]:
        """The canonical feature of each input of the island, in its input order."""
        return self._canon[island_id]

    def component_of(self, island_id: str) -> Component | None:
        return self._component_of.get(island_id)

    def matches(self) -> list[dict]:
        return [m for g in sorted(self._matchers, key=str) for m in self._matchers[g].matches]

    def _components(self, nodes: list[IslandNode]) -> list[Component]:
        parent = {n.island_id: n.island_id for n in nodes}

        def find(a):
            while parent[a] != a:
                parent[a] = parent[parent[a]]
                a = parent[a]
            return a

        holder: dict[tuple, str] = {}  # (group, canonical feature) -> first island holding it
        for n in nodes:
            for f in self._canon[n.island_id]:
                first = holder.setdefault((n.group, f), n.island_id)
                if first != n.island_id:
                    parent[find(n.island_id)] = find(first)
        members: dict[str, list[IslandNode]] = {}
        for n in nodes:
            members.setdefault(find(n.island_id), []).append(n)
        out = []
        for root, isl in members.items():
            feats, count = [], {}
            for n in isl:
                for f in self._canon[n.island_id]:
                    if f not in count:
                        feats.append(f)
                    count[f] = count.get(f, 0) + 1
            out.append(Component(
                component_id="cmp_" + hashlib.sha256(
                    "|".join(sorted(i.island_id for i in isl)).encode()).hexdigest()[:16],
                group=isl[0].group, islands=isl, features=feats,
                connecting=[f for f in feats if count[f] > 1],
                widths=self._widths(isl), info=self._info(isl)))
        return out

    #: names a component's feature_info lists per feature (the protocol's bound on aliases)
    MAX_ALIASES = 8

    def _info(self, islands: list[IslandNode]) -> dict[str, dict]:
        """Per canonical feature: the first description and unit declared, and the other names
        (island inputs, declared aliases) it is known by: what a client needs to resolve its
        columns exactly as the market does."""
        out: dict[str, dict] = {}
        for n in islands:
            for name, f in zip(n.features, self._canon[n.island_id]):
                slot = out.setdefault(f, {})
                decl = n.feature_info.get(name) or {}
                for k in ("description", "unit"):
                    if decl.get(k) and k not in slot:
                        slot[k] = decl[k]
                names = [name] + list(decl.get("aliases", ()))
                al = slot.setdefault("aliases", [])
                for a in names:
                    if a != f and a not in al and len(al) < self.MAX_ALIASES:
                        al.append(a)
        for slot in out.values():
            if not slot.get("aliases"):
                slot.pop("aliases", None)
        return out

    def _widths(self, islands: list[IslandNode]) -> dict[str, float]:
        logs: dict[str, list[tuple[float, float]]] = {}
        for n in islands:
            for f, w in zip(self._canon[n.island_id], n.widths()):
                logs.setdefault(f, []).append((float(np.log(max(w, 1e-12))),
                                               float(max(n.learnware_count, 1))))
        return {f: float(np.exp(sum(l * c for l, c in v) / sum(c for _, c in v)))
                for f, v in logs.items()}

    def wire(self) -> dict:
        return {"components": [c.wire() for c in self.components],
                "island_features": {i: list(c) for i, c in self._canon.items()},
                "matches": self.matches()}

    def resolve_user(self, semantic: dict) -> tuple[Component | None, dict[str, str], list[dict]]:
        """The component a user's semantic specification reaches and the user's columns mapped
        to its canonical features: ``(component, {column: canonical}, matches)``
        (:func:`learnware_core.features.resolve_columns`); the component is the one of the
        user's group covering most of the user's columns."""
        group = tuple(semantic[f] for f in GROUP_FIELDS)
        m = self._matchers.get(group)
        if m is None:
            return None, {}, []
        cols, matches = resolve_columns(m, list(semantic["input_features"]),
                                        semantic.get("feature_map"), semantic.get("feature_info"))
        best, best_n = None, 0
        for c in self.components:
            n = len(set(cols.values()) & set(c.features)) if c.group == group else 0
            if n > best_n:
                best, best_n = c, n
        if best is None:
            return None, {}, matches
        keep = {col: f for col, f in cols.items() if f in set(best.features)}
        return best, keep, [x for x in matches if x["feature"] in keep]
