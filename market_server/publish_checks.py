"""The publish checks: everything the market can judge of a publish from the request alone.

Pure: no store, no sandbox, no clock. ``Market.publish`` looks up the island, calls
:func:`check_publish` (every problem at once, as :class:`Reason` s), then runs the model in the
sandbox (:func:`check_predictions` judges its output) and stores what passed.
"""
from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from learnware_core.island import base_kernel
from learnware_core.kernels import herd
from learnware_core.spec import decode_points, decode_scales, on_simplex
from protocol.artefact import sha256_hex, verify_artefact
from protocol.encoding import decode_array
from protocol.errors import LearnwareError, SignatureError, UnsafeModelError
from protocol.objectives import fits_task

from .config import ServerConfig
from .rows import IslandRow

#: search requirements with coordinates beyond this many kernel scales are refused (overflow).
MAX_SCALED_COORD = 1e100


@dataclass
class Reason:
    code: str
    message: str
    field: str | None = None

    def to_dict(self) -> dict:
        return {"code": self.code, "message": self.message, "field": self.field}


@dataclass
class PublishCheck:
    """What :func:`check_publish` found: the ``reasons`` to refuse (none: the request itself is
    sound) and what it decoded on the way, which the sandbox step and the store reuse."""

    reasons: list[Reason] = field(default_factory=list)
    model_bytes: bytes = b""
    z: np.ndarray | None = None
    beta: np.ndarray | None = None
    #: the semantic spec's declared feature scales (None: none, or unusable)
    declared_scales: np.ndarray | None = None
    n_features: int = 0


def check_publish(semantic: dict, spec: dict, model: dict, artefact: dict, sender: str,
                  island: IslandRow | None, config: ServerConfig) -> PublishCheck:
    """Every problem of a publish body (schema-valid already) against the island it lands on
    (``island``: its row, None for a new island): model file size/encoding/hash, the artefact
    signature, semantic consistency, the spec's shape, size, weights, kernel and range."""
    reasons: list[Reason] = []
    # The model file: size, encoding, hash.
    model_bytes = b""
    if model["size"] > config.max_model_bytes:
        reasons.append(Reason("model_too_large", f"model file is {model['size']} bytes; the "
                              f"limit is {config.max_model_bytes}", "model.size"))
    else:
        try:
            model_bytes = base64.b64decode(model["data"], validate=True)
        except (binascii.Error, ValueError):
            reasons.append(Reason("bad_model_encoding", "model.data is not valid base64",
                                  "model.data"))
        if model_bytes and len(model_bytes) != model["size"]:
            reasons.append(Reason("model_size_mismatch", f"model.data holds "
                                  f"{len(model_bytes)} bytes, model.size says {model['size']}",
                                  "model.size"))
        if model_bytes and sha256_hex(model_bytes) != model["sha256"]:
            reasons.append(Reason("model_hash_mismatch", "model.sha256 is not the SHA-256 of "
                                  "model.data", "model.sha256"))
    try:
        verify_artefact(sender, artefact, semantic=semantic, spec=spec,
                        model_sha256=model["sha256"])
    except SignatureError as exc:
        reasons.append(Reason(exc.code, exc.message, exc.field))
    # Semantic consistency and the island.
    d = len(semantic["input_features"])
    classes = semantic.get("classes")
    if semantic["task_type"] == "classification" and not fits_task(semantic["objective"],
                                                                   "classification"):
        reasons.append(Reason("bad_objective", f"objective {semantic['objective']} does not "
                              "fit a classification task", "semantic.objective"))
    if semantic["task_type"] == "regression" and not fits_task(semantic["objective"],
                                                               "regression"):
        reasons.append(Reason("bad_objective", f"objective {semantic['objective']} does not "
                              "fit a regression task", "semantic.objective"))
    if semantic["task_type"] == "regression" and classes:
        reasons.append(Reason("bad_semantic", "a regression learnware declares no classes",
                              "semantic.classes"))
    declared = semantic.get("feature_scales")
    declared_scales = None
    if declared is not None:
        declared_scales = decode_array(declared, field="semantic.feature_scales", ndim=1)
        if len(declared_scales) != d or not (declared_scales > 0).all():
            reasons.append(Reason("bad_feature_scales", f"semantic.feature_scales needs {d} "
                                  "positive values, one per input feature",
                                  "semantic.feature_scales"))
            declared_scales = None
    # The RKME specification.
    z = beta = None
    try:
        z, beta = decode_points(spec)
    except LearnwareError as exc:
        reasons.append(Reason("bad_spec", exc.message, exc.field))
    if z is not None:
        k = len(beta)
        if z.shape != (k, d) or spec["n_features"] != d:
            reasons.append(Reason("spec_dimension", f"spec.z is {z.shape[0]} x {z.shape[1]} "
                                  f"with {len(beta)} weights; the island needs k x {d} "
                                  f"(one column per input feature)", "spec.z"))
        if not (config.min_spec_points <= k <= config.max_spec_points):
            reasons.append(Reason("spec_size", f"spec has {k} reduced points; allowed "
                                  f"{config.min_spec_points}..."
                                  f"{config.max_spec_points}", "spec.beta"))
        if not on_simplex(beta):
            reasons.append(Reason("spec_weights", "spec.beta must be non-negative and sum to 1",
                                  "spec.beta"))
        # The spec must use the island's kernel, or the one its last refinement replaced
        # (a new island's: the base kernel of the declared feature scales).
        if island is not None:
            kernels = [(island.kernel["gamma"], island.kernel["scales"])]
            prev = island.kernel.get("previous")
            if prev is not None:
                kernels.append((prev["gamma"], prev["scales"]))
            why = (f"spec was not computed with the island's kernel (version "
                   f"{island.kernel_version}) nor the one before it; fetch the island "
                   f"info and recompute the spec")
        else:
            kernels = [base_kernel(declared_scales, d)]
            why = ("the first spec of a new island must use the base kernel of its declared "
                   "feature scales")
        sc = decode_scales(spec)
        if not (sc is not None and sc.shape == (d,) and any(
                np.isclose(spec["gamma"], g0, rtol=1e-9, atol=0)
                and np.allclose(sc, s0, rtol=1e-9, atol=0) for g0, s0 in kernels)):
            reasons.append(Reason("kernel_mismatch", why, "spec.gamma"))
        ref = np.asarray(kernels[0][1], dtype=np.float64)
        if z.shape[1] == d and not (np.abs(z / ref) <= MAX_SCALED_COORD).all():
            reasons.append(Reason("spec_values", "spec.z has coordinates beyond 1e100 kernel "
                                  "scales: no data set looks like that, and the island's "
                                  "kernel sums would overflow", "spec.z"))
    return PublishCheck(reasons, model_bytes, z, beta, declared_scales, d)


