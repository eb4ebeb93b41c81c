"""Reuse a learnware on a user's columns when the user lacks some of its inputs.

A learnware needs all its inputs at predict time. :class:`FilledLearnware` wraps one so that it
takes the *user's* columns: the inputs the user covers are read from the mapped columns (the
``covered`` map a search across islands returns), the others are filled from the learnware's
own specification, whose reduced points are a weighted sample of the developer's inputs. No
request and no one else's data: the spec was downloaded with the learnware.

Filling rules (:mod:`learnware_core.marginal`): ``"conditional"`` (kernel-weighted conditional
mean of the missing coordinates given the shared ones), ``"median"`` (the spec's weighted median
per feature), and ``"auto"``: the rule whose filled inputs change the model's own outputs least
on the spec's reduced points, each point filled from the *other* points (leave-one-out; squared
change of the prediction for regression, of the class probabilities -- or label -- for
classification, weighted by beta). That evidence needs only what the user downloaded.

The wrapper looks like a :class:`~client_sdk.learnware.Learnware` (``id``, ``model``, ``spec``,
``semantic``), so ``Averaging``, ``JobSelector``, ``EnsemblePruning`` and ``FeatureAugment`` take
learnwares from several islands side by side. Its spec lives in the user's column space: covered
columns from the learnware's points, the user's surplus columns (the learnware never saw them)
at the user's own column means when ``X_user`` is given (so they do not steer routing), else 0.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from learnware_core.marginal import FILL_RULES, fill_columns

from .learnware import Learnware
from .rkme import RKMESpec

__all__ = ["FilledLearnware", "FilledModel", "choose_fill_rule", "fill_for"]


def _outputs(model: Any, X: np.ndarray, task: str) -> np.ndarray:
    if task == "classification" and hasattr(model, "predict_proba"):
        return np.asarray(model.predict_proba(X), dtype=np.float64)
    out = np.asarray(model.predict(X))
    if task == "classification":
        return out.reshape(len(X), -1)
    return out.astype(np.float64).reshape(len(X), -1)


def choose_fill_rule(model: Any, spec, missing: list[int], task: str,
                     rules=FILL_RULES) -> tuple[str, dict[str, float]]:
    """The rule (of ``rules``) whose leave-one-out filling of the spec's reduced points changes
    the model's outputs least; returns ``(rule, {rule: beta-weighted mean squared change})``."""
    z, beta = np.asarray(spec.z, dtype=np.float64), np.asarray(spec.beta, dtype=np.float64)
    if not missing or len(beta) < 3:
        return rules[0], {}
    d = z.shape[1]
    shared = [j for j in range(d) if j not in set(missing)]
    scales = (np.ones(d) if spec.scales is None else np.asarray(spec.scales))[shared] \
        if shared else np.ones(0)
    ref = _outputs(model, z, task)
    loss = {}
    for rule in rules:
        Xf = z.copy()
        for i in range(len(beta)):
            keep = np.arange(len(beta)) != i
            b = beta[keep] / beta[keep].sum()
            Xf[i, missing] = fill_columns(rule, z[keep], b, shared, missing,
                                          z[i:i + 1, shared], scales)[0]
        out = _outputs(model, Xf, task)
        if task == "classification" and not hasattr(model, "predict_proba"):
            change = (out != ref).any(axis=1).astype(np.float64)
        else:
            change = ((out - ref) ** 2).sum(axis=1)
        loss[rule] = float(beta @ change)
    return min(rules, key=lambda r: (loss[r], rules.index(r))), loss


class FilledModel:
    """The learnware's model on the user's columns (missing inputs filled by ``rule``)."""

    def __init__(self, model: Any, spec, n_inputs: int, covered: list[tuple[int, int]],
                 missing: list[int], rule: str):
        self.model, self.spec, self.n_inputs = model, spec, n_inputs
        self.covered, self.missing, self.rule = covered, missing, rule
        if hasattr(model, "classes_"):
            self.classes_ = model.classes_

    def inputs(self, X: np.ndarray) -> np.ndarray:
        """The learnware's input rows built from the user's rows ``X``."""
        X = np.asarray(X, dtype=np.float64)
        out = np.empty((X.shape[0], self.n_inputs))
        lw_cols = [j for j, _ in self.covered]
        u_cols = [u for _, u in self.covered]
        out[:, lw_cols] = X[:, u_cols]
        if self.missing:
            z, beta = np.asarray(self.spec.z), np.asarray(self.spec.beta)
            scales = (np.ones(self.n_inputs) if self.spec.scales is None
                      else np.asarray(self.spec.scales))
            out[:, self.missing] = fill_columns(self.rule, z, beta, lw_cols, self.missing,
                                                X[:, u_cols], scales[lw_cols])
        return out

    def predict(self, X):
        return self.model.predict(self.inputs(X))


