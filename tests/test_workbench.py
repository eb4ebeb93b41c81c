"""The local workbench (``lwm ui``) with Flask's test client against an in-process market:
who may drive it (token, Host, Origin, CSRF, CSP), the data owner's and the developer's flows,
the "What left this machine" panel and its audit, and errors that say what to do."""
from __future__ import annotations

import csv
import html as html_mod
import re
import io
import time

import numpy as np
import pytest

from client_sdk import Identity
from client_sdk.workbench import create_app
from client_sdk.workbench.guard import CSP, cookie_name
from tests.helpers import MarketFactory
from tests.workbench_helpers import (BASE, DEV_CITIES, ORIGIN, PORT, USER_CITY, city_frame,
                                     csrf_of, fitted_model, follow_job, login, post,
                                     publish_cities, workbench_client, txhousing, write_skops)

TOKEN = "t0ken-for-tests-0123456789"


@pytest.fixture(scope="module")
def island():
    return txhousing()


@pytest.fixture(scope="module")
def env(tmp_path_factory, island):
    with pytest.MonkeyPatch.context() as mp:  # pinned market keys: this module's own
        mp.setenv("LWM_CONFIG_DIR", str(tmp_path_factory.mktemp("wb-config")))
        factory = MarketFactory("sqlite", tmp_path_factory.mktemp("wb-market"), None)
        env = factory.make()
        ids = publish_cities(lambda: env.client(), island, DEV_CITIES)
        yield env, ids
        factory.close()


@pytest.fixture
def app(env, tmp_path):
    market, _ = env
    app = create_app(market.url, Identity.generate(), port=PORT, token=TOKEN,
                     transport=market.transport, cache_dir=tmp_path / "cache")
    yield app
    app.extensions["lwm_workbench"].close()


@pytest.fixture
def client(app):
    return workbench_client(app)


@pytest.fixture
def user(client):
    login(client, TOKEN)
    return client


# --- who may drive it -------------------------------------------------------------------------
def test_without_the_token_everything_is_refused(client):
    for path in ("/", "/data", "/sent", "/static/workbench.css"):
        resp = client.get(path)
        assert resp.status_code == 403 and b"token" in resp.data
    assert client.get("/?token=wrong").status_code == 403
    assert client.get("/", headers={"Cookie": f"{cookie_name(PORT)}=wrong"}).status_code == 403


def test_the_token_url_sets_a_strict_cookie_and_redirects_to_a_clean_url(client):
    resp = client.get(f"/?token={TOKEN}")
    assert resp.status_code == 303 and resp.headers["Location"] == "/"
    cookie = resp.headers["Set-Cookie"]
    assert cookie.startswith(f"{cookie_name(PORT)}={TOKEN}")
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    page = client.get("/")
    assert page.status_code == 200 and b"learnware workbench" in page.data
    assert page.headers["Content-Security-Policy"] == CSP
    assert "script-src" not in CSP and "default-src 'none'" in CSP
    assert b"<script" not in page.data


def test_another_host_is_refused_even_with_the_token(user):
    for host in ("evil.example", f"evil.example:{PORT}", "127.0.0.1:1", f"0.0.0.0:{PORT}"):
        resp = user.get("/", headers={"Host": host})
        assert resp.status_code == 421, host
    # (the cookie jar keeps the cookie for 127.0.0.1: a browser at localhost logs in anew)
    assert user.get(f"/?token={TOKEN}", headers={"Host": f"localhost:{PORT}"}).status_code == 303


