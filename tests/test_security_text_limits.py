"""Security round (issue 13), items 2 and 10: text search costs bounded work whatever the
market holds; per-address rate limits on every endpoint (GETs included), with a signed 429;
the operator's publishing policy (open, allow-list, operator-certified keys)."""
from __future__ import annotations

import difflib
import json
import time

import httpx
import numpy as np
import pytest

from client_sdk import Identity
from market_server import ServerConfig, textindex
from market_server.textindex import TextIndex
from protocol.certificate import issue_certificate, verify_certificate
from protocol.errors import LearnwareError

from tests.helpers import (blob, count_rows, error_body, fitted_ridge, search_envelope,
                           semantic)


def _words(rng: np.random.Generator, n: int) -> list[str]:
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    return ["".join(rng.choice(letters, size=int(rng.integers(3, 6)))) for _ in range(n)]


def _publish(env, name: str, *, description: str = "a toy task", tags=None, seed: int = 0,
             client=None):
    rng = np.random.default_rng(seed)
    X = blob(rng, (seed, 0, 0), n=60)
    sem = semantic(name, description=description)
    if tags is not None:
        sem["tags"] = tags
    dev = client or env.client()
    return dev.publish(fitted_ridge(X, X @ [1.0, 2.0, -1.0]), X, sem, k=10)


class _CountRatios:
    """Counts SequenceMatcher.ratio calls: the old text search made one per (query word,
    market word) pair; the index makes at most MAX_FUZZY_CANDIDATES per query word."""

    def __init__(self, monkeypatch):
        self.calls = 0
        original = difflib.SequenceMatcher.ratio

        def counted(matcher):
            self.calls += 1
            return original(matcher)
        monkeypatch.setattr(difflib.SequenceMatcher, "ratio", counted)


WORK_CAP = textindex.MAX_QUERY_TOKENS * textindex.MAX_FUZZY_CANDIDATES


# --- item 2: text search is an index with bounded work ---------------------------------------
def test_long_description_and_long_unsigned_query_cost_bounded_work(market, monkeypatch):
    env = market
    rng = np.random.default_rng(1)
    description = " ".join(_words(rng, 2000))[:10_000]
    _publish(env, "long description", description=description)
    _publish(env, "Austin housing prices", seed=1)
    query = " ".join(_words(np.random.default_rng(2), 200))[:499]
    counter = _CountRatios(monkeypatch)
    user = env.client()
    user.text_search(query)
    assert counter.calls <= WORK_CAP, counter.calls
    stats = env.state.market.text.last_stats
    assert stats.postings_scanned <= textindex.MAX_POSTINGS
    # the bounded index still finds what it should
    assert user.text_search("austin housng")[0]["name"] == "Austin housing prices"


def test_signed_search_without_island_and_100_long_tags_is_bounded(market, monkeypatch):
    env = market
    # a description of 100-character words: every tag is within the old length filter
    long_words = ["".join(np.random.default_rng(1000 + i).choice(list("abcdefghij"), size=100))
                  for i in range(99)]
    _publish(env, "long words", description=" ".join(long_words))
    tags = ["".join(np.random.default_rng(i).choice(list("abcdefghij"), size=100))
            for i in range(100)]
    sem = semantic("nobody has this", features=("p", "q"), tags=tags)
    counter = _CountRatios(monkeypatch)
    res = env.client().search(None, sem)
    assert res.island_id is None
    assert counter.calls <= WORK_CAP, counter.calls


def test_postings_scanned_are_capped_however_many_learnwares_share_a_word(monkeypatch):
    monkeypatch.setattr(textindex, "MAX_POSTINGS", 300)
    idx = TextIndex()
    for pk in range(1, 2001):
        idx.add(pk, f"lw-{pk}", {"name": f"sales {pk}", "description": "weekly sales figures"})
    hits = idx.search("sales figures", limit=5)
    assert idx.last_stats.postings_scanned <= 300 and idx.last_stats.truncated
    assert len(hits) == 5


