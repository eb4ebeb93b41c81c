"""The web catalogue (market_server/web/): every page, its escaping and headers, bad query
parameters, withdrawn learnwares, and that it shows only what the signed API gives anyone
(SQLite and PostgreSQL). The same pages in a real browser: tests/test_web_browser.py."""
from __future__ import annotations

import re

import pytest

from market_server.openapi import openapi_document
from tests.web_helpers import (HOSTILE, HOSTILE_ISLAND, LONG_NAME, NAMES, RLO, check_page_safe,
                               populate_catalogue)


@pytest.fixture(scope="module")
def cat(make_module_market):
    env = make_module_market()
    return env, populate_catalogue(env.client)


def get(env, path, status=200, **kw):
    with env.http() as http:
        r = http.get(path, **kw)
    assert r.status_code == status, (path, r.status_code, r.text[:500])
    assert r.headers["content-type"].startswith("text/html"), r.headers["content-type"]
    csp = r.headers["content-security-policy"]
    for part in ("default-src 'self'", "script-src 'self'", "frame-ancestors 'none'",
                 "object-src 'none'"):
        assert part in csp
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["referrer-policy"] == "no-referrer"
    check_page_safe(r.text)
    return r


def rows(html: str) -> list[str]:
    """Learnware ids of the table rows, in order."""
    body = html.split('id="learnware-table"', 1)[1].split("</table>", 1)[0]
    return re.findall(r'<small class="id">(lw-\d+)</small>', body)


def test_home_lists_islands_with_counts_and_a_search_box(cat):
    env, lw = cat
    html = get(env, "/").text
    assert 'action="/search"' in html and 'name="q"' in html
    assert 'href="/islands/isl-1"' in html and 'href="/islands/isl-2"' in html
    # isl-1: 7 live (8 ordinary - 1 withdrawn + hostile + long name), 1 withdrawn
    card = html.split('href="/islands/isl-1"', 1)[1].split("</li>", 1)[0]
    assert '<strong class="count">9</strong>' in card and "(1 withdrawn)" in card
    assert "last publish 20" in card and "UTC" in card
    assert "&lt;/title&gt;&lt;script&gt;" in html  # the hostile island's target, escaped
    assert 'id="island-connections"' not in html  # no two islands share features here


def test_home_shows_how_islands_connect(cat, monkeypatch):
    """Components of the specification world with two or more islands, escaped; a lone
    island's component is not a connection."""
    env, _ = cat
    market = env.state.market
    monkeypatch.setattr(market, "world_info", lambda: {"components": [
        {"islands": ["isl-1", "isl-2"], "connecting_features": ["a", "<script>x</script>"]},
        {"islands": ["isl-3"], "connecting_features": []}]})
    html = get(env, "/").text
    section = html.split('id="island-connections"', 1)[1].split("</section>", 1)[0]
    assert 'href="/islands/isl-2"' in section and "&lt;script&gt;x" in section
    assert 'href="/islands/isl-3"' not in section


def test_island_page_kernel_map_and_table(cat):
    env, lw = cat
    html = get(env, "/islands/isl-1").text
    info = env.state.market.island_info(env.state.market.island_by_public_id("isl-1"))
    assert f"{info['kernel']['gamma']:.4g}" in html
    for f in ("a", "b", "c"):
        assert f"<code><bdi dir=\"auto\">{f}</bdi></code>" in html
    assert "Not refined yet" in html  # refine_at=() in the test markets
    # the map: one point per live learnware (fewer than the sample size), names on hover
    svg = html.split('<svg class="islandmap"', 1)[1].split("</svg>", 1)[0]
    assert svg.count("<circle") == 9
    assert f"\u2068{NAMES[0]}\u2069 ({lw['ids'][0]})</title>" in svg
    assert lw["withdrawn"] not in svg
    # the table: newest first by default, withdrawn hidden
    assert lw["withdrawn"] not in rows(html) and len(rows(html)) == 9
    assert rows(html) == sorted(rows(html), key=lambda i: -int(i[3:]))


