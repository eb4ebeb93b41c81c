"""Query parameters of the catalogue pages, checked at the edge: a malformed one is a 400
naming the parameter; a number past its range is clamped (a page past the end shows the last)."""
from __future__ import annotations

from protocol.errors import LearnwareError

#: a query parameter's text is read up to this many characters (longer is refused)
MAX_PARAM_CHARS = 100
#: text search queries are cut here, as the API's GET /v1/learnwares does
MAX_QUERY_CHARS = 500


class BadParameter(LearnwareError):
    code = "bad_query"
    status = 400


def int_param(args, name: str, default: int, lo: int, hi: int | None = None) -> int:
    """A whole number >= ``lo``; clamped to ``hi``. Anything else names ``name`` in a 400."""
    raw = args.get(name)
    if raw is None or raw == "":
        return default
    text = raw.strip()
    if len(text) > MAX_PARAM_CHARS or not text.isascii() or not text.lstrip("+-").isdigit():
        raise BadParameter(f"{name} must be a whole number, got {raw[:40]!r}", field=name)
    value = int(text)
    if value < lo:
        raise BadParameter(f"{name} must be {lo} or more, got {value}", field=name)
    return value if hi is None else min(value, hi)


def choice_param(args, name: str, default: str, choices) -> str:
    """One of ``choices``; anything else is a 400 listing them."""
    raw = args.get(name)
    if raw is None or raw == "":
        return default
    if raw not in choices:
        raise BadParameter(f"{name} must be one of {', '.join(sorted(choices))}; got "
                           f"{raw[:40]!r}", field=name)
    return raw


def query_param(args, name: str = "q") -> str:
    """Free text, cut to ``MAX_QUERY_CHARS`` characters."""
    return (args.get(name) or "")[:MAX_QUERY_CHARS]
