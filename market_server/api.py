"""HTTP endpoints, one blueprint per area. Thin: parse, call the Market, sign the answer."""
from __future__ import annotations

from flask import Blueprint, Response, jsonify, request

from protocol.envelope import open_envelope
from protocol.errors import LearnwareError
from protocol.limits import MAX_ROTATIONS

from .openapi import openapi_document
from .responses import market, signed
from .storage import NotFound

meta = Blueprint("meta", __name__)
learnwares = Blueprint("learnwares", __name__, url_prefix="/v1")
islands = Blueprint("islands", __name__, url_prefix="/v1")
search = Blueprint("search", __name__, url_prefix="/v1")


def _envelope(expected: str, action: str | None = None):
    """Open the signed request body: every check of the protocol, with the shared nonce store."""
    state = market()
    data = request.get_data(cache=False)
    if not data:
        raise LearnwareError("this endpoint needs a signed envelope as the request body",
                             code="unsigned_request", status=401)
    env = open_envelope(data, nonce_store=state.store, window_s=state.config.timestamp_window_s,
                        max_bytes=state.config.max_message_bytes, expected_types={expected},
                        audience=state.identity.key_id)
    request.lwm_nonce = env.nonce
    if action:
        state.limiter.check(action, env.sender_key_id)
    return env


# --- meta -------------------------------------------------------------------------------------
@meta.get("/healthz")
def healthz():
    state = market()
    state.store.island_version(0)  # touches the database
    return jsonify({"status": "ok", "market_key_id": state.identity.key_id})


@meta.get("/openapi.json")
def openapi():
    return jsonify(openapi_document())


@meta.get("/v1/market")
def market_info():
    state = market()
    return jsonify({"market_key": state.identity.public_key_b64,
                    "market_key_id": state.identity.key_id, "protocol_version": 1})


@meta.get("/v1/market/keys")
def market_keys():
    """The market's key rotations, each signed by the key it retired: a client pinned to an
    older key follows them to the current one (protocol/rotation.py)."""
    state = market()
    rotations = [r for _, r in state.store.market_key_chain() if r is not None]
    return signed("market_keys", {"market_key": state.identity.public_key_b64,
                                  "rotations": rotations[-MAX_ROTATIONS:]})


# --- learnwares -------------------------------------------------------------------------------
@learnwares.post("/learnwares")
def publish():
    env = _envelope("publish", "publish")
    result = market().market.publish(env)
    return signed("publish_result", result, status=201, reply_to=env.nonce)


@learnwares.get("/learnwares/<learnware_id>")
def get_learnware(learnware_id: str):
    return signed("download_manifest", market().market.manifest(learnware_id))


@learnwares.get("/learnwares/<learnware_id>/model")
def get_learnware_model(learnware_id: str):
    return _model_response(*market().market.learnware_model(learnware_id))


@learnwares.get("/models/<sha256>")
def get_model(sha256: str):
    if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
        raise NotFound("a model file is named by its 64-character lowercase sha256",
                       field="sha256")
    return _model_response(market().market.model_file(sha256), sha256)


def _model_response(data: bytes, sha: str) -> Response:
    resp = Response(data, mimetype="application/octet-stream")
    resp.headers["X-Model-Sha256"] = sha
    resp.headers["Cache-Control"] = "public, max-age=31536000, immutable"
    return resp


@learnwares.delete("/learnwares/<learnware_id>")
def delete_learnware(learnware_id: str):
    env = _envelope("delete", "publish")
    if env.body["learnware_id"] != learnware_id:
        raise LearnwareError("the signed learnware_id differs from the one in the URL",
                             code="id_mismatch", status=400, field="learnware_id")
    return signed("delete_result", market().market.delete(env), reply_to=env.nonce)


@learnwares.post("/learnwares/<learnware_id>/reports")
def post_report(learnware_id: str):
    env = _envelope("usage_report", "report")
    return signed("usage_report_result", market().market.report(env, learnware_id),
                  status=201, reply_to=env.nonce)


@learnwares.get("/learnwares/<learnware_id>/reports")
def get_reports(learnware_id: str):
    return signed("usage_reports", market().market.report_listing(learnware_id))


@learnwares.get("/learnwares")
def text_search():
    q = request.args.get("q", "")[:500]
    try:
        limit = max(1, min(100, int(request.args.get("limit", "20"))))
    except ValueError:
        raise LearnwareError("limit must be an integer", code="bad_query", field="limit")
    matches = market().market.text_search(q, limit) if q.strip() else []
    return signed("search_result", {"island_id": None, "single": [], "mixture": None,
                                    "text_matches": matches})


@search.get("/describe")
def describe():
    """A requirement in words (``q``) -> ranked islands and learnwares, with why."""
    try:
        limit = int(request.args.get("limit", "10"))
    except ValueError:
        raise LearnwareError("limit must be an integer", code="bad_query", field="limit")
    body = market().market.describe(request.args.get("q", ""), limit,
                                    request.args.get("ranker", "auto")[:20])
    return signed("describe_result", body)


# --- islands ----------------------------------------------------------------------------------
@islands.get("/islands")
def list_islands():
    m = market().market
    return signed("island_list", {"islands": [m.island_info(i, i.learnware_count)
                                              for i in m.store.list_islands()]})


@islands.get("/islands/<island_id>")
def get_island(island_id: str):
    m = market().market
    return signed("island_info", m.island_info(m.island_by_public_id(island_id)))


@islands.get("/islands/by-key/<key>")
def get_island_by_key(key: str):
    m = market().market
    island = m.store.island_by_key(key) if len(key) == 64 else None
    if island is None:
        raise NotFound("no island has this semantic key yet (the first publish creates it)",
                       field="semantic_key")
    return signed("island_info", m.island_info(island))


@islands.get("/world")
def world():
    """The specification world: connected components of islands and their shared features."""
    return signed("world", market().market.world_info())


# --- search and anchors ----------------------------------------------------------------------
@search.post("/search")
def rkme_search():
    env = _envelope("search", "search")
    return signed("search_result", market().market.search(env.body), reply_to=env.nonce)


@search.post("/search/world")
def world_search():
    env = _envelope("world_search", "search")
    return signed("world_search_result", market().market.world_search(env.body),
                  reply_to=env.nonce)


@search.post("/anchors")
def anchors():
    env = _envelope("anchor_request", "search")
    return signed("anchor_set", market().market.anchor_set(env.body), reply_to=env.nonce)


@search.post("/localize")
def localize():
    env = _envelope("metrics_report", "search")
    return signed("localization_result", market().market.localize(env.body),
                  reply_to=env.nonce)
