"""Anchor learnwares: find useful learnwares for a user whose data is too small for an RKME.

The market sends a few *anchor* learnwares; the user runs them on its own labelled rows and sends
back only one metric value per anchor and the number of rows. From that vector the market estimates
how every learnware of the island would do on the user's task -- it *localises* the user on the
island: far from anchors that did badly, close to anchors that did well.

Method
------
**Island profile: a task x model matrix.** Learnware i publishes an RKME (z_i, beta_i) of its
training inputs. The market herds ``t`` samples X_i from it (:func:`learnware_core.kernels.herd`): a
stand-in for task i's inputs. Labels: a developer's model f_i is only a noisy estimate of its
task's function (on txhousing a city's own model is barely better on its own future than a random
other city's), so task i is labelled by a *local consensus*
``y_i = sum_k A[i, k] f_k(X_i)`` with ``A[i, k] ∝ exp(-D[i, k] / h_i)``: D[i, k] is how much
model k disagrees with f_i on X_i and ``h_i = 2 min_{k != i} D[i, k]``, so the models that agree
with f_i about as well as its nearest neighbour share in the label and models of other behaviour
get nothing (a weighted vote for classification). On a clustered island this is the cluster's
denoised function; an isolated learnware keeps its own labels. Then
``P[i, j] = metric(y_i, f_j(X_i))`` for every model j. We work on a *loss scale*
``L = g(P)`` where label noise adds a constant: g = rmse^2 (mse), mae^2 (for Gaussian errors
proportional to mse; mae itself is sub-additive in the noise), 1 - r2, 1 - accuracy, 1 - f1.
For mse this is exact: for a user task y = f_u(x) + eps, ``E mse_u(j) = var(eps) +
E (f_u - f_j)^2``, and row i of L is the second term for f_u = y_i.

**Localisation: a posterior over island tasks.** The user's anchor losses ``l_A`` are compared,
on the log scale ``log(loss + phi)`` (multiplicative noise becomes additive; phi = 5% of the
island's median loss keeps zero losses finite), with every row of L restricted to the anchors plus
an offset ``c_i >= 0`` (the user's label noise, unknown to the market; fitted per task on a grid).
Each anchor's residual is Gaussian with variance ``rho * s(mu, n) / mu^2 + tau^2``:

* ``s(mu, n)`` is the sampling variance of the metric measured on ``n`` rows at loss mu
  (``2 mu^2 / n`` for mse, binomial for error rates), ``rho = 1/2`` because the anchors are
  measured on the same rows, so their errors are correlated and differences are less noisy;
* ``tau^2`` is the *island mismatch*: a user is never exactly an island task. It is measured on the
  island itself, leave one task out: every task, taken as a noise-free user, is fitted by its best
  other task; tau^2 is the median residual variance per degree of freedom (cached per anchor set).

If the user fits no task that well the variances are scaled up to the best fit's residual
(empirical Bayes), so the posterior never collapses on a poor match. The posterior ``w_i`` over
tasks (uniform prior) is broad when n is small (n = 5: every estimate shrinks toward the island
average) and concentrates as n and the number of anchors grow.

**Estimates.** Model j's loss for the user is ``sum_i w_i (L[i, j] + c_i)``; its variance is the
posterior spread, plus ``tau^2 mu^2``, plus the common part ``(1 - rho) s(mu, n)`` of the sampling
noise (all anchors share the user's rows, so the level of the user's losses is known only that
well). Intervals are for the user's expected loss, not for its value on a finite test set.
The anchors' own measurements are *not* fused in a second time: they already enter through the
likelihood, and using them directly is noise-chasing (on txhousing, picking the learnware with
the best error on the user's past rows does worse on the future than the posterior). Values go
back to objective units (rmse = sqrt(mse), ...) with an 80% interval (log-normal, moment-matched)
and an approximate chance of being the best (independent-Gaussian Monte Carlo).

**Mixture.** Among the top ``top_k`` models, the simplex weights minimise the posterior-expected
squared error of the weighted average prediction against the task labels,
``sum_i w_i mean_t (y_i - sum_j v_j f_j(X_i))^2`` (a small QP, :func:`learnware_core.simplex.simplex_qp`)
-- a Bayesian average over where the user sits on the island. For classification the weights are a
softmax of the estimated losses (temperature: their median uncertainty) and the mixture is a
weighted vote. Its expected metric is computed like a single model's.

**Anchors.** :func:`select_anchors` runs k-medoids (BUILD + SWAP) on the behaviour distance
between models: root-mean-square prediction difference (disagreement rate for classification)
over all herded samples, a distance in the island's function space. Medoids cover the island's
clusters of behaviour and are never outliers (an outlying model is far from everyone, so its loss
says little about *where* the user is). :func:`next_anchors` picks further anchors to tell apart
the tasks the user may still be, where it matters: for plausible tasks i, k (posterior weights)
an anchor separates them by ``d_ik = (log mu_ia - log mu_ka)^2 / (V_ia + V_ka)`` in the
likelihood's own terms; the Bhattacharyya bound ``exp(-sum d_ik / 8)`` on confusing them, weighted
by ``w_i w_k`` and by the regret of acting on the wrong one (the best model of one task used on
the other; zero when both share their best model), is minimised greedily. Three rounds (e.g.
8 + 3 + 3 anchors) are the design maximum; :attr:`Localization.confident` says when another round
is unlikely to change the pick.

What to expect: on an island of well separated regimes a user with 10 rows is placed in its
regime almost always (tests/test_anchors.py). On txhousing (benchmarks/anchor_bench.py) the
cities are not separable from a few past rows -- even every learnware scored on all of a user's
past rows predicts its future ranking poorly -- so the posterior stays broad (about 20 of 32
tasks), the pick is mostly the island's most central learnware, and the mixture (an average of
the top five) is the better recommendation. Over many user splits the evidence from past rows
moves the pick slightly below that central learnware on average (with random rather than future
test rows it moves it above); the figures are in docs/RESULTS.md ("Anchors").

Assumptions: the user's task is close to one of the island's tasks or a blend of them; herded
samples cover each developer's input region; the user's label noise adds a constant to all its
losses; anchors are measured on the user's rows *as given* (past rows when it forecasts the
future: a shift between them is not modelled, only absorbed by the wide posterior).

Cost and scaling (N learnwares, t herded samples each, m anchors): building herds N times,
makes N predict calls on N t rows and O(N^2 t) metric evaluations, plus O(N^3 t) flops (matrix
products) for the pairwise behaviour distances; about half of a build is herding (pass
``herded=`` to reuse samples stored at publish time).
:func:`add_learnware` / :func:`remove_learnware` update a profile in O(N^2 t) (the new model on
every task, every model on the new task, one task's share of the distances) and give the same
profile as a rebuild. :func:`localize` is O(N^2 (t + m)) and :func:`next_anchors` O(N^3).
Measured times are in docs/RESULTS.md ("Anchors"). The market bounds N: a profile covers at most
``max_profile_learnwares`` learnwares of an island (market_server/profiles.py).

Pure numeric: no I/O, no Flask. Learnwares come in as ``(id, model, z, beta, gamma, scales)``
tuples, dicts with those keys, or objects with ``id``, ``model`` and ``spec`` (with ``z``,
``beta``, ``gamma``, ``scales``); models need ``predict``.
"""
from __future__ import annotations

import math
import zlib
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from learnware_core.metrics import CLASSIFICATION_METRICS, REGRESSION_METRICS, check_metric, evaluate
from learnware_core.simplex import simplex_qp
from protocol.objectives import OBJECTIVE_TABLE

__all__ = [
    "IslandProfile", "RankedLearnware", "Mixture", "Localization",
    "build_island_profile", "add_learnware", "remove_learnware", "reorder_profile",
    "ModelFailure",
    "select_anchors", "localize", "next_anchors",
    "to_loss", "from_loss", "ReportPrior", "report_prior", "coverage_anchors",
]

