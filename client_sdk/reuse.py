"""Reuse learnwares on the user's task: four scikit-learn estimators built from market learnwares.

* :class:`JobSelector` -- no labels: routes every row to the learnware whose RKME specification
  explains it best (a fast classifier trained on points herded from each specification).
* :class:`Averaging` -- no labels: (weighted) mean of the learnwares' outputs.
* :class:`EnsemblePruning` -- a few labels: the sub-ensemble whose average does best, with
  cross-validation deciding whether pruning beats plain averaging at all.
* :class:`FeatureAugment` -- a few labels: the learnwares' outputs become features of a small
  model fitted on the user's rows.

Each is a scikit-learn estimator (``get_params``/``set_params``, ``fit`` returns ``self``,
usable in a ``Pipeline``). Whether it is a classifier or a regressor follows the learnwares'
``semantic["task_type"]``. Inputs are checked at the edge (:class:`~protocol.errors.DataError`
names the problem); learnware models always receive a float64 ndarray.
"""
from __future__ import annotations

import itertools
import numbers
import warnings
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, clone
from sklearn.utils.validation import check_is_fitted

from protocol.errors import ArgumentError, DataError

from .data import as_matrix, feature_names

__all__ = ["JobSelector", "Averaging", "EnsemblePruning", "FeatureAugment"]

CLASSIFICATION = "classification"
REGRESSION = "regression"
_PROBA_FLOOR = 1e-4  # probabilities are clipped here before logs: trees predict hard 0/1


# ------------------------------------------------------------------------------ helpers
def _task_type(lw: Any) -> str:
    semantic = getattr(lw, "semantic", None) or {}
    task = semantic.get("task_type") if isinstance(semantic, dict) else None
    if task is None:
        task = getattr(lw, "task_type", None)
    if task not in (CLASSIFICATION, REGRESSION):
        raise DataError(f"learnware {getattr(lw, 'id', '?')!r} has task_type {task!r}; "
                        f"expected {CLASSIFICATION!r} or {REGRESSION!r}")
    return task


def _declared_classes(lw: Any) -> np.ndarray | None:
    semantic = getattr(lw, "semantic", None) or {}
    classes = semantic.get("classes") if isinstance(semantic, dict) else None
    return None if classes is None else np.asarray(classes)


def _model_classes(lw: Any) -> np.ndarray | None:
    """The labels of the model's predict_proba columns (its ``classes_``, else the declared)."""
    model_classes = getattr(lw.model, "classes_", None)
    if model_classes is not None:
        return np.asarray(model_classes)
    return _declared_classes(lw)


def _union_classes(arrays: list[np.ndarray]) -> np.ndarray:
    try:
        return np.unique(np.concatenate([np.asarray(a).ravel() for a in arrays]))
    except TypeError as exc:
        raise DataError(f"the learnwares' class labels cannot be compared ({exc}); give all "
                        f"learnwares labels of one type") from None


def _n_features_of(lw: Any) -> int | None:
    spec = getattr(lw, "spec", None)
    nf = getattr(spec, "n_features", None)
    if nf is None:
        nf = getattr(lw.model, "n_features_in_", None)
    return None if nf is None else int(nf)


