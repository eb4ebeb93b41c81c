"""Signed usage reports: the SDK's report, one per (key, learnware) replaceable by its author,
no report on one's own learnware or a withdrawn one, bad input refused naming the field with
nothing written, rate limits per key and per address, the robust aggregate in search results,
the manifest and the listing, the schema-5 migration, and the public texts for text search.
(Privacy: tests/test_privacy_audit.py; the reports' effect on localisation:
tests/test_reports_localize.py.)"""
from __future__ import annotations

import numpy as np
import pytest
import sqlalchemy as sa

from protocol.errors import LearnwareError, WithdrawnError
from protocol.identity import Identity
from client_sdk.disclosure import MetricBudget, bucket_rows
from market_server.reports import summarize
from market_server.storage import SCHEMA_VERSION, Store
from tests.helpers import (blob, count_rows, error_body, fitted_ridge, linear_task, semantic,
                           signed_envelope)

SEM = semantic("report toy", model_card="# card\nfor *tests*")


def _island(env, n=3):
    rng = np.random.default_rng(7)
    dev = env.client()
    ids, data = [], []
    for i in range(n):
        X = blob(rng, [4.0 * i, 0.0, 0.0], n=120)
        y = linear_task(rng, X, [1.0 + i, -1.0, 0.5])
        ids.append(dev.publish(fitted_ridge(X, y), X, SEM))
        data.append((X, y))
    return dev, ids, data


@pytest.fixture
def island(market):
    dev, ids, data = _island(market)
    return market, dev, ids, data


def _post(env, identity, lid, body=None, **over):
    body = body or {"learnware_id": lid, "metric": "rmse", "value": 0.5, "n_rows": 20,
                    "reuse": "direct"}
    body = {**body, **over}
    with env.http() as http:
        return http.post(f"/v1/learnwares/{lid}/reports",
                         content=signed_envelope(identity, "usage_report", body, to=env))


def test_report_round_trip_replace_and_aggregate(island):
    env, dev, ids, data = island
    X, y = data[0]
    user = env.client()
    r = user.report(ids[0], X[:37], y[:37], comment="good on my town", budget=MetricBudget(seed=1))
    expected = float(np.sqrt(np.mean((fitted_ridge(X, y).predict(X[:37]) - y[:37]) ** 2)))
    assert r.value == pytest.approx(expected, rel=1e-9)  # the exact value stays here
    assert r.n_rows_sent == bucket_rows(37) == 20 and r.sent != r.value and not r.replaced
    assert r.summary["count"] == 1 and r.summary["median"] == pytest.approx(r.sent)
    again = user.report(ids[0], X[:60], y[:60], reuse="averaging")
    assert again.replaced and again.summary["count"] == 1  # replaced, not added
    other = env.client()
    third = other.report(ids[0], X[60:], y[60:], comment="<b>meh</b>")
    assert third.summary["count"] == 2 and not third.replaced
    listing = user.reports(ids[0])
    assert [x["reporter"] for x in listing["reports"]] == [other.identity.key_id,
                                                           user.identity.key_id]
    assert listing["reports"][0]["comment"] == "<b>meh</b>"
    assert "comment" not in listing["reports"][1]  # the replacement carried none
    assert listing["reports"][1]["reuse"] == "averaging"
    s = listing["summary"]
    assert s["count"] == 2 and s["q1"] <= s["median"] <= s["q3"]
    assert s["rows"] == bucket_rows(60) + bucket_rows(len(y) - 60)
    assert user.manifest(ids[0]).reports == s
    assert user.manifest(ids[1]).reports is None
    # search results carry the aggregate of each ranked learnware that has reports
    res = user.search(X, SEM)
    by_id = {m.learnware_id: m for m in res.single}
    assert by_id[ids[0]].reports == s
    assert by_id[ids[1]].reports is None
    assert count_rows(env.store, "usage_reports") == 2


def test_developer_cannot_report_on_its_own_learnware(island):
    env, dev, ids, data = island
    with pytest.raises(LearnwareError) as exc:
        dev.report(ids[0], *data[0])
    assert exc.value.code == "own_learnware" and exc.value.status == 403
    assert count_rows(env.store, "usage_reports") == 0


