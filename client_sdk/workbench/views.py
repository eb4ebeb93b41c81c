"""The workbench's pages: home, the data owner's steps, the developer's steps, job progress and
"What left this machine". Server-rendered (no script at all); long steps run as jobs whose page
refreshes itself."""
from __future__ import annotations

import json
import re

from flask import (Blueprint, Response, current_app, redirect, render_template, request,
                   url_for)
from werkzeug.exceptions import HTTPException

from protocol.errors import LearnwareError
from protocol.objectives import WIRE_OBJECTIVES, OBJECTIVE_TABLE

from .errors import WorkbenchError, explain
from .guard import csrf_token
from .jobs import BusyError
from .state import REUSERS, Workbench
from .tables import default_objective, numeric_columns, suggest_islands

bench = Blueprint("workbench", __name__, template_folder="templates", static_folder="static",
                  static_url_path="/static")

STATE_KEY = "lwm_workbench"
INVISIBLE = re.compile("[\u200b-\u200f\u202a-\u202e\u2060-\u2069\ufeff]")
#: rows of the table shown as a preview (locally)
PREVIEW_ROWS = 5
#: most raw bytes shown in the page (the rest downloads)
RAW_SHOWN = 64 * 1024


def wb() -> Workbench:
    return current_app.extensions[STATE_KEY]


@bench.app_template_filter("visible")
def _visible(text) -> str:
    """Market text with its invisible direction controls shown, not obeyed."""
    return INVISIBLE.sub(lambda m: f"\u27e8U+{ord(m.group()):04X}\u27e9", str(text))


@bench.app_template_filter("num")
def _num(v, digits: int = 4) -> str:
    return "-" if v is None else f"{float(v):.{digits}g}"


@bench.app_template_filter("cell")
def _cell(v) -> str:
    """A table cell of the local preview: floats to 6 significant digits."""
    return f"{v:.6g}" if isinstance(v, float) else str(v)


@bench.app_template_filter("pretty")
def _pretty(obj) -> str:
    """JSON for reading (autoescaped by the template, invisible controls shown)."""
    return _visible(json.dumps(obj, indent=1, ensure_ascii=False, sort_keys=True))


@bench.context_processor
def _context() -> dict:
    w = wb()
    return {"csrf": csrf_token(), "market_url": w.market_url,
            "n_sent": len(w.recorder.sent()), "objectives": WIRE_OBJECTIVES,
            "objective_task": {o: OBJECTIVE_TABLE[o].task_type for o in WIRE_OBJECTIVES},
            "zip": zip}


# --- errors: a page with what is wrong and what to do -----------------------------------------
def _error(what: str, todo: str, status: int = 400):
    return render_template("workbench/error.html", what=what, todo=todo), status


@bench.app_errorhandler(WorkbenchError)
def _wb_error(exc: WorkbenchError):
    return _error(exc.message, exc.todo, exc.status)


@bench.app_errorhandler(BusyError)
def _busy(exc: BusyError):
    return _error(str(exc), "its page refreshes by itself; come back when it is done", 409)


@bench.app_errorhandler(HTTPException)
def _http_error(exc: HTTPException):
    if exc.response is not None:  # the guard's refusals: plain text, as built
        return exc.response
    if exc.code == 413:
        return _error("the file is too large for the workbench",
                      "choose it by its path instead, or use a sample of its rows", 413)
    return _error(f"{exc.code} {exc.name}", "go back to the workbench's home page", exc.code)


@bench.app_errorhandler(Exception)
def _any_error(exc: Exception):
    what, todo = explain(exc)
    status = 502 if not isinstance(exc, (LearnwareError, ValueError)) else 400
    if isinstance(exc, LearnwareError) and 400 <= exc.status < 500:
        status = 400
    current_app.logger.info("workbench request failed", exc_info=True)
    return _error(what, todo, status)


def _start(title: str, then: str, fn) -> Response:
    job = wb().runner.start(title, then, fn)
    return redirect(url_for("workbench.job", job_id=job.id), 303)


def _upload(name: str) -> tuple[bytes | None, str]:
    f = request.files.get(name)
    if f is None or not f.filename:
        return None, ""
    return f.read(), f.filename