# Variance multiplier for the *differential* sampling noise between anchors measured on the same
# rows (their errors are strongly correlated, so differences are less noisy than levels).
_DIFFERENTIAL = 0.5
# Relative sampling variance of a metric's loss-scale value measured on one row (times level^2).
# (mae is used squared: var(mae^2) ~ 4 mae^2 var(mae), var(|e|) = (pi/2 - 1) E|e|^2, Gaussian e)
_REL_VAR_PER_ROW = {"rmse": 2.0, "mse": 2.0, "r2": 2.0, "mae": 4.0 * (math.pi / 2 - 1)}
_Z80 = 1.2815515655446004


# ----------------------------------------------------------------------------------------------
# loss scale
def to_loss(metric: str, value):
    """Map metric values to the loss scale g on which label noise adds a constant: rmse^2 (= mse)
    and mae^2 (for Gaussian errors mae^2 = (2/pi) mse, so noise adds to it too: mae itself is
    sub-additive), mse, 1 - r2, 1 - accuracy, error, 1 - f1."""
    check_metric(metric)
    v = np.asarray(value, dtype=float)
    if metric in ("rmse", "mae"):
        out = v ** 2
    elif metric in ("mse", "error"):
        out = v
    else:  # r2, accuracy, f1, f1_binary: higher is better, bounded by 1
        out = 1.0 - v
    return out if out.ndim else float(out)


def from_loss(metric: str, loss):
    """Inverse of :func:`to_loss` (negative losses are clipped to 0 where a loss cannot be < 0)."""
    check_metric(metric)
    g = np.asarray(loss, dtype=float)
    if metric in ("rmse", "mae"):
        out = np.sqrt(np.maximum(g, 0.0))
    elif metric in ("mse", "error"):
        out = np.maximum(g, 0.0)
    elif metric == "r2":
        out = 1.0 - np.maximum(g, 0.0)
    else:
        out = 1.0 - np.clip(g, 0.0, 1.0)
    return out if out.ndim else float(out)


def _sampling_var(metric: str, level, n_rows: int):
    """Variance of a loss-scale value measured on ``n_rows`` rows, at loss ``level`` (array ok)."""
    level = np.maximum(np.asarray(level, dtype=float), 1e-12)
    if metric in _REL_VAR_PER_ROW:
        return _REL_VAR_PER_ROW[metric] * level ** 2 / n_rows
    # error rate / 1 - f1: binomial, with a pseudo-count so a perfect score is not certain
    eps = 0.5 / (n_rows + 1)
    p = np.clip(level, eps, 1 - eps)
    mult = 1.0 if metric in ("accuracy", "error") else 1.5
    return mult * p * (1 - p) / n_rows


# ----------------------------------------------------------------------------------------------
# profile
@dataclass
class IslandProfile:
    """Everything localisation needs about an island; built by :func:`build_island_profile`.

    ``preds[i, j]``: predictions of model j on ``herded[i]`` (samples herded from spec i; class
    codes into ``classes`` for classification); ``consensus[i]``: weights of the models in task i's
    pseudo-labels ``pseudo[i]``; ``metric[i, j]``: the objective of model j on task i against
    those labels (the matrix P); ``loss = to_loss(objective, metric)``; ``behaviour[j, k]``: the
    behaviour distance between models j and k over all herded samples."""

    ids: list[str]
    objective: str
    task_type: str
    n_herd: int
    random_state: int
    herded: list[np.ndarray]
    preds: np.ndarray
    metric: np.ndarray
    loss: np.ndarray
    behaviour: np.ndarray
    models: dict[str, Any]
    classes: list = field(default_factory=list)
    pair_sums: np.ndarray | None = None  # sum over herded points of squared diffs / disagreements
    bandwidth: float = 2.0
    consensus: np.ndarray | None = None  # (N, N) weights of the models in each task's labels
    pseudo: np.ndarray | None = None     # (N, t) consensus pseudo-labels of each task
    cache: dict = field(default_factory=dict, repr=False)  # derived values, reset on updates

    @property
    def n(self) -> int:
        return len(self.ids)

    def index(self, lw_id: str) -> int:
        try:
            return self.ids.index(lw_id)
        except ValueError:
            raise ValueError(f"unknown learnware id {lw_id!r} in this island profile") from None


def _scales(s):
    return None if s is None else np.asarray(s, dtype=float)


def _unpack(lw) -> tuple[str, Any, np.ndarray, np.ndarray, float, np.ndarray | None]:
    if isinstance(lw, dict):
        try:
            return (str(lw["id"]), lw["model"], np.asarray(lw["z"], float),
                    np.asarray(lw["beta"], float), float(lw["gamma"]), _scales(lw.get("scales")))
        except KeyError as exc:
            raise ValueError(f"learnware dict lacks key {exc}") from None
    if isinstance(lw, (tuple, list)):
        if len(lw) != 6:
            raise ValueError("a learnware tuple is (id, model, z, beta, gamma, scales)")
        i, m, z, b, g, s = lw
        return str(i), m, np.asarray(z, float), np.asarray(b, float), float(g), _scales(s)
    spec = getattr(lw, "spec", None)
    if spec is None or not hasattr(lw, "model") or not hasattr(lw, "id"):
        raise ValueError("a learnware must be a tuple, a dict or an object with id, model and spec")
    return (str(lw.id), lw.model, np.asarray(spec.z, float), np.asarray(spec.beta, float),
            float(spec.gamma), _scales(getattr(spec, "scales", None)))


def _default_herd():
    from learnware_core.kernels import herd

    def herd_fn(z, beta, gamma, scales, t, random_state=0):
        # 8 candidates per sample: herding quality (MMD) is that of the default pool, at half cost
        return herd(z, beta, gamma, scales, t, random_state=random_state,
                    n_candidates=max(8 * int(t), 256))
    return herd_fn


def _herd_one(herd_fn, lw_id, z, beta, gamma, scales, t, random_state, cache) -> np.ndarray:
    if cache is not None and lw_id in cache:
        X = np.asarray(cache[lw_id], dtype=float)
    else:
        X = np.asarray(herd_fn(z, beta, gamma, scales, t,
                               random_state=_seed(random_state, lw_id)), dtype=float)
    if X.ndim != 2 or X.shape[0] != t or not np.isfinite(X).all():
        raise ValueError(f"herded samples of learnware {lw_id!r} have shape {X.shape}, "
                         f"expected ({t}, d) and finite")
    return X


def _seed(random_state: int, lw_id: str) -> int:
    return (int(random_state) * 1_000_003 + zlib.crc32(lw_id.encode("utf-8"))) % (2 ** 31 - 1)


class ModelFailure(ValueError):
    """Learnware ``lw_id`` cannot take part in a profile: its model failed (or overran its
    budget) on herded samples, or predicted something unusable."""

    def __init__(self, lw_id: str, message: str):
        super().__init__(message)
        self.lw_id = lw_id


def _predict(model, X: np.ndarray, lw_id: str, task_type: str) -> np.ndarray:
    """One model on rows X: one value per row; finite numbers for regression."""
    try:
        p = np.asarray(model.predict(X))
    except Exception as exc:  # a model that cannot predict herded samples is unusable here
        raise ModelFailure(lw_id, f"model of learnware {lw_id!r} failed to predict: "
                                  f"{exc}") from exc
    if p.ndim == 2 and p.shape[1] == 1:
        p = p[:, 0]
    if p.shape != (X.shape[0],):
        raise ModelFailure(lw_id, f"model of learnware {lw_id!r} returned predictions of "
                                  f"shape {p.shape}")
    if task_type == "regression":
        try:
            p = p.astype(float)
        except (TypeError, ValueError) as exc:
            raise ModelFailure(lw_id, f"regression models must predict numbers; learnware "
                                      f"{lw_id!r}: {exc}") from exc
        if not np.isfinite(p).all():
            raise ModelFailure(lw_id, f"model of learnware {lw_id!r} predicted NaN or Inf on "
                                      f"herded samples")
    return p


def _encode_labels(p: np.ndarray, classes: list, lookup: dict) -> np.ndarray:
    out = np.empty(p.shape[0], dtype=np.int64)
    for t, lab in enumerate(p.tolist()):
        code = lookup.get(lab)
        if code is None:
            code = lookup[lab] = len(classes)
            classes.append(lab)
        out[t] = code
    return out


