"""Reading the user's table (by path, or from the local upload form) and matching it to the
market's islands. Everything here runs on the user's machine; nothing is sent."""
from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from protocol.errors import DataError
from protocol.objectives import OBJECTIVE_TABLE, WIRE_OBJECTIVES

__all__ = ["read_table", "suggest_islands", "Suggestion", "MAX_TABLE_BYTES", "MAX_ROWS",
           "default_objective"]

#: the largest table file the workbench reads, and the most rows it keeps
MAX_TABLE_BYTES = 200 * 1024 * 1024
MAX_ROWS = 1_000_000
SUFFIXES = {".csv": "csv", ".txt": "csv", ".tsv": "csv", ".parquet": "parquet", ".pq": "parquet"}


def _kind(name: str) -> str:
    kind = SUFFIXES.get(Path(name).suffix.lower())
    if kind is None:
        raise DataError(f"{name!r} is not a CSV or Parquet file (its name must end in "
                        f"{', '.join(sorted(SUFFIXES))}); export the table as CSV and choose it "
                        "again", field="file")
    return kind


def read_table(*, path: str | None = None, data: bytes | None = None, name: str = ""):
    """A pandas DataFrame from a file path on this machine, or from uploaded bytes.

    Every refusal is a :class:`DataError` saying what is wrong and what to do."""
    import pandas as pd
    if path is not None:
        p = Path(path).expanduser()
        if not p.is_file():
            raise DataError(f"there is no file at {str(p)!r}; check the path (it is read on "
                            "this machine, by the workbench)", field="path")
        if p.stat().st_size > MAX_TABLE_BYTES:
            raise DataError(f"{p.name} is larger than {MAX_TABLE_BYTES >> 20} MB; use a sample "
                            "of its rows", field="path")
        kind, source, name = _kind(p.name), p, p.name
    else:
        if not data:
            raise DataError("no file was chosen (or it is empty); choose a CSV or Parquet file",
                            field="file")
        kind, source = _kind(name), io.BytesIO(data)
    try:
        if kind == "parquet":
            try:
                df = pd.read_parquet(source)
            except ImportError as exc:
                raise DataError(f"reading Parquet ({name}) needs pyarrow, which is not "
                                "installed: `pip install pyarrow`, or save the table as CSV",
                                field="file") from exc
        else:
            sep = "\t" if name.lower().endswith(".tsv") else ","
            df = pd.read_csv(source, sep=sep, nrows=MAX_ROWS + 1)
    except DataError:
        raise
    except Exception as exc:  # noqa: BLE001 - pandas raises many types for a bad file
        raise DataError(f"{name} cannot be read as a {kind.upper()} table "
                        f"({type(exc).__name__}: {str(exc)[:200]}); check that it is one",
                        field="file") from exc
    if len(df) > MAX_ROWS:
        raise DataError(f"{name} has more than {MAX_ROWS:,} rows; use a sample of them",
                        field="file")
    if df.shape[1] == 0 or len(df) == 0:
        raise DataError(f"{name} has no rows or no columns", field="file")
    df.columns = [str(c) for c in df.columns]
    return df


def numeric_columns(df) -> list[str]:
    import pandas as pd
    return [c for c in df.columns if pd.api.types.is_numeric_dtype(df[c])
            or pd.api.types.is_bool_dtype(df[c])]


def raw_values(df) -> np.ndarray:
    """Every finite numeric value of the table (what the privacy audit looks for)."""
    cols = numeric_columns(df)
    if not cols:
        return np.empty(0)
    arr = df[cols].to_numpy(dtype=np.float64, na_value=np.nan).ravel()
    return arr[np.isfinite(arr)]


@dataclass
class Suggestion:
    """An island whose input features the table has (``missing``: those it lacks)."""

    island: object  # IslandInfo
    present: list[str]
    missing: list[str]
    has_target: bool

    @property
    def complete(self) -> bool:
        return not self.missing


def suggest_islands(columns: list[str], islands: list) -> list[Suggestion]:
    """Islands ranked by how many of their input features the table has (all, then most),
    then by whether it has their target too; islands sharing no feature are left out."""
    cols = set(columns)
    out = []
    for isl in islands:
        feats = list(isl.semantic["input_features"])
        present = [f for f in feats if f in cols]
        if not present:
            continue
        out.append(Suggestion(isl, present, [f for f in feats if f not in cols],
                              isl.semantic["target"] in cols))
    out.sort(key=lambda s: (len(s.missing), -len(s.present), not s.has_target,
                            -s.island.learnware_count))
    return out


def default_objective(task_type: str) -> str:
    return next(o for o in WIRE_OBJECTIVES if OBJECTIVE_TABLE[o].task_type == task_type)