class FilledProbaModel(FilledModel):
    """:class:`FilledModel` of a model with ``predict_proba``."""

    def predict_proba(self, X):
        return self.model.predict_proba(self.inputs(X))


class FilledLearnware(Learnware):
    """A learnware that predicts from the user's columns (module docstring). ``covered``: the
    learnware's input -> the user's column (a search result's ``Match.covered``);
    ``user_columns``: the user's column names, in the order of the rows it will be given;
    ``rule``: ``"auto"``, ``"conditional"`` or ``"median"``. ``fill_rule`` / ``fill_evidence``
    say what was chosen and why."""

    def __init__(self, learnware: Learnware, covered: dict[str, str], user_columns, *,
                 rule: str = "auto", X_user=None):
        lw_feats = list(learnware.semantic["input_features"])
        user_columns = list(user_columns)
        unknown = [c for c in covered.values() if c not in user_columns]
        if unknown or any(f not in lw_feats for f in covered):
            raise ValueError(f"covered maps features the learnware or the user lacks "
                             f"({unknown or sorted(set(covered) - set(lw_feats))})")
        if rule not in ("auto",) + FILL_RULES:
            raise ValueError(f"rule must be 'auto' or one of {FILL_RULES}, got {rule!r}")
        pairs = [(lw_feats.index(f), user_columns.index(c)) for f, c in covered.items()]
        missing = [j for j in range(len(lw_feats)) if j not in {p[0] for p in pairs}]
        task = learnware.semantic.get("task_type", "regression")
        evidence: dict[str, float] = {}
        if rule == "auto":
            rule, evidence = choose_fill_rule(learnware.model, learnware.spec, missing, task)
        self.base, self.covered_map, self.fill_rule, self.fill_evidence = (
            learnware, dict(covered), rule, evidence)
        self.missing_features = [lw_feats[j] for j in missing]
        cls = FilledProbaModel if hasattr(learnware.model, "predict_proba") else FilledModel
        model = cls(learnware.model, learnware.spec, len(lw_feats), pairs, missing, rule)
        semantic = dict(learnware.semantic, input_features=user_columns)
        semantic.pop("feature_scales", None)
        super().__init__(learnware.id, model, self._user_spec(learnware.spec, pairs,
                                                              len(user_columns), X_user),
                         semantic)

    @staticmethod
    def _user_spec(spec, pairs, n_user: int, X_user) -> RKMESpec | None:
        if spec is None:
            return None
        z = np.zeros((len(spec.beta), n_user))
        if X_user is not None:
            z[:] = np.asarray(X_user, dtype=np.float64).mean(axis=0)
        scales = np.ones(n_user)
        for j, u in pairs:
            z[:, u] = spec.z[:, j]
            if spec.scales is not None:
                scales[u] = spec.scales[j]
        return RKMESpec(z, spec.beta, 1.0 / (2.0 * n_user), scales)


def fill_for(learnwares: dict, result, user_columns, *, rule: str = "auto", X_user=None,
             ids=None, feature_map: dict | None = None) -> list[FilledLearnware]:
    """The learnwares of a search across islands, wrapped for the user's columns: ``learnwares``
    maps ids to downloaded learnwares, ``result`` the :class:`SearchResult`; ``ids`` (default:
    the result's singles) says which, in order; a learnware not among the singles is matched
    to the user's columns by name (``feature_map``: the user's column -> feature name)."""
    fmap = feature_map or {}
    match = {m.learnware_id: m for m in result.single}
    ids = list(ids) if ids is not None else list(match)
    out = []
    for i in ids:
        covered = match[i].covered if i in match and match[i].covered is not None else None
        lw = learnwares[i]
        if covered is None:  # not among the singles, or the one-island search: by name
            by_name = {fmap.get(c, c): c for c in user_columns}
            covered = {f: by_name[f] for f in lw.semantic["input_features"] if f in by_name}
        out.append(FilledLearnware(lw, covered, user_columns, rule=rule, X_user=X_user))
    return out