def test_withdrawn_learnware_refuses_reports(island):
    env, dev, ids, data = island
    user = env.client()
    user.report(ids[1], *data[1])
    dev.delete(ids[1], reason="superseded")
    with pytest.raises(WithdrawnError):
        user.report(ids[1], *data[1])  # the SDK will not even download it
    body = error_body(env, _post(env, Identity.generate(), ids[1]))  # a raw report: 410
    assert body["code"] == "withdrawn"
    assert count_rows(env.store, "usage_reports") == 1
    assert user.manifest(ids[0]).reports is None


@pytest.mark.parametrize("over, code, field", [
    ({"metric": "mae"}, "wrong_metric", "metric"),
    ({"value": -1.0}, "bad_metrics", "value"),
    ({"value": float("1e13")}, "schema_violation", "value"),
    ({"reuse": "stolen"}, "schema_violation", "reuse"),
    ({"comment": "x" * 501}, "schema_violation", "comment"),
    ({"n_rows": 0}, "schema_violation", "n_rows"),
    ({"learnware_id": "lw-2"}, "id_mismatch", "learnware_id"),
    ({"extra": 1}, "schema_violation", "extra"),
])
def test_bad_reports_are_refused_naming_the_field(island, over, code, field):
    env, dev, ids, data = island
    resp = _post(env, Identity.generate(), ids[0], **over)
    body = error_body(env, resp)
    assert body["code"] == code and body["field"] == field, body
    assert count_rows(env.store, "usage_reports") == 0


def test_unknown_learnware_and_unsigned_reports(island):
    env, dev, ids, data = island
    body = error_body(env, _post(env, Identity.generate(), "lw-999", learnware_id="lw-999"))
    assert body["code"] == "not_found"
    with env.http() as http:
        assert http.post(f"/v1/learnwares/{ids[0]}/reports").status_code == 401
        listing = http.get("/v1/learnwares/lw-999/reports")
    assert listing.status_code == 404


def test_reports_are_rate_limited_per_key(make_market):
    env = make_market(rate_limit_report=2, rate_limit_address="")
    dev, ids, data = _island(env)
    me = Identity.generate()
    for lid in ids[:2]:
        assert _post(env, me, lid).status_code == 201
    resp = _post(env, me, ids[2])
    assert error_body(env, resp)["code"] == "rate_limited" and resp.status_code == 429
    assert _post(env, Identity.generate(), ids[2]).status_code == 201  # another key: its own


def test_reports_are_rate_limited_per_address(make_market):
    env = make_market(rate_limit_address_report="2 per minute", rate_limit_report=0)
    dev, ids, data = _island(env)
    for lid in ids[:2]:
        assert _post(env, Identity.generate(), lid).status_code == 201
    resp = _post(env, Identity.generate(), ids[2])  # fresh keys, same address
    assert resp.status_code == 429 and error_body(env, resp)["code"] == "rate_limited"


def test_summary_is_robust_to_a_few_extreme_reports():
    honest = [0.50, 0.52, 0.48, 0.51, 0.49, 0.50, 0.53, 0.47]
    s = summarize(honest + [1e6, 1e6], [20] * 10, "rmse")
    assert s["count"] == 10 and 0.47 <= s["median"] <= 0.53 and s["q3"] < 1.0
    assert summarize([], [], "rmse") == {"count": 0, "metric": "rmse", "median": None,
                                         "q1": None, "q3": None, "rows": 0}


def test_public_texts_for_text_search(island):
    env, dev, ids, data = island
    env.client().report(ids[0], *data[0], comment="great for small towns")
    texts = env.state.market.reports.public_texts([ids[0], ids[1], "lw-999", "junk"])
    assert set(texts) == {ids[0], ids[1]}
    assert texts[ids[0]] == {"model_card": SEM["model_card"],
                             "comments": ["great for small towns"]}
    assert texts[ids[1]]["comments"] == []
    dev.delete(ids[1])
    assert set(env.state.market.reports.public_texts([ids[1]])) == set()