def _task_losses(objective: str, task_type: str, y: np.ndarray, F: np.ndarray,
                 classes: list) -> np.ndarray:
    """Metric of every row of F (m x t predictions) against pseudo-labels y (t,)."""
    if task_type == "regression":
        err = F - y[None, :]
        if objective == "rmse":
            return np.sqrt(np.mean(err ** 2, axis=1))
        if objective == "mse":
            return np.mean(err ** 2, axis=1)
        if objective == "mae":
            return np.mean(np.abs(err), axis=1)
        if objective == "r2":
            sse = np.sum(err ** 2, axis=1)
            sst = float(np.sum((y - y.mean()) ** 2))
            if sst <= 0:
                return np.where(sse <= 0, 1.0, 0.0)
            return 1.0 - sse / sst
    else:
        if objective == "accuracy":
            return np.mean(F == y[None, :], axis=1)
        if objective == "error":
            return 1.0 - np.mean(F == y[None, :], axis=1)
        lab = np.asarray(classes, dtype=object)
        return np.array([evaluate(objective, lab[y], lab[row]) for row in F])
    return np.array([evaluate(objective, y, row) for row in F])


def _pair_sums_of_task(F_i: np.ndarray, task_type: str) -> np.ndarray:
    """Sum over the herded points of one task of squared differences (or disagreements)."""
    if task_type == "regression":
        sq = np.sum(F_i ** 2, axis=1)
        out = np.maximum(sq[:, None] + sq[None, :] - 2.0 * (F_i @ F_i.T), 0.0)
        np.fill_diagonal(out, 0.0)  # exact zeros, not rounding residue of the Gram trick
        return out
    agree = np.zeros((F_i.shape[0], F_i.shape[0]))
    for c in np.unique(F_i):
        onehot = (F_i == c).astype(float)
        agree += onehot @ onehot.T
    return F_i.shape[1] - agree


def _behaviour_from_sums(pair_sums: np.ndarray, n_points: int, task_type: str) -> np.ndarray:
    d = pair_sums / max(n_points, 1)
    return np.sqrt(d) if task_type == "regression" else d


def _each_or_leave_out(items: list, compute: Callable, failure: type,
                       on_failure: Callable | None) -> tuple[list[int], list]:
    """(positions kept, results) of ``compute`` over ``items`` (tuples led by the learnware id):
    an item whose computation raises ``failure`` is left out and reported to ``on_failure``, or,
    without one, the error is raised."""
    kept, out = [], []
    for j, it in enumerate(items):
        try:
            out.append(compute(it))
            kept.append(j)
        except failure as exc:
            if on_failure is None:
                raise
            on_failure(it[0], exc)
    return kept, out


def build_island_profile(learnwares: Iterable, objective: str, task_type: str, n_herd: int = 64,
                         random_state: int = 0,
                         herd: Callable[..., np.ndarray] | None = None,
                         bandwidth: float = 2.0,
                         herded: dict[str, np.ndarray] | None = None,
                         on_failure: Callable[[str, Exception], None] | None = None
                         ) -> IslandProfile:
    """Build the task x model profile of an island.

    ``learnwares``: iterable of ``(id, model, z, beta, gamma, scales)`` (or dicts / objects, see the
    module docstring). ``objective``: a name of :data:`learnware_core.metrics.METRICS` that fits
    ``task_type`` ("regression" or "classification"). ``n_herd`` samples are herded per learnware
    (seeded by ``random_state`` and the learnware id, so a profile updated incrementally equals a
    rebuilt one). ``herd`` defaults to :func:`learnware_core.kernels.herd`. A learnware whose samples
    or model fail raises :class:`ModelFailure`; with ``on_failure`` it is left out instead
    (task and model) and ``on_failure(id, error)`` is told."""
    check_metric(objective)
    if task_type not in ("regression", "classification"):
        raise ValueError(f"task_type must be 'regression' or 'classification', got {task_type!r}")
    if task_type == "regression" and objective not in REGRESSION_METRICS:
        raise ValueError(f"objective {objective!r} is not a regression metric")
    if task_type == "classification" and objective not in CLASSIFICATION_METRICS:
        raise ValueError(f"objective {objective!r} is not a classification metric")
    if int(n_herd) < 2:
        raise ValueError("n_herd must be at least 2")
    herd_fn = herd if herd is not None else _default_herd()
    items = [_unpack(lw) for lw in learnwares]
    ids = [it[0] for it in items]
    if len(set(ids)) != len(ids):
        raise ValueError("learnware ids must be unique")
    if not items:
        raise ValueError("an island profile needs at least one learnware")
    t = int(n_herd)
    cache = herded
    pos, herded = _each_or_leave_out(
        items, lambda it: _herd_one(herd_fn, it[0], *it[2:], t, random_state, cache),
        ValueError, on_failure)
    kept = [items[j] for j in pos]
    if not kept:
        raise ValueError("no learnware of the island could take part in its profile")
    d = herded[0].shape[1]
    if any(X.shape[1] != d for X in herded):
        raise ValueError("all learnwares of an island must share the feature dimension")
    allX = np.vstack(herded)
    ok, raw = _each_or_leave_out(  # model j on every task's points
        kept, lambda it: _predict(it[1], allX, it[0], task_type), ModelFailure, on_failure)
    if not ok:
        raise ValueError("no model of the island could predict on its herded samples")
    if len(ok) < len(kept):  # a failed model leaves with its task (its rows of every model)
        rows = np.concatenate([np.arange(j * t, (j + 1) * t) for j in ok])
        raw = [r[rows] for r in raw]
        kept, herded = [kept[j] for j in ok], [herded[j] for j in ok]
    items, ids, N = kept, [it[0] for it in kept], len(kept)
    classes: list = []
    lookup: dict = {}
    if task_type == "regression":
        Fj = np.stack(raw)
    else:
        Fj = np.stack([_encode_labels(r, classes, lookup) for r in raw])
    preds = Fj.reshape(N, N, t).transpose(1, 0, 2).copy()  # preds[i, j] = model j on task i
    profile = IslandProfile(ids=ids, objective=objective, task_type=task_type, n_herd=t,
                            random_state=int(random_state), herded=herded, preds=preds,
                            metric=np.zeros((N, N)), loss=np.zeros((N, N)),
                            behaviour=np.zeros((N, N)),
                            models={it[0]: it[1] for it in items}, classes=classes,
                            bandwidth=float(bandwidth))
    _recompute_matrices(profile)
    return profile


def _consensus_weights(raw_loss: np.ndarray, bandwidth: float) -> np.ndarray:
    """A[i, k]: weight of model k in the pseudo-label of task i (rows sum to 1).

    ``A[i, k] ∝ exp(-D[i, k] / h_i)`` with D the raw loss of model k against model i on task i's
    samples and ``h_i = bandwidth * min_{k != i} D[i, k]``: models that agree with model i on its
    own region about as well as its nearest neighbour does share in the label; models of other
    behaviour get (numerically) nothing. ``bandwidth = 0`` gives the plain own-model labels."""
    N = raw_loss.shape[0]
    if bandwidth <= 0 or N < 2:
        return np.eye(N)
    D = np.maximum(raw_loss, 0.0)
    off = D + np.diag(np.full(N, np.inf))
    scale = float(np.median(D[np.isfinite(off)])) if N > 1 else 1.0
    h = bandwidth * np.maximum(off.min(axis=1), 1e-9 * max(scale, 1e-300) + 1e-300)
    logits = -(D - np.diag(np.diag(D))) / h[:, None]
    logits -= logits.max(axis=1, keepdims=True)
    A = np.exp(logits)
    return A / A.sum(axis=1, keepdims=True)