def test_posts_need_the_same_origin_and_the_form_token(user):
    csrf = csrf_of(user.get("/data").get_data(as_text=True))
    data = {"path": "/nonexistent.csv"}
    no_origin = user.post("/data/load", data={**data, "csrf": csrf})
    assert no_origin.status_code == 403 and b"Origin" in no_origin.data
    foreign = user.post("/data/load", data={**data, "csrf": csrf},
                        headers={"Origin": "http://evil.example"})
    assert foreign.status_code == 403
    cross = user.post("/data/load", data={**data, "csrf": csrf},
                      headers={**ORIGIN, "Sec-Fetch-Site": "cross-site"})
    assert cross.status_code == 403
    assert user.post("/data/load", data=data, headers=ORIGIN).status_code == 403
    assert user.post("/data/load", data={**data, "csrf": "0" * 64},
                     headers=ORIGIN).status_code == 403
    ok = user.post("/data/load", data={**data, "csrf": csrf}, headers=ORIGIN)
    assert ok.status_code == 400 and b"there is no file at" in ok.data  # got through the guard


# --- the data owner ---------------------------------------------------------------------------
def test_data_owner_flow_by_path(user, env, island, tmp_path, app):
    _, ids = env
    path = tmp_path / "san_antonio.csv"
    df = city_frame(island, USER_CITY)
    df.to_csv(path, index=False)
    csrf = csrf_of(user.get("/data").get_data(as_text=True))
    resp = post(user, "/data/load", {"path": str(path)}, csrf)
    assert resp.status_code == 303
    setup = user.get("/data/setup").get_data(as_text=True)
    assert "use this island" in setup and "Islands of the market that fit" in setup
    # the island's features are suggested: pick it
    isl = app.extensions["lwm_workbench"].islands()[0]
    picked = user.get(f"/data/setup?island={isl.island_id}").get_data(as_text=True)
    assert 'id="picked"' in picked
    form = {"features": list(isl.semantic["input_features"]),
            "feature_order": ",".join(isl.semantic["input_features"]),
            "target": "yoy", "task_type": "regression", "objective": "rmse"}
    spec_page = follow_job(user, post(user, "/data/task", form, csrf))
    html = spec_page.get_data(as_text=True)
    assert spec_page.status_code == 200, html[:2000]
    assert 'id="spec-picture"' in html and html.count('class="reduced"') >= 5
    shown = html_mod.unescape(html)
    assert '"input_features": [' in shown and '"target": "yoy"' in shown
    results = follow_job(user, post(user, "/data/search", {}, csrf))
    html = results.get_data(as_text=True)
    assert results.status_code == 200, html[:2000]
    assert html.count('class="match"') == len(DEV_CITIES)
    assert "home sales" in html  # names of the learnwares
    # localise with the labelled rows
    loc = follow_job(user, post(user, "/data/localize", {}, csrf))
    assert 'id="localized"' in loc.get_data(as_text=True)
    # reuse: ensemble pruning on the labelled rows, then export
    reused = follow_job(user, post(user, "/data/reuse", {"learnware": list(ids.values()),
                                                         "method": "ensemble_pruning"}, csrf))
    html = reused.get_data(as_text=True)
    assert reused.status_code == 200, html[:2000]
    assert "EnsemblePruning" in html and html.count("signature and sha256 verified") == 3
    exported = user.get("/data/predictions.csv")
    assert exported.status_code == 200 and exported.mimetype == "text/csv"
    rows = list(csv.DictReader(io.StringIO(exported.get_data(as_text=True))))
    assert len(rows) == len(df) and set(rows[0]) == {"row", "prediction", "yoy"}
    pred = np.array([float(r["prediction"]) for r in rows])
    rmse = float(np.sqrt(np.mean((pred - df["yoy"].to_numpy()) ** 2)))
    assert rmse < float(np.std(df["yoy"]))  # better than predicting the mean
    # the panel: every request, decoded, and the audit passes
    sent = user.get("/sent").get_data(as_text=True)
    assert "/v1/search" in sent and "metrics_report" in sent and "search" in sent
    # nor the file's name or folder
    for rec in app.extensions["lwm_workbench"].recorder.sent():
        blob = rec.url.encode() + rec.body + b"".join(v for _, v in rec.headers)
        assert b"san_antonio" not in blob and str(tmp_path).encode() not in blob
    report = app.extensions["lwm_workbench"].audit()
    assert report.clean, [(f.value, f.how, f.where) for f in report.findings[:10]]
    assert "0 of " in sent and 'class="audit pass"' in sent
    assert report.clean and report.checked > 500 and report.n_requests >= 5


