"""Canonical encoding: one byte string per message, whatever the dict order.

JSON with sorted keys, UTF-8, no insignificant whitespace. Numeric arrays travel as
``{"__array__": {"dtype": "<f8", "shape": [k, d], "data": base64(little-endian bytes)}}`` so floats
round-trip bit-exact. Decoding refuses duplicate keys, NaN/Inf literals, nesting deeper than
``max_depth`` and messages larger than ``max_bytes``; non-finite values inside arrays are refused by
the schema of fields that do not allow them (see :func:`decode_array`).
"""
from __future__ import annotations

import base64
import binascii
import json
import math
import re
from typing import Any

import numpy as np

from .errors import EncodingError

DEFAULT_MAX_BYTES = 64 * 1024 * 1024
DEFAULT_MAX_DEPTH = 32
ARRAY_TAG = "__array__"
ALLOWED_DTYPES = {"<f8", "<f4", "<i8", "<i4", "|u1", "|b1"}
MAX_ARRAY_ELEMENTS = 50_000_000


def encode_array(a: Any) -> dict:
    """A numeric array as a JSON-safe dict; little-endian so every platform reads the same bits."""
    arr = np.asarray(a)
    if arr.dtype.kind == "f":
        arr = arr.astype("<f8" if arr.dtype.itemsize >= 8 else "<f4", copy=False)
    elif arr.dtype.kind in "iu" and arr.dtype != np.uint8:
        arr = arr.astype("<i8", copy=False)
    elif arr.dtype.kind == "b":
        arr = arr.astype("|b1", copy=False)
    elif arr.dtype != np.uint8:
        raise EncodingError(f"cannot encode an array of dtype {arr.dtype}; only numbers travel")
    arr = np.ascontiguousarray(arr)
    return {ARRAY_TAG: {"dtype": arr.dtype.str, "shape": list(arr.shape),
                        "data": base64.b64encode(arr.tobytes()).decode("ascii")}}


def is_array(obj: Any) -> bool:
    return isinstance(obj, dict) and set(obj) == {ARRAY_TAG}


