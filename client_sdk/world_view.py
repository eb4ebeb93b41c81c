"""The client's reading of the specification world (``MarketClient.world``): which component a
user's columns reach, which column is which feature, and the kernel a requirement on them is
fitted under. Column matching is :func:`learnware_core.features.resolve_columns`, fed with the
names, aliases and descriptions the market publishes per feature, so the SDK and the market
resolve a user's columns alike.
"""
from __future__ import annotations

import numpy as np

from learnware_core.features import FeatureMatcher, resolve_columns
from learnware_core.marginal import marginal_kernel
from protocol.encoding import decode_array

GROUP_FIELDS = ("data_type", "task_type", "target", "objective")


def component_matcher(component: dict) -> FeatureMatcher:
    m = FeatureMatcher()
    info = component.get("feature_info") or {}
    for f in component["features"]:
        m.add(f, info.get(f))
    return m


def plan_for(world: dict, semantic: dict):
    """``(component, {column: canonical feature})`` of the component of the user's group that
    covers most of the user's columns; None when there is none, or when it is a single island
    whose inputs are exactly the user's columns (the one-island search serves it)."""
    best, best_cols = None, {}
    for comp in world.get("components", []):
        if any(comp[f] != semantic[f] for f in GROUP_FIELDS):
            continue
        cols, _ = resolve_columns(component_matcher(comp), list(semantic["input_features"]),
                                  semantic.get("feature_map"), semantic.get("feature_info"))
        if len(cols) > len(best_cols):
            best, best_cols = comp, cols
    if best is None:
        return None
    if len(best["islands"]) == 1:
        own = world.get("island_features", {}).get(best["islands"][0])
        cols = list(semantic["input_features"])
        if own == cols and all(best_cols.get(c) == c for c in cols):
            return None
    return best, best_cols


def requirement_kernel(component: dict, features: list[str]) -> tuple[float, np.ndarray]:
    """The component's marginal kernel on these canonical features (one width per feature)."""
    widths = decode_array(component["scales"], field="scales", ndim=1)
    pos = {f: i for i, f in enumerate(component["features"])}
    return marginal_kernel([float(widths[pos[f]]) for f in features])
