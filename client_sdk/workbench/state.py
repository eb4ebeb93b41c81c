"""The workbench's state and steps, apart from the web pages: one user's table, search and
reuse (``OwnerState``), one developer's model and table (``DeveloperState``), and the client
that talks to the market through the recording transport. Held on the Flask app (no globals).

Raw data stay in these objects, on this machine; what reaches the market goes through
``MarketClient`` (specifications, signed requests, metric values) and is recorded."""
from __future__ import annotations

import io
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from client_sdk.client import MarketClient, SearchResult
from client_sdk.data import as_matrix
from client_sdk.learnware import Learnware
from client_sdk.records import IslandInfo, PreparedSpec
from client_sdk.rkme import RKMESpec
from learnware_core.metrics import evaluate, greater_is_better
from learnware_core.modelfile import load_model
from learnware_core.semantic import validate_semantic
from protocol.errors import DataError, LearnwareError, SchemaError
from protocol.objectives import OBJECTIVE_TABLE

from . import audit as audit_mod
from .errors import WorkbenchError
from .jobs import Job, JobRunner
from .projection import Projection, project
from .recorder import RecordingTransport
from .tables import numeric_columns, raw_values, read_table

__all__ = ["Workbench", "OwnerState", "DeveloperState", "REUSERS"]

#: the reuse methods offered, and whether they need labelled rows
REUSERS = {"averaging": ("Averaging", False), "job_selector": ("JobSelector", False),
           "ensemble_pruning": ("EnsemblePruning", True)}
ISLANDS_MAX_AGE_S = 30.0


@dataclass
class OwnerState:
    df: Any = None
    source: str = ""
    semantic: dict | None = None
    features: list[str] = field(default_factory=list)
    target: str | None = None
    X: np.ndarray | None = None          # rows with every feature present
    dropped_rows: int = 0
    X_lab: np.ndarray | None = None      # labelled rows
    y_lab: np.ndarray | None = None
    spec: RKMESpec | None = None
    island: IslandInfo | None = None
    picture: Projection | None = None
    result: SearchResult | None = None
    localized: SearchResult | None = None
    learnwares: dict[str, Learnware] = field(default_factory=dict)
    scores: dict[str, float] = field(default_factory=dict)   # on the labelled rows
    reuser: str | None = None
    reuse_score: float | None = None
    predictions: np.ndarray | None = None
    row_index: np.ndarray | None = None

    def reset_after_load(self) -> None:
        keep = (self.df, self.source)
        self.__init__()
        self.df, self.source = keep


@dataclass
class DeveloperState:
    model: Any = None
    model_name: str = ""
    df: Any = None
    source: str = ""
    semantic: dict | None = None
    X: np.ndarray | None = None
    prepared: PreparedSpec | None = None
    picture: Projection | None = None
    published: str | None = None