def test_ranking_exact_over_prefix_over_typo_and_name_over_description():
    idx = TextIndex()
    idx.add(1, "lw-1", {"name": "rainfall totals", "description": ""})
    idx.add(2, "lw-2", {"name": "rain gauges", "description": ""})
    idx.add(3, "lw-3", {"name": "ran data", "description": ""})
    idx.add(4, "lw-4", {"name": "unrelated", "description": "rain in the description"})
    idx.add(5, "lw-5", {"name": "other", "description": "", "tags": ["rain"]})
    ids = [h["learnware_id"] for h in idx.search("rain")]
    # exact (1.0) > prefix (0.9) > typo (0.8 x similarity), times name 1.0 > tag 0.8 >
    # description 0.6: name exact, name prefix, tag exact, name typo, description exact
    assert ids == ["lw-2", "lw-1", "lw-5", "lw-3", "lw-4"], idx.search("rain")
    assert idx.search("xylophone") == []
    idx.remove(2)
    assert "lw-2" not in [h["learnware_id"] for h in idx.search("rain")]
    assert "rain" in idx.postings and "gauges" not in idx.postings


def test_a_second_worker_sees_publishes_and_deletes_of_the_first(market):
    env = market
    dev = env.client()
    a = _publish(env, "Seattle rainfall totals", client=dev)
    other = env.sibling()
    user = other.client()
    assert [h["learnware_id"] for h in user.text_search("rainfall")] == [a]
    b = _publish(env, "Portland rainfall records", seed=2, client=dev)   # incremental refresh
    assert {h["learnware_id"] for h in user.text_search("rainfall")} == {a, b}
    dev.delete(a)                                                          # totals differ: relist
    assert [h["learnware_id"] for h in user.text_search("rainfall")] == [b]


# --- item 10: per-address limits on every endpoint, a signed 429 with Retry-After ------------
def _http(env, address: str = "127.0.0.1") -> httpx.Client:
    return httpx.Client(base_url=env.url,
                        transport=httpx.WSGITransport(app=env.app, remote_addr=address))


def _assert_429(env, resp) -> dict:
    assert resp.status_code == 429, (resp.status_code, resp.content[:300])
    body = error_body(env, resp)
    assert body["code"] == "rate_limited"
    assert 1 <= int(resp.headers["Retry-After"]) <= 60
    return body


def test_limits_are_on_by_default():
    cfg = ServerConfig()
    assert cfg.rate_limit_address and cfg.rate_limit_address_text
    assert cfg.rate_limit_address_publish


def test_unsigned_gets_are_limited_per_address(make_market):
    env = make_market(rate_limit_address="5 per minute")
    with _http(env) as http:
        for _ in range(5):
            assert http.get("/v1/islands").status_code == 200
        body = _assert_429(env, http.get("/v1/learnwares/lw-1"))
        assert "this address" in body["message"] and "5 per 1 minute" in body["message"]
    with _http(env, "10.1.2.3") as other:  # another address has its own budget
        assert other.get("/v1/islands").status_code == 200


def test_text_search_has_its_own_budget_by_default(make_market):
    env = make_market()  # the default limits
    limit = int(ServerConfig().rate_limit_address_text.split()[0])
    with _http(env) as http:
        for _ in range(limit):
            assert http.get("/v1/learnwares", params={"q": "sales"}).status_code == 200
        _assert_429(env, http.get("/v1/learnwares", params={"q": "sales"}))
        assert http.get("/v1/islands").status_code == 200  # other reads go on


def test_fresh_keys_from_one_address_share_its_budget(make_market):
    env = make_market(rate_limit_address="4 per minute")
    sem = semantic("x")
    with _http(env) as http:
        for _ in range(4):
            r = http.post("/v1/search", content=search_envelope(Identity.generate(), sem, to=env))
            assert r.status_code == 200, r.content[:200]
        _assert_429(env, http.post("/v1/search", content=search_envelope(Identity.generate(),
                                                                         sem, to=env)))


