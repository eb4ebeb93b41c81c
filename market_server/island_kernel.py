"""How the market chooses an island's kernel without seeing anyone's raw data.

An island's kernel is ``k(x, y) = exp(-gamma * ||(x - y) / scales||^2)``: one ``gamma`` and one
scale per feature. Specifications keep their reduced points ``z`` in raw feature units, so every
stored spec can be evaluated under any kernel: when the island refines its kernel, all MMDs are
recomputed under the new one and old and new specs stay comparable.

The rule, in two stages (pure numerics: no I/O, no Flask; the inputs are what the market holds).

1. **Base kernel** (a new island, one publisher): the per-feature scales the first publisher
   declares (a robust spread of their own features, computed on the client and rounded) and
   ``gamma = 1 / (2 d)`` -- see :func:`learnware_core.island.base_kernel`, which clients compute
   identically. All features weigh the same, measured in units of one publisher's spread.

2. **Refined kernel** (:func:`refine_kernel`, once the island holds a few learnwares). What the
   market has: every learnware's specification ``(z, beta)`` and its model. It does this:

   a. *Samples.* ``n_herd`` points are herded from each specification
      (:func:`learnware_core.kernels.herd`): synthetic rows that follow the developer's distribution,
      never real rows.
   b. *Spread* ``s_j`` of each feature: the robust spread (IQR / 1.349) of the herded samples of
      all learnwares pooled, i.e. how much the feature varies across the island. The declared base
      scale is kept where the pooled spread is degenerate. (Ablations: ``spread="base"`` keeps the
      declared scales; ``spread="own"`` uses the median over learnwares of each one's own spread;
      ``spread="between"`` the spread of the learnwares' means, floored at 0.3 x the within one.)
   c. *Relevance* ``r_j`` of each feature: for each model, the permutation importance of its own
      predictions on its own herded samples -- column ``j`` is replaced by values drawn from the
      island's pooled samples (``permute="island"``, the default: a shift of the size the kernel
      has to judge, from one developer's distribution to another's) or shuffled within the
      learnware's own samples (``permute="own"``) and the mean squared change of the model's output
      is recorded (predicted values for regression, class probabilities -- or a 0/1 change of the
      label when the model has no ``predict_proba`` -- for classification). Each model's
      importances are normalised to sum to 1 (a model that ignores every feature abstains); ``r``
      is their mean over models, floored at ``floor / d``.
   d. *Scales* ``scales_j = s_j / sqrt(d * r_j)``: with equal relevances this is the spread
      itself; a feature no model uses is stretched by up to ``1 / sqrt(floor)`` (x10 for the
      default ``floor = 0.01``), so it barely moves the kernel; the features the models rely on
      dominate the distance.
   e. *Gamma* by the median heuristic: ``gamma = 1 / median ||(x - y) / scales||^2`` over pairs of
      the pooled herded samples under the new scales, so a typical pair sits at ``k = exp(-1)``.

Why: an MMD search should call two data sets close when the island's models would treat them
alike. A feature the models ignore (a city's price level, say, when every model forecasts from
recent sales changes) can separate data sets sharply without telling anything about which model
transfers; a feature every model leans on should. Measuring dependence on herded samples keeps the
rule inside what the market already holds (specs and models) and averaging over models keeps one
odd model from steering the island. Nothing here looks at any user's data or outcome.
For a linear model ``f = a'x`` the permutation importance of feature j is ``2 a_j^2 var_j``, so
``spread_j / sqrt(r_j)`` is proportional to ``1 / |a_j|``: the refined metric is the models' own
output metric, averaged over the island.

The options were chosen on developer data only (``benchmarks/island_kernel_study.py
--design-check``: developers' own past, split again in time); the island spread (step b) is the
part that matters most there, the default variants were never tuned on users' outcomes. What the
rule buys depends on the island: where models extrapolate (linear models on the Texas housing
island) it puts the weight on the level features and MMD top-1 closes most of the gap between
the market's mean model and the best one; where every model is a tree ensemble that forecasts from
recent changes it moves the weight to d1..d3, but the most similar data set does not make the
best model there (a city's own past model is no better than an average one on its future) and
top-1 stays low; the QP mixture under the refined kernel does best of the non-oracle kernels.
The figures are in docs/RESULTS.md ("The island kernel").
"""
from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from typing import Any, Iterable, Sequence