def test_island_table_sorts_pages_and_shows_withdrawn_on_request(cat):
    env, lw = cat
    by_name = rows(get(env, "/islands/isl-1?sort=name&order=asc").text)
    names = {**lw["names"], lw["hostile"]: HOSTILE["name"], lw["long"]: LONG_NAME}
    assert [names[i] for i in by_name] == sorted(names[i] for i in by_name)
    desc = rows(get(env, "/islands/isl-1?sort=name&order=desc").text)
    assert desc == by_name[::-1]
    by_size = rows(get(env, "/islands/isl-1?sort=size&order=asc").text)
    sizes = {i: env.state.market.learnware_row(i).model_size for i in by_size}
    assert [sizes[i] for i in by_size] == sorted(sizes.values())
    p1 = get(env, "/islands/isl-1?sort=published&order=asc&per_page=10").text
    assert len(rows(p1)) == 9 and "page 1 of 1" in p1
    shown = get(env, "/islands/isl-1?withdrawn=show&order=asc&per_page=10").text
    assert lw["withdrawn"] in rows(shown) and "withdrawn</span>" in shown
    # the links keep the sort: the "next" link of a 2-page table
    env2_html = get(env, "/islands/isl-1?withdrawn=show&per_page=10&sort=name&order=asc").text
    assert "page 1 of 1" in env2_html


def test_learnware_page_card_provenance_spec_and_download_lines(cat):
    env, lw = cat
    lid = lw["ids"][2]
    row = env.state.market.learnware_row(lid)
    html = get(env, f"/learnwares/{lid}").text
    assert NAMES[2] in html and f"{NAMES[2]}: a toy model number 2" in html
    assert row.developer_key_id in html and row.developer in html
    assert row.model_sha256 in html
    assert "sklearn.linear_model._ridge.Ridge" in html
    from learnware_core.spec import decode_points
    assert f"<strong>{len(decode_points(row.spec)[1])}</strong> reduced points" in html
    url = "http://" + env.url.split("://", 1)[1]
    assert f"lwm download {lid} --market {url}" in html
    assert f'MarketClient("{url}").download("{lid}")' in html
    assert f'href="/v1/learnwares/{lid}/model"' in html and f'href="/v1/learnwares/{lid}"' in html
    # every learnware of that developer key is listed (4 of the 8 ordinary ones)
    others = html.split('id="developer-learnwares"', 1)[1]
    mine = [i for i in lw["ids"] if env.state.market.learnware_row(i).developer_key_id
            == row.developer_key_id]
    assert set(rows(others)) == set(mine)


def test_withdrawn_learnware_is_marked_and_nothing_is_downloadable(cat):
    env, lw = cat
    lid = lw["withdrawn"]
    html = get(env, f"/learnwares/{lid}").text
    assert 'id="withdrawn-notice"' in html and "Withdrawn</strong> by its developer" in html
    assert "superseded &lt;b&gt;by&lt;/b&gt; a better one" in html
    assert "/model" not in html and f"lwm download {lid}" not in html
    assert f'.download("{lid}")' not in html and "signed manifest" not in html
    assert "sklearn.linear_model" not in html  # the API does not serve its model either
    with env.http() as http:
        assert http.get(f"/v1/learnwares/{lid}/model").status_code == 410


def test_hostile_semantic_text_is_escaped_everywhere(cat):
    env, lw = cat
    pages = [f"/learnwares/{lw['hostile']}", "/islands/isl-1", "/islands/isl-1?sort=name",
             "/", "/search?q=alert", f"/learnwares/{lw['other_island_lw']}", "/islands/isl-2",
             f"/developers/{env.state.market.learnware_row(lw['hostile']).developer_key_id}"]
    for path in pages:
        html = get(env, path).text  # check_page_safe: one script, no on*/style, no javascript:
        assert "<script>alert" not in html and "</title><script>" not in html
    html = get(env, f"/learnwares/{lw['hostile']}").text
    assert "&lt;script&gt;alert(&#39;name&#39;)&lt;/script&gt;" in html
    assert 'href="javascript' not in html.lower()
    assert "\u27e8U+202E\u27e9gpj.exe</bdi>" in html and RLO not in html  # shown, not obeyed
    assert "W" * 9000 in html  # the learnware page shows the whole description...
    table = get(env, "/islands/isl-1").text
    assert "W" * 200 not in table  # ...a table cell a snippet
    assert LONG_NAME in table  # a 200-character name without spaces: shown, wraps (CSS)
    other = get(env, "/islands/isl-2").text
    assert "&lt;b&gt;bold&lt;/b&gt;" in other and HOSTILE_ISLAND["target"] not in other