def test_publishes_from_fresh_keys_are_limited_and_nothing_is_stored(make_market):
    # per day, not per minute: the sliding-window counter weighs the previous window's hits, so
    # publishes straddling a minute boundary (seconds apart on a loaded machine) may let a
    # third through; a day-long window makes that boundary practically unreachable here
    env = make_market(rate_limit_address_publish="2 per day")
    _publish(env, "first")
    _publish(env, "second", seed=1)
    with pytest.raises(LearnwareError) as exc:
        _publish(env, "third", seed=2)
    assert exc.value.code == "rate_limited" and exc.value.status == 429
    assert count_rows(env.store, "learnwares") == 2


def test_per_key_limit_answers_with_retry_after(make_market):
    env = make_market(rate_limit_search=1, rate_limit_address="")
    me = Identity.generate()
    with _http(env) as http:
        ok = http.post("/v1/search", content=search_envelope(me, semantic(), to=env))
        assert ok.status_code == 200, ok.content[:200]
        _assert_429(env, http.post("/v1/search", content=search_envelope(me, semantic(), to=env)))


def test_forwarded_for_counts_only_behind_trusted_proxies(make_market):
    spoof = make_market(rate_limit_address="2 per minute")
    with _http(spoof) as http:  # no trusted proxy: a forged header changes nothing
        for i in range(2):
            http.get("/v1/islands", headers={"X-Forwarded-For": f"10.0.0.{i}"})
        _assert_429(spoof, http.get("/v1/islands", headers={"X-Forwarded-For": "10.0.0.9"}))
    proxied = make_market(rate_limit_address="2 per minute", trusted_proxies=1)
    with _http(proxied, "192.168.0.1") as proxy:  # all requests come from the proxy
        for _ in range(2):
            assert proxy.get("/v1/islands",
                             headers={"X-Forwarded-For": "203.0.113.5"}).status_code == 200
        _assert_429(proxied, proxy.get("/v1/islands", headers={"X-Forwarded-For": "203.0.113.5"}))
        assert proxy.get("/v1/islands", headers={"X-Forwarded-For": "203.0.113.6"}
                         ).status_code == 200


def _redis_url() -> str:
    import socket
    try:
        socket.create_connection(("127.0.0.1", 6379), timeout=1).close()
    except OSError:
        pytest.skip("Redis at 127.0.0.1:6379 is unreachable")
    return "redis://127.0.0.1:6379"


def test_two_workers_share_per_address_counts_through_redis(make_market):
    env = make_market(rate_limit_address="4 per minute", rate_limit_storage=_redis_url())
    other = env.sibling()  # another worker: same market key, hence the same counters
    with _http(env) as a, _http(other) as b:
        for http in (a, b, a, b):
            assert http.get("/v1/islands").status_code == 200
        _assert_429(other, b.get("/v1/islands"))
        _assert_429(env, a.get("/v1/islands"))


def test_bad_limit_strings_are_refused_at_start(make_market):
    with pytest.raises(LearnwareError) as exc:
        make_market(rate_limit_address="lots")
    assert exc.value.field == "rate_limit_address"


# --- item 10: the operator's publishing policy -----------------------------------------------
def test_allow_list_admits_listed_keys_and_is_reread(make_market, tmp_path):
    a, b, c = Identity.generate(), Identity.generate(), Identity.generate()
    allow = tmp_path / "publishers.txt"
    allow.write_text(f"# developers of the institute\n{a.public_key_b64}\n{b.key_id}  # lab B\n")
    env = make_market(publishers=f"allow:{allow}")
    lw_a = _publish(env, "from a", client=env.client(a))
    _publish(env, "from b", seed=1, client=env.client(b))
    with pytest.raises(LearnwareError) as exc:
        _publish(env, "from c", seed=2, client=env.client(c))
    assert exc.value.status == 403 and exc.value.code == "publisher_not_allowed"
    assert "allow-list" in exc.value.message and c.key_id in exc.value.message
    assert count_rows(env.store, "learnwares") == 2
    allow.write_text(f"{b.key_id}\n{c.key_id}\n")  # c admitted, a removed: no restart needed
    _publish(env, "from c", seed=2, client=env.client(c))
    with pytest.raises(LearnwareError) as exc:
        _publish(env, "a again", seed=3, client=env.client(a))
    assert exc.value.code == "publisher_not_allowed"
    assert env.client(a).delete(lw_a) is True  # deleting one's own stays allowed


