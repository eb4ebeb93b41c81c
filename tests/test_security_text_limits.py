"""Security round (issue 13), items 2 and 10: text search costs bounded work whatever the
market holds; per-address rate limits on every endpoint (GETs included), with a signed 429;
the operator's publishing policy (open, allow-list, operator-certified keys)."""
from __future__ import annotations

import difflib

import numpy as np
import pytest

from market_server import textindex
from market_server.textindex import TextIndex

from .conftest import blob, fitted_ridge, semantic


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
    rng = np.random.default_rng(3)
    _publish(env, "long description", description=" ".join(_words(rng, 2000))[:10_000])
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
