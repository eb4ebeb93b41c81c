"""msgspec types generated from the schema tree of :mod:`protocol.schemas`: one source, two uses.

* **Speed.** ``msgspec.json.decode(body, type=BODY_TYPES[type])`` validates a message body in C
  while it parses it; :func:`protocol.envelope.open_envelope` uses it as its fast path (about a
  tenth of the hand-written validator's time). The hand-written validator stays the reference: it
  alone names the offending field, so whenever the fast path refuses anything, the envelope is
  opened the old way and the error is exactly the one it always was. Each generated type is at
  least as strict as its schema node (a node it cannot express makes :func:`struct_type` fail
  at import, never loosen): what the fast path accepts, the validator accepts too.
* **Documentation.** ``msgspec.json.schema_components`` turns the same types into the JSON Schema
  of every body in the OpenAPI document (``market_server/openapi.py``), so it cannot drift.

Arrays and unique lists, which msgspec cannot express, are checked in ``__post_init__`` by the
schema nodes themselves.
"""
from __future__ import annotations

import functools
from typing import Annotated, Any, Literal, Union

import msgspec
from msgspec import Meta

from . import schemas
from .encoding import ALLOWED_DTYPES
from .schemas import (AnyOf, Array, Bool, Float, Int, List, Map, MESSAGE_TYPES, Node, Nullable,
                      Obj, Str)

Unset = msgspec.UnsetType
# Names of the module-level schema nodes (SEMANTIC -> "Semantic"): the types' names in the
# OpenAPI components.
_NODE_NAMES = {id(v): "".join(p.capitalize() for p in k.split("_"))
               for k, v in vars(schemas).items() if isinstance(v, Node) and k.isupper()}


def _meta(**kw: Any) -> Meta | None:
    kw = {k: v for k, v in kw.items() if v is not None}
    return Meta(**kw) if kw else None


def _annotated(t: Any, meta: Meta | None) -> Any:
    return t if meta is None else Annotated[t, meta]


def _full_match(pattern: str) -> str:
    # msgspec searches; \Z (not $, which also matches before a final newline) = fullmatch
    return f"^(?:{pattern})\\Z"


class _Builder:
    def __init__(self) -> None:
        self._cache: dict[int, Any] = {}
        self._names: set[str] = set()

    def _name(self, node: Node, fallback: str) -> str:
        name = _NODE_NAMES.get(id(node), fallback)
        while name in self._names:
            name += "_"
        self._names.add(name)
        return name

    def type_of(self, node: Node, name: str) -> Any:
        if id(node) not in self._cache:
            self._cache[id(node)] = self._build(node, name)
        return self._cache[id(node)]

    def _build(self, node: Node, name: str) -> Any:
        if node is schemas.B64:
            # bytes: decoded in C, not matched by a regex; the canonical re-encoding of the body
            # makes the text exactly the base64 of at most 3/4 max_len bytes (= the node's text)
            return Annotated[bytes, Meta(max_length=node.max_len * 3 // 4)]
        if isinstance(node, Str):
            if node.choices is not None:
                return Literal[tuple(c for c in node.choices
                                     if node.min_len <= len(c) <= node.max_len
                                     and (node.pattern is None or node.pattern.fullmatch(c)))]
            return _annotated(str, _meta(
                min_length=node.min_len or None, max_length=node.max_len,
                pattern=_full_match(node.pattern.pattern) if node.pattern else None))
        if isinstance(node, Int):
            return _annotated(int, _meta(ge=node.lo, le=node.hi))
        if isinstance(node, Float):
            lo_key = "gt" if node.lo_open else "ge"
            return _annotated(float, _meta(**{lo_key: node.lo}, le=node.hi))
        if isinstance(node, Bool):
            return bool
        if isinstance(node, Nullable):
            return Union[self.type_of(node.inner, name), None]
        if isinstance(node, AnyOf):
            return Union[tuple(self.type_of(o, name) for o in node.options)]
        if isinstance(node, List):
            if node.unique:
                raise NotImplementedError(f"{name}: a unique list is supported only as a "
                                          "field of an object")
            return self._list(node, name)
        if isinstance(node, Map):
            return _annotated(dict[self.type_of(node.key, name), self.type_of(node.value, name)],
                              _meta(max_length=node.max_items))
        if isinstance(node, Obj):
            return self._struct(node, name)
        if isinstance(node, Array):
            return self._array(node, name)
        raise NotImplementedError(f"{name}: no msgspec type for {type(node).__name__}")

    def _list(self, node: List, name: str) -> Any:
        return _annotated(list[self.type_of(node.item, name + "Item")],
                          _meta(min_length=node.min_items or None, max_length=node.max_items,
                                extra_json_schema={"uniqueItems": True} if node.unique else None))

    def _struct(self, node: Obj, name: str) -> type:
        name = self._name(node, name)
        fields, unique = [], []
        for key, sub in [*node.required.items(), *node.optional.items()]:
            child = name + "".join(p.capitalize() for p in key.split("_"))
            if isinstance(sub, List) and sub.unique:
                t, unique = self._list(sub, child), unique + [key]
            else:
                t = self.type_of(sub, child)
            if key in node.required:
                fields.append((key, t))
            else:
                fields.append((key, Union[t, Unset], msgspec.UNSET))
        namespace = {"__post_init__": _unique_check(unique)} if unique else {}
        return msgspec.defstruct(name, fields, forbid_unknown_fields=True, namespace=namespace)

    def _array(self, node: Array, name: str) -> type:
        name = self._name(node, name)
        payload = msgspec.defstruct(name + "Payload", [
            ("dtype", Literal[tuple(sorted(ALLOWED_DTYPES))]),
            ("shape", Annotated[list[Annotated[int, Meta(ge=0)]], Meta(max_length=4)]),
            # bytes: msgspec decodes the base64 in C (3x binascii)
            ("data", Annotated[bytes, Meta(description="base64 of the little-endian bytes")])],
            forbid_unknown_fields=True)

        def __post_init__(self) -> None:
            a = self.array
            node.check_decoded(a.dtype, a.shape, a.data)

        return msgspec.defstruct(name, [("array", payload, msgspec.field(name="__array__"))],
                                 forbid_unknown_fields=True,
                                 namespace={"__post_init__": __post_init__})


def _unique_check(keys: list[str]):
    def __post_init__(self) -> None:
        for k in keys:
            items = getattr(self, k)
            if items is not msgspec.UNSET and len({repr(v) for v in items}) != len(items):
                raise ValueError(f"{k} must not repeat items")
    return __post_init__


def struct_type(node: Node, name: str) -> Any:
    """The msgspec type of one schema node (at least as strict as the node)."""
    return _Builder().type_of(node, name)


def _body_types() -> dict[str, Any]:
    builder = _Builder()
    return {t: builder.type_of(node, "".join(p.capitalize() for p in t.split("_")))
            for t, node in MESSAGE_TYPES.items()}


#: message type -> the msgspec type of its body.
BODY_TYPES: dict[str, Any] = _body_types()


@functools.cache
def json_schemas() -> tuple[dict[str, dict], dict[str, dict]]:
    """(message type -> JSON Schema of its body, named component schemas), for OpenAPI."""
    types = list(BODY_TYPES)
    refs, components = msgspec.json.schema_components(
        [BODY_TYPES[t] for t in types], ref_template="#/components/schemas/{name}")
    fix = msgspec.json.decode(msgspec.json.encode(components).replace(b"\\\\Z", b"$"))
    refs = msgspec.json.decode(msgspec.json.encode(refs).replace(b"\\\\Z", b"$"))
    return dict(zip(types, refs)), fix
