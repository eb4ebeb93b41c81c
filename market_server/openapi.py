"""The OpenAPI description of every endpoint (served at /openapi.json).

The schema of every message body is generated from protocol/schemas.py (through the msgspec
types of protocol/structs.py), so the document cannot drift from what the market enforces.
"""
from __future__ import annotations

from protocol.structs import json_schemas

ENVELOPE = {"type": "object", "description": "A signed envelope {v, type, sender, ts, nonce, "
            "body, sig} in canonical JSON (see protocol/envelope.py); requests add aud (the "
            "market's key id), answers reply_to (the request's nonce)",
            "required": ["v", "type", "sender", "ts", "nonce", "body", "sig"],
            "properties": {"v": {"type": "integer"}, "type": {"type": "string"},
                           "sender": {"type": "string"}, "ts": {"type": "integer"},
                           "nonce": {"type": "string"}, "body": {"type": "object"},
                           "sig": {"type": "string"}, "reply_to": {"type": "string"},
                           "aud": {"type": "string"}}}
# A GET names a fresh nonce; its signed answer carries it as reply_to (a replay cannot).
GET_NONCE = {"name": "X-LWM-Nonce", "in": "header", "required": False,
             "schema": {"type": "string", "pattern": "^[0-9a-f]{32}$"}}


def _envelope_of(message_type: str) -> dict:
    """The envelope schema with the body of ``message_type``."""
    return {**ENVELOPE, "description": f"a signed `{message_type}` envelope",
            "properties": {**ENVELOPE["properties"], "body": json_schemas()[0][message_type]}}


def _op(summary: str, *, body: str | None = None, ok: str = "200", params=(), binary=False):
    op = {"summary": summary, "parameters": [
        {"name": p, "in": "path", "required": True, "schema": {"type": "string"}} for p in params]
        + ([] if body else [GET_NONCE]),
        "responses": {ok: {"description": "signed envelope" if not binary else "model file",
                           "content": ({"application/octet-stream": {"schema": {
                               "type": "string", "format": "binary"}}} if binary else
                                       {"application/json": {"schema": ENVELOPE}})},
                      "4XX": {"description": "signed error envelope, body {code, message, field}",
                              "content": {"application/json": {"schema": _envelope_of(
                                  "error")}}}}}
    if body:
        op["requestBody"] = {"required": True, "description": f"signed `{body}` envelope",
                             "content": {"application/json": {"schema": _envelope_of(body)}}}
    return op


def _page(summary: str, params=(), query=()) -> dict:
    """A page of the HTML catalogue (market_server/web/): read-only, unsigned HTML."""
    html = {"text/html": {"schema": {"type": "string"}}}
    return {"get": {"summary": summary, "tags": ["catalogue"], "parameters": [
        {"name": p, "in": "path", "required": True, "schema": {"type": "string"}} for p in params]
        + [{"name": q, "in": "query", "schema": {"type": t}} for q, t in query],
        "responses": {"200": {"description": "HTML page", "content": html},
                      "4XX": {"description": "HTML page naming what is wrong", "content": html}}}}


_TABLE = (("sort", "string"), ("order", "string"), ("page", "integer"), ("per_page", "integer"))
#: the web catalogue's pages (HTML for people; the same data as the signed API above)
CATALOGUE_PATHS = {
    "/": _page("catalogue: the islands"),
    "/islands/{island_id}": _page("catalogue: one island (kernel, map, learnwares)",
                                  ["island_id"], _TABLE + (("withdrawn", "string"),)),
    "/learnwares/{learnware_id}": _page("catalogue: one learnware", ["learnware_id"]),
    "/developers/{key_id}": _page("catalogue: the learnwares of a developer key", ["key_id"],
                                  _TABLE),
    "/search": _page("catalogue: text search", query=(("q", "string"),)),
    "/api": _page("catalogue: this document, readable"),
    "/assets/{filename}": _page("catalogue: its stylesheet, script and icon", ["filename"]),
}