def test_certified_policy_admits_only_keys_the_operator_certified(make_market):
    operator, stranger = Identity.generate(), Identity.generate()
    env = make_market(publishers="certified", operator_key=operator.public_key_b64)
    dev = Identity.generate()
    cert = issue_certificate(operator, dev.public_key_b64, valid_days=30)
    _publish(env, "certified", client=env.client(dev, certificate=cert))

    def refused(client, seed):
        with pytest.raises(LearnwareError) as exc:
            _publish(env, "refused", seed=seed, client=client)
        assert exc.value.status == 403 and exc.value.code == "publisher_not_allowed"
        assert "certified by its operator" in exc.value.message
        return exc.value

    assert refused(env.client(Identity.generate()), 1).field == "certificate"      # none
    assert refused(env.client(Identity.generate(), certificate=cert), 2).field \
        == "certificate.developer"                                                  # not theirs
    other = issue_certificate(stranger, dev.public_key_b64)
    assert refused(env.client(dev, certificate=other), 3).field == "certificate.operator"
    old = issue_certificate(operator, dev.public_key_b64, valid_days=1,
                            now=time.time() - 2 * 86400)
    assert refused(env.client(dev, certificate=old), 4).field == "certificate.expires"
    forged = dict(cert, expires=cert["expires"] + 86400 * 365)
    assert refused(env.client(dev, certificate=forged), 5).field == "certificate.signature"
    assert count_rows(env.store, "learnwares") == 1


def test_certified_policy_needs_an_operator_key(make_market):
    with pytest.raises(LearnwareError) as exc:
        make_market(publishers="certified")
    assert exc.value.field == "operator_key"
    with pytest.raises(LearnwareError) as exc:
        make_market(publishers="everyone")
    assert exc.value.field == "publishers"


def test_lwm_certify_writes_a_certificate_the_market_accepts(tmp_path):
    from client_sdk.cli import main
    operator, dev = Identity.generate(), Identity.generate()
    op_file = tmp_path / "operator.pem"
    operator.save(op_file)
    out = tmp_path / "cert.json"
    assert main(["certify", "--identity", str(op_file), "--developer", dev.public_key_b64,
                 "--days", "10", "--out", str(out)]) == 0
    cert = json.loads(out.read_text())
    verify_certificate(cert, operator_key=operator.public_key_b64, developer=dev.public_key_b64)
    assert cert["expires"] <= time.time() + 10 * 86400 + 5


def test_lwm_serve_flags_reach_every_worker(monkeypatch, tmp_path):
    from market_server import serve
    key = Identity.generate().public_key_b64
    args = serve.build_parser().parse_args([
        "--data-dir", str(tmp_path), "--publishers", "certified", "--operator-key", key,
        "--trusted-proxies", "2", "--rate-limit-address", "off",
        "--rate-limit-address-text", "30 per minute", "--rate-limit-storage", "memory://"])
    cfg = serve.config_from_args(args)
    assert (cfg.publishers, cfg.operator_key, cfg.trusted_proxies) == ("certified", key, 2)
    assert serve.build_parser().parse_args([]).rate_limit_address == \
        ServerConfig().rate_limit_address
    monkeypatch.setenv("LWM_SERVER_CONFIG", serve._config_to_env(cfg))
    monkeypatch.setattr(serve, "_freeze_startup_objects", lambda: None)
    app = serve.app_from_env()  # what a gunicorn worker builds
    state = app.extensions["learnware_market"]
    assert state.config.operator_key == key and state.config.rate_limit_address == "off"
    assert state.market.publishers.kind == "certified"
    state.store.dispose()
