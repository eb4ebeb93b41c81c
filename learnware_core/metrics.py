"""Island objectives: one registry shared by the client (scoring anchor learnwares on the user's own
labelled rows) and the market (scoring learnwares on herded samples).

``METRICS`` maps a name to ``(function(y_true, y_pred) -> float, greater_is_better)``:

========== ================================================================ ==================
name       definition                                                       better
========== ================================================================ ==================
rmse       sqrt(mean((y - p)^2))                                            lower
mse        mean((y - p)^2)                                                  lower
mae        mean(|y - p|)                                                    lower
r2         1 - sum((y - p)^2) / sum((y - mean(y))^2); if y is constant:     higher
           1.0 for an exact prediction, else 0.0 (always finite)
accuracy   mean(y == p)                                                     higher
error      1 - accuracy                                                     lower
f1         **macro** F1: unweighted mean over the labels present in y_true  higher
           or y_pred of 2*TP / (2*TP + FP + FN) (a label's F1 is 0 when it
           never occurs correctly); for two classes this is the mean of the
           two classes' F1, not the F1 of a "positive" class
f1_binary  F1 of the positive label: 1 (True) for numeric labels, for text  higher
           "1" if present, else the larger of the (at most two) labels;
           0.0 when the positive label never occurs in either array
========== ================================================================ ==================

Regression metrics need finite numeric inputs; classification metrics compare labels with ``==``
(numbers or strings). Every failure is a ``ValueError`` with a message naming the problem.
Only numpy is used, so ``protocol`` stays light.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from protocol.objectives import OBJECTIVE_TABLE

__all__ = ["METRICS", "REGRESSION_METRICS", "CLASSIFICATION_METRICS", "evaluate",
           "greater_is_better", "metric_names", "check_metric"]


def _as_pair(y_true, y_pred, numeric: bool) -> tuple[np.ndarray, np.ndarray]:
    yt = np.asarray(y_true)
    yp = np.asarray(y_pred)
    if yt.ndim == 2 and yt.shape[1] == 1:
        yt = yt[:, 0]
    if yp.ndim == 2 and yp.shape[1] == 1:
        yp = yp[:, 0]
    if yt.ndim != 1 or yp.ndim != 1:
        raise ValueError(f"y_true and y_pred must be 1-d, got shapes {yt.shape} and {yp.shape}")
    if yt.shape[0] != yp.shape[0]:
        raise ValueError(f"y_true has {yt.shape[0]} values but y_pred has {yp.shape[0]}")
    if yt.shape[0] == 0:
        raise ValueError("cannot evaluate a metric on zero rows")
    if numeric:
        try:
            yt = yt.astype(float)
            yp = yp.astype(float)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"regression metrics need numeric values: {exc}") from exc
        if not (np.isfinite(yt).all() and np.isfinite(yp).all()):
            raise ValueError("regression metrics need finite values (found NaN or Inf)")
    return yt, yp


def mse(y_true, y_pred) -> float:
    yt, yp = _as_pair(y_true, y_pred, True)
    return float(np.mean((yt - yp) ** 2))


def rmse(y_true, y_pred) -> float:
    return float(np.sqrt(mse(y_true, y_pred)))


def mae(y_true, y_pred) -> float:
    yt, yp = _as_pair(y_true, y_pred, True)
    return float(np.mean(np.abs(yt - yp)))


def r2(y_true, y_pred) -> float:
    """Coefficient of determination. With a constant ``y_true`` it is 1.0 for a perfect
    prediction and 0.0 otherwise (scikit-learn's convention), so it is always finite."""
    yt, yp = _as_pair(y_true, y_pred, True)
    sse = float(np.sum((yt - yp) ** 2))
    sst = float(np.sum((yt - yt.mean()) ** 2))
    if sst <= 0.0:
        return 1.0 if sse <= 0.0 else 0.0
    return 1.0 - sse / sst


def accuracy(y_true, y_pred) -> float:
    yt, yp = _as_pair(y_true, y_pred, False)
    return float(np.mean(yt == yp))


def error(y_true, y_pred) -> float:
    return 1.0 - accuracy(y_true, y_pred)


def f1(y_true, y_pred) -> float:
    """Macro F1 over the labels present in either array (see module docstring)."""
    yt, yp = _as_pair(y_true, y_pred, False)
    labels = np.unique(np.concatenate([yt, yp]))
    scores = []
    for lab in labels:
        t = yt == lab
        p = yp == lab
        tp = float(np.sum(t & p))
        denom = float(np.sum(t) + np.sum(p))
        scores.append(2.0 * tp / denom if denom > 0 else 0.0)
    return float(np.mean(scores))


def _positive_label(yt: np.ndarray, yp: np.ndarray):
    labels = list(np.unique(np.concatenate([yt, yp])))
    if len(labels) > 2:
        raise ValueError(f"f1_binary needs at most two labels, found {len(labels)}; use 'f1'")
    if all(not isinstance(lab, str) for lab in labels):
        return 1  # numeric or boolean labels: 1 (True) is the positive class, present or not
    return "1" if "1" in labels else labels[-1]


def f1_binary(y_true, y_pred) -> float:
    """F1 of the positive class (see the module docstring for which label that is)."""
    yt, yp = _as_pair(y_true, y_pred, False)
    pos = _positive_label(yt, yp)
    t = yt == pos
    p = yp == pos
    tp = float(np.sum(t & p))
    denom = float(np.sum(t) + np.sum(p))
    return 2.0 * tp / denom if denom > 0 else 0.0


_FUNCTIONS: dict[str, Callable[[object, object], float]] = {
    "rmse": rmse, "mse": mse, "mae": mae, "r2": r2,
    "accuracy": accuracy, "error": error, "f1": f1, "f1_binary": f1_binary}
#: direction and task type: protocol/objectives.py (the one table)
METRICS: dict[str, tuple[Callable[[object, object], float], bool]] = {
    name: (fn, OBJECTIVE_TABLE[name].greater_is_better) for name, fn in _FUNCTIONS.items()}

REGRESSION_METRICS = frozenset(n for n in METRICS if OBJECTIVE_TABLE[n].task_type == "regression")
CLASSIFICATION_METRICS = frozenset(n for n in METRICS
                                   if OBJECTIVE_TABLE[n].task_type == "classification")


def metric_names() -> list[str]:
    return sorted(METRICS)


def check_metric(metric: str) -> str:
    """Return ``metric`` if it is a known name, else raise a ValueError listing the known ones."""
    if not isinstance(metric, str) or metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; known metrics: {', '.join(metric_names())}")
    return metric


def evaluate(metric: str, y_true, y_pred) -> float:
    """The value of ``metric`` for predictions ``y_pred`` of ``y_true``."""
    fn, _ = METRICS[check_metric(metric)]
    return fn(y_true, y_pred)


def greater_is_better(metric: str) -> bool:
    return METRICS[check_metric(metric)][1]
