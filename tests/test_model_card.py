"""Model cards: the markdown renderer's safety (only our tags, only http(s) links), the
schema's bound, the island key, the developer's signature, the SDK and the catalogue page."""
from __future__ import annotations

from html.parser import HTMLParser

import numpy as np
import pytest

from learnware_core.markdown import render_markdown, safe_url
from learnware_core.semantic import island_key, validate_semantic
from protocol.artefact import verify_artefact
from protocol.errors import LearnwareError, SchemaError
from protocol.limits import MAX_MODEL_CARD_CHARS
from tests.helpers import blob, fitted_ridge, linear_task, semantic
from tests.web_helpers import RLO, check_page_safe

ALLOWED = {"h3", "h4", "h5", "h6", "p", "ul", "ol", "li", "em", "strong", "code", "pre", "a"}

HOSTILE_CARD = "\n".join([
    "# Intended use <script>alert('h')</script>",
    "Sales growth for **small** towns; *not* for <img src=x onerror=alert(1)> big ones.",
    "",
    "- [click](javascript:alert(2)) [data](data:text/html;base64,PHNjcmlwdD4=)",
    "- [rel](/admin) [proto](//evil.example/x) [quote](https://ok.example/\" onmouseover=\"x)",
    "- [fine](https://example.org/card?a=1&b=2) `<b>code</b>`",
    "",
    "```",
    "</code></pre><script>alert(3)</script>",
    "```",
    "<iframe src=//evil.example></iframe> <style>body{}</style> &lt;already&gt; "
    + RLO + "gpj.exe",
])


