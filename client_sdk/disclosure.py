"""What ``MarketClient.localize`` may disclose to a market: the user's :class:`MetricBudget`.

Localisation sends one metric value per anchor and a row count. A hostile market chooses the
anchors, so it chooses the functions whose metrics it learns: anchors ``c * [x0 <= t]`` turn rmse
values into per-threshold counts and label sums, and enough of them give back the user's rows
(``benchmarks/localize_attack.py``). The budget bounds that channel whatever the market asks:

* how many anchors are evaluated per round, how many rounds, how many values in total (anchors
  named beyond it are not downloaded, not evaluated, and counted as ignored);
* each value is rounded to a few significant digits and ``n_rows`` is rounded *down* to a
  1-2-5 grid (1, 2, 5, 10, 20, 50, ...): the honest market only uses it for the sampling
  variance, where rounding down merely widens its intervals;
* ``jitter`` (default on): noise on each value, a fraction of the metric's own sampling noise
  on ``n`` rows, so the honest localisation barely notices while the small differences between
  crafted anchors that the attack solves for drown (not a formal guarantee);
* ``epsilon`` (opt-in): epsilon-differential privacy for the whole localisation (replace-one
  neighbours; the budget ``epsilon`` is split evenly over ``max_values``), Laplace noise scaled to
  the metric's sensitivity to one row. Offered for ``accuracy`` (sensitivity 1/n) and for
  ``rmse``/``mae`` on residuals clipped to ``clip`` (a bound the user states without looking at
  the data: sensitivity clip^2/n on the mean squared residual, clip/n on the mean absolute one).
  ``r2`` and ``f1`` are refused: one row can move them by a data-dependent amount (r2 through the
  label variance, f1 through a rare class), so no data-independent scale exists.

Pure numerics; no I/O.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from protocol.errors import ArgumentError
from protocol.objectives import clip_metric
from learnware_core.metrics import evaluate

__all__ = ["MetricBudget", "bucket_rows", "round_significant", "DP_METRICS"]

#: metrics for which ``epsilon`` noise has a data-independent sensitivity
DP_METRICS = ("accuracy", "rmse", "mae")
#: relative sampling sd of a loss-like metric on one row (delta method, Gaussian errors)
_REL_SD_PER_ROW = {"rmse": math.sqrt(0.5), "mae": math.sqrt(math.pi / 2 - 1), "r2": math.sqrt(2)}


def bucket_rows(n: int) -> int:
    """``n`` rounded down to the 1-2-5 grid (6 -> 5, 20 -> 20, 149 -> 100)."""
    n = int(n)
    if n < 1:
        raise ArgumentError(f"n_rows must be >= 1, got {n}")
    p = 10 ** (len(str(n)) - 1)
    return max(m * p for m in (1, 2, 5) if m * p <= n)


def round_significant(value: float, digits: int) -> float:
    return float(f"{float(value):.{int(digits)}g}")


@dataclass(frozen=True)
class MetricBudget:
    """What one ``localize`` call may send. ``None`` disables a limit (``unlimited()``: the
    behaviour before budgets existed, for experiments only)."""

    max_anchors_per_round: int | None = 8
    max_rounds: int | None = 3
    max_values: int | None = 24
    significant_digits: int | None = 3
    bucket_n_rows: bool = True
    jitter: float = 0.5
    epsilon: float | None = None
    clip: float | None = None
    seed: int | None = None  # noise seed: tests and benchmarks only (predictable noise is none)

    def __post_init__(self):
        for name in ("max_anchors_per_round", "max_rounds", "max_values", "significant_digits"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or int(v) != v or v < 1):
                raise ArgumentError(f"MetricBudget.{name} must be a positive integer or None, "
                                    f"got {v!r}")
        if not (math.isfinite(self.jitter) and self.jitter >= 0):
            raise ArgumentError(f"MetricBudget.jitter must be >= 0, got {self.jitter!r}")
        if self.epsilon is not None:
            if not (math.isfinite(self.epsilon) and self.epsilon > 0):
                raise ArgumentError(f"MetricBudget.epsilon must be > 0, got {self.epsilon!r}")
            if self.max_values is None:
                raise ArgumentError("MetricBudget.epsilon needs max_values (it is split over them)")
        if self.clip is not None and not (math.isfinite(self.clip) and self.clip > 0):
            raise ArgumentError(f"MetricBudget.clip must be > 0, got {self.clip!r}")

    @classmethod
    def unlimited(cls) -> "MetricBudget":
        return cls(None, None, None, None, False, 0.0)

    # --- limits -------------------------------------------------------------------------------
    def allowance(self, evaluated: int) -> int | None:
        """How many new anchors this round may evaluate, ``evaluated`` being done so far."""
        caps = [c for c in (self.max_anchors_per_round,
                            None if self.max_values is None else self.max_values - evaluated)
                if c is not None]
        return max(0, min(caps)) if caps else None

    def n_rows(self, n: int) -> int:
        return bucket_rows(n) if self.bucket_n_rows else int(n)

    def check(self, metric: str) -> None:
        if self.epsilon is None:
            return
        if metric not in DP_METRICS:
            raise ArgumentError(f"epsilon noise is offered for {', '.join(DP_METRICS)} only, not "
                                f"{metric!r} (its sensitivity to one row depends on the data)")
        if metric in ("rmse", "mae") and self.clip is None:
            raise ArgumentError(f"epsilon noise for {metric} needs clip (lwm: --clip), the "
                                "largest absolute residual you expect, stated without looking at "
                                "the data")

    def rng(self) -> np.random.Generator:
        return np.random.default_rng(self.seed)

    # --- values -------------------------------------------------------------------------------
    def disclose(self, metric: str, y, pred, rng: np.random.Generator) -> tuple[float, float]:
        """(exact value, value to send) of one anchor's predictions on the user's rows."""
        exact = float(evaluate(metric, y, pred))
        n = len(y)
        if self.epsilon is not None:
            sent = self._laplace(metric, np.asarray(y), np.asarray(pred), rng)
        else:
            sent = self.jittered(metric, exact, self.n_rows(n), rng)
        if self.significant_digits is not None:
            sent = round_significant(sent, self.significant_digits)
        # past the protocol's range a metric says nothing more (an r2 of -1e15 is as useless as
        # -1e12, noise may push an rmse below 0): sent clipped, so the market never refuses it
        return exact, clip_metric(metric, sent)

    def jittered(self, metric: str, value: float, n_rows: int, rng: np.random.Generator) -> float:
        """``value`` plus ``jitter`` times its sampling sd on ``n_rows`` rows: multiplicative on
        the loss (rmse, mae, 1 - r2), additive for rates (worst-case binomial sd, 0.5/sqrt(n))."""
        if self.jitter <= 0:
            return float(value)
        z = float(rng.standard_normal())
        if metric in ("rmse", "mae"):
            return float(value) * math.exp(self.jitter * _REL_SD_PER_ROW[metric]
                                           / math.sqrt(n_rows) * z)
        if metric == "r2":
            return 1.0 - (1.0 - float(value)) * math.exp(self.jitter * _REL_SD_PER_ROW["r2"]
                                                         / math.sqrt(n_rows) * z)
        return float(np.clip(float(value) + self.jitter * 0.5 / math.sqrt(n_rows) * z, 0.0, 1.0))

    def _laplace(self, metric: str, y: np.ndarray, pred: np.ndarray,
                 rng: np.random.Generator) -> float:
        self.check(metric)
        n = len(y)
        eps = float(self.epsilon) / int(self.max_values)
        if metric == "accuracy":
            v = float(evaluate("accuracy", y, pred)) + rng.laplace(0.0, 1.0 / (n * eps))
            return float(np.clip(v, 0.0, 1.0))
        r = np.abs(np.asarray(y, float).reshape(-1) - np.asarray(pred, float).reshape(-1))
        c = float(self.clip)
        if metric == "mae":
            return max(0.0, float(np.mean(np.minimum(r, c))) + rng.laplace(0.0, c / (n * eps)))
        mse = float(np.mean(np.minimum(r, c) ** 2)) + rng.laplace(0.0, c * c / (n * eps))
        return math.sqrt(max(mse, 0.0))