def openapi_document() -> dict:
    return {
        "openapi": "3.0.3",
        "info": {"title": "learnware-market", "version": "1",
                 "description": "A privacy-first learnware market. Mutating and search requests "
                                "are signed envelopes; every answer is signed by the market."},
        "paths": {
            "/healthz": {"get": {"summary": "liveness and database check",
                                 "responses": {"200": {"description": "ok"}}}},
            "/openapi.json": {"get": {"summary": "this document",
                                      "responses": {"200": {"description": "OpenAPI"}}}},
            "/v1/market": {"get": {"summary": "the market's public key",
                                   "responses": {"200": {"description": "key"}}}},
            "/v1/market/keys": {"get": _op("the market's key rotations, each signed by the "
                                           "key it retired (a pinned client follows them)")},
            "/v1/learnwares": {
                "post": _op("publish a learnware (semantic + RKME + model + artefact signature)",
                            body="publish", ok="201"),
                "get": {**_op("semantic text search across islands"), "parameters": [
                    {"name": "q", "in": "query", "schema": {"type": "string"}},
                    {"name": "limit", "in": "query", "schema": {"type": "integer"}},
                    GET_NONCE]}},
            "/v1/learnwares/{learnware_id}": {
                "get": _op("a learnware's download manifest", params=["learnware_id"]),
                "delete": _op("delete (tombstone) one's own learnware", body="delete",
                              params=["learnware_id"])},
            "/v1/learnwares/{learnware_id}/model": {
                "get": _op("the learnware's model file", params=["learnware_id"], binary=True)},
            "/v1/learnwares/{learnware_id}/reports": {
                "post": _op("a signed usage report on a learnware one reused (one per key; "
                            "a new one replaces it)", body="usage_report", ok="201",
                            params=["learnware_id"]),
                "get": _op("a learnware's usage reports and their robust aggregate",
                           params=["learnware_id"])},
            "/v1/models/{sha256}": {"get": _op("a model file by sha256", params=["sha256"],
                                               binary=True)},
            "/v1/islands": {"get": _op("list islands")},
            "/v1/islands/{island_id}": {"get": _op("one island", params=["island_id"])},
            "/v1/islands/by-key/{key}": {"get": _op("the island of a semantic key",
                                                    params=["key"])},
            "/v1/islands/{island_id}/digest": {"get": {
                **_op("private search: one page of the island's index (sketches or specs) after "
                      "a cursor", params=["island_id"]),
                "parameters": [{"name": "island_id", "in": "path", "required": True,
                                "schema": {"type": "string"}},
                               {"name": "since", "in": "query", "schema": {"type": "integer"}},
                               {"name": "limit", "in": "query", "schema": {"type": "integer"}},
                               GET_NONCE]}},
            "/v1/islands/{island_id}/specs": {"get": {
                **_op("private search: exact specs of some learnwares (pks=1,2,3)",
                      params=["island_id"]),
                "parameters": [{"name": "island_id", "in": "path", "required": True,
                                "schema": {"type": "string"}},
                               {"name": "pks", "in": "query", "required": True,
                                "schema": {"type": "string"}}, GET_NONCE]}},
            "/v1/search": {"post": _op("RKME search: ranked matches and a mixture",
                                       body="search")},
            "/v1/world": {"get": _op("the specification world: components of islands that "
                                     "share features, the features that connect them")},
            "/v1/search/world": {"post": _op("search across the islands of a component: "
                                             "marginal MMD on the features the user shares",
                                             body="world_search")},
            "/v1/describe": {"get": {**_op("a requirement in words: ranked islands and "
                                           "learnwares with scores and the words matched "
                                           "(describe_result)"), "parameters": [
                {"name": "q", "in": "query", "required": True,
                 "schema": {"type": "string", "maxLength": 500}},
                {"name": "limit", "in": "query", "schema": {"type": "integer"}},
                {"name": "ranker", "in": "query", "schema": {
                    "type": "string", "enum": ["auto", "lexical", "semantic", "hybrid"]}},
                GET_NONCE]}},
            "/v1/anchors": {"post": _op("anchor learnwares of an island", body="anchor_request")},
            "/v1/localize": {"post": _op("locate learnwares from anchor metrics",
                                         body="metrics_report")},
            **CATALOGUE_PATHS,
        },
        "components": {"schemas": json_schemas()[1]},
    }