def _pseudo_labels(profile: IslandProfile, A: np.ndarray) -> np.ndarray:
    """Consensus labels of every task's herded samples: weighted mean (regression) or weighted
    vote (classification, class codes) of the models' predictions with weights ``A[i]``."""
    F = profile.preds
    if profile.task_type == "regression":
        return np.einsum("ik,ikt->it", A, F)
    N, _, t = F.shape
    out = np.empty((N, t), dtype=np.int64)
    for i in range(N):
        votes = np.zeros((max(len(profile.classes), 1), t))
        for k in np.nonzero(A[i] > 1e-12)[0]:
            votes[F[i, k], np.arange(t)] += A[i, k]
        out[i] = votes.argmax(axis=0)
    return out


def _recompute_matrices(profile: IslandProfile) -> None:
    """metric/loss/pseudo-labels from ``preds`` (O(N^2 t)); behaviour from ``pair_sums``."""
    N = profile.n
    own = np.empty((N, N))
    for i in range(N):
        own[i] = _task_losses(profile.objective, profile.task_type, profile.preds[i, i],
                              profile.preds[i], profile.classes)
    raw = np.asarray(to_loss(profile.objective, own), dtype=float).reshape(N, N)
    profile.consensus = _consensus_weights(raw, profile.bandwidth)
    profile.pseudo = _pseudo_labels(profile, profile.consensus)
    for i in range(N):
        profile.metric[i] = _task_losses(profile.objective, profile.task_type, profile.pseudo[i],
                                         profile.preds[i], profile.classes)
    profile.loss = np.asarray(to_loss(profile.objective, profile.metric),
                              dtype=float).reshape(N, N)
    if profile.pair_sums is None:
        profile.pair_sums = sum(_pair_sums_of_task(profile.preds[i], profile.task_type)
                                for i in range(N))
    profile.behaviour = _behaviour_from_sums(profile.pair_sums, N * profile.n_herd,
                                             profile.task_type)


def add_learnware(profile: IslandProfile, learnware, herd: Callable | None = None,
                  herded: np.ndarray | None = None) -> IslandProfile:
    """A new profile with one more learnware, in O(N^2 t) (same result as a rebuild)."""
    lw_id, model, z, beta, gamma, scales = _unpack(learnware)
    if lw_id in profile.ids:
        raise ValueError(f"learnware {lw_id!r} is already in the profile")
    herd_fn = herd if herd is not None else _default_herd()
    t, N = profile.n_herd, profile.n
    X = _herd_one(herd_fn, lw_id, z, beta, gamma, scales, t, profile.random_state,
                  None if herded is None else {lw_id: herded})
    if X.shape[1] != profile.herded[0].shape[1]:
        raise ValueError(f"learnware {lw_id!r} has {X.shape[1]} features, the island "
                         f"{profile.herded[0].shape[1]}")
    classes = list(profile.classes)
    lookup = {c: k for k, c in enumerate(classes)}
    # the new model on every existing task, every existing model on the new task
    allX = np.vstack(profile.herded + [X])
    new_col = _predict(model, allX, lw_id, profile.task_type)
    new_row = [_predict(profile.models[j], X, j, profile.task_type) for j in profile.ids]
    if profile.task_type == "regression":
        dtype = float
    else:
        new_col = _encode_labels(new_col, classes, lookup)
        new_row = [_encode_labels(r, classes, lookup) for r in new_row]
        dtype = np.int64
    preds = np.zeros((N + 1, N + 1, t), dtype=dtype)
    preds[:N, :N] = profile.preds
    preds[:, N] = new_col.reshape(N + 1, t)
    preds[N, :N] = np.stack(new_row)
    # pairwise sums: existing tasks gain the new model's column, and the new task adds its share
    old = profile.pair_sums
    sums = np.zeros((N + 1, N + 1))
    sums[:N, :N] = old
    col = np.zeros(N + 1)
    for i in range(N):
        Fi = preds[i]
        if profile.task_type == "regression":
            col += np.sum((Fi - Fi[N][None, :]) ** 2, axis=1)
        else:
            col += np.sum(Fi != Fi[N][None, :], axis=1)
    sums[:, N] = col
    sums[N, :] = col
    sums += _pair_sums_of_task(preds[N], profile.task_type)
    metric = np.zeros((N + 1, N + 1))
    metric[:N, :N] = profile.metric
    new = replace(profile, ids=profile.ids + [lw_id], herded=profile.herded + [X], preds=preds,
                  metric=metric, models={**profile.models, lw_id: model}, classes=classes,
                  pair_sums=sums, cache={})
    # every task's consensus label may change with a new model: recompute all rows, O(N^2 t)
    _recompute_matrices(new)
    return new


def remove_learnware(profile: IslandProfile, lw_id: str) -> IslandProfile:
    """A new profile without ``lw_id``, in O(N^2 t)."""
    k = profile.index(lw_id)
    keep = [i for i in range(profile.n) if i != k]
    sums = profile.pair_sums - _pair_sums_of_task(profile.preds[k], profile.task_type)
    sums = np.maximum(sums[np.ix_(keep, keep)], 0.0)
    new = replace(profile, ids=[profile.ids[i] for i in keep],
                  herded=[profile.herded[i] for i in keep],
                  preds=profile.preds[np.ix_(keep, keep)].copy(),
                  metric=profile.metric[np.ix_(keep, keep)].copy(),
                  models={i: m for i, m in profile.models.items() if i != lw_id},
                  pair_sums=sums, cache={})
    _recompute_matrices(new)
    return new


def reorder_profile(profile: IslandProfile, ids: Sequence[str]) -> IslandProfile:
    """The same profile with its learnwares in the order ``ids`` (a permutation of its ids):
    every matrix is permuted, nothing is recomputed."""
    order = [profile.index(i) for i in ids]
    if len(order) != profile.n or len(set(order)) != profile.n:
        raise ValueError("reorder_profile needs a permutation of the profile's ids")
    if order == list(range(profile.n)):
        return profile
    ix = np.ix_(order, order)
    return replace(profile, ids=[profile.ids[i] for i in order],
                   herded=[profile.herded[i] for i in order], preds=profile.preds[ix].copy(),
                   metric=profile.metric[ix].copy(), loss=profile.loss[ix].copy(),
                   behaviour=profile.behaviour[ix].copy(), pair_sums=profile.pair_sums[ix].copy(),
                   consensus=profile.consensus[ix].copy(), pseudo=profile.pseudo[order].copy(),
                   cache={})


# ----------------------------------------------------------------------------------------------
# anchors
def select_anchors(profile: IslandProfile, max_anchors: int = 8, exclude: Iterable[str] = ()
                   ) -> list[str]:
    """k-medoids (BUILD + swap) on the behaviour distance; medoids are never in ``exclude``.

    Returns at most ``max_anchors`` distinct ids (BUILD order, a swapped-in medoid taking the
    place of the one it replaced). Deterministic."""
    excl = set(exclude)
    for e in excl:
        profile.index(e)  # unknown ids are an error, not silently ignored
    cand = [i for i, lw_id in enumerate(profile.ids) if lw_id not in excl]
    k = min(int(max_anchors), len(cand))
    if k <= 0:
        return []
    D = profile.behaviour
    cand_arr = np.array(cand)
    # BUILD: greedily add the candidate that most reduces the total distance to the nearest medoid
    nearest = np.full(profile.n, np.inf)
    medoids: list[int] = []
    for _ in range(k):
        costs = []
        for c in cand_arr:
            if c in medoids:
                costs.append(np.inf)
                continue
            costs.append(np.minimum(nearest, D[:, c]).sum())
        best = int(cand_arr[int(np.argmin(costs))])
        medoids.append(best)
        nearest = np.minimum(nearest, D[:, best])
    # SWAP: best improving (medoid, non-medoid) exchange until none improves
    def total(meds):
        return D[:, meds].min(axis=1).sum()

    current = total(medoids)
    for _ in range(50):
        best_gain, best_swap = 1e-12 * max(current, 1.0), None
        for pos in range(k):
            others = medoids[:pos] + medoids[pos + 1:]
            base = D[:, others].min(axis=1) if others else np.full(profile.n, np.inf)
            for c in cand_arr:
                if c in medoids:
                    continue
                gain = current - np.minimum(base, D[:, c]).sum()
                if gain > best_gain:
                    best_gain, best_swap = gain, (pos, int(c))
        if best_swap is None:
            break
        medoids[best_swap[0]] = best_swap[1]
        current = total(medoids)
    return [profile.ids[m] for m in medoids]


