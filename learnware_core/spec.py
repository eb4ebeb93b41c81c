"""The RKME specification on the wire: decoded and checked in one place.

A spec (or a search requirement) travels as ``{z, beta, gamma, scales, n_features}`` with the
arrays in the protocol's array encoding. The client (``RKMESpec.from_dict``), the market's
publish checks and its search all read it through :func:`decode_spec`, and judge its weights and
kernel with :func:`on_simplex` / :func:`check_spec`, so the three cannot drift apart.

Field names: ``field`` is the spec's own place in the message (``"spec"``, ``"requirement"``, or
``""`` for a bare spec); errors name ``<field>.z``, ``<field>.beta``...
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from protocol.encoding import decode_array
from protocol.errors import DataError

from .kernels import check_kernel

#: a weight below minus this is negative (rounding of a QP solution stays above it).
NEGATIVE_WEIGHT_TOLERANCE = 1e-12
#: the weights' sum may be this far from 1.
WEIGHT_SUM_TOLERANCE = 1e-6


def field_name(field: str, name: str) -> str:
    """``name`` inside ``field`` (``"spec"``, ``"z"`` -> ``"spec.z"``; ``""`` -> ``"z"``)."""
    return f"{field}.{name}" if field else name


@dataclass(frozen=True)
class DecodedSpec:
    """A spec's arrays as float64 numpy: ``z`` (k x d reduced points, raw feature units),
    ``beta`` (k weights), the kernel (``gamma``, per-feature ``scales`` or None) as sent."""

    z: np.ndarray
    beta: np.ndarray
    gamma: Any
    scales: np.ndarray | None

    @property
    def n_points(self) -> int:
        return int(self.beta.shape[0])


def decode_spec(spec: dict, field: str = "spec", scales_ndim: int | None = None) -> DecodedSpec:
    """The arrays of a spec dict (z 2-D, beta 1-D, scales 1-D or absent), as float64; an
    ``EncodingError``/``SchemaError`` naming the field when one is not such an array. Shapes
    relative to each other and values are judged by :func:`check_spec` / the callers;
    ``scales_ndim``: see :func:`decode_scales`."""
    z, beta = decode_points(spec, field)
    return DecodedSpec(z, beta, spec.get("gamma"), decode_scales(spec, field, scales_ndim))


def decode_points(spec: dict, field: str = "spec") -> tuple[np.ndarray, np.ndarray]:
    """Only ``(z, beta)`` of a spec, as float64 (the search index needs no more)."""
    z = decode_array(spec["z"], field=field_name(field, "z"), ndim=2).astype(np.float64)
    beta = decode_array(spec["beta"], field=field_name(field, "beta"), ndim=1).astype(np.float64)
    return z, beta


def decode_scales(spec: dict, field: str = "spec", ndim: int | None = None) -> np.ndarray | None:
    """The per-feature kernel scales a spec was fitted with (None when it states none);
    ``ndim``: refuse any other number of dimensions while decoding (else the caller judges)."""
    scales = spec.get("scales")
    return None if scales is None else decode_array(scales, field=field_name(field, "scales"),
                                                    ndim=ndim)


def on_simplex(beta: np.ndarray) -> bool:
    """Are the weights non-negative and summing to 1 (within rounding)?"""
    return not ((beta < -NEGATIVE_WEIGHT_TOLERANCE).any()
                or abs(beta.sum() - 1.0) > WEIGHT_SUM_TOLERANCE)


def check_spec(z: Any, beta: Any, gamma: Any, scales: Any = None, field: str = ""
               ) -> tuple[np.ndarray, np.ndarray, float, np.ndarray | None]:
    """A complete spec's invariants: z a non-empty k x d array, k weights on the simplex, all
    finite, gamma > 0, scales None or d positive values. Returns (z, beta, gamma, scales) as
    float64 copies; raises :class:`DataError` naming the field."""
    z = np.array(z, dtype=np.float64, copy=True)
    beta = np.array(beta, dtype=np.float64, copy=True).ravel()
    if z.ndim != 2 or z.shape[0] == 0 or z.shape[1] == 0:
        raise DataError("z must be a non-empty 2-D array (points x features)",
                        field=field_name(field, "z"))
    if beta.shape[0] != z.shape[0]:
        raise DataError(f"beta has {beta.shape[0]} weights for {z.shape[0]} points",
                        field=field_name(field, "beta"))
    if not (np.all(np.isfinite(z)) and np.all(np.isfinite(beta))):
        raise DataError("z and beta must be finite", field=field_name(field, "z"))
    if not on_simplex(beta):
        raise DataError("beta must be non-negative and sum to 1", field=field_name(field, "beta"))
    try:
        gamma, scales = check_kernel(gamma, scales, z.shape[1])
    except ValueError as exc:
        name = "gamma" if "gamma" in str(exc) else "scales"
        raise DataError(str(exc), field=field_name(field, name)) from exc
    return z, beta, gamma, scales
