"""The island objectives: ONE table of their names, ranges, direction and task type.

The wire knows ``on_wire`` objectives (an island's ``semantic.objective``, a metrics report);
the others are internal losses the market's anchor estimates use. ``protocol.schemas`` takes the
names from here, ``learnware_core.metrics`` computes each one and reads its direction here, the
market reads ranges and task types here.
"""
from __future__ import annotations

from dataclasses import dataclass

from .limits import MAX_METRIC


@dataclass(frozen=True)
class Objective:
    name: str
    low: float              # range of a value, as measured by a user or estimated by the market
    high: float
    greater_is_better: bool
    task_type: str          # "regression" or "classification"
    on_wire: bool           # may name an island's objective


_TABLE = (
    Objective("rmse", 0.0, MAX_METRIC, False, "regression", True),
    Objective("mae", 0.0, MAX_METRIC, False, "regression", True),
    Objective("r2", -MAX_METRIC, 1.0, True, "regression", True),
    Objective("accuracy", 0.0, 1.0, True, "classification", True),
    Objective("f1", 0.0, 1.0, True, "classification", True),
    Objective("mse", 0.0, MAX_METRIC, False, "regression", False),
    Objective("error", 0.0, 1.0, False, "classification", False),
    Objective("f1_binary", 0.0, 1.0, True, "classification", False),
)
#: every objective by name
OBJECTIVE_TABLE: dict[str, Objective] = {o.name: o for o in _TABLE}
#: the names an island's objective may take (the protocol's choices)
WIRE_OBJECTIVES: tuple[str, ...] = tuple(o.name for o in _TABLE if o.on_wire)
#: the range of each wire objective, as measured by a user or estimated by the market.
OBJECTIVE_RANGES: dict[str, tuple[float, float]] = {
    o.name: (o.low, o.high) for o in _TABLE if o.on_wire}


def fits_task(objective: str, task_type: str) -> bool:
    """Does this objective measure a task of this type?"""
    return OBJECTIVE_TABLE[objective].task_type == task_type


def clip_metric(objective: str, value: float) -> float:
    """``value`` brought into the objective's range (a metric past it carries no more
    information: an r2 of -1e15 says "useless" as clearly as -1e12)."""
    lo, hi = OBJECTIVE_RANGES[objective]
    return float(min(max(float(value), lo), hi))