# ----------------------------------------------------------------------------------------------
# localisation
@dataclass
class RankedLearnware:
    id: str
    estimate: float          # estimated objective on the user's task
    low: float               # 80% interval, objective units
    high: float
    sd: float                # standard deviation on the loss scale
    p_best: float            # approximate probability of being the best learnware
    measured: float | None   # the user's own measurement when this learnware was an anchor

    def to_dict(self) -> dict:
        return {"id": self.id, "estimate": self.estimate, "low": self.low, "high": self.high,
                "sd": self.sd, "p_best": self.p_best, "measured": self.measured}


@dataclass
class Mixture:
    ids: list[str]
    weights: list[float]
    expected: float
    low: float
    high: float

    def to_dict(self) -> dict:
        return {"ids": self.ids, "weights": self.weights, "expected": self.expected,
                "low": self.low, "high": self.high}


@dataclass
class Localization:
    objective: str
    ranking: list[RankedLearnware]
    mixture: Mixture
    task_weights: dict[str, float]    # posterior over "which island task the user resembles"
    effective_tasks: float            # 1 / sum(w^2): how spread the posterior is
    noise_scale: float                # >1 when the user fits no island task well
    confident: bool                   # top p_best >= 0.5: further rounds unlikely to change much
    summary: str
    anchors: list[str] = field(default_factory=list)
    n_rows: int = 0
    # the posterior this was computed from, for next_anchors in the same round (not sent)
    posterior: "_Posterior | None" = field(default=None, repr=False, compare=False)

    @property
    def best(self) -> RankedLearnware:
        return self.ranking[0]

    def to_dict(self) -> dict:
        return {"objective": self.objective, "ranking": [r.to_dict() for r in self.ranking],
                "mixture": self.mixture.to_dict(), "task_weights": self.task_weights,
                "effective_tasks": self.effective_tasks, "noise_scale": self.noise_scale,
                "confident": self.confident, "summary": self.summary,
                "anchors": list(self.anchors), "n_rows": self.n_rows}


_C_GRID = 33


def _offset_grid(g_obs: np.ndarray) -> np.ndarray:
    top = max(float(np.max(g_obs)), 1e-12)
    return np.concatenate([[0.0], top * np.geomspace(1e-3, 1.0, _C_GRID - 1)])


