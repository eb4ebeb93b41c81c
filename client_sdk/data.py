"""Input validation at the edge: the one checker every entry point of the SDK runs user tables
through (``MarketClient``, ``RKMESpec.fit``, the reuse estimators), once per call.

The result is a finite, C-contiguous float64 matrix (one memory layout: bit-identical results
whatever the input was), in the island's column order when ``features`` is given. Every refusal
is a :class:`~protocol.errors.DataError` (also a ``ValueError``) naming the offending columns.
"""
from __future__ import annotations

import sys
from typing import Any, Sequence

import numpy as np

from protocol.errors import DataError

__all__ = ["as_matrix", "as_target", "feature_names"]

_MAX_NAMED = 10  # columns named in one message


def _pandas():
    """pandas if the caller already loaded it (a DataFrame cannot exist otherwise): checking
    a NumPy array never imports it."""
    return sys.modules.get("pandas")


def feature_names(X: Any) -> list[str] | None:
    """The column names of a DataFrame (or the name of a Series), else None."""
    pd = _pandas()
    if pd is not None and isinstance(X, pd.Series):
        X = X.to_frame()
    if pd is not None and isinstance(X, pd.DataFrame):
        return [str(c) for c in X.columns]
    return None


def _label(names: Sequence[str] | None, j: int) -> str:
    return repr(names[j]) if names is not None else f"column {j}"


def as_matrix(X: Any, features: Sequence[str] | None = None, *, n_features: int | None = None,
              name: str = "X") -> np.ndarray:
    """X (2-D array-like, pandas DataFrame or Series) as a finite C-contiguous float64 matrix.

    ``features``: the island's input features; a DataFrame is reordered to them (missing ones
    are named), any other X must have that many columns. ``n_features``: X must have exactly
    this many columns. ``name`` is how messages and ``DataError.field`` call X.
    """
    names = None
    pd = _pandas()
    if pd is not None and isinstance(X, pd.Series):
        X = X.to_frame()
    if pd is not None and isinstance(X, pd.DataFrame):
        cols = [str(c) for c in X.columns]
        if features is not None:
            missing = [f for f in features if f not in cols]
            if missing:
                raise DataError(f"{name} lacks the island's input features "
                                f"{missing[:_MAX_NAMED]}", field=name,
                                details={"columns": missing[:_MAX_NAMED]})
            X = X[list(features)]
            cols = [str(c) for c in X.columns]
        names = cols
        bad = [c for c, (_, col) in zip(cols, X.items())
               if not (pd.api.types.is_numeric_dtype(col) or pd.api.types.is_bool_dtype(col))]
        if bad:
            raise DataError(f"{name} has non-numeric columns: {', '.join(bad[:_MAX_NAMED])}; "
                            "encode them as numbers (e.g. one-hot) or drop them", field=name,
                            details={"columns": bad[:_MAX_NAMED]})
        try:
            arr = X.to_numpy(dtype=np.float64, na_value=np.nan)
        except (TypeError, ValueError) as exc:
            raise DataError(f"{name} cannot be read as numbers: {exc}", field=name) from exc
    else:
        arr = np.asarray(X)
        if arr.dtype.kind not in "biuf":
            if arr.ndim == 2:
                bad = []
                for j in range(arr.shape[1]):  # only on the error path: name the columns
                    try:
                        arr[:, j].astype(np.float64)
                    except (TypeError, ValueError):
                        bad.append(f"column {j}")
                if bad:
                    raise DataError(f"{name} has non-numeric columns: "
                                    f"{', '.join(bad[:_MAX_NAMED])}; encode them as numbers or "
                                    "drop them", field=name, details={"columns": bad[:_MAX_NAMED]})
            try:
                arr = arr.astype(np.float64)
            except (TypeError, ValueError) as exc:
                raise DataError(f"{name} is not numeric: {exc}", field=name) from exc
        arr = np.asarray(arr, dtype=np.float64)
    if arr.ndim != 2:
        raise DataError(f"{name} must be 2-D (rows x features), got {arr.ndim}-D"
                        + ("; for a single feature use X.reshape(-1, 1)" if arr.ndim == 1 else ""),
                        field=name)
    expected = len(features) if features is not None else n_features
    if expected is not None and arr.shape[1] != expected:
        island = (f" (the island's input features {list(features)[:_MAX_NAMED]})"
                  if features is not None else "")
        raise DataError(f"{name} has {arr.shape[1]} features, expected {expected}{island}",
                        field=name, details={"expected": int(expected), "got": int(arr.shape[1])})
    finite = np.isfinite(arr)
    if not finite.all():
        if names is None and features is not None:
            names = list(features)
        bad_cols = np.flatnonzero(~finite.all(axis=0))
        labels = [_label(names, int(j)) for j in bad_cols[:_MAX_NAMED]]
        sub = arr[:, bad_cols]
        has_nan, has_inf = bool(np.isnan(sub).any()), bool(np.isinf(sub).any())
        kind = "NaN/Inf" if has_nan and has_inf else ("NaN" if has_nan else "Inf")
        raise DataError(f"{name} has {kind} values in {', '.join(labels)}; impute or drop them "
                        "first", field=name, details={"columns": labels})
    return np.ascontiguousarray(arr)


def as_target(y: Any, n: int, *, name: str = "y") -> np.ndarray:
    """y as a 1-D array of ``n`` labels or values (one per row of X)."""
    y = np.asarray(y)
    if y.ndim != 1 or len(y) != n:
        raise DataError(f"{name} must be 1-D with {n} values (one per row), got shape {y.shape}",
                        field=name)
    if n < 1:
        raise DataError(f"{name} is empty", field=name)
    return y
