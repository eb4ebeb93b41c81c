"""Issue #8 "Bad input": hypothesis-built hostile requests against the app in-process, on a
market that holds a few learnwares. Every answer must be < 500 and a JSON envelope signed by the
market (an ``error``, or the endpoint's own type), and no refused request may change the market's
state. The strategies live in ``benchmarks/hostile.py`` (``benchmarks/fuzz_api.py`` runs them
longer).
"""
from __future__ import annotations

import pytest
from client_sdk import Identity

from protocol.envelope import open_envelope
from tests.helpers import MarketFactory, seal_request
from benchmarks.hostile import (NO_ADDRESS_LIMITS, Fuzzer, build_context, flask_sender,
                                get_cases, populate, raw_cases, run_cases, seal_escaped,
                                signed_cases, state_checker)

# 1600 cases, sized for ~20-30 s on a shared 2-core machine
TOTALS: dict[str, int] = {}


@pytest.fixture(scope="module")
def target(tmp_path_factory):
    factory = MarketFactory("sqlite", tmp_path_factory.mktemp("hostile"), None)
    env = factory.make(**NO_ADDRESS_LIMITS)
    populate(env)
    ctx = build_context(env)
    fuzzer = Fuzzer(env.market_key, flask_sender(env.app), state_checker(env))
    yield env, ctx, fuzzer
    print(f"\nhostile inputs: {fuzzer.stats.line()}")
    factory.close()


def _fuzz(fuzzer, cases, examples: int, name: str) -> None:
    """Run ``examples`` cases through the fuzzer (derandomized: the same every run); count them."""
    n0 = fuzzer.stats.cases
    run_cases(fuzzer, cases, examples, derandomize=True)
    TOTALS[name] = fuzzer.stats.cases - n0
    print(f"\n{name}: {TOTALS[name]} cases; total {fuzzer.stats.line()}")
    assert fuzzer.stats.server_errors == 0 and fuzzer.stats.crashes == 0


def test_raw_and_mutated_envelopes(target):
    env, ctx, fuzzer = target
    _fuzz(fuzzer, raw_cases(ctx), 400, "raw/mutated")


def test_signed_hostile_bodies(target):
    env, ctx, fuzzer = target
    _fuzz(fuzzer, signed_cases(ctx), 900, "signed hostile bodies")


def test_hostile_get_paths_and_queries(target):
    env, ctx, fuzzer = target
    _fuzz(fuzzer, get_cases(ctx), 300, "GET paths/queries")


def test_market_still_serves_after_the_run(target):
    env, ctx, fuzzer = target
    assert fuzzer.stats.server_errors == 0 and fuzzer.stats.crashes == 0, fuzzer.stats.line()
    user = env.client()
    info = user.island(ctx.bases["search"]["semantic"])
    assert info is not None and info["learnware_count"] == len(ctx.learnware_ids)
    with env.http() as http:
        r = http.post("/v1/search", content=seal_request(Identity.generate(), "search",
                                                          ctx.bases["search"], to=env),
                      headers={"Content-Type": "application/json"})
    assert r.status_code == 200 and env.reply(r)[0] == "search_result", r.content[:300]


# --------------------------------------------------------------------------------------------
# the 5xx the fuzzer found, pinned one by one
# --------------------------------------------------------------------------------------------
def _post(env, path, data):
    return env.app.test_client().post(path, data=data,
                                      headers={"Content-Type": "application/json"})


def _error(env, r, status, code):
    assert r.status_code == status, (r.status_code, r.get_data()[:300])
    env_ = open_envelope(r.get_data(), nonce_store=None, expected_sender=env.market_key,
                         window_s=3600)
    assert env_.type == "error" and env_.body["code"] == code, env_.body
    return env_.body


def test_lone_surrogates_are_refused_not_500(target):
    """A "\\udXXX" escape decodes to a lone surrogate, which the market could not encode when
    echoing it in an error (UnicodeEncodeError -> 500)."""
    env, ctx, _ = target
    me = Identity.generate()
    good = seal_request(me, "search", ctx.bases["search"], to=env)
    # unknown envelope field / duplicate key / body key named by a lone surrogate
    _error(env, _post(env, "/v1/search", b'{"\\udc00":1,' + good[1:]), 400, "bad_encoding")
    _error(env, _post(env, "/v1/search", b'{"\\udc00":1,"\\udc00":2}'), 400, "bad_encoding")
    body = dict(ctx.bases["search"], semantic=dict(ctx.bases["search"]["semantic"],
                                                   target="y\ud800"))
    _error(env, _post(env, "/v1/search", seal_escaped(me, "search", body, aud=env.key_id)), 400,
           "bad_encoding")
    # a valid surrogate *pair* escape is fine (it is one character)
    body = dict(ctx.bases["search"], semantic=dict(ctx.bases["search"]["semantic"],
                                                   name="\U0001f600"))
    r = _post(env, "/v1/search", seal_escaped(me, "search", body, aud=env.key_id))
    assert r.status_code == 200, r.get_data()[:300]


def test_array_dtype_of_another_json_type_is_a_schema_error(target):
    env, ctx, _ = target
    for dtype in (["<f8"], {"a": 1}):
        req = dict(ctx.bases["search"]["requirement"])
        req["beta"] = {"__array__": {"dtype": dtype, "shape": [1], "data": "AAAAAAAA8D8="}}
        body = dict(ctx.bases["search"], requirement=req)
        _error(env, _post(env, "/v1/search", seal_request(Identity.generate(), "search", body,
                                                          to=env, validate=False)), 422, "schema_violation")


def test_integers_too_large_for_a_float_are_a_schema_error(target):
    env, ctx, _ = target
    req = dict(ctx.bases["search"]["requirement"], gamma=10**400)
    body = dict(ctx.bases["search"], requirement=req)
    _error(env, _post(env, "/v1/search", seal_request(Identity.generate(), "search", body,
                                                      to=env, validate=False)), 422, "schema_violation")
    body = dict(ctx.bases["metrics_report"], values={ctx.learnware_ids[0]: -10**400})
    _error(env, _post(env, "/v1/localize", seal_request(Identity.generate(), "metrics_report",
                                                        body, to=env, validate=False)), 422, "schema_violation")


def test_double_slash_is_a_signed_404_not_an_html_redirect(target):
    env, ctx, _ = target
    r = env.app.test_client().get(f"/v1/learnwares/{ctx.learnware_ids[0]}//model")
    _error(env, r, 404, "not_found")