def test_schema_4_is_upgraded_to_6(market):
    env = market
    with env.store.engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE usage_reports"))
        conn.execute(sa.text("DELETE FROM schema_version"))
        conn.execute(sa.text("INSERT INTO schema_version (version, applied_at) VALUES (4, 0)"))
    env.store.dispose()
    store = Store(env.store.db_url, blob_store=env.config.resolved_blob_store(),
                  blob_dir=env.root / "blobs-upgrade", db_schema=env.config.db_schema)
    with store.engine.connect() as conn:
        versions = sorted(r[0] for r in conn.execute(sa.text("SELECT version FROM schema_version")))
        tables = set(sa.inspect(conn).get_table_names(schema=env.config.db_schema))
    assert versions == [4, SCHEMA_VERSION] == [4, 6] and "usage_reports" in tables
    assert store.reports(learnware_pks=[1]) == []
    store.dispose()


def test_catalogue_page_shows_reports_escaped(island):
    from tests.web_helpers import RLO, check_page_safe
    env, dev, ids, data = island
    with env.http() as http:
        assert "No usage reports yet" in http.get(f"/learnwares/{ids[0]}").text
    env.client().report(ids[0], *data[0], comment="<script>alert(1)</script>" + RLO + "x")
    env.client().report(ids[0], *data[0], reuse="job_selector")
    with env.http() as http:
        r = http.get(f"/learnwares/{ids[0]}")
    assert r.status_code == 200 and "default-src 'self'" in r.headers["content-security-policy"]
    html = r.text
    head, rest = html.split('<div class="model-card" dir="auto">', 1)
    check_page_safe(head + rest.split("</div>", 1)[1])
    section = html.split('id="usage-reports"', 1)[1].split("</section>", 1)[0]
    assert "<strong>2</strong> users reported rmse" in section
    assert "&lt;script&gt;alert(1)&lt;/script&gt;\u27e8U+202E\u27e9x" in section
    assert "job_selector" in section


def test_cli_report_download_card_and_search_show_reports(island, tmp_path, monkeypatch,
                                                          capsys):
    import json

    import pandas as pd

    from client_sdk import cli
    env, dev, ids, data = island
    me = Identity.generate()
    monkeypatch.setattr(cli, "_client", lambda args, need_identity=False: env.client(me))
    X, y = data[0]
    df = pd.DataFrame(X, columns=["a", "b", "c"])
    df["y"] = y
    df.to_csv(tmp_path / "rows.csv", index=False)
    argv = ["report", ids[0], "--data", str(tmp_path / "rows.csv"), "--target", "y",
            "--reuse", "averaging", "--comment", "fine \x1b[2J"]
    assert cli.main(argv) == cli.EXIT_OK
    out = capsys.readouterr().out
    assert f"reported on {ids[0]}: rmse" in out and "1 report(s)" in out
    assert cli.main(argv + ["--json"]) == cli.EXIT_OK
    res = json.loads(capsys.readouterr().out)
    assert res["replaced"] is True and res["summary"]["count"] == 1
    assert cli.main(["download", ids[0], "--out", str(tmp_path / "dl")]) == cli.EXIT_OK
    out = capsys.readouterr().out
    assert "model card (signed by the developer)" in out and "for *tests*" in out
    assert (tmp_path / "dl" / f"{ids[0]}.model_card.md").read_text() == SEM["model_card"]
    df.drop(columns=["y"]).to_csv(tmp_path / "user.csv", index=False)
    (tmp_path / "sem.json").write_text(json.dumps(SEM))
    assert cli.main(["search", "--semantic", str(tmp_path / "sem.json"), "--data",
                     str(tmp_path / "user.csv")]) == cli.EXIT_OK
    out = capsys.readouterr().out
    assert "[1 user report(s): median rmse" in out


def test_cli_prints_model_cards_without_obeying_control_characters():
    from client_sdk.cli import _printable
    assert _printable("a\x1b[2Jb\u202ec\nd\te") == "a<U+001B>[2Jb<U+202E>c\nd\te"