def test_upload_and_averaging_without_labels(user, env, island, app):
    _, ids = env
    df = city_frame(island, USER_CITY).drop(columns=["yoy"])
    csrf = csrf_of(user.get("/data").get_data(as_text=True))
    resp = post(user, "/data/load", {"file": (io.BytesIO(df.to_csv(index=False).encode()),
                                              "mine.csv")}, csrf,
                content_type="multipart/form-data")
    assert resp.status_code == 303
    form = {"features": list(df.columns), "target": "", "target_name": "yoy",
            "task_type": "regression"}
    for page in (follow_job(user, post(user, "/data/task", form, csrf)),
                 follow_job(user, post(user, "/data/search", {}, csrf))):
        assert 'id="error-what"' not in page.get_data(as_text=True), page.get_data(as_text=True)
    page = user.get("/data/results").get_data(as_text=True)
    assert 'id="localize"' not in page  # no labels: nothing to localise with
    assert 'value="ensemble_pruning" disabled' in page
    for method in ("averaging", "job_selector"):
        done = follow_job(user, post(user, "/data/reuse", {"learnware": list(ids.values()),
                                                           "method": method}, csrf))
        assert done.status_code == 200 and 'id="export"' in done.get_data(as_text=True)
    rows = user.get("/data/predictions.csv").get_data(as_text=True).splitlines()
    assert rows[0] == "row,prediction" and len(rows) == len(df) + 1


# --- the developer ----------------------------------------------------------------------------
def test_developer_publishes(user, env, island, tmp_path, app):
    market, _ = env
    city = "El Paso"
    model_path = write_skops(fitted_model(island, city), tmp_path / "model.skops")
    table = tmp_path / "train.csv"
    city_frame(island, city).to_csv(table, index=False)
    csrf = csrf_of(user.get("/dev").get_data(as_text=True))
    resp = post(user, "/dev/load", {"model_path": str(model_path), "table_path": str(table)},
                csrf)
    assert resp.status_code == 303, resp.get_data(as_text=True)[:1000]
    setup = user.get("/dev/setup").get_data(as_text=True)
    assert "Ridge" in setup and "taking 9 features" in setup
    isl = app.extensions["lwm_workbench"].islands()[0]
    form = {"name": "El Paso <b>sales</b>", "description": "Ridge, one city",
            "features": isl.semantic["input_features"],
            "feature_order": ",".join(isl.semantic["input_features"]), "target": "yoy",
            "task_type": "regression", "objective": "rmse", "tags": "texas, housing",
            "license": "MIT"}
    spec = follow_job(user, post(user, "/dev/semantic", form, csrf))
    html = spec.get_data(as_text=True)
    assert spec.status_code == 200, html[:2000]
    assert "El Paso &lt;b&gt;sales&lt;/b&gt;" in html and "<b>sales" not in html
    assert 'id="spec-picture"' in html
    done = follow_job(user, post(user, "/dev/publish", {}, csrf))
    html = done.get_data(as_text=True)
    assert 'id="published"' in html
    lid = app.extensions["lwm_workbench"].dev.published
    assert f'href="{market.url}/learnwares/{lid}"' in html
    man = market.client().manifest(lid)
    assert man.semantic["name"] == "El Paso <b>sales</b>" and man.semantic["tags"] == [
        "texas", "housing"]
    sent = user.get("/sent").get_data(as_text=True)
    assert "publish" in sent and 'class="audit pass"' in sent
    # the raw bytes of the publish request, on demand
    wbench = app.extensions["lwm_workbench"]
    pub = [s for s in wbench.recorder.sent() if s.message_type == "publish"][-1]
    one = user.get(f"/sent/{pub.seq}").get_data(as_text=True)
    assert "body.model.data" in one and 'id="show-raw"' in one and 'id="raw-bytes"' not in one
    raw = user.get(f"/sent/{pub.seq}?raw=1").get_data(as_text=True)
    assert 'id="raw-bytes"' in raw and "&#34;type&#34;:&#34;publish&#34;" in raw.replace(
        "&quot;", "&#34;").replace(" ", "")
    body = user.get(f"/sent/{pub.seq}/body")
    assert body.data == pub.body


