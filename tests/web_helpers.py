"""Helpers of the web catalogue's tests: a market populated with ordinary, hostile and withdrawn
learnwares on two islands, and the checks every catalogue page must pass."""
from __future__ import annotations

import re
from html.parser import HTMLParser

import numpy as np

from tests.helpers import blob, fitted_ridge, linear_task, semantic

NAMES = ["Austin housing prices", "Boston crime rates", "Chicago weather forecast",
         "Denver traffic volume", "Seattle rainfall totals", "Houston sales yoy",
         "Dallas listings", "El Paso inventory"]
RLO = "\u202e"  # RIGHT-TO-LEFT OVERRIDE
HOSTILE = semantic(
    "<script>alert('name')</script>" + RLO + "gpj.exe",
    description=("<a href=\"javascript:alert('desc')\">click</a> javascript:alert(1) "
                 "<img src=x onerror=alert(2)> " + RLO + "evil " + "W" * 9000),
    tags=["<script>alert(3)</script>", "javascript:void(0)", RLO + "tag"],
    license="<iframe src=//evil.example></iframe>")
HOSTILE_ISLAND = semantic("plain name on a hostile island",
                          features=("<b>bold</b>", RLO + "flipped", "javascript:alert(4)"),
                          target="</title><script>alert(5)</script>")
LONG_NAME = "L" * 200  # the longest name the protocol allows, without a space to break at


def populate_catalogue(make_client) -> dict:
    """Eight ordinary learnwares by two developers, one hostile one and one with a long name on
    the same island, one on a hostile island; the last ordinary one withdrawn. ``make_client()``
    returns a fresh MarketClient (its own identity)."""
    rng = np.random.default_rng(0)
    devs = [make_client(), make_client()]
    ids, names = [], {}
    for i, name in enumerate(NAMES):
        center = np.array([8.0 * (i % 3), 8.0 * (i // 3), 0.0])
        X = blob(rng, center, n=150)
        y = linear_task(rng, X, [1.0 + i, -1.0, 0.5])
        lid = devs[i % 2].publish(fitted_ridge(X, y), X,
                                  semantic(name, description=f"{name}: a toy model number {i}",
                                           tags=[name.split()[0].lower()]))
        ids.append(lid)
        names[lid] = name
    hostile_dev = make_client()
    X = blob(rng, [4.0, 4.0, 4.0], n=150)
    hostile = hostile_dev.publish(fitted_ridge(X, linear_task(rng, X, [1, 1, 1])), X, HOSTILE)
    X = blob(rng, [12.0, 0.0, 4.0], n=150)
    long_id = hostile_dev.publish(fitted_ridge(X, linear_task(rng, X, [1, 2, 1])), X,
                                  semantic(LONG_NAME))
    X = blob(rng, [0.0, 0.0, 0.0], n=150)
    other = hostile_dev.publish(fitted_ridge(X, linear_task(rng, X, [1, 0, 1])), X,
                                HOSTILE_ISLAND)
    withdrawn = ids[-1]
    devs[(len(NAMES) - 1) % 2].delete(withdrawn, reason="superseded <b>by</b> a better one")
    return {"ids": ids, "names": names, "devs": devs, "hostile": hostile, "long": long_id,
            "other_island_lw": other, "withdrawn": withdrawn, "hostile_dev": hostile_dev}


class _Page(HTMLParser):
    """Collects what the safety checks look at: scripts (with any inline code) and every
    attribute of every tag."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.scripts, self.attrs = [], []
        self.in_script = False

    def handle_starttag(self, tag, attrs):
        if tag == "script":
            self.scripts.append(dict(attrs))
            self.in_script = True
        self.attrs.extend((tag, k, v or "") for k, v in attrs)

    def handle_endtag(self, tag):
        if tag == "script":
            self.in_script = False

    def handle_data(self, data):
        if self.in_script and data.strip():
            self.scripts.append({"inline": data})


URL_ATTRS = {"href", "src", "action", "xlink:href", "formaction"}


def check_page_safe(html: str) -> _Page:
    """The catalogue's promises about any page: our one script only (no inline script, no
    event-handler or style attribute), links only to this market, developer text escaped, and
    right-to-left overrides shown as text, never obeyed."""
    p = _Page()
    p.feed(html)
    assert p.scripts == [{"src": "/assets/catalogue.js", "defer": None}], p.scripts
    for tag, name, value in p.attrs:
        assert not name.startswith("on"), (tag, name, value)
        assert name != "style", (tag, name, value)
        if name in URL_ATTRS:
            v = value.strip().lower()
            assert v.startswith(("/", "#")) and not v.startswith("//"), (tag, name, value)
    # bidi overrides, embeddings and zero-width marks of developers are shown, never obeyed;
    # the only isolates are ours (FIRST STRONG ISOLATE ... POP DIRECTIONAL ISOLATE pairs)
    assert not re.search("[\u200b-\u200f\u202a-\u202e\u2060-\u2067\ufeff]", html)
    assert html.count("\u2068") == html.count("\u2069")
    assert "<img" not in html and "<iframe" not in html and "<b>bold" not in html
    return p