def check_predictions(model: Any, z: np.ndarray, beta: np.ndarray, spec: dict, semantic: dict,
                      check_samples: int) -> list[Reason]:
    """Does the model predict, with the declared output, on samples of its own spec?
    ``model``: anything with ``predict`` (in the market, a proxy into the sandbox)."""
    try:
        t = check_samples
        # a pool of 8 candidates per sample is plenty for a check (the default pool of
        # 2,000 serves the refinement's and the anchors' estimates)
        X = herd(z, beta, spec["gamma"], decode_scales(spec), t, random_state=0,
                 n_candidates=max(8 * t, 256))
    except Exception as exc:  # noqa: BLE001 - a spec we cannot sample from is refused
        return [Reason("spec_unusable", f"cannot sample from the spec: {exc}", "spec")]
    try:
        pred = np.asarray(model.predict(X))
    except UnsafeModelError as exc:  # over the sandbox's limits, or crashed it
        return [Reason(exc.code, exc.message, "model")]
    except Exception as exc:  # noqa: BLE001 - any failure of foreign model code is a refusal
        return [Reason("model_predict_failed", f"the model cannot predict on samples of its "
                       f"own spec: {type(exc).__name__}: {str(exc)[:300]}", "model")]
    if pred.shape != (len(X),):
        return [Reason("model_output_shape", f"the model returns shape {pred.shape} for "
                       f"{len(X)} rows; one value per row is needed", "model")]
    if semantic["task_type"] == "regression":
        if pred.dtype.kind not in "fiu" or not np.isfinite(pred.astype(float)).all():
            return [Reason("model_output", "the regression model returns non-finite or "
                           "non-numeric values", "model")]
    else:
        classes = semantic.get("classes")
        if classes is not None:
            allowed = {str(c) for c in classes}
            extra = sorted({str(p) for p in pred.tolist()} - allowed)
            if extra:
                return [Reason("model_classes", f"the model predicts labels {extra[:5]} "
                               f"outside the declared classes {classes[:10]}",
                               "semantic.classes")]
    return []