def test_the_audit_finds_a_raw_value_that_was_sent(app, island):
    """The panel's audit is not a formality: a raw value put in a request is found."""
    import base64
    import json
    import httpx
    wbench = app.extensions["lwm_workbench"]
    df = city_frame(island, USER_CITY)
    wbench.owner_load(data=df.to_csv(index=False).encode(), name="x.csv")
    leaked = float(wbench.owner.df["log_median"].iloc[7])
    bad = np.array([leaked, 1.0], dtype="<f8")
    body = json.dumps({"type": "search", "body": {"x": base64.b64encode(bad.tobytes()).decode()}})
    with httpx.Client(transport=wbench.recorder, base_url=wbench.market_url) as http:
        http.post("/v1/search", content=body.encode())  # through the recorder, as the SDK does
    report = wbench.audit()
    assert not report.clean and report.found == 1
    assert report.findings[0].value == leaked


# --- errors say what is wrong and what to do -------------------------------------------------
def test_errors_are_explained_never_a_traceback(user, tmp_path, env, island):
    csrf = csrf_of(user.get("/data").get_data(as_text=True))
    bad = tmp_path / "bad.csv"
    bad.write_bytes(b"\x00\x01\x02garbage\n\xff\xfe")
    notcsv = tmp_path / "notes.docx"
    notcsv.write_text("hello")
    for data, expect in ([{"path": str(notcsv)}, "is not a CSV or Parquet file"],
                         [{"path": str(tmp_path / 'none.csv')}, "there is no file at"],
                         [{}, "no file was chosen"]):
        resp = post(user, "/data/load", data, csrf)
        html = resp.get_data(as_text=True)
        assert resp.status_code == 400 and expect in html and "What to do" in html
        assert "Traceback" not in html
    # Parquet without its engine: says what to install
    pq = tmp_path / "t.parquet"
    pq.write_bytes(b"PAR1")
    html = post(user, "/data/load", {"path": str(pq)}, csrf).get_data(as_text=True)
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        assert "pip install pyarrow" in html
    else:
        assert "cannot be read as a PARQUET table" in html
    # wrong columns: text features
    words = tmp_path / "words.csv"
    words.write_text("a,b\nx,1\ny,2\nz,3\n")
    assert post(user, "/data/load", {"path": str(words)}, csrf).status_code == 303
    resp = post(user, "/data/task", {"features": ["a", "b"], "task_type": "regression"}, csrf)
    assert resp.status_code == 400 and "not numeric" in resp.get_data(as_text=True)
    # columns no island has: the search says so
    nums = tmp_path / "nums.csv"
    nums.write_text("p,q\n" + "\n".join(f"{i * 1.37},{i * 2.11}" for i in range(50)))
    post(user, "/data/load", {"path": str(nums)}, csrf)
    page = follow_job(user, post(user, "/data/task", {"features": ["p", "q"],
                                                      "task_type": "regression"}, csrf))
    html = page.get_data(as_text=True)
    assert "no island matches" in html and "check the column names" in html
    # an unsafe model file
    model = tmp_path / "evil.skops"
    model.write_bytes(b"\x80\x04\x95pickle")
    resp = post(user, "/dev/load", {"model_path": str(model), "table_path": str(nums)}, csrf)
    html = resp.get_data(as_text=True)
    assert resp.status_code == 400 and "the model file was refused" in html
    assert "Traceback" not in html


