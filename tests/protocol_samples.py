"""One valid body per message type, shared by protocol tests and fuzzers."""
import base64

import numpy as np

from protocol.encoding import encode_array

H = "ab" * 32
SIG = base64.b64encode(bytes(range(64))).decode()
PUB = base64.b64encode(bytes(range(32))).decode()


def semantic():
    return {"name": "Austin sales", "description": "monthly sales", "data_type": "table",
            "task_type": "regression", "input_features": ["a", "b", "c"], "target": "yoy",
            "objective": "rmse", "tags": ["sales", "texas"], "license": "MIT"}


def query():
    s = semantic()
    return {k: s[k] for k in ("data_type", "task_type", "input_features", "target", "objective")}


def rkme(k=100, d=3, seed=0):
    rng = np.random.default_rng(seed)
    beta = rng.random(k)
    return {"z": encode_array(rng.normal(size=(k, d))), "beta": encode_array(beta / beta.sum()),
            "gamma": 0.1, "scales": encode_array(np.ones(d)), "n_features": d}


def kernel():
    return {"gamma": 0.1, "scales": encode_array(np.ones(3)), "version": 0}


def island():
    return {"island_id": "isl-1", "semantic_key": H, "semantic": query(), "kernel": kernel(),
            "n_features": 3, "learnware_count": 4}


def artefact():
    return {"semantic_sha256": H, "spec_sha256": H, "model_sha256": H, "signature": SIG}


def result():
    return {"island_id": "isl-1",
            "single": [{"learnware_id": "lw-1", "mmd": 0.01, "score": 0.9, "fit": "good"}],
            "mixture": {"learnware_ids": ["lw-1", "lw-2"], "weights": [0.7, 0.3], "mmd": 0.005,
                        "score": 0.95}, "baseline_mmd": 0.2}


def bodies():
    return {
        "publish": {"semantic": semantic(), "spec": rkme(),
                    "model": {"format": "skops", "sha256": H, "size": 4,
                              "data": base64.b64encode(b"abcd").decode()},
                    "artefact": artefact()},
        "publish_result": {"learnware_id": "lw-1", "island_id": "isl-1", "kernel": kernel()},
        "island_info": island(),
        "island_list": {"islands": [island()]},
        "search": {"semantic": query(), "max_results": 5, "requirement": rkme()},
        "search_result": result(),
        "anchor_request": {"semantic": query(), "max_anchors": 8},
        "anchor_set": {"island_id": "isl-1", "anchors": ["lw-1", "lw-2"], "objective": "rmse",
                       "round": 1},
        "metrics_report": {"island_id": "isl-1", "metric": "rmse", "n_rows": 10,
                           "values": {"lw-1": 0.2, "lw-2": 0.3}, "round": 1},
        "localization_result": {**result(), "next_anchors": ["lw-3"], "round": 1},
        "download_manifest": {"learnware_id": "lw-1", "island_id": "isl-1", "semantic": semantic(),
                              "spec": rkme(), "model_sha256": H, "model_size": 10,
                              "developer": PUB, "artefact": artefact(), "deleted": False},
        "delete": {"learnware_id": "lw-1"},
        "delete_result": {"learnware_id": "lw-1", "deleted": True},
        "error": {"code": "bad_message", "message": "nope", "field": "body.x"},
        "market_keys": {"market_key": PUB, "rotations": [
            {"old": PUB, "new": PUB, "at": 1_700_000_000, "old_signature": SIG,
             "new_signature": SIG}]},
        "island_digest": {"island_id": "isl-1", "kernel": kernel(), "mode": "sketch",
                          "cursor": 2, "more": False, "learnware_count": 2,
                          "baseline_mmd": 0.2, "pks": encode_array(np.array([1, 2])),
                          "live": encode_array(np.array([1, 2])),
                          "self_inner": encode_array(np.array([0.5, 0.6])),
                          "sketch": encode_array(np.ones((2, 4), dtype=np.float32)),
                          "sketch_params": {"dim": 4, "seed": 0, "orthogonal": True,
                                            "center": encode_array(np.zeros(3)), "err": 0.01,
                                            "fingerprint": H, "margin_sigmas": 2.0,
                                            "wide": 10}},
        "spec_batch": {"island_id": "isl-1", "pks": encode_array(np.array([1])),
                       "counts": encode_array(np.array([2])),
                       "z": encode_array(np.zeros((2, 3))),
                       "beta": encode_array(np.array([0.5, 0.5]))},
        "world": {"components": [{
            "component_id": "cmp_0123456789abcdef", "data_type": "table",
            "task_type": "regression", "target": "y", "objective": "rmse",
            "islands": ["isl-1", "isl-2"], "features": ["a", "b", "c", "d"],
            "connecting_features": ["b", "c"], "scales": encode_array(np.ones(4)),
            "learnware_count": 3,
            "feature_info": {"b": {"description": "the b", "unit": "m", "aliases": ["B"]}}}],
            "island_features": {"isl-1": ["a", "b", "c"], "isl-2": ["b", "c", "d"]},
            "matches": [{"feature": "B", "matched": "b", "by": "name"}]},
        "world_search": {"semantic": {**query(), "feature_map": {"a": "b"},
                                      "feature_info": {"a": {"description": "x"}}},
                         "requirement": rkme(), "max_results": 5},
        "world_search_result": {
            "component_id": "cmp_0123456789abcdef", "islands": ["isl-1", "isl-2"],
            "single": [{"learnware_id": "lw-1", "island_id": "isl-2", "mmd": 0.1, "score": 0.5,
                        "fit": "fair", "covered": {"b": "b"}, "fill": ["d"],
                        "baseline_mmd": 0.2}],
            "mixture": {"learnware_ids": ["lw-1"], "weights": [1.0], "mmd": 0.1, "score": 0.5},
            "matches": [], "objective": "rmse", "mixture_features": ["b"]},
        "describe_result": {
            "query": "monthly home sales", "ranker": "hybrid",
            "learnwares": [{"learnware_id": "lw-1", "island_id": "isl-1", "name": "tx",
                            "score": 0.03, "lexical": 4.2, "cosine": 0.61,
                            "matched_words": {"description": ["home", "sale"]},
                            "best_passage": "description"}],
            "islands": [{"island_id": "isl-1", "score": 0.03, "best_learnware_id": "lw-1",
                         "matching_learnwares": 1, "task_type": "regression",
                         "target": "yoy", "n_features": 9}],
            "indexed": 1, "pending": 0, "embedding": "ready"},
        "usage_report": {"learnware_id": "lw-1", "metric": "rmse", "value": 0.25, "n_rows": 20,
                         "reuse": "averaging", "comment": "fine"},
        "usage_report_result": {"learnware_id": "lw-1", "replaced": False, "summary": {
            "count": 1, "metric": "rmse", "median": 0.25, "q1": 0.25, "q3": 0.25, "rows": 20}},
        "usage_reports": {"learnware_id": "lw-1", "summary": {"count": 0, "metric": "rmse",
                                                              "median": None},
                          "reports": [{"reporter": "ab" * 16, "value": 0.25, "n_rows": 20,
                                       "reuse": "direct", "at": 1, "comment": "ok"}]},
    }
