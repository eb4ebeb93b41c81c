"""The OpenAPI document (market_server/openapi.py) arranged for reading: operations with their
parameters and the message body each one sends and answers, and every body schema as a table.
Pure data in, pure data out: the template renders (and escapes) it."""
from __future__ import annotations

from dataclasses import dataclass, field

REF = "#/components/schemas/"
METHOD_ORDER = ("get", "post", "delete", "put", "patch")


@dataclass
class Part:
    """A piece of a type description: plain text, or a link to a schema (``ref``)."""
    text: str
    ref: str | None = None


@dataclass
class Operation:
    method: str
    path: str
    summary: str
    parameters: list[tuple[str, str, bool, list[Part]]] = field(default_factory=list)
    request: list[Part] | None = None
    responses: list[tuple[str, str, list[Part] | None]] = field(default_factory=list)
    html: bool = False


def type_parts(schema: dict | None, depth: int = 0) -> list[Part]:
    """A short, readable type: ``string (<= 200 chars)``, ``array of Match (<= 100)``, links
    for references, ``A or null`` for nullable ones."""
    if not isinstance(schema, dict) or depth > 6:
        return [Part("any")]
    if "$ref" in schema:
        name = str(schema["$ref"]).removeprefix(REF)
        return [Part(name, name)]
    for key in ("anyOf", "oneOf"):
        if key in schema:
            out: list[Part] = []
            for i, sub in enumerate(schema[key]):
                if i:
                    out.append(Part(" or "))
                out.extend(type_parts(sub, depth + 1))
            return out
    if "enum" in schema:
        return [Part("one of " + ", ".join(str(v) for v in schema["enum"]))]
    kind = schema.get("type", "object" if "properties" in schema else "any")
    if kind == "array":
        out = [Part("array of ")] + type_parts(schema.get("items"), depth + 1)
        bounds = _bounds(schema, "minItems", "maxItems", "items")
        return out + ([Part(f" ({bounds})")] if bounds else [])
    text = str(kind)
    if schema.get("format"):
        text += f", {schema['format']}"
    if schema.get("contentEncoding"):
        text += f", {schema['contentEncoding']}"
    bounds = [b for b in (_bounds(schema, "minLength", "maxLength", "chars"),
                          _bounds(schema, "minimum", "maximum", ""),
                          _exclusive(schema)) if b]
    if schema.get("pattern"):
        bounds.append(f"pattern {schema['pattern']}")
    return [Part(text + (f" ({'; '.join(bounds)})" if bounds else ""))]


def _bounds(schema: dict, lo: str, hi: str, unit: str) -> str:
    parts = []
    if lo in schema:
        parts.append(f">= {schema[lo]:g}" if isinstance(schema[lo], float) else f">= {schema[lo]}")
    if hi in schema:
        parts.append(f"<= {schema[hi]:g}" if isinstance(schema[hi], float) else f"<= {schema[hi]}")
    return (" ".join(parts) + (f" {unit}" if unit else "")).strip() if parts else ""


def _exclusive(schema: dict) -> str:
    parts = []
    if "exclusiveMinimum" in schema:
        parts.append(f"> {schema['exclusiveMinimum']:g}")
    if "exclusiveMaximum" in schema:
        parts.append(f"< {schema['exclusiveMaximum']:g}")
    return " ".join(parts)


def _body_parts(content: dict | None) -> list[Part] | None:
    """What a request or answer carries: a signed envelope with body X, a file, HTML..."""
    if not content:
        return None
    kind, media = next(iter(content.items()))
    schema = media.get("schema", {}) if isinstance(media, dict) else {}
    if kind == "application/json":
        body = schema.get("properties", {}).get("body")
        if isinstance(body, dict) and "$ref" in body:
            return [Part("signed envelope, body ")] + type_parts(body)
        return [Part("signed envelope")] if "sig" in schema.get("properties", {}) else \
            [Part("JSON")]
    return [Part(kind)]


def operations(doc: dict) -> list[Operation]:
    out = []
    for path, ops in doc.get("paths", {}).items():
        for method in sorted(ops, key=lambda m: METHOD_ORDER.index(m)
                             if m in METHOD_ORDER else 99):
            op = ops[method]
            o = Operation(method.upper(), path, op.get("summary", ""))
            for p in op.get("parameters", []):
                o.parameters.append((p["name"], p.get("in", ""), bool(p.get("required")),
                                     type_parts(p.get("schema"))))
            if "requestBody" in op:
                o.request = _body_parts(op["requestBody"].get("content"))
            for status, resp in op.get("responses", {}).items():
                o.responses.append((status, resp.get("description", ""),
                                    _body_parts(resp.get("content"))))
            o.html = any("text/html" in (r.get("content") or {})
                         for r in op.get("responses", {}).values())
            out.append(o)
    return out


def schemas(doc: dict) -> list[tuple[str, str, list[tuple[str, bool, list[Part], str]]]]:
    """(name, description, [(property, required, type, description)]) of every body schema."""
    out = []
    for name, schema in doc.get("components", {}).get("schemas", {}).items():
        required = set(schema.get("required", []))
        props = [(p, p in required, type_parts(s), (s or {}).get("description", ""))
                 for p, s in schema.get("properties", {}).items()]
        out.append((name, schema.get("description", ""), props))
    return out
