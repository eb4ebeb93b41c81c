"""A downloaded (or locally built) learnware: model + specification + semantic spec."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from .rkme import RKMESpec


@dataclass
class Learnware:
    """What reuse works with. ``model`` follows scikit-learn's predict(/predict_proba) API;
    ``spec`` is its RKME specification (None for a model without one; ``JobSelector`` needs
    it); ``semantic`` the semantic specification dict (``task_type`` is "classification" or
    "regression"; ``classes`` lists class labels)."""

    id: str
    model: Any
    spec: RKMESpec | None
    semantic: dict = field(default_factory=dict)

    @property
    def model_card(self) -> str | None:
        """The developer's model card (markdown: intended use, training data in words, limits,
        licence), signed with the rest of the semantic spec; None when it has none."""
        return self.semantic.get("model_card")

    @property
    def task_type(self) -> str:
        return self.semantic.get("task_type", "regression")