# --- home -------------------------------------------------------------------------------------
@bench.get("/")
def home():
    w = wb()
    try:
        islands, problem = w.islands(refresh=True), None
    except Exception as exc:  # noqa: BLE001 - shown on the page, the workbench still works
        islands, problem = [], explain(exc)
    return render_template("workbench/home.html", islands=islands, problem=problem,
                           identity=w.client.identity, identity_saved=w.identity_saved)


# --- data owner -------------------------------------------------------------------------------
@bench.get("/data")
def data():
    return render_template("workbench/data_load.html", owner=wb().owner)


@bench.post("/data/load")
def data_load():
    path = request.form.get("path", "").strip()
    blob, name = _upload("file")
    if path:
        wb().owner_load(path=path)
    else:
        wb().owner_load(data=blob, name=name)
    return redirect(url_for("workbench.data_setup"), 303)


def _island_choice(w, df):
    """(islands suggested for the table's columns, why there are none, the island the form
    asked for, its suggestion): the form works without suggestions when the market is away."""
    try:
        suggestions, problem = suggest_islands(list(df.columns), w.islands()), None
    except Exception as exc:  # noqa: BLE001 - any failure is explained on the page
        suggestions, problem = [], explain(exc)
    chosen = request.args.get("island")
    pick = next((s for s in suggestions if s.island.island_id == chosen), None)
    return suggestions, problem, chosen, pick


@bench.get("/data/setup")
def data_setup():
    w = wb()
    o = w.owner
    if o.df is None:
        return redirect(url_for("workbench.data"), 303)
    suggestions, problem, chosen, pick = _island_choice(w, o.df)
    if pick is None and suggestions and suggestions[0].complete and chosen is None:
        pick = suggestions[0]
    preview = o.df.head(PREVIEW_ROWS)
    return render_template("workbench/data_setup.html", owner=o, suggestions=suggestions,
                           pick=pick, problem=problem, preview=preview,
                           numeric=numeric_columns(o.df))


@bench.post("/data/task")
def data_task():
    f = request.form
    task_type = f.get("task_type", "regression")
    if task_type not in ("regression", "classification"):
        raise WorkbenchError(f"unknown task type {task_type[:40]!r}", "choose one of the list")
    objective = f.get("objective") or default_objective(task_type)
    if objective not in WIRE_OBJECTIVES:
        raise WorkbenchError(f"unknown objective {objective[:40]!r}", "choose one of the list")
    features = f.getlist("features")
    order = f.get("feature_order", "")
    if order:  # an island's feature order: the columns must be sent in it
        wanted = order.split(",")
        features = [c for c in wanted if c in features] + [c for c in features
                                                            if c not in wanted]
    wb().owner_task(features, f.get("target") or None, task_type, objective,
                    target_name=f.get("target_name", "").strip() or None)
    return _start("Computing the RKME of your table", url_for("workbench.data_spec"),
                  wb().owner_spec)


@bench.get("/data/spec")
def data_spec():
    o = wb().owner
    if o.spec is None:
        return redirect(url_for("workbench.data_setup"), 303)
    return render_template("workbench/data_spec.html", owner=o)


@bench.post("/data/search")
def data_search():
    return _start("Searching the market", url_for("workbench.data_results"), wb().owner_search)


@bench.get("/data/results")
def data_results():
    w = wb()
    if w.owner.result is None:
        return redirect(url_for("workbench.data_spec"), 303)
    return render_template("workbench/data_results.html", owner=w.owner, reusers=REUSERS,
                           catalogue_url=w.catalogue_url)


@bench.post("/data/localize")
def data_localize():
    return _start("Localising with anchors", url_for("workbench.data_results"),
                  wb().owner_localize)


@bench.post("/data/reuse")
def data_reuse():
    ids = request.form.getlist("learnware")
    method = request.form.get("method", "averaging")
    w = wb()
    return _start("Downloading, verifying and reusing", url_for("workbench.data_reused"),
                  lambda job: w.owner_reuse(job, ids, method))


@bench.get("/data/reused")
def data_reused():
    w = wb()
    if w.owner.predictions is None:
        return redirect(url_for("workbench.data_results"), 303)
    return render_template("workbench/data_reused.html", owner=w.owner,
                           catalogue_url=w.catalogue_url)


@bench.get("/data/predictions.csv")
def predictions_csv():
    return Response(wb().predictions_csv(), mimetype="text/csv",
                    headers={"Content-Disposition": "attachment; filename=predictions.csv"})


