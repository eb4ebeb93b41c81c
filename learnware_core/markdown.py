"""A small, safe markdown subset for model cards: our own escaper, no HTML passes through.

Model cards are written by developers and shown to everyone in the catalogue, so the renderer
is built the other way round from a markdown library: every character of the input is escaped,
and only these constructs become markup:

* ``#`` .. ``######`` headings (shifted down by ``heading_offset``: a card sits inside a page
  that has its own h1/h2), paragraphs (blank-line separated), flat ``-``/``*``/``+`` and
  ``1.`` lists, fenced code blocks (```` ``` ````);
* inline: ``*em*`` / ``_em_``, ``**strong**`` / ``__strong__``, `` `code` ``, and
  ``[text](url)`` links whose url is ``http(s)://host...`` only, rendered with
  ``rel="noopener nofollow"`` (anything else -- ``javascript:``, ``data:``, relative paths --
  is shown as plain text).

Raw HTML, entities, images, autolinks and attributes are never emitted: ``<script>`` comes out as
the text ``&lt;script&gt;``. The work is linear in the input (each delimiter is looked for within
a bounded window, emphasis nests at most ``MAX_DEPTH`` deep), and the input is cut at
``max_chars``. Pure: no I/O; the caller may pass ``text_filter`` (applied to every text run
before escaping, e.g. to make bidi controls visible).
"""
from __future__ import annotations

import re
from html import escape
from typing import Callable
from urllib.parse import urlsplit

__all__ = ["render_markdown", "safe_url", "MAX_DEPTH"]

#: emphasis inside emphasis inside ... at most this deep (deeper markers are shown as text)
MAX_DEPTH = 4
#: a delimiter's partner is looked for at most this many characters ahead
_WINDOW = 2000
#: candidate closers tried per opening emphasis marker (keeps "*a *a *a ..." linear)
_TRIES = 16
_HEADING = re.compile(r" {0,3}(#{1,6})[ \t]+(.*?)[ \t#]*\Z")
_BULLET = re.compile(r" {0,3}[-*+][ \t]+(.*)\Z")
_ORDERED = re.compile(r" {0,3}\d{1,9}[.)][ \t]+(.*)\Z")
_FENCE = re.compile(r" {0,3}(```|~~~)")
_URL_CHARS = re.compile(r"[^\s<>\"'`\\\x00-\x1f\x7f]+\Z")


def safe_url(url: str) -> str | None:
    """``url`` when it is an absolute http(s) URL with a host and no characters that could
    leave an attribute or hide a scheme; else None."""
    url = url.strip()
    if len(url) > _WINDOW or not _URL_CHARS.match(url):
        return None
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        return None
    return url


class _Inline:
    def __init__(self, text_filter: Callable[[str], str] | None):
        self.filter = text_filter or (lambda s: s)

    def text(self, s: str) -> str:
        return escape(self.filter(s), quote=True)

    def render(self, s: str, depth: int = 0) -> str:
        out: list[str] = []
        plain_from = 0
        i, n = 0, len(s)
        while i < n:
            c = s[i]
            html, end = None, i
            if c == "`":
                j = s.find("`", i + 1, i + 1 + _WINDOW)
                if j > i + 1:
                    html, end = f"<code>{self.text(s[i + 1:j])}</code>", j + 1
            elif c == "[":
                html, end = self._link(s, i, depth)
            elif c in "*_" and depth < MAX_DEPTH:
                html, end = self._emphasis(s, i, depth)
            if html is None:
                i += 1
                continue
            out.append(self.text(s[plain_from:i]))
            out.append(html)
            i = plain_from = end
        out.append(self.text(s[plain_from:]))
        return "".join(out)

    def _link(self, s: str, i: int, depth: int) -> tuple[str | None, int]:
        close = s.find("](", i + 1, i + 1 + _WINDOW)
        if close < 0 or "[" in s[i + 1:close]:
            return None, i
        end = s.find(")", close + 2, close + 2 + _WINDOW)
        if end < 0:
            return None, i
        url = safe_url(s[close + 2:end])
        label = s[i + 1:close]
        if url is None:  # not a link we follow: the whole thing as text
            return self.text(s[i:end + 1]), end + 1
        inner = self.render(label, MAX_DEPTH) if label else self.text(url)
        return (f'<a href="{escape(url, quote=True)}" rel="noopener nofollow">{inner}</a>',
                end + 1)

    def _emphasis(self, s: str, i: int, depth: int) -> tuple[str | None, int]:
        c = s[i]
        run = 2 if s.startswith(c * 2, i) else 1
        delim = c * run
        start = i + run
        if start >= len(s) or s[start].isspace():
            return None, i
        if c == "_" and i > 0 and s[i - 1].isalnum():  # snake_case stays text
            return None, i
        j = start
        limit = min(len(s), start + _WINDOW)
        for _ in range(_TRIES):
            j = s.find(delim, j, limit)
            if j < 0:
                return None, i
            if run == 1 and s.startswith(c * 2, j):  # half of a double marker: skip both
                j += 2
                continue
            if j == start or s[j - 1].isspace():  # a closer follows no space
                j += run
                continue
            if c == "_" and j + run < len(s) and s[j + run].isalnum():
                j += run
                continue
            break
        else:
            return None, i
        tag = "strong" if run == 2 else "em"
        return f"<{tag}>{self.render(s[start:j], depth + 1)}</{tag}>", j + run


def render_markdown(text: str, *, heading_offset: int = 2, max_chars: int = 20_000,
                    text_filter: Callable[[str], str] | None = None) -> str:
    """HTML for the markdown subset of ``text`` (see the module docstring); every other
    character is escaped. ``heading_offset``: ``#`` becomes ``h{1 + offset}`` (at most h6)."""
    if not isinstance(text, str):
        raise TypeError("a model card is a string")
    text = text[:max_chars].replace("\r\n", "\n").replace("\r", "\n").replace("\x00", "\ufffd")
    inline = _Inline(text_filter)
    lines = text.split("\n")
    out: list[str] = []
    para: list[str] = []
    items: list[list[str]] = []
    kind = None  # "ul" / "ol" while a list is open

    def flush() -> None:
        nonlocal kind
        if para:
            out.append(f"<p>{inline.render(' '.join(x.strip() for x in para))}</p>")
            para.clear()
        if kind:
            lis = "".join(f"<li>{inline.render(' '.join(x.strip() for x in it))}</li>"
                          for it in items)
            out.append(f"<{kind}>{lis}</{kind}>")
            items.clear()
            kind = None

    i = 0
    while i < len(lines):
        line = lines[i]
        fence = _FENCE.match(line)
        if fence:
            flush()
            mark = fence.group(1)
            body: list[str] = []
            i += 1
            while i < len(lines) and not lines[i].lstrip(" ").startswith(mark):
                body.append(lines[i])
                i += 1
            out.append(f"<pre><code>{inline.text(chr(10).join(body))}</code></pre>")
            i += 1
            continue
        if not line.strip():
            flush()
        elif (m := _HEADING.match(line)):
            flush()
            level = min(6, len(m.group(1)) + max(0, int(heading_offset)))
            out.append(f"<h{level}>{inline.render(m.group(2))}</h{level}>")
        elif (m := _BULLET.match(line)) or (m2 := _ORDERED.match(line)):
            new = "ul" if m else "ol"
            if para or (kind and kind != new):
                flush()
            kind = new
            items.append([(m or m2).group(1)])
        elif kind and line[:1] in " \t":  # an indented line continues the list item
            items[-1].append(line)
        else:
            if kind:
                flush()
            para.append(line)
        i += 1
    flush()
    return "\n".join(out)