def decode_array(obj: Any, *, field: str = "array", allow_nonfinite: bool = False,
                 ndim: int | None = None) -> np.ndarray:
    """Rebuild an array from :func:`encode_array` output, checking every part of it."""
    if not is_array(obj):
        raise EncodingError(f"{field} must be an encoded array", field=field)
    spec = obj[ARRAY_TAG]
    if not isinstance(spec, dict) or set(spec) != {"dtype", "shape", "data"}:
        raise EncodingError(f"{field} must hold exactly dtype, shape and data", field=field)
    dtype, shape, data = spec["dtype"], spec["shape"], spec["data"]
    if not isinstance(dtype, str) or dtype not in ALLOWED_DTYPES:  # (a list is unhashable)
        raise EncodingError(f"{field} has dtype {str(dtype)[:40]!r}; "
                            f"allowed: {sorted(ALLOWED_DTYPES)}", field=field)
    if (not isinstance(shape, list) or len(shape) > 4
            or not all(isinstance(s, int) and not isinstance(s, bool) and 0 <= s for s in shape)):
        raise EncodingError(f"{field} has an invalid shape {shape!r}", field=field)
    count = math.prod(shape)
    if count > MAX_ARRAY_ELEMENTS:
        raise EncodingError(f"{field} has {count} elements, more than {MAX_ARRAY_ELEMENTS}",
                            field=field)
    if ndim is not None and len(shape) != ndim:
        raise EncodingError(f"{field} must have {ndim} dimensions, has {len(shape)}", field=field)
    if not isinstance(data, str):
        raise EncodingError(f"{field}.data must be base64 text", field=field)
    dt = np.dtype(dtype)
    if len(data) != 4 * (-(-count * dt.itemsize // 3)):
        raise EncodingError(f"{field}.data length does not match shape {shape} and dtype {dtype}",
                            field=field)
    try:
        raw = base64.b64decode(data.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError) as exc:
        raise EncodingError(f"{field}.data is not valid base64", field=field) from exc
    if len(raw) != count * dt.itemsize:
        raise EncodingError(f"{field}.data holds {len(raw)} bytes, expected {count * dt.itemsize}",
                            field=field)
    # Canonical form only: the unused low bits of the last quantum must be zero, so no two
    # texts name the same array (only the last quantum can differ, so only it is re-encoded).
    tail = len(raw) % 3 or 3
    if count and base64.b64encode(raw[-tail:]).decode("ascii") != data[-4:]:
        raise EncodingError(f"{field}.data is not canonical base64", field=field)
    arr = np.frombuffer(raw, dtype=dt).reshape(shape).copy()
    if dt.kind == "f" and not allow_nonfinite and not np.isfinite(arr).all():
        raise EncodingError(f"{field} contains NaN or Inf", field=field)
    return arr


def _check_value(obj: Any, depth: int, max_depth: int, path: str) -> None:
    if depth > max_depth:
        raise EncodingError(f"message nests deeper than {max_depth} levels", field=path or None)
    if isinstance(obj, dict):
        for k, v in obj.items():
            if not isinstance(k, str):
                raise EncodingError("object keys must be strings", field=path or None)
            _check_value(v, depth + 1, max_depth, f"{path}.{k}" if path else k)
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            _check_value(v, depth + 1, max_depth, f"{path}[{i}]")
    elif isinstance(obj, float):
        if not math.isfinite(obj):
            raise EncodingError("NaN and Inf are not allowed in messages", field=path or None)
    elif isinstance(obj, bool) or obj is None or isinstance(obj, (int, str)):
        return
    else:
        raise EncodingError(f"cannot encode a value of type {type(obj).__name__}",
                            field=path or None)


def _values_ok(obj: Any, max_depth: int) -> bool:
    """The walk of :func:`_check_value` without building field paths (the common case: every
    value is fine); False sends the caller to the walk that names what is wrong."""
    stack = [(obj, 0)]
    pop, push = stack.pop, stack.append
    while stack:
        node, depth = pop()
        if depth > max_depth:
            return False
        t = type(node)
        if t is dict:
            for k, v in node.items():
                if type(k) is not str:
                    return False
                push((v, depth + 1))
        elif t is list or t is tuple:
            for v in node:
                push((v, depth + 1))
        elif t is float:
            if not math.isfinite(node):
                return False
        elif not (t is str or t is int or t is bool or node is None):
            return False
    return True


def canonical_bytes(obj: Any, *, max_depth: int = DEFAULT_MAX_DEPTH,
                    max_bytes: int | None = None, checked: bool = False) -> bytes:
    """The one byte string of ``obj``: sorted keys, UTF-8, compact separators.

    ``checked=True`` skips the value walk for objects that came out of :func:`decode`.
    """
    if not checked and not _values_ok(obj, max_depth):
        _check_value(obj, 0, max_depth, "")  # raises, naming the field
    out = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                     allow_nan=False).encode("utf-8")
    if max_bytes is not None and len(out) > max_bytes:
        raise EncodingError(f"message is {len(out)} bytes, larger than the limit {max_bytes}")
    return out


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict:
    out: dict = {}
    for k, v in pairs:
        if k in out:
            raise EncodingError(f"duplicate key {k!r} in message", field=k)
        out[k] = v
    return out


def _refuse_constant(name: str) -> Any:
    raise EncodingError(f"{name} is not allowed in messages")


def _nesting_depth(obj: Any) -> int:
    """Deepest container nesting; walks containers only (leaves were checked by the parser)."""
    if not isinstance(obj, (dict, list)):
        return 0
    deepest, stack = 0, [(obj, 1)]
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        children = node.values() if isinstance(node, dict) else node
        stack.extend((c, depth + 1) for c in children if isinstance(c, (dict, list)))
    return deepest


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise EncodingError(f"number {text[:30]} is out of range (would be Inf)")
    return value


def decode(data: bytes | str, *, max_bytes: int = DEFAULT_MAX_BYTES,
           max_depth: int = DEFAULT_MAX_DEPTH) -> Any:
    """Parse canonical-encoding JSON safely; every failure is an :class:`EncodingError`."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise EncodingError("message must be bytes")
    if len(data) > max_bytes:
        raise EncodingError(f"message is {len(data)} bytes, larger than the limit {max_bytes}",
                            code="message_too_large", status=413)
    try:
        text = bytes(data).decode("utf-8")
        obj = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_refuse_constant,
                         parse_float=_finite_float)
    except EncodingError:
        raise
    except RecursionError as exc:
        raise EncodingError(f"message nests deeper than {max_depth} levels") from exc
    except (UnicodeDecodeError, ValueError) as exc:
        raise EncodingError(f"message is not valid UTF-8 JSON: {exc}") from exc
    if _nesting_depth(obj) - 1 > max_depth:
        raise EncodingError(f"message nests deeper than {max_depth} levels")
    # A "\\udXXX" escape can smuggle a lone surrogate into a string: not Unicode text, so the
    # message has no canonical (UTF-8) form, and echoing it (an error naming the field) could
    # not be encoded. Raw UTF-8 input cannot hold one, so only texts with such escapes are walked.
    if _SURROGATE_ESCAPE.search(text) and _has_lone_surrogate(obj):
        raise EncodingError("message holds a lone UTF-16 surrogate (\\ud800-\\udfff escape); "
                            "strings must be valid Unicode")
    return obj


_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_SURROGATE = re.compile("[\ud800-\udfff]")


def _has_lone_surrogate(obj: Any) -> bool:
    stack = [obj]
    while stack:
        node = stack.pop()
        if isinstance(node, str):
            if _SURROGATE.search(node):
                return True
        elif isinstance(node, dict):
            stack.extend(node.keys())
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return False