import numpy as np

from learnware_core.island import base_kernel as _protocol_base_kernel
from learnware_core.kernels import check_kernel, herd

_HERD_MEMO: "OrderedDict[tuple, np.ndarray]" = OrderedDict()
_HERD_MEMO_SIZE = 2048
_HERD_MEMO_LOCK = threading.Lock()


def _herd_memo(z, beta, gamma, scales, t: int, seed: int) -> np.ndarray:
    """``herd`` is deterministic: refinements at 4, 8, 16, ... learnwares re-herd only the specs
    they have not seen (keyed by the exact bytes of every input)."""
    key = (hashlib.sha256(np.ascontiguousarray(z).tobytes()
                          + np.ascontiguousarray(beta).tobytes()
                          + np.ascontiguousarray(scales).tobytes()).hexdigest(),
           z.shape, float(gamma), int(t), int(seed))
    with _HERD_MEMO_LOCK:
        hit = _HERD_MEMO.get(key)
        if hit is not None:
            _HERD_MEMO.move_to_end(key)
            return hit.copy()
    out = herd(z, beta, gamma, scales, t, random_state=seed)
    with _HERD_MEMO_LOCK:
        _HERD_MEMO[key] = out.copy()
        while len(_HERD_MEMO) > _HERD_MEMO_SIZE:
            _HERD_MEMO.popitem(last=False)
    return out

__all__ = ["base_kernel", "refine_kernel", "model_relevance", "model_outputs", "DEFAULT_FLOOR"]

DEFAULT_FLOOR = 0.01       # min relevance x d: an unused feature's scale grows at most 10x
DEFAULT_HERD = 200         # herded samples per learnware
DEFAULT_REPEATS = 3        # permutations per feature
DEFAULT_MAX_MODELS = 64    # models (seeded subsample) that vote on relevance
MEDIAN_PAIRS = 20000
BETWEEN_MIN = 0.3          # spread="between": floor, as a share of the within-learnware spread       # pairs for the median heuristic
_TINY = 1e-12


def base_kernel(declared_scales, n_features: int) -> tuple[float, np.ndarray]:
    """A new island's kernel: the first publisher's declared scales, ``gamma = 1 / (2 d)``.

    Identical to :func:`learnware_core.island.base_kernel` (clients compute the same numbers)."""
    return _protocol_base_kernel(declared_scales, n_features)


# ------------------------------------------------------------------------------------ inputs
def _field(lw: Any, name: str, default=None):
    """A learnware's field from a dict, an object, or an object's ``spec`` attribute."""
    if isinstance(lw, dict):
        if name in lw:
            return lw[name]
        spec = lw.get("spec")
    else:
        if hasattr(lw, name) and name != "spec":
            return getattr(lw, name)
        spec = getattr(lw, "spec", None)
    if spec is not None and name in ("z", "beta", "gamma", "scales"):
        return spec.get(name, default) if isinstance(spec, dict) else getattr(spec, name, default)
    return default


def _unpack(learnwares: Iterable[Any], n_features: int) -> list[tuple[Any, np.ndarray, np.ndarray,
                                                                       float | None, Any]]:
    out = []
    for lw in learnwares:
        if isinstance(lw, tuple) and len(lw) == 2:  # (spec, model)
            spec, model = lw
            lw = {"model": model, "z": getattr(spec, "z", None), "beta": getattr(spec, "beta", None),
                  "gamma": getattr(spec, "gamma", None), "scales": getattr(spec, "scales", None)}
        z = _field(lw, "z")
        beta = _field(lw, "beta")
        if z is None or beta is None:
            raise ValueError("every learnware needs its spec's z and beta")
        z = np.asarray(z, dtype=np.float64)
        beta = np.asarray(beta, dtype=np.float64).ravel()
        if z.ndim != 2 or z.shape[1] != n_features or beta.shape[0] != z.shape[0]:
            raise ValueError(f"a spec has z of shape {z.shape} and {beta.shape[0]} weights; "
                             f"{n_features} features expected")
        out.append((_field(lw, "model"), z, beta, _field(lw, "gamma"), _field(lw, "scales")))
    return out


