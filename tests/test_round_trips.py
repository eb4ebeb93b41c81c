"""A search is one round trip (issue 14 item 6): the client caches the island's kernel, sends the
version it fitted the requirement under, and refits once when the market answers
``kernel_changed`` with its current kernel. Requests are counted at the HTTP transport."""
from __future__ import annotations

import httpx
import numpy as np
import pytest

from market_server.storage import parse_id
from protocol.errors import KernelChangedError
from tests.helpers import (blob, error_body, fitted_ridge, linear_task, semantic, query,
                            signed_envelope)


class CountingTransport(httpx.BaseTransport):
    """Passes requests on to ``inner`` and records (method, path) of each."""

    def __init__(self, inner: httpx.BaseTransport):
        self.inner, self.requests = inner, []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append((request.method, request.url.path))
        return self.inner.handle_request(request)

    def since(self, mark: int) -> list[tuple[str, str]]:
        return self.requests[mark:]


SEM = semantic("round trips")


@pytest.fixture
def island(market):
    """A market with one island of four ridge models (feature ``a`` matters most)."""
    rng = np.random.default_rng(0)
    dev = market.client()
    for i in range(4):
        X = blob(rng, [i, 0.5 * i, -i], n=120)
        dev.publish(fitted_ridge(X, linear_task(rng, X, [3.0, 0.2, 0.0])), X, SEM, k=20)
    return market


def matches(res) -> list[tuple[str, float]]:
    return [(m.learnware_id, round(m.mmd, 12)) for m in res.single]


def refine(env) -> None:
    info = env.client().island(SEM)
    assert env.state.market.refine_kernel(parse_id(info.island_id, "isl"))


def test_second_search_on_an_unchanged_island_is_one_request(island):
    X_user = blob(np.random.default_rng(1), [1, 0.5, -1], n=80)
    counting = CountingTransport(island.transport)
    user = island.client(transport=counting)
    first = user.search(X_user, SEM, k=20)
    mark = len(counting.requests)
    second = user.search(X_user, SEM, k=20)
    assert counting.since(mark) == [("POST", "/v1/search")]
    # the same answer as a client that fetches the island first
    assert matches(second) == matches(first) == matches(island.client().search(X_user, SEM, k=20))


def test_search_after_a_kernel_refinement_refits_once_and_stays_correct(island):
    X_user = blob(np.random.default_rng(2), [2, 1.0, -2], n=80)
    counting = CountingTransport(island.transport)
    user = island.client(transport=counting)
    user.search(X_user, SEM, k=20)  # caches the island and its kernel
    refine(island)
    mark = len(counting.requests)
    res = user.search(X_user, SEM, k=20)
    # refused as stale (409 kernel_changed, with the kernel), refitted, searched again
    assert counting.since(mark) == [("POST", "/v1/search"), ("POST", "/v1/search")]
    assert res.message is None or "another kernel" not in res.message
    assert matches(res) == matches(island.client().search(X_user, SEM, k=20))
    mark = len(counting.requests)
    user.search(X_user, SEM, k=20)  # the refreshed kernel is cached
    assert counting.since(mark) == [("POST", "/v1/search")]


def test_market_answers_kernel_changed_with_its_current_kernel(island):
    user = island.client()
    info = user.island(SEM)
    spec, _ = user.requirement(blob(np.random.default_rng(3), [0, 0, 0], n=60), SEM, k=10)
    refine(island)
    current = island.client().island(SEM).kernel
    assert current["version"] == info.kernel["version"] + 1
    body = {"semantic": query(SEM), "max_results": 3, "requirement": spec.to_dict(),
            "island_id": info.island_id, "kernel_version": info.kernel["version"]}
    resp = island.http().post("/v1/search", content=signed_envelope(
        user.identity, "search", body, to=island), headers={"Content-Type": "application/json"})
    assert resp.status_code == 409
    err = error_body(island, resp)
    assert err["code"] == "kernel_changed" and err["field"] == "kernel_version"
    assert err["kernel"] == current
    # a requirement fitted under the current version is answered as before
    body["kernel_version"] = current["version"]
    body["requirement"] = user.requirement(blob(np.random.default_rng(3), [0, 0, 0], n=60),
                                           SEM, k=10)[0].to_dict()
    resp = island.http().post("/v1/search", content=signed_envelope(
        user.identity, "search", body, to=island), headers={"Content-Type": "application/json"})
    assert resp.status_code == 200, resp.content[:300]