def _fit_tasks(L_A: np.ndarray, g_obs: np.ndarray, phi: float, rel_var: np.ndarray | float,
               tau2: float, grid: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fit every task (rows of ``L_A``, (..., N, m)) to the observed losses ``g_obs`` (..., 1, m)
    on the log scale log(g + phi), with a per-task offset c >= 0 chosen on ``grid``.

    Residual variance of an anchor: ``rel_var(mu) + tau2`` where ``rel_var`` is a callable of the
    predicted loss mu (sampling noise relative to mu^2) or a constant. Returns (c, negative
    log-likelihood, standardised sum of squares) per task."""
    mu = L_A[..., None, :] + grid[:, None]                  # (..., N, G, m)
    e = np.log(g_obs[..., None, :] + phi) - np.log(mu + phi)
    V = (rel_var(mu) if callable(rel_var) else rel_var) + tau2
    V = np.maximum(V, 1e-12)
    q = e ** 2 / V
    nll = 0.5 * np.sum(q + np.log(V), axis=-1)                # (..., N, G)
    best = np.argmin(nll, axis=-1)
    take = lambda a: np.take_along_axis(a, best[..., None], axis=-1)[..., 0]  # noqa: E731
    return grid[best], take(nll), take(np.sum(q, axis=-1))


def _floor(L: np.ndarray) -> float:
    """phi: a loss small against the island's typical loss (keeps log(0 + phi) finite)."""
    off = L[~np.eye(L.shape[0], dtype=bool)] if L.shape[0] > 1 else L.reshape(-1)
    med = float(np.median(off)) if off.size else 0.0
    return max(0.05 * med, 1e-12)


def _mismatch_var(L: np.ndarray, A: list[int], phi: float) -> float:
    """tau^2: island mismatch on the log scale. Each task, treated as a noise-free user, is fitted
    by its best *other* task (offset on a grid, least squares on log(loss + phi)); tau^2 is the
    median residual variance per degree of freedom. One (N, m) x (m, N G) product."""
    N, m = L.shape[0], len(A)
    if N < 2:
        return 1e-4
    L_A = L[:, A]
    grid = np.concatenate([[0.0], max(float(L_A.max()), 1e-12) * np.geomspace(1e-3, 1.0, 16)])
    lo = np.log(L_A + phi)                                       # pseudo-users (N, m)
    lm = np.log(L_A[:, None, :] + grid[None, :, None] + phi)     # tasks x offsets (N, G, m)
    lm2 = lm.reshape(-1, m)
    S = (np.sum(lo ** 2, axis=1)[:, None] - 2.0 * lo @ lm2.T
         + np.sum(lm2 ** 2, axis=1)[None, :]).reshape(N, N, -1).min(axis=2)
    np.fill_diagonal(S, np.inf)
    tau2 = float(np.median(np.maximum(S.min(axis=1), 0.0))) / max(m - 1, 1)
    return max(tau2, 1e-4)


def _cached_mismatch(profile: "IslandProfile", A: list[int], phi: float) -> float:
    key = ("tau2", tuple(sorted(A)))
    if key not in profile.cache:
        profile.cache[key] = _mismatch_var(profile.loss, sorted(A), phi)
    return profile.cache[key]


def _check_observations(profile: IslandProfile, anchor_ids, metric_values, n_rows):
    anchor_ids = [str(a) for a in anchor_ids]
    if not anchor_ids:
        raise ValueError("at least one anchor measurement is needed")
    if len(set(anchor_ids)) != len(anchor_ids):
        raise ValueError("anchor ids must not repeat")
    vals = np.asarray(metric_values, dtype=float).reshape(-1)
    if vals.shape[0] != len(anchor_ids):
        raise ValueError(f"{len(anchor_ids)} anchors but {vals.shape[0]} metric values")
    if not np.isfinite(vals).all():
        raise ValueError("metric values must be finite")
    obj = profile.objective
    lo, hi = OBJECTIVE_TABLE[obj].low, OBJECTIVE_TABLE[obj].high  # the one table of ranges
    if (vals > hi).any():
        raise ValueError(f"{obj} values cannot exceed {hi:g}")
    if (vals < lo).any():
        raise ValueError(f"{obj} values cannot be " + ("negative" if lo == 0 else f"below {lo:g}"))
    if isinstance(n_rows, bool) or int(n_rows) != n_rows or int(n_rows) < 1:
        raise ValueError(f"n_rows must be a positive integer, got {n_rows!r}")
    A = [profile.index(a) for a in anchor_ids]
    return A, vals, int(n_rows)


@dataclass
class _Posterior:
    A: list[int]
    g_obs: np.ndarray
    n: int
    w: np.ndarray            # over tasks
    c: np.ndarray            # offsets per task
    scale: float             # empirical-Bayes inflation of the likelihood variance (>= 1)
    tau2: float              # island mismatch (log scale)
    phi: float
    mean: np.ndarray         # per model, loss scale (fused)
    var: np.ndarray
    factor: np.ndarray | None = None  # per model: what the reports multiplied (loss + phi) by

    def sampling_var(self, metric: str, level) -> np.ndarray:
        return _sampling_var(metric, level, self.n)


def _posterior(profile: IslandProfile, anchor_ids, metric_values, n_rows,
               reports: "ReportPrior | None" = None) -> _Posterior:
    A, vals, n = _check_observations(profile, anchor_ids, metric_values, n_rows)
    L, obj = profile.loss, profile.objective
    g_obs = np.maximum(np.asarray(to_loss(obj, vals), dtype=float).reshape(-1), 0.0)
    phi = _floor(L)
    tau2 = _cached_mismatch(profile, A, phi)

    def rel_var(mu):  # differential sampling noise on the log scale (delta method)
        return _DIFFERENTIAL * _sampling_var(obj, mu, n) / (mu + phi) ** 2

    grid = _offset_grid(g_obs)
    c, nll, q = _fit_tasks(L[:, A], g_obs[None, :], phi, rel_var, tau2, grid)
    m = len(A)
    scale = 1.0
    if m >= 2:  # empirical Bayes: if even the best task fits badly, widen the likelihood
        scale = max(1.0, float(q.min()) / (m - 1))
        if scale > 1.0:
            c, nll, q = _fit_tasks(L[:, A], g_obs[None, :], phi,
                                   lambda mu: scale * rel_var(mu), scale * tau2, grid)
    logw = -(nll - nll.min())
    if reports is not None:  # where earlier users who reported sat on the island
        logw = logw + reports.log_prior
    w = np.exp(logw - logw.max())
    w /= w.sum()
    vec = L + c[:, None]                       # each task's loss vector for the user
    mean = w @ vec
    # spread over tasks + mismatch + the *common* part of the sampling noise: all anchors share
    # the user's n rows, so the level of every loss (the offset c) is only known to s(mu, n)
    var = (w @ (vec - mean[None, :]) ** 2 + tau2 * (mean + phi) ** 2
           + (1.0 - _DIFFERENTIAL) * _sampling_var(obj, mean, n))
    factor = np.ones(profile.n)
    if reports is not None and reports.reporters > 0:  # what real users measured
        own = np.log(np.maximum(mean, 0.0) + phi)
        factor = np.exp(_blend(own, reports.column, reports.blend) - own)
        mean = (mean + phi) * factor - phi
        var = var * factor ** 2
    return _Posterior(A=A, g_obs=g_obs, n=n, w=w, c=c, scale=scale, tau2=tau2, phi=phi,
                      mean=mean, var=var, factor=factor)


def _interval(metric: str, mean: float, sd: float, phi: float) -> tuple[float, float, float]:
    """Estimate and 80% interval in objective units; the loss is treated as log-normal
    (moment-matched on loss + phi), so the interval stays positive and skewed like a loss."""
    m = max(float(mean), 0.0) + phi
    s_log = math.sqrt(math.log1p((float(sd) / m) ** 2))
    a = from_loss(metric, m * math.exp(-_Z80 * s_log) - phi)
    b = from_loss(metric, m * math.exp(_Z80 * s_log) - phi)
    est = from_loss(metric, mean)
    return float(est), float(min(a, b)), float(max(a, b))


def _mixture(profile: IslandProfile, post: _Posterior,
             top: list[int]) -> tuple[np.ndarray, float, float]:
    """Weights over ``top`` and the mixture's expected loss (mean, sd) on the loss scale."""
    w, F = post.w, profile.preds
    tasks = np.nonzero(w > 1e-6 * w.max())[0]
    wt = w[tasks] / w[tasks].sum()
    if profile.task_type == "regression":
        Y = profile.pseudo[tasks]                          # (T, t) consensus labels
        G = F[np.ix_(tasks, top)]                         # (T, K, t)
        t = F.shape[2]
        Q = np.einsum("i,ikt,ilt->kl", wt, G, G) / t
        b = np.einsum("i,ikt,it->k", wt, G, Y) / t
        if post.factor is not None and np.any(post.factor[top] != 1.0):
            # reports say real users see model j's loss times factor_j: scale its errors by
            # sqrt(factor_j) in their second-moment matrix (on the simplex, v'Cv is the
            # objective above up to a constant), so the weights follow the reports too
            yy = float(np.einsum("i,it,it->", wt, Y, Y) / t)
            C = Q - b[:, None] - b[None, :] + yy
            s = np.sqrt(post.factor[top])
            Q, b = s[:, None] * C * s[None, :], np.zeros(len(top))
        v, _ = simplex_qp(Q, b)
        mix = np.einsum("k,ikt->it", v, G)
        per_task = np.array([_task_losses(profile.objective, "regression", Y[r], mix[r:r + 1],
                                          profile.classes)[0] for r in range(len(tasks))])
    else:
        sd = np.sqrt(post.var[top])
        temp = max(float(np.median(sd)), 1e-9)
        v = np.exp(-(post.mean[top] - post.mean[top].min()) / temp)
        v /= v.sum()
        per_task = []
        for i in tasks:
            votes = np.zeros((len(profile.classes), F.shape[2]))
            for weight, j in zip(v, top):
                votes[F[i, j], np.arange(F.shape[2])] += weight
            per_task.append(_task_losses(profile.objective, "classification", profile.pseudo[i],
                                         votes.argmax(axis=0)[None, :], profile.classes)[0])
        per_task = np.array(per_task)
    g = np.asarray(to_loss(profile.objective, per_task), dtype=float) + post.c[tasks]
    mean = float(wt @ g)
    sd = math.sqrt(float(wt @ (g - mean) ** 2) + post.tau2 * (mean + post.phi) ** 2
                   + (1.0 - _DIFFERENTIAL) * float(post.sampling_var(profile.objective, mean)))
    return v, mean, sd


def localize(profile: IslandProfile, anchor_ids: Sequence[str], metric_values: Sequence[float],
             n_rows: int, top_k: int = 5, n_draws: int = 2000, random_state: int = 0,
             reports: "ReportPrior | None" = None) -> Localization:
    """Estimate every learnware's objective on the user's task from the anchors' measured values.

    ``anchor_ids``/``metric_values``: every anchor asked so far and the objective the user measured
    for it (in objective units, e.g. rmse); ``n_rows``: rows the user measured on. Returns the full
    ranking (best first), the recommended mixture of the ``top_k`` best and a readable summary.
    ``reports``: :func:`report_prior` of the island's usage reports (None: the profile alone)."""
    post = _posterior(profile, anchor_ids, metric_values, n_rows, reports)
    obj = profile.objective
    order = np.argsort(post.mean, kind="stable")
    sd = np.sqrt(post.var)
    rng = np.random.default_rng(random_state)
    draws = post.mean[None, :] + sd[None, :] * rng.standard_normal((n_draws, profile.n))
    p_best = np.bincount(draws.argmin(axis=1), minlength=profile.n) / n_draws
    measured = {a: float(v) for a, v in zip(post.A, np.asarray(metric_values, float).reshape(-1))}
    ranking = []
    for j in order:
        est, lo, hi = _interval(obj, post.mean[j], sd[j], post.phi)
        ranking.append(RankedLearnware(id=profile.ids[j], estimate=est, low=lo, high=hi,
                                       sd=float(sd[j]), p_best=float(p_best[j]),
                                       measured=measured.get(int(j))))
    top = [int(j) for j in order[:max(1, min(int(top_k), profile.n))]]
    v, mmean, msd = _mixture(profile, post, top)
    if post.factor is not None:  # the members' correction, weighted as they are mixed
        mmean = (mmean + post.phi) * math.exp(float(v @ np.log(post.factor[top]))) - post.phi
    keep = v > 1e-3
    weights = v[keep] / v[keep].sum()
    mids = [profile.ids[j] for j, k in zip(top, keep) if k]
    est, lo, hi = _interval(obj, mmean, msd, post.phi)
    mixture = Mixture(ids=mids, weights=[float(x) for x in weights], expected=est, low=lo, high=hi)
    eff = float(1.0 / np.sum(post.w ** 2))
    best = ranking[0]
    confident = best.p_best >= 0.5
    summary = (f"best learnware {best.id}: expected {obj} about {best.estimate:.3g} "
               f"(80% range {best.low:.3g}-{best.high:.3g}, chance it is the best "
               f"{best.p_best:.0%}); mixture of {len(mids)}: expected {obj} about {est:.3g} "
               f"({lo:.3g}-{hi:.3g}); measured on {int(n_rows)} rows with {len(post.A)} anchors, "
               f"you resemble about {eff:.1f} of {profile.n} island tasks")
    return Localization(objective=obj, ranking=ranking, mixture=mixture,
                        task_weights={profile.ids[i]: float(post.w[i]) for i in range(profile.n)},
                        effective_tasks=eff, noise_scale=float(post.scale), confident=confident,
                        summary=summary, anchors=[profile.ids[a] for a in post.A],
                        n_rows=post.n, posterior=post)


def next_anchors(profile: IslandProfile, asked_anchor_ids: Sequence[str],
                 metric_values: Sequence[float], n_rows: int, k: int = 3,
                 exclude: Iterable[str] = (), max_tasks: int = 60,
                 posterior: "_Posterior | None" = None) -> list[str]:
    """Up to ``k`` further anchors (never one already asked or excluded) that best separate the
    island tasks the user may still be, weighted by what confusing them would cost.

    Greedy design on a Bhattacharyya bound: two plausible tasks i, k (posterior weights w) are
    told apart by anchor a with separation ``d_ik(a) = (log mu_ia - log mu_ka)^2 / (V_ia + V_ka)``
    (the likelihood's own means and variances); the chance of confusing them after the new anchors
    is bounded by ``exp(-sum_a d_ik(a) / 8)``. We minimise ``sum_{i<k} w_i w_k R_ik
    exp(-sum_a d_ik(a) / 8)`` where the regret ``R_ik`` is the loss of acting on the wrong task
    (the best model for k used on i, and vice versa): pairs of tasks with the same best model need
    no separation. When no plausible pair has any regret left, the unasked models with the most
    posterior spread of their loss are asked instead. ``posterior``: the one
    ``localize(...).posterior`` computed from the same profile and observations (else computed
    here)."""
    if isinstance(k, bool) or int(k) != k or k < 0:
        raise ValueError(f"k must be a non-negative integer, got {k!r}")
    post = (posterior if posterior is not None
            else _posterior(profile, asked_anchor_ids, metric_values, n_rows))
    excl = {profile.index(e) for e in exclude}
    asked = set(post.A)
    pool = np.array([j for j in range(profile.n) if j not in asked and j not in excl], dtype=int)
    k = min(int(k), len(pool))
    if k <= 0:
        return []
    obj, phi, n = profile.objective, post.phi, post.n
    # plausible tasks: the smallest set holding 99.9% of the posterior (at most max_tasks)
    order = np.argsort(-post.w, kind="stable")
    cum = np.cumsum(post.w[order])
    T = order[:max(2, min(int(max_tasks), int(np.searchsorted(cum, 0.999)) + 1))]
    wT = post.w[T]
    mu = profile.loss[np.ix_(T, pool)] + post.c[T, None] + phi          # (|T|, |pool|)
    V = post.scale * (_DIFFERENTIAL * _sampling_var(obj, mu - phi, n) / mu ** 2 + post.tau2)
    logmu = np.log(mu)
    # regret of acting on task k when the user is task i (best model of a task: lowest loss)
    LT = profile.loss[T] + post.c[T, None]
    best = LT.argmin(axis=1)
    R = LT[:, best] - LT[np.arange(len(T)), best][:, None]             # R[i, k] >= 0
    W = np.triu(np.outer(wT, wT) * (R + R.T), 1)
    chosen: list[int] = []
    if W.sum() > 0:
        acc = np.zeros_like(W)
        iu = np.triu_indices(len(T), 1)
        d = (logmu[:, None, :] - logmu[None, :, :]) ** 2 / (V[:, None, :] + V[None, :, :])
        for _ in range(k):
            bound = (W[..., None] * np.exp(-(acc[..., None] + d) / 8.0))[iu].sum(axis=0)
            if chosen:
                bound[chosen] = np.inf
            a = int(np.argmin(bound))
            if not np.isfinite(bound[a]):
                break
            chosen.append(a)
            acc = acc + d[..., a]
    if len(chosen) < k:  # nothing left to separate: ask where the loss is most uncertain
        spread = wT @ (logmu - wT @ logmu) ** 2 / (wT @ V)
        for a in np.argsort(-spread, kind="stable"):
            if int(a) not in chosen:
                chosen.append(int(a))
            if len(chosen) == k:
                break
    return [profile.ids[int(pool[a])] for a in chosen]


# ----------------------------------------------------------------------------------------------
# usage reports: real rows of the task x model matrix
#: pseudo-reports pulling a model's column effect toward the profile's, candidates for the fit
_SHRINK_GRID = (0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0)
#: weight of the reporters' column effects against the user's own posterior, candidates
_BLEND_GRID = (0.0, 0.25, 0.5, 0.75, 1.0)
_FOLDS = 5
#: pseudo-reports when too few reporters to choose by cross-validation
_FALLBACK_SHRINK = 16.0


@dataclass
class ReportPrior:
    """What the island's usage reports say, for :func:`localize`.

    ``column`` (N,): each model's *column effect* on the log loss scale ``log(loss + phi)``,
    estimated from the reporters' real rows (a reporter's level plus a model's effect, see
    :func:`report_prior`), mean zero; ``blend``: the weight it gets against the user's own
    posterior estimate (0: reports ignored, 1: only the reports' ranking, the user's level);
    ``shift`` (N,): how much the reports move each model's column effect away from the
    profile's (> 0: real users measured it worse than the herded pseudo-data predicts; 0 for a
    model nobody reported); ``log_prior`` (N,) over the island's tasks: where reporting users
    were localised, mixed with the uniform prior (uniform by default); ``counts`` (N,) reports
    per model; ``shrink``: the pseudo-reports toward the profile that were chosen; ``cv_error``:
    the held-out squared error (log scale) of the chosen (shrink, blend) predicting reporters'
    values, and ``cv_error_profile`` that of the profile alone (blend 0)."""
    log_prior: np.ndarray
    column: np.ndarray
    blend: float
    shift: np.ndarray
    counts: np.ndarray
    reporters: int
    shrink: float = 0.0
    cv_error: float = float("nan")
    cv_error_profile: float = float("nan")


def _report_matrix(profile: IslandProfile, reports, rows_half: float):
    """Reporters as real rows: ``M[r, j] = log(g_rj + phi)`` (nan where r did not report j),
    their weights ``n / (n + rows_half)``, each one's ids and values, and the island's floor."""
    phi = _floor(profile.loss)
    known = set(profile.ids)
    rows, omegas, raw = [], [], []
    for values, n_rows in reports:
        ids = [i for i in values if i in known]
        if not ids or int(n_rows) < 1:
            continue
        vals = [float(values[i]) for i in ids]
        try:
            A, v, n = _check_observations(profile, ids, vals, int(n_rows))
        except ValueError:
            continue  # a value out of range: that reporter says nothing here
        row = np.full(profile.n, np.nan)
        g = np.maximum(np.asarray(to_loss(profile.objective, v), dtype=float), 0.0)
        row[A] = np.log(g + phi)
        rows.append(row)
        omegas.append(float(n) / (float(n) + rows_half))
        raw.append((ids, vals, n, A))
    M = np.array(rows).reshape(len(rows), profile.n)
    return M, np.array(omegas, dtype=float), raw, phi


def _column_effects(M: np.ndarray, omega: np.ndarray, base: np.ndarray, shrink: float,
                    iters: int = 40) -> tuple[np.ndarray, np.ndarray]:
    """Two-way fit of the observed ``M[r, j] ~ a_r + b_j`` (a_r: reporter r's level, b_j: model
    j's effect), weighted by ``omega``; each b_j is pulled toward ``base_j`` (the profile's
    effect, plus one common offset) by ``shrink`` pseudo-reports, so a model nobody reported
    keeps the profile's value. Alternating least squares; returns (b, a)."""
    obs = ~np.isnan(M)
    W = obs * omega[:, None]
    Mz = np.where(obs, M, 0.0)
    b = base.copy()
    a = np.zeros(M.shape[0])
    wsum_r = np.maximum(W.sum(axis=1), 1e-12)
    for _ in range(iters):
        a = ((Mz - b[None, :]) * W).sum(axis=1) / wsum_r
        off = float(np.sum(W * (Mz - a[:, None] - base[None, :])) / max(W.sum(), 1e-12))
        b = (((Mz - a[:, None]) * W).sum(axis=0) + shrink * (base + off)) / (W.sum(axis=0) + shrink)
    return b, a


def _blend(own_log: np.ndarray, column: np.ndarray, blend: float) -> np.ndarray:
    """A user's log losses with the reports folded in: ``(1 - blend)`` of its own posterior plus
    the model effects ``column``, at the user's own level (the mean over models is kept)."""
    est = (1.0 - blend) * own_log + column
    return est + (own_log.mean() - est.mean())


def report_prior(profile: IslandProfile, reports: Iterable[tuple[dict, int]], *,
                 prior_strength: float = math.inf, shrink: float | None = None,
                 blend: float | None = None, rows_half: float = 20.0,
                 folds: int = _FOLDS) -> ReportPrior:
    """Fold usage reports into what :func:`localize` estimates.

    ``reports``: one ``({learnware_id: metric value}, n_rows)`` per reporting user (its reports
    on this island's learnwares; ids outside the profile are ignored). Each reporter is a real
    row of the task x model matrix, partially observed. Its weight is ``n / (n + rows_half)``
    (more rows, more say; saturating, so that one key claiming 10^9 rows counts as one user).

    **Model.** On the log loss scale ``y_rj = log(g_rj + phi)``, reporter r's value on model j is
    ``(1 - blend) own_rj + a_r + e_j``: ``own_rj`` is what the profile predicts for r from its
    *other* values (r localised like a user whose anchors are the learnwares it reported on),
    ``a_r`` its level, ``e_j`` model j's effect, pulled toward ``blend`` times the profile's
    column effect (its mean loss over the herded tasks) by ``shrink`` pseudo-reports
    (:func:`_column_effects`). ``blend = 0``: the profile localises and the reports correct
    models it misjudges (a model nobody reported is not moved); ``blend = 1``: the reporters'
    ranking of the models replaces the user's own (a population ranking, at the user's level).
    A new user's estimate is ``(1 - blend)`` times its posterior plus ``e`` (:func:`_blend`).

    ``shrink`` and ``blend`` (None: chosen here) are chosen by how well the reporters predict
    each other: reporters are split in ``folds`` folds and each held-out reporter's values are
    predicted one at a time from its other values with ``e`` fitted without its fold; the pair
    with the lowest weighted squared error wins (near-ties: the larger shrink, smaller blend).

    ``log_prior``: where reporting users were localised, ``(sum_r omega_r w_r + prior_strength /
    N) / (sum_r omega_r + prior_strength)``. Off by default (``prior_strength = inf``: uniform):
    on txhousing it moved new users' picks to worse learnwares (docs/RESULTS.md, "Usage
    reports").
    """
    N = profile.n
    M, omega, raw, phi = _report_matrix(profile, reports, rows_half)
    counts = np.zeros(N, dtype=int)
    acc = np.zeros(N)
    base = np.log(profile.loss.mean(axis=0) + phi)  # the profile's column effect
    OWN = M.copy()  # one value alone: predicted by itself (its row level absorbs it anyway)
    for r, ((ids, vals, n, A), om) in enumerate(zip(raw, omega)):
        counts[A] += 1
        if not math.isinf(prior_strength):
            acc += om * _posterior(profile, ids, vals, n).w
        if len(A) >= 2:
            for k in range(len(A)):  # the profile's prediction of each value from the others
                loo = _posterior(profile, ids[:k] + ids[k + 1:], vals[:k] + vals[k + 1:], n)
                OWN[r, A[k]] = math.log(max(loo.mean[A[k]], 0.0) + phi)
    if math.isinf(prior_strength) or not raw:
        prior = np.full(N, 1.0 / N)
    else:
        prior = (acc + prior_strength / N) / (omega.sum() + prior_strength)
    log_prior = np.log(np.maximum(prior, 1e-300))
    if not raw:
        return ReportPrior(log_prior=log_prior, column=np.zeros(N), blend=0.0,
                           shift=np.zeros(N), counts=counts, reporters=0,
                           shrink=float(shrink or 0.0))
    shrinks = _SHRINK_GRID if shrink is None else (float(shrink),)
    blends = _BLEND_GRID if blend is None else (float(blend),)
    err = _cross_validate(M, OWN, omega, base, shrinks, blends, folds)
    if err is None:  # too few reporters with two values to judge: the caller's, else cautious
        s_best = float(shrink) if shrink is not None else _FALLBACK_SHRINK
        b_best = float(blend) if blend is not None else 0.0
        cv, cv0 = float("nan"), float("nan")
    else:
        err, err0 = err
        best = err.min()
        cand = [(-s, bl) for si, s in enumerate(shrinks) for bi, bl in enumerate(blends)
                if err[si, bi] <= best * (1 + 1e-9)]
        ms, b_best = min(cand)
        s_best = -ms
        cv, cv0 = float(best), float(err0)
    e, _ = _column_effects(M - (1.0 - b_best) * OWN, omega, b_best * base, s_best)
    shift = e - b_best * base
    shift = shift - float(np.mean(shift[counts == 0])) if (counts == 0).any() else shift
    shift[counts == 0] = 0.0
    return ReportPrior(log_prior=log_prior, column=e, blend=float(b_best), shift=shift,
                       counts=counts, reporters=len(raw), shrink=float(s_best), cv_error=cv,
                       cv_error_profile=cv0)


def _cross_validate(M, OWN, omega, base, shrinks, blends, folds):
    """Weighted squared error (log scale) of predicting each reporter's values one at a time,
    for every (shrink, blend): ((len(shrinks), len(blends)) array, error of the profile alone),
    or None when fewer than two reporters have two values."""
    R = M.shape[0]
    obs = ~np.isnan(M)
    usable = np.nonzero(obs.sum(axis=1) >= 2)[0]
    if len(usable) < 2:
        return None
    fold_of = np.arange(R) % max(2, min(int(folds), R))
    err = np.zeros((len(shrinks), len(blends)))
    err0 = total = 0.0
    for f in np.unique(fold_of):
        train = fold_of != f
        test = [r for r in usable if fold_of[r] == f]
        if not test or not train.any():
            continue
        for bi, bl in enumerate(blends):
            Z = M - (1.0 - bl) * OWN
            for si, s in enumerate(shrinks):
                e, _ = _column_effects(Z[train], omega[train], bl * base, s)
                for r in test:
                    A = np.nonzero(obs[r])[0]
                    z = Z[r, A] - e[A]                 # r's residuals beyond the model effects
                    level = (z.sum() - z) / (len(A) - 1)  # its level from its other values
                    err[si, bi] += omega[r] * float(np.sum((z - level) ** 2))
        for r in test:
            A = np.nonzero(obs[r])[0]
            d = M[r, A] - OWN[r, A]
            err0 += omega[r] * float(np.sum(d ** 2))
            total += omega[r] * len(A)
    return err / total, err0 / total


def coverage_anchors(profile: IslandProfile, counts: "ReportPrior | np.ndarray | None",
                     k: int, exclude: Iterable[str] = ()) -> list[str]:
    """Up to ``k`` learnwares the reports know least about, never one in ``exclude``
    (``counts``: a :class:`ReportPrior` or its reports per learnware in profile order, None:
    none yet; fewest first, ties: the profile's lower mean loss first): handed to a user beside
    its anchors, so that what it later reports covers the island. Reports can only rank the
    learnwares someone used; without this, every reporter runs the same anchors and the same
    mixture members and the rest of the island stays unreported (docs/RESULTS.md, "Usage
    reports")."""
    if isinstance(k, bool) or int(k) != k or k < 0:
        raise ValueError(f"k must be a non-negative integer, got {k!r}")
    excl = {profile.index(e) for e in exclude}
    counts = getattr(counts, "counts", counts)
    counts = np.zeros(profile.n) if counts is None else np.asarray(counts, dtype=float)
    if counts.shape != (profile.n,):
        raise ValueError(f"counts must have one entry per learnware ({profile.n})")
    order = np.lexsort((profile.loss.mean(axis=0), counts))
    return [profile.ids[int(j)] for j in order if int(j) not in excl][:int(k)]