# ---------------------------------------------------------------------------------- outputs
def model_outputs(model: Any, X: np.ndarray, task_type: str) -> np.ndarray:
    """The model's output as a float matrix (rows x outputs) whose changes relevance measures:
    predictions for regression, class probabilities (or one-hot labels) for classification."""
    if task_type == "classification":
        if hasattr(model, "predict_proba"):
            try:
                P = np.asarray(model.predict_proba(X), dtype=np.float64)
                if P.ndim == 2 and P.shape[0] == len(X):
                    return P
            except Exception:  # noqa: BLE001 - foreign model code: fall back to labels
                pass
        labels = np.asarray(model.predict(X)).reshape(len(X), -1)[:, 0]
        _, inv = np.unique(labels.astype(str), return_inverse=True)
        return np.eye(int(inv.max()) + 1 if inv.size else 1)[inv]
    y = np.asarray(model.predict(X), dtype=np.float64)
    return y.reshape(len(X), -1)


def model_relevance(model: Any, X: np.ndarray, task_type: str, *, pool: np.ndarray | None = None,
                    n_repeats: int = DEFAULT_REPEATS, random_state=0) -> np.ndarray | None:
    """Normalised permutation importance of each feature for ``model``'s output on rows ``X``.

    Column ``j`` is replaced by a shuffle of itself (``pool=None``) or by values drawn from
    ``pool[:, j]``; the importance is the mean squared change of :func:`model_outputs`, averaged
    over ``n_repeats`` draws, normalised to sum 1. ``None`` when the model ignores every feature
    (constant output) or fails to predict. All permuted copies go through one predict call."""
    X = np.asarray(X, dtype=np.float64)
    n, d = X.shape
    rng = np.random.default_rng(random_state)
    try:
        base = model_outputs(model, X, task_type)
    except Exception:  # noqa: BLE001 - a model that cannot predict has no say
        return None
    blocks = []
    for j in range(d):
        for _ in range(n_repeats):
            Xp = X.copy()
            if pool is None:
                Xp[:, j] = X[rng.permutation(n), j]
            else:
                Xp[:, j] = pool[rng.integers(0, len(pool), size=n), j]
            blocks.append(Xp)
    try:
        out = model_outputs(model, np.vstack(blocks), task_type)
    except Exception:  # noqa: BLE001
        return None
    if out.shape[1] != base.shape[1]:  # labels seen only in the permuted rows: compare labels
        return None
    diff = out.reshape(d, n_repeats, n, -1) - base[None, None]
    imp = np.einsum("jrno,jrno->j", diff, diff) / (n_repeats * n)
    if not np.all(np.isfinite(imp)):
        return None
    total = float(imp.sum())
    scale = float(np.mean(base ** 2)) + 1.0
    if total <= _TINY * scale:
        return None
    return imp / total


# ------------------------------------------------------------------------------------- rule
def _robust_spread(X: np.ndarray) -> np.ndarray:
    q75, q25 = np.percentile(X, [75, 25], axis=0)
    s = (q75 - q25) / 1.349
    std = X.std(axis=0)
    return np.where(s > 0, s, std)


