"""Input validation at the edge: user tables become float matrices in the island's column order."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from protocol.errors import DataError


def as_matrix(X, features: Sequence[str] | None = None, *, name: str = "X") -> np.ndarray:
    """A 2-D float64 array; DataFrames are reordered to ``features`` (missing ones named)."""
    if hasattr(X, "columns") and hasattr(X, "to_numpy"):
        cols = [str(c) for c in X.columns]
        if features is not None:
            missing = [f for f in features if f not in cols]
            if missing:
                raise DataError(f"{name} lacks the island's input features {missing[:10]}",
                                field=name)
            X = X[list(features)]
        non_numeric = [str(c) for c, t in zip(X.columns, X.dtypes)
                       if not (np.issubdtype(t, np.number) or np.issubdtype(t, np.bool_))]
        if non_numeric:
            raise DataError(f"{name} has non-numeric columns {non_numeric[:10]}", field=name)
        X = X.to_numpy(dtype=np.float64)
    else:
        try:
            X = np.asarray(X, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise DataError(f"{name} must be numeric: {exc}", field=name) from exc
    if X.ndim != 2:
        raise DataError(f"{name} must be 2-D (rows x features), got {X.ndim}-D", field=name)
    if features is not None and X.shape[1] != len(features):
        raise DataError(f"{name} has {X.shape[1]} columns; the island has {len(features)} input "
                        f"features {list(features)[:10]}", field=name)
    bad = ~np.isfinite(X).all(axis=0)
    if bad.any():
        names = [features[i] if features is not None else str(i) for i in np.flatnonzero(bad)]
        raise DataError(f"{name} has NaN or Inf in columns {names[:10]}", field=name)
    return X


def as_target(y, n: int, *, name: str = "y") -> np.ndarray:
    y = np.asarray(y)
    if y.ndim != 1 or len(y) != n:
        raise DataError(f"{name} must be 1-D with {n} values (one per row), got shape {y.shape}",
                        field=name)
    if n < 1:
        raise DataError(f"{name} is empty", field=name)
    return y