def _columns_for(labels: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """Index of each label in the sorted ``classes`` (labels must all be present)."""
    labels = np.asarray(labels)
    idx = np.searchsorted(classes, labels)
    idx = np.clip(idx, 0, len(classes) - 1)
    if not np.all(classes[idx] == labels):
        unknown = sorted({str(v) for v in labels[classes[idx] != labels]})[:5]
        raise DataError(f"a learnware predicted label(s) {unknown} outside its declared "
                        f"classes {list(classes)}")
    return idx


def _check_y(y: Any, n: int, task: str) -> np.ndarray:
    if y is None:
        raise DataError("this reuser needs labels: call fit(X, y)", field="y")
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y.ravel()
    if y.ndim != 1:
        raise DataError(f"y must be 1-D (one label per row), got shape {y.shape}", field="y")
    if y.shape[0] != n:
        raise DataError(f"X has {n} rows but y has {y.shape[0]} labels", field="y")
    if task == REGRESSION:
        try:
            y = y.astype(np.float64)
        except (TypeError, ValueError):
            raise DataError("regression targets must be numbers", field="y") from None
        if not np.all(np.isfinite(y)):
            raise DataError("y holds NaN or Inf; drop those rows first", field="y")
    else:
        if y.dtype.kind == "f" and not np.all(np.isfinite(y)):
            raise DataError("y holds NaN or Inf; drop those rows first", field="y")
    return y


# -------------------------------------------------------------------------- base class
class _LearnwareReuser(BaseEstimator):
    """Shared plumbing: learnware checks, X checks, aligned predictions, sklearn tags."""

    _requires_y = False

    # -- parameters -> task (also used before fit, e.g. by is_classifier)
    def _task_from_params(self) -> str | None:
        try:
            tasks = {_task_type(lw) for lw in self.learnwares}
        except (TypeError, ValueError, AttributeError):
            return None
        return tasks.pop() if len(tasks) == 1 else None

    def __sklearn_tags__(self):
        from sklearn.utils import ClassifierTags, RegressorTags
        tags = super().__sklearn_tags__()
        task = self._task_from_params()
        if task == CLASSIFICATION:
            tags.estimator_type = "classifier"
            tags.classifier_tags = ClassifierTags()
        elif task == REGRESSION:
            tags.estimator_type = "regressor"
            tags.regressor_tags = RegressorTags()
        tags.target_tags.required = self._requires_y
        return tags

    # -- fit-time checks
    def _check_learnwares(self) -> None:
        lws = self.learnwares
        if isinstance(lws, (str, bytes)) or not hasattr(lws, "__len__") or len(lws) == 0:
            raise ArgumentError("learnwares must be a non-empty list of Learnware objects")
        lws = list(lws)
        for i, lw in enumerate(lws):
            if not hasattr(getattr(lw, "model", None), "predict"):
                raise ArgumentError(f"learnware {i} ({getattr(lw, 'id', '?')!r}) has no model with "
                                    f"a predict method")
        tasks = [_task_type(lw) for lw in lws]
        if len(set(tasks)) > 1:
            raise ArgumentError(f"the learnwares mix task types {sorted(set(tasks))}; reuse "
                                f"learnwares of one task type together")
        self.task_type_ = tasks[0]
        nfs = {nf for nf in (_n_features_of(lw) for lw in lws) if nf is not None}
        if len(nfs) > 1:
            raise ArgumentError(f"the learnwares expect different numbers of features "
                                f"{sorted(nfs)}; they cannot be reused on the same rows")
        self._lw_n_features = nfs.pop() if nfs else None
        self._lws = lws
        if self.task_type_ == CLASSIFICATION:
            per_model = []
            for i, lw in enumerate(lws):
                c = _model_classes(lw)
                if c is None:
                    raise ArgumentError(f"classification learnware {i} ({lw.id!r}) declares no "
                                        f"classes (semantic['classes'] or model.classes_)")
                per_model.append(c)
            declared = [d for d in (_declared_classes(lw) for lw in lws) if d is not None]
            self.classes_ = _union_classes(per_model + declared)
            # column of the union for each of a model's own predict_proba columns
            self._proba_cols = [_columns_for(c, self.classes_) for c in per_model]
        self.n_learnwares_ = len(lws)

    def _check_X(self, X: Any, *, reset: bool) -> np.ndarray:
        if X is None:
            raise DataError("X is required", field="X")
        expected = self._lw_n_features if reset else self.n_features_in_
        arr, names = as_matrix(X, n_features=expected), feature_names(X)
        if arr.shape[0] == 0:
            raise DataError("X has no rows", field="X")
        if reset:
            self.n_features_in_ = arr.shape[1]
            if names is not None:
                self.feature_names_in_ = np.asarray(names, dtype=object)
            elif hasattr(self, "feature_names_in_"):
                del self.feature_names_in_
        return arr

    # -- learnware outputs
    def _lw_predict(self, j: int, X: np.ndarray) -> np.ndarray:
        out = np.asarray(self._lws[j].model.predict(X))
        if self.task_type_ == REGRESSION:
            out = out.astype(np.float64)
            if out.ndim == 2 and out.shape[1] == 1:
                out = out.ravel()
        return out

    def _lw_proba(self, j: int, X: np.ndarray) -> np.ndarray:
        """Learnware j's class probabilities on the union ``classes_`` (one-hot votes when its
        model has no predict_proba)."""
        model = self._lws[j].model
        out = np.zeros((X.shape[0], len(self.classes_)))
        if hasattr(model, "predict_proba"):
            p = np.asarray(model.predict_proba(X), dtype=np.float64)
            cols = self._proba_cols[j]
            if p.ndim != 2 or p.shape[1] != len(cols):
                raise DataError(f"learnware {j} ({self._lws[j].id!r}) returned probabilities of "
                                f"shape {p.shape} for {len(cols)} classes")
            out[:, cols] = p
        else:
            labels = np.asarray(model.predict(X)).ravel()
            out[np.arange(X.shape[0]), _columns_for(labels, self.classes_)] = 1.0
        return out

    def _labelled_rows(self, X: Any, y: Any, need: str) -> tuple[np.ndarray, np.ndarray]:
        """Validated (X, y) for a reuser that learns from labels; at least 2 rows."""
        self._check_learnwares()
        X = self._check_X(X, reset=True)
        y = _check_y(y, X.shape[0], self.task_type_)
        if X.shape[0] < 2:
            raise DataError(f"{type(self).__name__} needs at least 2 labelled rows{need}, got "
                            f"{X.shape[0]}; use Averaging or JobSelector without labels",
                            field="y")
        return X, y

    def _all_outputs(self, X: np.ndarray) -> np.ndarray:
        """(L, n) predictions for regression, (L, n, C) probabilities for classification."""
        if self.task_type_ == REGRESSION:
            return np.stack([self._lw_predict(j, X) for j in range(len(self._lws))])
        return np.stack([self._lw_proba(j, X) for j in range(len(self._lws))])

    def _extend_classes(self, y: np.ndarray, outputs: np.ndarray) -> np.ndarray:
        """Add labels of y that no learnware knows to ``classes_`` (with a warning: no
        learnware can predict them); returns ``outputs`` widened to match."""
        unknown = np.setdiff1d(y, self.classes_)
        if unknown.size == 0:
            return outputs
        warnings.warn(f"labels {sorted(map(str, unknown))[:5]} are not among the learnwares' "
                      f"classes {list(self.classes_)}; no learnware predicts them",
                      UserWarning, stacklevel=3)
        classes = _union_classes([self.classes_, y])
        cols = _columns_for(self.classes_, classes)
        grown = np.zeros(outputs.shape[:2] + (len(classes),))
        grown[:, :, cols] = outputs
        self._proba_cols = [cols[c] for c in self._proba_cols]
        self.classes_ = classes
        return grown

    def _require_classification(self, what: str) -> None:
        check_is_fitted(self, "task_type_")
        if self.task_type_ != CLASSIFICATION:
            raise AttributeError(f"{what} is only available for classification learnwares")

    def score(self, X, y, sample_weight=None) -> float:
        """Accuracy (classification) or R^2 (regression) of ``predict(X)`` against ``y``."""
        from sklearn.metrics import accuracy_score, r2_score
        check_is_fitted(self, "task_type_")
        pred = self.predict(X)
        if self.task_type_ == CLASSIFICATION:
            return float(accuracy_score(y, pred, sample_weight=sample_weight))
        return float(r2_score(y, pred, sample_weight=sample_weight))


def _labels_from_proba(proba: np.ndarray, classes: np.ndarray) -> np.ndarray:
    return classes[np.argmax(proba, axis=1)]


# ---------------------------------------------------------------------------- Averaging
class Averaging(_LearnwareReuser):
    """Weighted mean of the learnwares: probabilities (on the union of their classes) for
    classification, predictions for regression. Needs no labels: the baseline every other
    reuser must beat.

    Parameters
    ----------
    learnwares : list of Learnware
    weights : array-like of shape (n_learnwares,), default=None
        Non-negative weights (normalised to sum to 1); ``None`` weighs all learnwares equally.
    """

    def __init__(self, learnwares, weights=None):
        self.learnwares = learnwares
        self.weights = weights

    def fit(self, X=None, y=None):
        """Check the learnwares (and X's width when given); ``y`` is ignored."""
        self._check_learnwares()
        L = len(self._lws)
        if self.weights is None:
            w = np.full(L, 1.0 / L)
        else:
            w = np.asarray(self.weights, dtype=np.float64).ravel()
            if w.shape[0] != L:
                raise ArgumentError(f"weights has {w.shape[0]} entries for {L} learnwares")
            if not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
                raise ArgumentError("weights must be finite, non-negative and not all zero")
            w = w / w.sum()
        self.weights_ = w
        if X is not None:
            self._check_X(X, reset=True)
        elif self._lw_n_features is not None:
            self.n_features_in_ = self._lw_n_features
        return self

    def _checked(self, X):
        check_is_fitted(self, "weights_")
        return as_matrix(X, n_features=getattr(self, "n_features_in_", None))

    def predict(self, X):
        """Weighted mean prediction (regression) or the class of highest mean probability."""
        X = self._checked(X)
        if self.task_type_ == CLASSIFICATION:
            return _labels_from_proba(self._proba(X), self.classes_)
        used = np.flatnonzero(self.weights_ > 0)
        return sum(self.weights_[j] * self._lw_predict(j, X) for j in used)

    def _proba(self, X):
        used = np.flatnonzero(self.weights_ > 0)
        return sum(self.weights_[j] * self._lw_proba(j, X) for j in used)

    def predict_proba(self, X):
        """Weighted mean of the learnwares' probabilities, columns in ``classes_`` order."""
        self._require_classification("predict_proba")
        return self._proba(self._checked(X))


# ---------------------------------------------------------------------------- JobSelector
class JobSelector(_LearnwareReuser):
    """Route every row to the learnware whose specification explains it best; needs no labels.

    ``fit`` herds ``n_herd`` points from each learnware's RKME specification (a sample that
    follows the distribution the learnware was trained on) and trains a fast classifier to tell
    the learnwares apart; ``predict`` routes all rows with one call of that classifier, then
    calls each learnware once on the rows routed to it. Nothing per row, so 10,000 rows take
    milliseconds rather than minutes.

    Parameters
    ----------
    learnwares : list of Learnware
        Their ``spec`` must be RKME specifications (``.herd(t, random_state)``).
    n_herd : int, default=500
        Points herded per learnware to train the selector.
    selector : estimator or None, default=None
        Classifier trained on (herded points, learnware index). ``None``: quadratic
        discriminant analysis on standardised features (``reg_param=0.1``): each learnware's
        sample is modelled as one Gaussian and rows go to the highest posterior -- optimal for
        Gaussian clusters, robust to unequal spreads, and routes 10,000 rows in ~10 ms. On a
        3-cluster task it matched or beat logistic regression, quadratic-feature logistic
        regression, k-NN and HistGradientBoosting (see ``benchmarks/reuse_bench.py``); pass
        e.g. ``HistGradientBoostingClassifier()`` when a learnware's data is strongly
        multi-modal.
    random_state : int, default=0
        Seeds herding.
    """

    def __init__(self, learnwares, n_herd=500, selector=None, random_state=0):
        self.learnwares = learnwares
        self.n_herd = n_herd
        self.selector = selector
        self.random_state = random_state

    def fit(self, X=None, y=None):
        """Train the selector on herded points; X (optional) only fixes and checks the width,
        ``y`` is ignored."""
        self._check_learnwares()
        if not isinstance(self.n_herd, numbers.Integral) or self.n_herd < 1:
            raise ArgumentError(f"n_herd must be a positive integer, got {self.n_herd!r}")
        if X is not None:
            self._check_X(X, reset=True)
        else:
            self.n_features_in_ = self._lw_n_features
        samples, owners = [], []
        for j, lw in enumerate(self._lws):
            if not hasattr(getattr(lw, "spec", None), "herd"):
                raise ArgumentError(f"learnware {j} ({lw.id!r}) has no RKME specification to "
                                    f"route by")
            seed = None if self.random_state is None else int(self.random_state) + j
            pts = np.asarray(lw.spec.herd(int(self.n_herd), random_state=seed), dtype=np.float64)
            samples.append(pts)
            owners.append(np.full(pts.shape[0], j))
        Z = np.vstack(samples)
        owner = np.concatenate(owners)
        if self.n_features_in_ is not None and Z.shape[1] != self.n_features_in_:
            raise DataError(f"the specifications have {Z.shape[1]} features, X has "
                            f"{self.n_features_in_}")
        self.n_features_in_ = Z.shape[1]
        if len(self._lws) == 1:
            self.selector_ = None
        else:
            self.selector_ = clone(self.selector) if self.selector is not None \
                else _default_selector()
            self.selector_.fit(Z, owner)
        return self

    def route(self, X):
        """Index (into ``learnwares``) of the learnware each row is routed to."""
        check_is_fitted(self, "selector_")
        X = as_matrix(X, n_features=self.n_features_in_)
        return self._route(X)

    def _route(self, X):
        if self.selector_ is None:
            return np.zeros(X.shape[0], dtype=np.intp)
        return np.asarray(self.selector_.predict(X)).astype(np.intp)

    def _groups(self, X):
        idx = self._route(X)
        return [(j, np.flatnonzero(idx == j)) for j in range(len(self._lws))]

    def predict(self, X):
        """Each row predicted by its routed learnware (one batched call per learnware)."""
        check_is_fitted(self, "selector_")
        X = as_matrix(X, n_features=self.n_features_in_)
        parts, order = [], []
        for j, rows in self._groups(X):
            if rows.size:
                parts.append(self._lw_predict(j, X[rows]))
                order.append(rows)
        values = np.concatenate(parts)
        out = np.empty_like(values)
        out[np.concatenate(order)] = values
        return out

    def predict_proba(self, X):
        """Class probabilities of each row's routed learnware, columns in ``classes_`` order."""
        self._require_classification("predict_proba")
        check_is_fitted(self, "selector_")
        X = as_matrix(X, n_features=self.n_features_in_)
        out = np.zeros((X.shape[0], len(self.classes_)))
        for j, rows in self._groups(X):
            if rows.size:
                out[rows] = self._lw_proba(j, X[rows])
        return out


def _default_selector():
    from sklearn.discriminant_analysis import QuadraticDiscriminantAnalysis
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    return make_pipeline(StandardScaler(), QuadraticDiscriminantAnalysis(reg_param=0.1))


# ------------------------------------------------------------------------- EnsemblePruning
_LOSSES = {
    "brier": CLASSIFICATION, "log_loss": CLASSIFICATION, "accuracy": CLASSIFICATION,
    "mse": REGRESSION, "mae": REGRESSION,
}


class EnsemblePruning(_LearnwareReuser):
    """The sub-ensemble of learnwares whose average does best on a few labelled rows.

    Candidates: every subset (uniform average) when there are few learnwares (at most 8),
    otherwise the path of greedy forward selection with replacement (Caruana et al. 2004), whose
    repeated picks act as weights. Among candidates within one standard error of the best
    labelled-row loss, the one that averages the most learnwares wins -- with a handful of rows
    the best-looking subset is mostly luck. The whole procedure is then cross-validated
    (leave-one-out up to 30 rows, 5-fold beyond): if its out-of-sample loss does not beat plain
    averaging of all learnwares, all are kept (``pruned_`` is False).

    Parameters
    ----------
    learnwares : list of Learnware
    metric : {"brier", "log_loss", "accuracy", "mse", "mae"} or callable, default=None
        Loss used to compare ensembles. ``None``: Brier score (classification; smooth, bounded,
        proper -- fine for 5 rows) or mean squared error (regression). A callable
        ``metric(y_true, y_pred) -> score`` is maximised (``y_pred``: labels or values).
    max_size : int, default=None
        Most distinct learnwares in the ensemble (``None``: no limit).
    random_state : int, default=0
        Seeds the fold split beyond 30 rows.
    """

    _requires_y = True
    exhaustive_max = 8
    loo_max = 30

    def __init__(self, learnwares, metric=None, max_size=None, random_state=0):
        self.learnwares = learnwares
        self.metric = metric
        self.max_size = max_size
        self.random_state = random_state

    # -- losses
    def _row_losses(self, pred: np.ndarray, target: np.ndarray) -> np.ndarray | None:
        """Per-row losses of candidate predictions ``pred`` (m, n[, C]); None if the metric
        does not decompose over rows."""
        metric = self.metric_
        if callable(metric):
            return None
        if metric == "mse":
            return (pred - target[None, :]) ** 2
        if metric == "mae":
            return np.abs(pred - target[None, :])
        if metric == "brier":
            return ((pred - target[None]) ** 2).sum(axis=2)
        if metric == "log_loss":
            p = np.clip((pred * target[None]).sum(axis=2), _PROBA_FLOOR, 1.0)
            return -np.log(p)
        if metric == "accuracy":
            hit = np.argmax(pred, axis=2) == np.argmax(target, axis=1)[None, :]
            return 1.0 - hit
        raise AssertionError(metric)  # pragma: no cover

    def _mean_losses(self, W: np.ndarray, outputs: np.ndarray, target: np.ndarray,
                     y: np.ndarray):
        """(mean loss per candidate, per-row losses or None) for candidate weights W (m, L)."""
        pred = np.tensordot(W, outputs, axes=(1, 0))
        rows = self._row_losses(pred, target)
        if rows is not None:
            return rows.mean(axis=1), rows
        scores = []
        for p in pred:
            yp = self.classes_[np.argmax(p, axis=1)] if self.task_type_ == CLASSIFICATION else p
            scores.append(-float(self.metric_(y, yp)))
        return np.asarray(scores), None

    # -- candidates
    def _subsets(self, L: int) -> np.ndarray:
        cap = L if self.max_size is None else min(L, int(self.max_size))
        W = []
        for size in range(1, cap + 1):
            for combo in itertools.combinations(range(L), size):
                w = np.zeros(L)
                w[list(combo)] = 1.0 / size
                W.append(w)
        return np.asarray(W)

    def _greedy_path(self, outputs, target, y) -> np.ndarray:
        L = outputs.shape[0]
        cap = L if self.max_size is None else min(L, int(self.max_size))
        steps = min(max(2 * L, 10), 100)
        counts = np.zeros(L)
        path = []
        eye = np.eye(L)
        for _ in range(steps):
            allowed = np.flatnonzero(counts > 0) if np.count_nonzero(counts) >= cap \
                else np.arange(L)
            trial = (counts[None, :] + eye[allowed]) / (counts.sum() + 1.0)
            losses, _ = self._mean_losses(trial, outputs, target, y)
            counts[allowed[int(np.argmin(losses))]] += 1.0
            path.append(counts / counts.sum())
        return np.asarray(path)

    @staticmethod
    def _effective_size(W: np.ndarray) -> np.ndarray:
        return 1.0 / np.sum(W ** 2, axis=1)

    def _choose(self, W, mean, rows) -> int:
        """One-standard-error rule: among candidates close to the best, the most averaged."""
        best = int(np.argmin(mean))
        if rows is None or rows.shape[1] < 2:
            eligible = np.flatnonzero(mean <= mean[best] + 1e-12)
        else:
            diff = rows - rows[best][None, :]
            se = diff.std(axis=1, ddof=1) / np.sqrt(rows.shape[1])
            eligible = np.flatnonzero(mean <= mean[best] + se + 1e-12)
        size = self._effective_size(W[eligible])
        # most averaged; ties -> lower loss
        order = np.lexsort((mean[eligible], -np.round(size, 9)))
        return int(eligible[order[0]])

    def _select(self, outputs, target, y, rows_idx, exhaustive_W):
        o, t, yy = outputs[:, rows_idx], target[rows_idx], y[rows_idx]
        W = exhaustive_W if exhaustive_W is not None else self._greedy_path(o, t, yy)
        mean, rows = self._mean_losses(W, o, t, yy)
        return W[self._choose(W, mean, rows)]

    # -- fit / predict
    def fit(self, X, y=None):
        """Pick the ensemble on the labelled rows (X, y); needs at least 2 rows."""
        X, y = self._labelled_rows(X, y, " to compare ensembles")
        n = X.shape[0]
        metric = self.metric
        if metric is None:
            metric = "brier" if self.task_type_ == CLASSIFICATION else "mse"
        if isinstance(metric, str):
            if _LOSSES.get(metric) != self.task_type_:
                valid = sorted(k for k, v in _LOSSES.items() if v == self.task_type_)
                raise ArgumentError(f"metric {metric!r} does not apply to {self.task_type_}; use "
                                    f"one of {valid} or a callable")
        elif not callable(metric):
            raise ArgumentError(f"metric must be a name or a callable, got {metric!r}")
        if self.max_size is not None and (not isinstance(self.max_size, numbers.Integral)
                                          or self.max_size < 1):
            raise ArgumentError(f"max_size must be a positive integer or None, got "
                                f"{self.max_size!r}")
        self.metric_ = metric
        L = len(self._lws)
        outputs = self._all_outputs(X)
        if self.task_type_ == CLASSIFICATION:
            outputs = self._extend_classes(y, outputs)
            target = np.zeros((n, len(self.classes_)))
            target[np.arange(n), _columns_for(y, self.classes_)] = 1.0
        else:
            target = y
        uniform = np.full(L, 1.0 / L)
        self.fallback_ = None
        if self.task_type_ == CLASSIFICATION and np.unique(y).size < 2:
            self.fallback_ = ("the labelled rows hold a single class: they cannot tell "
                              "ensembles apart fairly, so all learnwares are averaged")
            warnings.warn(f"EnsemblePruning: {self.fallback_}", UserWarning, stacklevel=2)
            self.weights_, self.pruned_ = uniform, False
            self.cv_loss_ = self.averaging_loss_ = None
            return self._finish()
        n_cand = 2 ** L - 1
        exhaustive_W = self._subsets(L) if (L <= self.exhaustive_max
                                            and n_cand * n <= 20_000_000) else None
        all_rows = np.arange(n)
        chosen = self._select(outputs, target, y, all_rows, exhaustive_W)
        # Cross-validate the whole selection procedure against plain averaging.
        folds = self._folds(n)
        held_pred = np.zeros_like(outputs[0])
        for train, test in folds:
            w = self._select(outputs, target, y, train, exhaustive_W)
            held_pred[test] = np.tensordot(w, outputs[:, test], axes=(0, 0))
        avg_pred = np.tensordot(uniform, outputs, axes=(0, 0))
        cv, _ = self._mean_losses_of(held_pred, target, y)
        base, _ = self._mean_losses_of(avg_pred, target, y)
        self.cv_loss_, self.averaging_loss_ = cv, base
        if cv < base - 1e-12:
            self.weights_, self.pruned_ = chosen, True
        else:
            self.weights_, self.pruned_ = uniform, False
        return self._finish()

    def _mean_losses_of(self, pred, target, y):
        mean, rows = self._mean_losses(np.ones((1, 1)), pred[None], target, y)
        return float(mean[0]), rows

    def _folds(self, n):
        if n <= self.loo_max:
            return [(np.delete(np.arange(n), i), np.array([i])) for i in range(n)]
        from sklearn.model_selection import KFold
        return list(KFold(5, shuffle=True, random_state=self.random_state).split(np.arange(n)))

    def _finish(self):
        self.selected_ = np.flatnonzero(self.weights_ > 0)
        return self

    def predict(self, X):
        """Prediction of the chosen ensemble's weighted average."""
        check_is_fitted(self, "weights_")
        X = as_matrix(X, n_features=self.n_features_in_)
        if self.task_type_ == CLASSIFICATION:
            return _labels_from_proba(self._proba(X), self.classes_)
        return sum(self.weights_[j] * self._lw_predict(j, X) for j in self.selected_)

    def _proba(self, X):
        return sum(self.weights_[j] * self._lw_proba(j, X) for j in self.selected_)

    def predict_proba(self, X):
        """The chosen ensemble's mean probabilities, columns in ``classes_`` order."""
        self._require_classification("predict_proba")
        check_is_fitted(self, "weights_")
        return self._proba(as_matrix(X, n_features=self.n_features_in_))


# -------------------------------------------------------------------------- FeatureAugment
class _LogLinearPool(BaseEstimator):
    """Multinomial logit on the learnwares' log-probabilities: ``softmax(sum_l a_l log p_l + b)``.

    Shrunk (L2, strength ``alpha``) toward geometric averaging (``a_l = 1/L``, ``b = 0``), so with
    a handful of rows it stays close to the learnwares and can still predict classes that no
    labelled row shows -- unlike a logistic regression fitted from scratch.
    """

    def __init__(self, alpha=2.0):
        self.alpha = alpha

    def fit(self, logp: np.ndarray, y_idx: np.ndarray):
        from scipy.optimize import minimize
        from scipy.special import logsumexp
        L, n, C = logp.shape
        a0 = np.full(L, 1.0 / L)
        onehot = np.zeros((n, C))
        onehot[np.arange(n), y_idx] = 1.0

        def f(theta):
            a, b = theta[:L], theta[L:]
            z = np.tensordot(a, logp, axes=(0, 0)) + b
            lse = logsumexp(z, axis=1)
            nll = float(np.sum(lse - z[np.arange(n), y_idx]))
            p = np.exp(z - lse[:, None])
            g_z = p - onehot
            ga = np.einsum("nc,lnc->l", g_z, logp) + 2 * self.alpha * (a - a0)
            gb = g_z.sum(axis=0) + 2 * self.alpha * b
            pen = self.alpha * (np.sum((a - a0) ** 2) + np.sum(b ** 2))
            return nll + pen, np.concatenate([ga, gb])

        res = minimize(f, np.concatenate([a0, np.zeros(C)]), jac=True, method="L-BFGS-B")
        self.coef_, self.intercept_ = res.x[:L], res.x[L:]
        return self

    def predict_proba(self, logp: np.ndarray) -> np.ndarray:
        from scipy.special import softmax
        return softmax(np.tensordot(self.coef_, logp, axes=(0, 0)) + self.intercept_, axis=1)


class FeatureAugment(_LearnwareReuser):
    """The learnwares' outputs as extra features for a small model fitted on the user's rows.

    Features: the user's columns plus every learnware's prediction (regression) or class
    probabilities (classification). Default model:

    * regression -- standardised ``RidgeCV`` (alpha by efficient leave-one-out) fitted to the
      *residual* of the learnwares' average, so strong regularisation falls back to averaging
      rather than to the mean of y;
    * classification -- standardised ``LogisticRegression``.

    With very few rows (fewer than ``max(20, n_features + n_learnware_features)``) only the
    learnware features are used, with strong regularisation: ``RidgeCV`` over large alphas on
    the residual, or, for classification, a log-linear pool of the learnwares' probabilities
    shrunk toward their geometric mean (``mode_`` says which). Labelled rows of a single class
    cannot train a classifier: then the learnwares are averaged, with a warning.

    Parameters
    ----------
    learnwares : list of Learnware
    estimator : estimator, default=None
        Replaces the default model; fitted on ``[X, learnware features]`` against ``y``.
    """

    _requires_y = True
    few_rows_min = 20

    def __init__(self, learnwares, estimator=None):
        self.learnwares = learnwares
        self.estimator = estimator

    def _features(self, X, outputs):
        if self.task_type_ == REGRESSION:
            lw = outputs.T
        else:
            lw = outputs.transpose(1, 0, 2).reshape(X.shape[0], -1)
        return lw if self.mode_ in ("learnware-features", "pool") else np.hstack([X, lw])

    def fit(self, X, y=None):
        """Fit the model on the labelled rows (X, y); needs at least 2 rows."""
        from sklearn.linear_model import LogisticRegression, RidgeCV
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler
        X, y = self._labelled_rows(X, y, "")
        n = X.shape[0]
        outputs = self._all_outputs(X)
        L = outputs.shape[0]
        n_lw_features = L if self.task_type_ == REGRESSION else L * outputs.shape[2]
        few = n < max(self.few_rows_min, X.shape[1] + n_lw_features)
        self.fallback_ = None
        self._offset = False
        if self.task_type_ == CLASSIFICATION:
            outputs = self._extend_classes(y, outputs)
            if np.unique(y).size < 2:
                self.fallback_ = ("the labelled rows hold a single class, which cannot train a "
                                  "classifier: the learnwares are averaged instead")
                warnings.warn(f"FeatureAugment: {self.fallback_}", UserWarning, stacklevel=2)
                self.mode_, self.estimator_ = "averaging", None
                return self
            y_idx = _columns_for(y, self.classes_)
            if self.estimator is None and few:
                self.mode_ = "pool"
                self.estimator_ = _LogLinearPool().fit(self._logp(outputs), y_idx)
                return self
            self.mode_ = "augmented"
            self.estimator_ = clone(self.estimator) if self.estimator is not None else \
                make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
            self.estimator_.fit(self._features(X, outputs), y)
            return self
        if self.estimator is not None:
            self.mode_ = "augmented"
            self.estimator_ = clone(self.estimator).fit(self._features(X, outputs), y)
            return self
        self.mode_ = "learnware-features" if few else "augmented"
        alphas = np.logspace(0, 5, 11) if few else np.logspace(-3, 4, 15)
        self._offset = True
        self.estimator_ = make_pipeline(StandardScaler(), RidgeCV(alphas=alphas))
        self.estimator_.fit(self._features(X, outputs), y - outputs.mean(axis=0))
        return self

    @staticmethod
    def _logp(outputs):
        return np.log(np.clip(outputs, _PROBA_FLOOR, 1.0))

    def _checked(self, X):
        check_is_fitted(self, "mode_")
        X = as_matrix(X, n_features=self.n_features_in_)
        return X, self._all_outputs(X)

    def predict(self, X):
        """Prediction of the fitted model on ``[X, learnware outputs]``."""
        if getattr(self, "task_type_", None) == CLASSIFICATION:
            return _labels_from_proba(self.predict_proba(X), self.classes_)
        X, outputs = self._checked(X)
        pred = np.asarray(self.estimator_.predict(self._features(X, outputs)), dtype=np.float64)
        return pred + outputs.mean(axis=0) if self._offset else pred

    def predict_proba(self, X):
        """Class probabilities, columns in ``classes_`` order (zero for classes the fitted
        model never saw)."""
        self._require_classification("predict_proba")
        X, outputs = self._checked(X)
        if self.mode_ == "averaging":
            return outputs.mean(axis=0)
        if self.mode_ == "pool":
            return self.estimator_.predict_proba(self._logp(outputs))
        p = np.asarray(self.estimator_.predict_proba(self._features(X, outputs)))
        out = np.zeros((X.shape[0], len(self.classes_)))
        out[:, _columns_for(np.asarray(self.estimator_.classes_), self.classes_)] = p
        return out