class _Tags(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.tags, self.attrs, self.stack = [], [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.attrs.extend((tag, k, v) for k, v in attrs)
        self.stack.append(tag)

    def handle_endtag(self, tag):
        assert self.stack and self.stack[-1] == tag, (self.stack, tag)
        self.stack.pop()


def parse(html: str) -> _Tags:
    p = _Tags()
    p.feed(html)
    p.close()
    assert not p.stack, p.stack  # every tag closed, in order
    return p


def test_the_subset_renders_to_our_tags():
    html = render_markdown("# Use\n\nPredicts *yoy* **sales**; see [docs](https://ex.org/a).\n\n"
                           "- one\n- two `x`\n  continued\n\n1. first\n2. second\n\n```\nraw\n```")
    assert "<h3>Use</h3>" in html
    assert "<em>yoy</em>" in html and "<strong>sales</strong>" in html
    assert '<a href="https://ex.org/a" rel="noopener nofollow">docs</a>' in html
    assert "<ul><li>one</li><li>two <code>x</code> continued</li></ul>" in html
    assert "<ol><li>first</li><li>second</li></ol>" in html
    assert "<pre><code>raw</code></pre>" in html
    assert render_markdown("###### deep", heading_offset=2) == "<h6>deep</h6>"
    assert "<em>" not in render_markdown("snake_case_name and a * b * c")


def test_hostile_card_emits_only_allowed_tags_and_safe_links():
    html = render_markdown(HOSTILE_CARD, text_filter=lambda s: s.replace(RLO, "<U+202E>"))
    p = parse(html)
    assert set(p.tags) <= ALLOWED, set(p.tags) - ALLOWED
    for tag, name, value in p.attrs:
        assert tag == "a" and name in ("href", "rel"), (tag, name, value)
        if name == "href":
            assert value.startswith(("https://", "http://")), value
        else:
            assert value == "noopener nofollow"
    hrefs = [v for t, k, v in p.attrs if k == "href"]
    assert hrefs == ["https://example.org/card?a=1&b=2"]  # the one safe link (escaped in HTML)
    assert "&lt;script&gt;" in html and "<script" not in html and "<img" not in html
    assert "<iframe" not in html and "<style" not in html
    assert "&amp;lt;already&amp;gt;" in html  # entities are text, not decoded
    assert RLO not in html and "&lt;U+202E&gt;gpj.exe" in html
    assert "onmouseover" not in "".join(v for _, _, v in p.attrs)


@pytest.mark.parametrize("url", ["javascript:alert(1)", "JaVaScRiPt:x", "data:text/html,x",
                                 "/relative", "//evil.example", "ftp://x.org", "https://",
                                 "https://x.org/\"a", "https://x.org/ a", "vbscript:x",
                                 "https://x.org/\x01", " java\tscript:x"])
def test_unsafe_urls_are_refused(url):
    assert safe_url(url) is None
    html = render_markdown(f"[t]({url})")
    assert "<a " not in html


@pytest.mark.parametrize("text", ["*" * 20_000, "*a *" * 5000, "_a _" * 5000, "[" * 20_000,
                                  "[a](" * 5000, "`" * 20_000, "**a" * 6000, "- " * 10_000,
                                  "#" * 20_000, "a\n" * 10_000])
def test_pathological_cards_render_well_formed(text):
    html = render_markdown(text)
    p = parse(html)
    assert set(p.tags) <= ALLOWED
    assert len(html) < 8 * len(text) + 100  # bounded output


def test_schema_bounds_the_card_and_it_is_not_part_of_the_island_key():
    sem = semantic("carded", model_card="# hi")
    validate_semantic(sem)
    assert island_key(sem) == island_key(semantic("carded"))
    assert island_key(dict(sem, model_card="other")) == island_key(sem)
    with pytest.raises(SchemaError) as exc:
        validate_semantic(dict(sem, model_card="x" * (MAX_MODEL_CARD_CHARS + 1)))
    assert exc.value.field == "semantic.model_card"
    with pytest.raises(SchemaError):
        validate_semantic(dict(sem, model_card=["not", "text"]))


def _publish_carded(env, card: str):
    rng = np.random.default_rng(1)
    X = blob(rng, [0.0, 0.0, 0.0], n=120)
    dev = env.client()
    lid = dev.publish(fitted_ridge(X, linear_task(rng, X, [1, 2, 3])), X,
                      semantic("carded learnware", model_card=card))
    return dev, lid


def test_card_is_signed_downloaded_and_rendered_safely(market):
    dev, lid = _publish_carded(market, HOSTILE_CARD)
    user = market.client()
    lw = user.download(lid)
    assert lw.model_card == HOSTILE_CARD
    man = user.manifest(lid)
    # the developer's signature covers the card: another card fails verification
    verify_artefact(man.developer, man.artefact, semantic=man.semantic, spec=man.spec,
                    model_sha256=man.model_sha256)
    with pytest.raises(LearnwareError):
        verify_artefact(man.developer, man.artefact,
                        semantic=dict(man.semantic, model_card="# forged"), spec=man.spec,
                        model_sha256=man.model_sha256)
    with market.http() as http:
        r = http.get(f"/learnwares/{lid}")
    assert r.status_code == 200
    assert r.headers["content-security-policy"].startswith("default-src 'self'")
    html = r.text
    head, rest = html.split('<div class="model-card" dir="auto">', 1)
    card, tail = rest.split("</div>", 1)
    # the page around the card: one script of ours, no on*/style, links only to this market
    check_page_safe(head + tail)
    # the card: our tags only, its one external link http(s) with rel="noopener nofollow"
    p = parse(card)
    assert set(p.tags) <= ALLOWED
    assert [(t, k) for t, k, _ in p.attrs] == [("a", "href"), ("a", "rel")]
    assert "<h3>Intended use &lt;script&gt;" in card
    assert '<a href="https://example.org/card?a=1&amp;b=2" rel="noopener nofollow">' \
        in card
    assert 'href="javascript' not in card.lower() and RLO not in card


def test_learnware_without_card_has_no_card_section(market):
    rng = np.random.default_rng(2)
    X = blob(rng, [0.0, 0.0, 0.0], n=120)
    lid = market.client().publish(fitted_ridge(X, linear_task(rng, X, [1, 1, 1])), X,
                                  semantic("plain"))
    assert market.client().download(lid).model_card is None
    with market.http() as http:
        assert 'id="model-card"' not in http.get(f"/learnwares/{lid}").text