def test_client_raises_kernel_changed_when_the_kernel_moves_twice(island, monkeypatch):
    """The refit happens once: a market whose kernel is stale again is an error, not a loop."""
    user = island.client()
    X_user = blob(np.random.default_rng(4), [0, 0, 0], n=60)
    user.search(X_user, SEM, k=10)
    refine(island)
    fit = user._fit_requirement

    def fit_then_refine(*a, **kw):
        out = fit(*a, **kw)
        refine(island)  # the market's kernel moves again after every fit
        return out

    monkeypatch.setattr(user, "_fit_requirement", fit_then_refine)
    with pytest.raises(KernelChangedError) as exc:
        user.search(X_user, SEM, k=10)
    assert exc.value.status == 409 and exc.value.kernel["version"] >= 2


def test_a_search_by_island_id_reads_only_the_island_head(island, monkeypatch):
    """ARCHITECTURE.md: a search reads only (id, version, kernel_version) of the island, for
    the SDK's searches (which name the island) too."""
    user = island.client()
    X_user = blob(np.random.default_rng(5), [1, 1, 1], n=60)
    user.search(X_user, SEM, k=10)  # the market decodes the island row once
    store = island.store
    reads = []
    full_row = store.island

    def counted(pk, *a, **kw):
        reads.append(pk)
        return full_row(pk, *a, **kw)

    monkeypatch.setattr(store, "island", counted)
    res = user.search(X_user, SEM, k=10)
    assert res.single and reads == []


def test_localisation_neither_builds_the_search_index_nor_computes_a_posterior_twice(
        island, monkeypatch):
    """A metrics report checks its ids with one store query (not by building the island's
    search index), and next_anchors reuses the posterior localize computed that round."""
    from market_server import anchors
    market = island.state.market

    def no_index(*a, **kw):
        raise AssertionError("localisation built the search index")

    monkeypatch.setattr(market, "index", no_index)
    posteriors = []
    compute = anchors._posterior
    monkeypatch.setattr(anchors, "_posterior",
                        lambda *a, **kw: posteriors.append(1) or compute(*a, **kw))
    rng = np.random.default_rng(6)
    X = blob(rng, [1, 0.5, -1], n=60)
    res = island.client().localize(X, linear_task(rng, X, [3.0, 0.2, 0.0]), SEM, rounds=2,
                                   max_anchors=2, more_per_round=1)
    assert res.rounds == 2 and res.single and all(m.name for m in res.single)
    assert len(posteriors) == res.rounds  # one per metrics report


def test_next_anchors_from_the_localize_posterior_equal_a_fresh_computation(island):
    from market_server import anchors
    prof = island.state.market.profile(island.client().island(SEM) and
                                       island.state.market.island_for(SEM))
    ids, vals = list(prof.ids[:2]), [1.0, 2.0]
    res = anchors.localize(prof, ids, vals, 50)
    assert (anchors.next_anchors(prof, ids, vals, 50, k=2, posterior=res.posterior)
            == anchors.next_anchors(prof, ids, vals, 50, k=2))


def _private_names(tree) -> tuple[set[str], set[str]]:
    """(private names a module defines: methods and ``x._name = ...`` targets,
        private attribute names it reads or calls on anything)"""
    import ast
    defined, used = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name.startswith("_"):
            defined.add(node.name)
        elif isinstance(node, ast.Attribute) and node.attr.startswith("_") \
                and not node.attr.startswith("__"):
            (defined if isinstance(node.ctx, ast.Store) else used).add(node.attr)
    return defined, used


def test_no_market_module_reaches_into_the_embedding_stacks_privates():
    """Issue 14 item 1: search.py uses EmbeddingStack's public methods; a private member of
    the stack used by another module is one it does not define itself."""
    import ast
    from pathlib import Path
    root = Path(__file__).resolve().parents[1] / "market_server"
    stack_private, _ = _private_names(ast.parse((root / "embedding_stack.py").read_text()))
    reach = {}
    for path in sorted(root.glob("*.py")):
        if path.name == "embedding_stack.py":
            continue
        own, used = _private_names(ast.parse(path.read_text()))
        foreign = (used & stack_private) - own
        if foreign:
            reach[path.name] = sorted(foreign)
    assert reach == {}