def test_text_search_page(cat):
    env, lw = cat
    html = get(env, "/search?q=Chicago+wether").text  # a typo still matches
    assert f'href="/learnwares/{lw["ids"][2]}"' in html
    assert 'href="/islands/isl-1"' in html
    html = get(env, "/search?q=" + NAMES[-1].replace(" ", "+")).text
    assert f'href="/learnwares/{lw["withdrawn"]}"' not in html  # withdrawn: not found
    assert "0 results" in get(env, "/search?q=zzzzqqqq").text
    assert "Text search" in get(env, "/search").text
    get(env, "/search?q=" + "x" * 5000)  # cut to 500 characters, like the API


def test_developer_page_lists_every_learnware_of_the_key_withdrawn_marked(cat):
    env, lw = cat
    key = env.state.market.learnware_row(lw["withdrawn"]).developer_key_id
    html = get(env, f"/developers/{key}").text
    mine = [i for i in lw["ids"] if env.state.market.learnware_row(i).developer_key_id == key]
    assert set(rows(html)) == set(mine) and lw["withdrawn"] in rows(html)
    assert "0 learnwares" in get(env, "/developers/" + "0" * 32).text


def test_api_page_renders_every_path_of_openapi(cat):
    env, _ = cat
    html = get(env, "/api").text
    for path in openapi_document()["paths"]:
        assert f"<code>{path}</code>" in html
    assert 'id="schema-Publish"' in html and 'href="#schema-Rkme"' in html
    assert 'href="/openapi.json"' in html


@pytest.mark.parametrize("query,field", [
    ("page=-1", "page"), ("page=abc", "page"), ("page=1e3", "page"), ("page=" + "9" * 200, "page"),
    ("sort=junk", "sort"), ("sort=%3Cscript%3E", "sort"), ("order=sideways", "order"),
    ("withdrawn=maybe", "withdrawn"), ("per_page=-5", "per_page"), ("per_page=x", "per_page")])
def test_bad_query_parameters_are_a_400_naming_them(cat, query, field):
    env, _ = cat
    html = get(env, f"/islands/isl-1?{query}", status=400).text
    assert f"(parameter <code><bdi dir=\"auto\">{field}</bdi></code>)" in html
    assert "Traceback" not in html


@pytest.mark.parametrize("query,page", [("page=999999999999999999999", "page 1 of 1"),
                                        ("per_page=100000", "page 1 of 1"),
                                        ("per_page=1&page=3", "page 1 of 1")])
def test_out_of_range_numbers_are_clamped(cat, query, page):
    env, _ = cat
    assert page in get(env, f"/islands/isl-1?{query}").text


def test_unknown_ids_and_methods_are_html_errors_not_500(cat):
    env, _ = cat
    for path in ("/islands/isl-999", "/islands/nonsense", "/islands/isl-99999999999999999999999",
                 "/learnwares/lw-999", "/learnwares/lw-x1", "/assets/nothing.js"):
        get(env, path, status=404)
    get(env, "/islands/isl-1", status=400, headers={"X-LWM-Nonce": "not-hex"})
    with env.http() as http:
        # read-only: a routing refusal (the market's signed 405, before any catalogue code)
        assert http.post("/islands/isl-1", content=b"x").status_code == 405
        assert http.post("/", content=b"x").status_code == 405
        css = http.get("/assets/catalogue.css")
        assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
        assert "nosniff" == css.headers["x-content-type-options"]


def test_pages_show_only_what_the_signed_api_gives(cat):
    """The learnware page's facts all come from the public manifest (which anyone can get)."""
    env, lw = cat
    user = env.client()
    for lid in (lw["ids"][0], lw["withdrawn"]):
        man = user.manifest(lid, include_withdrawn=True)
        html = get(env, f"/learnwares/{lid}").text
        assert man["model_sha256"] in html and man["developer"] in html
        assert man["semantic"]["name"] in html


def test_the_map_is_cached_per_kernel_version(cat, monkeypatch):
    env, lw = cat
    catalogue = env.app.extensions["learnware_catalogue"]
    calls = []
    real = catalogue._build_map
    monkeypatch.setattr(catalogue, "_build_map", lambda isl: calls.append(1) or real(isl))
    get(env, "/islands/isl-1")
    get(env, "/islands/isl-1?page=1&sort=name")
    assert len(calls) <= 1  # built at most once (the first page view of this test built it)
    island = env.state.market.island_by_public_id("isl-1")
    ok = env.store.set_kernel(island.pk, dict(island.kernel, gamma=island.kernel["gamma"] * 2),
                              island.kernel_version)
    assert ok
    n = len(calls)
    html = get(env, "/islands/isl-1").text
    assert len(calls) == n + 1  # a new kernel: a new map
    assert f"{island.kernel['gamma'] * 2:.4g}" in html