class Workbench:
    """Everything one workbench holds. ``transport``: the httpx transport to the market (the
    real network by default); it is wrapped by the recorder in every case."""

    def __init__(self, market_url: str, identity, *, transport=None, market_key=None,
                 cache_dir=None, identity_saved: bool = True):
        self.market_url = market_url.rstrip("/")
        self.recorder = RecordingTransport(transport)
        self.client = MarketClient(self.market_url, identity, market_key=market_key,
                                   transport=self.recorder, cache_dir=cache_dir)
        self.identity_saved = identity_saved
        self.runner = JobRunner()
        self.owner = OwnerState()
        self.dev = DeveloperState()
        self._islands: tuple[float, list[IslandInfo]] | None = None
        self._audit_cache: tuple[tuple, audit_mod.AuditReport] | None = None
        self._lock = threading.Lock()

    # --- the market -----------------------------------------------------------------------
    def islands(self, refresh: bool = False) -> list[IslandInfo]:
        if (refresh or self._islands is None
                or time.monotonic() - self._islands[0] > ISLANDS_MAX_AGE_S):
            self._islands = (time.monotonic(), self.client.islands())
        return self._islands[1]

    def catalogue_url(self, learnware_id: str) -> str:
        return f"{self.market_url}/learnwares/{learnware_id}"

    # --- data owner -----------------------------------------------------------------------
    def owner_load(self, *, path: str | None = None, data: bytes | None = None,
                   name: str = "") -> None:
        df = read_table(path=path, data=data, name=name)
        self.owner = OwnerState(df=df, source=path or name)

    def owner_task(self, features: list[str], target: str | None, task_type: str,
                   objective: str, target_name: str | None = None) -> None:
        """The semantic specification of the user's task, and the rows it needs. ``target``:
        the column of labels, if any; ``target_name``: what the island calls the target (the
        column's name by default)."""
        o = self.owner
        if o.df is None:
            raise WorkbenchError("no table is loaded", "choose a table first")
        df = o.df
        if not features:
            raise WorkbenchError("no feature column was chosen",
                                 "tick the columns the models should use as inputs")
        missing = [c for c in features + ([target] if target else []) if c not in df.columns]
        if missing:
            raise DataError(f"the table has no column(s) {missing}", field="features")
        if target in features:
            raise WorkbenchError(f"{target!r} is both the target and a feature",
                                 "untick it as a feature, or choose another target")
        bad = [c for c in features if c not in numeric_columns(df)]
        if bad:
            raise DataError(f"the feature column(s) {bad[:10]} are not numeric; untick them or "
                            "encode them as numbers first", field="features")
        if OBJECTIVE_TABLE[objective].task_type != task_type:
            raise WorkbenchError(f"the objective {objective!r} does not measure a "
                                 f"{task_type} task", "choose an objective of that task type")
        sem = {"data_type": "table", "task_type": task_type, "input_features": list(features),
               "target": target_name or target or "target", "objective": objective}
        # no name: a search sends the semantic's name, and the file's would reveal a local path
        feats = df[features]
        complete = feats.notna().all(axis=1).to_numpy()
        X = as_matrix(feats[complete], features, name="the table")
        if len(X) < 2:
            raise DataError("fewer than 2 rows have every chosen feature", field="features")
        X_lab = y_lab = None
        if target:
            lab = complete & df[target].notna().to_numpy()
            if lab.any():
                X_lab = as_matrix(feats[lab], features, name="the labelled rows")
                y_lab = df[target][lab].to_numpy()
                if task_type == "regression":
                    try:
                        y_lab = y_lab.astype(np.float64)
                    except (TypeError, ValueError) as exc:
                        raise DataError(f"the target {target!r} is not numeric; choose "
                                        "classification or another column",
                                        field="target") from exc
                else:
                    classes = sorted(set(y_lab.tolist()), key=str)
                    if len(classes) >= 2:
                        sem["classes"] = classes
        validate_semantic(sem, query=True)
        o.reset_after_load()
        o.semantic, o.features, o.target = sem, list(features), target
        o.X, o.dropped_rows = X, int((~complete).sum())
        o.X_lab, o.y_lab = X_lab, y_lab
        o.row_index = np.flatnonzero(complete)

    def owner_spec(self, job: Job) -> None:
        o = self._need_task()
        job.stage(f"asking the market for the island's kernel (sends: the island key)")
        spec, island = self.client.requirement(o.X, o.semantic)
        job.stage(f"fitted the RKME of {len(o.X):,} rows locally: {spec.k} reduced points")
        o.spec, o.island = spec, island
        o.picture = project(o.X, spec.z, spec.beta, spec.scales)
        job.stage("drew the picture")

    def owner_search(self, job: Job) -> None:
        o = self._need_task()
        job.stage(f"searching island {o.island.island_id if o.island else '?'} "
                  "(sends: the RKME requirement)")
        o.result = self.client.search(o.X, o.semantic, max_results=10)
        job.stage(f"{len(o.result.single)} learnwares ranked")

    def owner_localize(self, job: Job) -> None:
        o = self._need_task()
        if o.X_lab is None:
            raise WorkbenchError("the table has no labelled rows",
                                 "choose the target column when setting up the task")
        job.stage(f"downloading the island's anchors and evaluating them on {len(o.y_lab)} "
                  "labelled rows here (sends: rounded metric values and a row-count bucket)")
        o.localized = self.client.localize(o.X_lab, o.y_lab, o.semantic)
        job.stage(f"{len(o.localized.anchors)} anchors evaluated")

    def owner_reuse(self, job: Job, ids: list[str], method: str) -> None:
        from client_sdk import reuse
        o = self._need_task()
        if not ids:
            raise WorkbenchError("no learnware was chosen", "tick at least one learnware")
        if method not in REUSERS:
            raise WorkbenchError(f"unknown reuse method {method!r}", "choose one of the list")
        cls_name, needs_y = REUSERS[method]
        if needs_y and o.X_lab is None:
            raise WorkbenchError(f"{cls_name} needs labelled rows and the table has none",
                                 "choose Averaging or JobSelector, or a target column")
        lws = []
        for lid in ids:
            job.stage(f"downloading {lid} and verifying its developer's signature")
            lw = self.client.download(lid)
            o.learnwares[lid] = lw
            lws.append(lw)
        metric = o.semantic["objective"]
        if o.X_lab is not None:
            for lw in lws:
                o.scores[lw.id] = float(evaluate(metric, o.y_lab, lw.model.predict(o.X_lab)))
            job.stage(f"evaluated each on the {len(o.y_lab)} labelled rows ({metric})")
        job.stage(f"fitting {cls_name} locally")
        est = getattr(reuse, cls_name)(lws)
        if needs_y:
            est.fit(o.X_lab, o.y_lab)
        else:
            est.fit(o.X)
        o.reuser = cls_name
        o.predictions = np.asarray(est.predict(o.X))
        o.reuse_score = (float(evaluate(metric, o.y_lab, est.predict(o.X_lab)))
                         if o.X_lab is not None else None)
        job.stage(f"predicted {len(o.predictions):,} rows")

    def predictions_csv(self) -> bytes:
        import pandas as pd
        o = self.owner
        if o.predictions is None:
            raise WorkbenchError("there are no predictions yet", "reuse learnwares first")
        out = pd.DataFrame({"row": o.row_index, "prediction": o.predictions})
        if o.target and o.target in o.df.columns:
            out[o.target] = o.df[o.target].to_numpy()[o.row_index]
        buf = io.StringIO()
        out.to_csv(buf, index=False)
        return buf.getvalue().encode()

    def _need_task(self) -> OwnerState:
        if self.owner.semantic is None or self.owner.X is None:
            raise WorkbenchError("the task is not set up yet",
                                 "load a table and choose its features first")
        return self.owner

    # --- developer ------------------------------------------------------------------------
    def dev_load(self, *, model_path: str | None = None, model_data: bytes | None = None,
                 model_name: str = "", table_path: str | None = None,
                 table_data: bytes | None = None, table_name: str = "") -> None:
        from pathlib import Path
        if model_path:
            p = Path(model_path).expanduser()
            if not p.is_file():
                raise WorkbenchError(f"there is no model file at {str(p)!r}",
                                     "check the path (it is read on this machine)")
            model_data, model_name = p.read_bytes(), p.name
        if not model_data:
            raise WorkbenchError("no model file was chosen", "choose a .skops file")
        if not model_name.lower().endswith(".skops"):
            raise WorkbenchError(f"{model_name!r} is not a .skops file",
                                 "save the model with skops (skops.io.dump) and choose that file")
        model = load_model(model_data)  # refuses anything unsafe, without running it
        if not hasattr(model, "predict"):
            raise WorkbenchError(f"{model_name} holds a {type(model).__name__}, not a model "
                                 "with a predict method", "choose a fitted estimator's file")
        df = read_table(path=table_path or None, data=table_data, name=table_name)
        self.dev = DeveloperState(model=model, model_name=model_name, df=df,
                                  source=table_path or table_name)

    def dev_semantic(self, *, name: str, description: str, features: list[str], target: str,
                     task_type: str, objective: str, tags: list[str], license: str) -> None:
        d = self.dev
        if d.df is None:
            raise WorkbenchError("no model and table are loaded", "choose them first")
        if not features:
            raise WorkbenchError("no feature column was chosen",
                                 "tick the columns the model takes as inputs")
        sem = {"name": name, "description": description, "data_type": "table",
               "task_type": task_type, "input_features": list(features),
               "target": target or "target", "objective": objective}
        if tags:
            sem["tags"] = tags
        if license:
            sem["license"] = license
        if task_type == "classification":
            classes = getattr(d.model, "classes_", None)
            if classes is not None:
                sem["classes"] = [c.item() if hasattr(c, "item") else c for c in classes]
        try:
            validate_semantic(sem)
        except SchemaError as exc:
            raise WorkbenchError(f"the semantic specification is not valid: {exc}",
                                 "fix the field it names") from exc
        if OBJECTIVE_TABLE[objective].task_type != task_type:
            raise WorkbenchError(f"the objective {objective!r} does not measure a {task_type} "
                                 "task", "choose an objective of that task type")
        X = as_matrix(d.df[features].dropna(), features, name="the training table")
        nf = getattr(d.model, "n_features_in_", None)
        if nf is not None and int(nf) != len(features):
            raise DataError(f"the model takes {int(nf)} features and {len(features)} were "
                            "chosen; tick the columns it was trained on, in order",
                            field="features")
        d.semantic, d.X, d.prepared, d.picture, d.published = sem, X, None, None, None

    def dev_spec(self, job: Job) -> None:
        d = self.dev
        if d.semantic is None:
            raise WorkbenchError("the semantic specification is not built yet",
                                 "fill in the developer form first")
        job.stage("asking the market for the island's kernel (sends: the island key)")
        d.prepared = self.client.island_spec(d.X, d.semantic)
        spec = d.prepared.spec
        job.stage(f"fitted the RKME of {len(d.X):,} rows locally: {spec.k} reduced points")
        d.picture = project(d.X, spec.z, spec.beta, spec.scales)

    def dev_publish(self, job: Job) -> None:
        d = self.dev
        if d.prepared is None:
            raise WorkbenchError("the specification is not computed yet", "compute it first")
        job.stage("signing and sending the model file, the semantic specification and the RKME")
        d.published = self.client.publish(d.model, d.X, d.semantic, spec=d.prepared)
        self._islands = None
        job.stage(f"published as {d.published}")

    # --- the audit -----------------------------------------------------------------------
    def table_values(self) -> np.ndarray:
        parts = [raw_values(t) for t in (self.owner.df, self.dev.df) if t is not None]
        return np.concatenate(parts) if parts else np.empty(0)

    def audit(self) -> audit_mod.AuditReport:
        sent = self.recorder.sent()
        key = (tuple(s.seq for s in sent), id(self.owner.df), id(self.dev.df))
        with self._lock:
            if self._audit_cache is not None and self._audit_cache[0] == key:
                return self._audit_cache[1]
            report = audit_mod.audit([(s.method, s.url, s.headers, s.body) for s in sent],
                                     self.table_values())
            self._audit_cache = (key, report)
            return report

    def forget_audit(self) -> None:
        """Drop the cached audit (the next one is computed anew)."""
        with self._lock:
            self._audit_cache = None

    def close(self) -> None:
        self.client.close()
