""""What left this machine": a transport that records every request the workbench's
:class:`~client_sdk.client.MarketClient` sends, and a decoded view of each one.

It wraps the client's real httpx transport (so nothing can bypass it) and keeps the exact bytes
that went out; the panel decodes them for people (message type, fields, array shapes, sizes)
and the audit (:mod:`.audit`) searches them for the user's raw values.
"""
from __future__ import annotations

import base64
import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

__all__ = ["Sent", "RecordingTransport", "describe"]

#: requests kept (the oldest are dropped past it, and the panel says how many)
MAX_KEPT = 2_000
#: characters of a string field shown before it is cut
SHOWN_CHARS = 120


@dataclass
class Sent:
    """One request as it left: method, URL, headers and body bytes, and what came back."""

    seq: int
    when: float
    method: str
    url: str
    path: str
    headers: list[tuple[bytes, bytes]]
    body: bytes
    status: int | None = None
    answer_bytes: int | None = None
    error: str | None = None
    fields: list[tuple[str, str]] = field(default_factory=list)
    message_type: str = ""

    @property
    def size(self) -> int:
        return len(self.body) + len(self.url) + sum(len(k) + len(v) + 4 for k, v in self.headers)


class RecordingTransport(httpx.BaseTransport):
    """Records each request (before it is sent), then hands it to ``inner``."""

    def __init__(self, inner: httpx.BaseTransport | None = None):
        self.inner = inner or httpx.HTTPTransport()
        self._lock = threading.Lock()
        self._sent: list[Sent] = []
        self.dropped = 0
        self._seq = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        body = bytes(request.read())
        with self._lock:
            self._seq += 1
            rec = Sent(self._seq, time.time(), request.method, str(request.url),
                       request.url.path, list(request.headers.raw), body)
            rec.message_type, rec.fields = describe(request.method, request.url.path, body,
                                                    dict(request.headers))
            self._sent.append(rec)
            if len(self._sent) > MAX_KEPT:
                self._sent.pop(0)
                self.dropped += 1
        try:
            resp = self.inner.handle_request(request)
        except Exception as exc:
            rec.error = f"{type(exc).__name__}: {exc}"
            raise
        rec.status = resp.status_code
        resp.read()
        rec.answer_bytes = len(resp.content)
        return resp

    def close(self) -> None:
        self.inner.close()

    def sent(self) -> list[Sent]:
        with self._lock:
            return list(self._sent)

    def get(self, seq: int) -> Sent | None:
        with self._lock:
            return next((s for s in self._sent if s.seq == seq), None)


def _summary(value: Any) -> str:
    """One line a person can read: arrays as dtype and shape, base64 blobs as their size."""
    if isinstance(value, dict) and set(value) == {"__array__"}:
        a = value["__array__"]
        shape = "x".join(str(int(s)) for s in a.get("shape", [])) or "scalar"
        return f"array {a.get('dtype')} {shape} ({len(a.get('data', '')) * 3 // 4:,} bytes)"
    if isinstance(value, str):
        if len(value) > 200:
            try:
                n = len(base64.b64decode(value, validate=True))
                return f"base64, {n:,} bytes"
            except ValueError:
                pass
        return json.dumps(value[:SHOWN_CHARS] + ("..." if len(value) > SHOWN_CHARS else ""))
    if isinstance(value, list):
        inner = ", ".join(_summary(v) for v in value[:8])
        return f"[{inner}{', ...' if len(value) > 8 else ''}] ({len(value)} items)"
    if isinstance(value, dict):
        return "{" + ", ".join(value)[:SHOWN_CHARS] + "}"
    return json.dumps(value)


def _flatten(prefix: str, obj: Any, out: list[tuple[str, str]], depth: int = 0) -> None:
    if (isinstance(obj, dict) and set(obj) != {"__array__"} and depth < 3 and obj):
        for k, v in obj.items():
            _flatten(f"{prefix}.{k}" if prefix else str(k), v, out, depth + 1)
    else:
        out.append((prefix or "(body)", _summary(obj)))


def describe(method: str, path: str, body: bytes, headers: dict) -> tuple[str, list]:
    """(message type, [(field, summary)]) of a request: a signed envelope's type and body
    fields; a GET's nonce header; anything else by its size."""
    fields: list[tuple[str, str]] = []
    if method == "GET":
        nonce = headers.get("x-lwm-nonce")
        if nonce:
            fields.append(("header X-LWM-Nonce", nonce))
        return "GET (no body)", fields
    try:
        env = json.loads(body)
    except ValueError:
        return "unreadable body", [("(body)", f"{len(body):,} bytes")]
    if not isinstance(env, dict):
        return "JSON", [("(body)", _summary(env))]
    _flatten("body", env.get("body"), fields)  # what the message says first, then who signs
    for k in ("sender", "aud", "ts", "nonce"):
        if k in env:
            fields.append((f"envelope.{k}", _summary(env[k])))
    return str(env.get("type", "JSON")), fields