def test_an_unreachable_market_is_explained(tmp_path):
    import httpx

    def refuse(request):
        raise httpx.ConnectError("connection refused", request=request)
    app = create_app("http://127.0.0.1:9", Identity.generate(), port=PORT, token=TOKEN,
                     transport=httpx.MockTransport(refuse), cache_dir=tmp_path)
    c = workbench_client(app)
    login(c, TOKEN)
    html = c.get("/").get_data(as_text=True)
    assert "cannot reach the market" in html and "lwm serve" in html
    assert "What left this machine (1)" in html  # the failed request is in the panel


def test_one_step_at_a_time(user, app):
    import threading
    wbench = app.extensions["lwm_workbench"]
    gate = threading.Event()
    job = wbench.runner.start("a long step", "/", lambda j: (j.stage("waiting"), gate.wait(30)))
    page = user.get(f"/jobs/{job.id}").get_data(as_text=True)
    assert '<meta http-equiv="refresh" content="1">' in page and "waiting" in page
    csrf = csrf_of(user.get("/data").get_data(as_text=True))
    busy = post(user, "/data/search", {}, csrf)
    assert busy.status_code == 409 and "still running" in busy.get_data(as_text=True)
    gate.set()
    for _ in range(600):
        if job.done:
            break
        time.sleep(0.05)
    done = user.get(f"/jobs/{job.id}")
    assert done.status_code == 303 and done.headers["Location"] == "/"
    assert user.get("/jobs/nope").status_code == 404


def test_the_ui_command_line():
    from client_sdk.cli import build_parser
    args = build_parser().parse_args(["ui", "--market", "http://m:1", "--port", "8123",
                                      "--no-browser"])
    assert (args.market, args.port, args.no_browser) == ("http://m:1", 8123, True)
    assert args.func.__name__ == "cmd_ui"


def test_market_text_is_escaped_and_a_refused_signature_is_explained(user, env, tmp_path):
    from tests.helpers import blob, fitted_ridge, linear_task, semantic
    market, _ = env
    rng = np.random.default_rng(3)
    X = blob(rng, [1.5, 2.5, 3.5], n=120)
    hostile = semantic("<script>alert('n')</script>\u202egpj.exe",
                       description="<img src=x onerror=alert(1)> a hostile island",
                       features=("hx1", "hx2", "hx3"), target="</td><script>alert(2)</script>")
    market.client().publish(fitted_ridge(X, linear_task(rng, X, [1, 2, 3])), X, hostile)
    table = tmp_path / "h.csv"
    table.write_text("hx1,hx2,hx3\n" + "\n".join(f"{a:.4f},{b:.4f},{c:.4f}" for a, b, c in X))
    csrf = csrf_of(user.get("/data").get_data(as_text=True))
    post(user, "/data/load", {"path": str(table)}, csrf)
    page = user.get("/data/setup").get_data(as_text=True)
    assert "&lt;/td&gt;&lt;script&gt;alert(2)&lt;/script&gt;" in page  # the island's target
    assert "<script>" not in page
    isl = re.search(r"/data/setup\?island=(isl-\d+)", page).group(1)
    form = {"features": ["hx1", "hx2", "hx3"], "target": "",
            "target_name": hostile["target"], "task_type": "regression"}
    follow_job(user, post(user, "/data/task", form, csrf))
    results = follow_job(user, post(user, "/data/search", {}, csrf)).get_data(as_text=True)
    assert isl in results
    assert "&lt;script&gt;alert(&#39;n&#39;)&lt;/script&gt;\u27e8U+202E\u27e9gpj.exe" in results
    assert "<script>" not in results and "\u202e" not in results
    # a market that signs with another key than the pinned one: refused, and said so
    from client_sdk.workbench import create_app as make
    app = make(market.url, Identity.generate(), port=PORT, token=TOKEN,
               transport=market.transport, cache_dir=tmp_path / "c",
               market_key=Identity.generate().public_key_b64)
    c = workbench_client(app)
    login(c, TOKEN)
    home = c.get("/").get_data(as_text=True)
    assert "now signs with another key" in home and "What to do" in home
