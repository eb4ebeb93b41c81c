"""The web catalogue as a person uses it: a real headless Chromium (Debian's ``chromium``,
driven by Playwright's Python package, no browser download) against a real market server
process (``python -m market_server serve``, what ``lwm serve`` starts).

Open home, follow an island, sort its table, open a learnware, search by text, open a withdrawn
learnware and a hostile one; the Content-Security-Policy must block nothing of ours (no console
error), nothing may leave the market's origin, and no developer-written script may run. The
pages work without JavaScript too. Screenshots go to ``test-screenshots/`` (git-ignored; the
best are kept in docs/screenshots/).

Skipped, with the reason, only when the browser truly cannot run here: no /usr/bin/chromium
(``tools/install-test-deps.sh``, run by ``make test``, installs it where it can) or no
``playwright`` package.
"""
from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

from client_sdk import Identity, MarketClient
from client_sdk.demo.server import ServerProcess
from tests.browser_helpers import SHOTS, Watch, chromium, shot
from tests.web_helpers import HOSTILE, NAMES, populate_catalogue

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def browser():
    with chromium() as b:
        yield b


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("web-browser")
    with ServerProcess(root / "market", address_limits=False) as srv:
        n = iter(range(100))
        made = populate_catalogue(lambda: MarketClient(
            srv.url, Identity.generate(), cache_dir=root / f"client-{next(n)}"))
        yield srv, made


def table_names(page) -> list[str]:
    return page.locator("#learnware-table tbody td.name a bdi").all_inner_texts()


def test_a_person_browses_the_catalogue(server, browser):
    srv, made = server
    ctx = browser.new_context(viewport={"width": 1280, "height": 900})
    page = ctx.new_page()
    page.set_default_timeout(30_000)
    watch = Watch(page, srv.url)

    # home: the islands, their counts, a search box
    page.goto(srv.url + "/")
    assert page.title().startswith("Islands")
    cards = page.locator("li.island-card")
    assert cards.count() == 2
    assert page.locator("li.island-card .count").first.inner_text() == "9"
    shot(page, "home")

    # follow the island: kernel, map, table
    page.locator('a[href="/islands/isl-1"]').first.click()
    page.wait_for_url(re.compile(r"/islands/isl-1$"))
    assert page.locator("#kernel table.scales tbody tr").count() == 3
    points = page.locator("svg.islandmap a.map-point")
    assert points.count() == 9
    caption = page.locator("#map-caption")
    before = caption.inner_text()
    points.first.hover()  # our script (allowed by the CSP) names the point
    page.wait_for_function("document.getElementById('map-caption').textContent.includes('lw-')")
    assert caption.inner_text() != before
    shot(page, "island")

    # sort the table by name, then reverse it
    page.locator("#learnware-table th a.sort", has_text="Name").click()
    page.wait_for_url(re.compile(r"sort=name"))
    names = table_names(page)
    assert len(names) == 9
    assert "order=asc" in page.url and names == sorted(names)  # names: A to Z first
    page.locator("#learnware-table th a.sort", has_text="Name").click()
    page.wait_for_url(re.compile(r"order=desc"))
    assert table_names(page) == names[::-1]
    shot(page, "island-sorted")

    # open a learnware from the table
    page.locator("#learnware-table td.name a", has_text=NAMES[2]).click()
    page.wait_for_url(re.compile(r"/learnwares/lw-\d+$"))
    lid = page.url.rsplit("/", 1)[1]
    assert page.locator("#cmd-cli").inner_text() == f"lwm download {lid} --market {srv.url}"
    assert f'MarketClient("{srv.url}").download("{lid}")' in page.locator("#cmd-py").inner_text()
    assert page.locator("button.copy").first.is_visible()  # unhidden by our script
    assert page.locator("#model-link").get_attribute("href") == f"/v1/learnwares/{lid}/model"
    assert "sklearn.linear_model._ridge.Ridge" in page.locator("#provenance").inner_text()
    shot(page, "learnware")

    # text search from the header box, with a typo
    page.fill("header input[name=q]", "Chicgo weather")
    page.press("header input[name=q]", "Enter")
    page.wait_for_url(re.compile(r"/search\?q="))
    first = page.locator("#results li a").first
    assert NAMES[2] in first.inner_text()
    shot(page, "search")

    # a withdrawn learnware: marked, nothing to download
    page.goto(f"{srv.url}/learnwares/{made['withdrawn']}")
    assert page.locator("#withdrawn-notice").is_visible()
    assert page.locator("#model-link").count() == 0 and page.locator("#cmd-cli").count() == 0
    shot(page, "withdrawn")

    # hostile text: shown as text, no script of the developer's runs, nothing leaves
    page.goto(f"{srv.url}/learnwares/{made['hostile']}")
    shown = HOSTILE["name"].replace("\u202e", "\u27e8U+202E\u27e9")  # the override, visible
    assert shown in page.locator("h1").inner_text()
    assert page.locator("#semantic-card img, #semantic-card a[href^=javascript]").count() == 0
    shot(page, "hostile")
    page.goto(f"{srv.url}/islands/isl-2")
    page.goto(f"{srv.url}/api")
    assert page.locator("section.op").count() >= 10
    shot(page, "api")
    watch.clean()
    ctx.close()


def test_the_catalogue_works_without_javascript(server, browser):
    srv, made = server
    ctx = browser.new_context(java_script_enabled=False, viewport={"width": 1280, "height": 900})
    page = ctx.new_page()
    page.set_default_timeout(30_000)
    watch = Watch(page, srv.url)
    page.goto(srv.url + "/islands/isl-1")
    page.locator("#learnware-table th a.sort", has_text="Model size").click()
    page.wait_for_url(re.compile(r"sort=size"))
    assert len(table_names(page)) == 9
    assert page.locator("button.copy:visible").count() == 0  # nothing that needs a script
    page.locator("#learnware-table td.name a").first.click()
    page.wait_for_url(re.compile(r"/learnwares/"))
    assert page.locator("#cmd-cli").is_visible() or page.locator("#withdrawn-notice").count()
    page.goto(srv.url + "/search?q=rainfall")
    assert page.locator("#results li").count() >= 1
    watch.clean()
    ctx.close()


def test_screenshots_were_written():
    """(after the tour) the screenshots exist and are real PNGs."""
    if not SHOTS.exists() or not any(SHOTS.glob("*.png")):
        pytest.skip("no screenshots: the browser tour was skipped")
    for png in SHOTS.glob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000


def test_install_script_names_the_packages():
    script = Path(__file__).resolve().parents[1] / "tools" / "install-test-deps.sh"
    text = script.read_text()
    assert "apt-get install -y chromium chromium-driver nginx" in text
    assert os.access(script, os.X_OK)
    assert shutil.which("bash")