def test_tables_and_map_follow_publishes_and_withdrawals(market):
    """The cached orders and map are per island version: a publish or a withdrawal shows at
    once (and in every worker: the version lives in the database)."""
    import numpy as np

    from tests.helpers import blob, fitted_ridge, linear_task, semantic
    rng = np.random.default_rng(4)
    dev = market.client()

    def publish(name, center):
        X = blob(rng, center, n=120)
        return dev.publish(fitted_ridge(X, linear_task(rng, X, [1, 2, 3])), X, semantic(name))

    for i, name in enumerate(["Mango", "Kiwi", "Lime"]):
        publish(name, [6.0 * i, 0, 0])
    first = rows(get(market, "/islands/isl-1?sort=name&order=asc").text)
    assert len(first) == 3
    new = publish("Apple", [0, 6.0, 0])
    html = get(market, "/islands/isl-1?sort=name&order=asc").text
    assert rows(html)[0] == new and len(rows(html)) == 4
    assert html.split('<svg class="islandmap"', 1)[1].count("<circle") == 4
    worker = market.sibling()  # another worker on the same database sees the same
    with worker.http() as http:
        assert rows(http.get("/islands/isl-1?sort=name&order=asc").text)[0] == new
    dev.delete(new, reason="test")
    html = get(market, "/islands/isl-1?sort=name&order=asc").text
    assert rows(html) == first
    assert html.split('<svg class="islandmap"', 1)[1].count("<circle") == 3
    shown = rows(get(market, "/islands/isl-1?sort=name&order=asc&withdrawn=show").text)
    assert shown[0] == new and len(shown) == 4


def test_search_page_shares_the_text_search_budget_of_an_address(make_market):
    """The search page runs the same text index as GET /v1/learnwares?q=: one per-address
    budget for both, so the page is no way around the API's limit."""
    env = make_market(rate_limit_address_text="3 per day")
    with env.http() as http:
        assert http.get("/search?q=a").status_code == 200
        assert http.get("/v1/learnwares?q=a").status_code == 200
        assert http.get("/search?q=b").status_code == 200
        page = http.get("/search?q=c")
        assert page.status_code == 429 and page.headers["content-type"].startswith("text/html")
        assert "too many requests" in page.text.lower() or "429" in page.text
        assert http.get("/v1/learnwares?q=d").status_code == 429
        assert http.get("/islands/isl-1").status_code == 404  # other pages: not this budget


def test_spec_summary_of_a_huge_spec_skips_the_norm(cat):
    """A spec the protocol allows can hold 2,000 points x 1,000 features: its k^2 x d norm is
    not computed on every view (the summary's other figures are)."""
    import dataclasses

    import numpy as np

    from learnware_core.kernels import embedding_inner
    from protocol.encoding import encode_array
    env, lw = cat
    catalogue = env.app.extensions["learnware_catalogue"]
    row = env.state.market.learnware_row(lw["ids"][0])
    island = env.state.market.island_by_public_id(row.island_id)
    small = catalogue.spec_summary(row, island)
    from learnware_core.spec import decode_points
    z, b = decode_points(row.spec)
    want = embedding_inner(z, b, z, b, island.kernel["gamma"], island.kernel["scales"])
    assert small.self_inner == pytest.approx(want, rel=1e-9) and small.k == len(b)
    k, d = 2000, 100
    rng = np.random.default_rng(0)
    big = dataclasses.replace(row, spec=dict(row.spec, z=encode_array(rng.normal(size=(k, d))),
                                             beta=encode_array(np.full(k, 1.0 / k))))
    wide = dataclasses.replace(island, semantic=dict(island.semantic,
                                                     input_features=[f"f{i}" for i in range(d)]),
                               kernel=dict(island.kernel, scales=[1.0] * d))
    s = catalogue.spec_summary(big, wide)
    assert s.self_inner is None and s.k == k and len(s.features) == d