def _median_gamma(X: np.ndarray, scales: np.ndarray, rng: np.random.Generator,
                  fallback: float) -> float:
    n = len(X)
    if n < 2:
        return fallback
    m = min(MEDIAN_PAIRS, n * (n - 1) // 2)
    i = rng.integers(0, n, size=m)
    j = rng.integers(0, n - 1, size=m)
    j = np.where(j >= i, j + 1, j)  # distinct pairs
    d2 = (((X[i] - X[j]) / scales) ** 2).sum(axis=1)
    med = float(np.median(d2))
    return 1.0 / med if med > 0 and np.isfinite(med) else fallback


def refine_kernel(learnwares: Sequence[Any], base_scales, task_type: str, random_state=0, *,
                  n_herd: int = DEFAULT_HERD, n_repeats: int = DEFAULT_REPEATS,
                  floor: float = DEFAULT_FLOOR, max_models: int = DEFAULT_MAX_MODELS,
                  permute: str = "island", spread: str = "island", gamma_rule: str = "median",
                  relevance: str = "models", return_info: bool = False):
    """The island's refined kernel ``(gamma, scales)`` from its learnwares (module docstring).

    ``learnwares``: dicts with ``model``, ``z``, ``beta`` (and optionally the ``gamma``/``scales``
    the spec was fitted under, used for herding), or objects with ``.model`` and ``.spec``
    (``.z``, ``.beta``, ...), or ``(spec, model)`` pairs. ``base_scales``: the island's declared
    base scales. ``task_type``: "regression" or "classification". Deterministic for a given
    ``random_state``. With ``return_info=True`` also returns a dict with the relevances, spreads
    and the number of models that voted. ``relevance="uniform"`` skips the models (all features
    weigh the same: the ablation of step c)."""
    if task_type not in ("regression", "classification"):
        raise ValueError(f"task_type must be 'regression' or 'classification', not {task_type!r}")
    if permute not in ("island", "own") or spread not in ("island", "own", "base", "between"):
        raise ValueError("permute must be 'island' or 'own'; "
                         "spread 'island', 'own', 'between' or 'base'")
    if relevance not in ("models", "uniform"):
        raise ValueError("relevance must be 'models' or 'uniform'")
    if gamma_rule not in ("median", "base"):
        raise ValueError("gamma_rule must be 'median' or 'base'")
    if not 0 < floor <= 1:
        raise ValueError("floor must be in (0, 1]")
    base = np.asarray(base_scales, dtype=np.float64).ravel()
    d = base.shape[0]
    gamma0, base = base_kernel(base, d)
    items = _unpack(learnwares, d)
    rng = np.random.default_rng(random_state)
    info: dict = {"n_learnwares": len(items), "n_voters": 0}
    if not items:
        return (gamma0, base, info) if return_info else (gamma0, base)

    # a. herded samples of every spec (under the kernel it was fitted with, else the base one)
    samples = []
    for i, (_, z, beta, g, sc) in enumerate(items):
        try:
            g, sc = check_kernel(g if g is not None else gamma0, sc if sc is not None else base, d)
        except ValueError:
            g, sc = gamma0, base
        beta = np.clip(beta, 0, None)
        beta = beta / beta.sum() if beta.sum() > 0 else np.full(len(beta), 1.0 / len(beta))
        t = int(min(n_herd, max(1, 10 * len(z))))
        samples.append(_herd_memo(np.asarray(z, dtype=np.float64),
                                  np.asarray(beta, dtype=np.float64), g, sc, t,
                                  int(rng.integers(2**31))))
    pool = np.vstack(samples)

    # b. spreads
    if spread == "island":
        s = _robust_spread(pool)
    elif spread == "own":
        s = np.median(np.vstack([_robust_spread(x) for x in samples]), axis=0)
    elif spread == "between":
        within = np.median(np.vstack([_robust_spread(x) for x in samples]), axis=0)
        means = np.vstack([x.mean(axis=0) for x in samples])
        between = means.std(axis=0) if len(samples) > 1 else within
        s = np.maximum(between, BETWEEN_MIN * within)
    else:
        s = base.copy()
    s = np.where(np.isfinite(s) & (s > 1e-9 * np.maximum(base, 1e-300)), s, base)

    # c. relevance, one vote per model (a seeded subsample when there are many)
    order = rng.permutation(len(items))[:max_models] if relevance == "models" else []
    votes = []
    for i in order:
        model = items[i][0]
        if model is None:
            continue
        r = model_relevance(model, samples[i], task_type,
                            pool=pool if permute == "island" else None,
                            n_repeats=n_repeats, random_state=int(rng.integers(2**31)))
        if r is not None:
            votes.append(r)
    info["n_voters"] = len(votes)
    if votes:
        rel = np.mean(np.vstack(votes), axis=0)
    else:
        rel = np.full(d, 1.0 / d)
    rel = rel / rel.sum()

    # d. scales (relevance floored at floor / d: an unused feature stretches by 1 / sqrt(floor));
    # e. gamma
    scales = s / np.sqrt(d * np.maximum(rel, floor / d))
    if gamma_rule == "median":
        gamma = _median_gamma(pool, scales, rng, fallback=1.0 / (2.0 * d))
    else:
        gamma = 1.0 / (2.0 * d)
    gamma, scales = check_kernel(gamma, scales, d)
    info.update(relevance=rel, spread=s, votes=np.vstack(votes) if votes else None)
    return (gamma, scales, info) if return_info else (gamma, scales)