# --- developer --------------------------------------------------------------------------------
@bench.get("/dev")
def dev():
    return render_template("workbench/dev_load.html", dev=wb().dev)


@bench.post("/dev/load")
def dev_load():
    f = request.form
    model_blob, model_name = _upload("model_file")
    table_blob, table_name = _upload("table_file")
    wb().dev_load(model_path=f.get("model_path", "").strip() or None, model_data=model_blob,
                  model_name=model_name, table_path=f.get("table_path", "").strip() or None,
                  table_data=table_blob, table_name=table_name)
    return redirect(url_for("workbench.dev_setup"), 303)


@bench.get("/dev/setup")
def dev_setup():
    w = wb()
    d = w.dev
    if d.df is None:
        return redirect(url_for("workbench.dev"), 303)
    suggestions, problem, _, pick = _island_choice(w, d.df)
    return render_template("workbench/dev_setup.html", dev=d, suggestions=suggestions,
                           pick=pick, problem=problem, numeric=numeric_columns(d.df),
                           n_model=getattr(d.model, "n_features_in_", None))


@bench.post("/dev/semantic")
def dev_semantic():
    f = request.form
    task_type = f.get("task_type", "regression")
    if task_type not in ("regression", "classification"):
        raise WorkbenchError(f"unknown task type {task_type[:40]!r}", "choose one of the list")
    objective = f.get("objective") or default_objective(task_type)
    if objective not in WIRE_OBJECTIVES:
        raise WorkbenchError(f"unknown objective {objective[:40]!r}", "choose one of the list")
    features = f.getlist("features")
    order = f.get("feature_order", "")
    if order:
        wanted = order.split(",")
        features = [c for c in wanted if c in features] + [c for c in features
                                                            if c not in wanted]
    tags = [t.strip() for t in f.get("tags", "").split(",") if t.strip()]
    wb().dev_semantic(name=f.get("name", "").strip(), description=f.get("description", ""),
                      features=features, target=f.get("target", "").strip(),
                      task_type=task_type, objective=objective, tags=tags,
                      license=f.get("license", "").strip())
    return _start("Computing the RKME of the training table", url_for("workbench.dev_spec"),
                  wb().dev_spec)


@bench.get("/dev/spec")
def dev_spec():
    d = wb().dev
    if d.prepared is None:
        return redirect(url_for("workbench.dev_setup"), 303)
    return render_template("workbench/dev_spec.html", dev=d, catalogue_url=wb().catalogue_url)


@bench.post("/dev/publish")
def dev_publish():
    return _start("Publishing", url_for("workbench.dev_spec"), wb().dev_publish)


# --- jobs -------------------------------------------------------------------------------------
@bench.get("/jobs/<job_id>")
def job(job_id: str):
    j = wb().runner.jobs.get(job_id)
    if j is None:
        raise WorkbenchError("there is no such step", "go back to the home page", 404)
    if j.done and j.error is None:
        return redirect(j.then, 303)
    return render_template("workbench/job.html", job=j)


# --- what left this machine -------------------------------------------------------------------
@bench.get("/sent")
def sent():
    w = wb()
    return render_template("workbench/sent.html", sent=w.recorder.sent()[::-1],
                           dropped=w.recorder.dropped, report=w.audit())


@bench.get("/sent/<int:seq>")
def sent_one(seq: int):
    rec = wb().recorder.get(seq)
    if rec is None:
        raise WorkbenchError(f"request {seq} is not recorded (any more)",
                             "go back to the list", 404)
    raw = rec.body[:RAW_SHOWN].decode("utf-8", errors="backslashreplace")
    show_raw = request.args.get("raw") == "1"
    return render_template("workbench/sent_one.html", rec=rec, raw=raw, show_raw=show_raw,
                           cut=len(rec.body) > RAW_SHOWN)


@bench.get("/sent/<int:seq>/body")
def sent_body(seq: int):
    rec = wb().recorder.get(seq)
    if rec is None:
        raise WorkbenchError(f"request {seq} is not recorded (any more)",
                             "go back to the list", 404)
    return Response(rec.body, mimetype="application/octet-stream",
                    headers={"Content-Disposition": f"attachment; filename=request-{seq}.bin"})
