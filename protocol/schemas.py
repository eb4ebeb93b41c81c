"""Schemas of every message the market and its clients exchange.

A tiny declarative validator (no dependency): each schema node checks a value and raises
:class:`SchemaError` naming the offending field by its dotted path. ``MESSAGE_TYPES`` maps each
envelope type to the schema of its body.

Every number is bounded (``protocol/limits.py`` documents each bound): a request the schema
accepts cannot make the market compute for minutes, overflow, or fail to encode its answer.
"""
from __future__ import annotations

import math
import re
from typing import Any, Iterable

import numpy as np

from .encoding import MAX_ARRAY_ELEMENTS, decode_array, is_array
from .errors import EncodingError, SchemaError
from .objectives import WIRE_OBJECTIVES
from .limits import (MAX_COUNT, MAX_DP_DELTA, MAX_DP_EPSILON, MAX_FEATURES, MAX_LABEL_INT,
                     MAX_METRIC, MAX_MODEL_BYTES, MAX_MODEL_CARD_CHARS, MAX_REAL,
                     MAX_REASON_CHARS, MAX_REPORT_COMMENT_CHARS, MAX_ROTATIONS, MAX_ROWS,
                     MAX_SPEC_POINTS, MAX_TIMESTAMP)

OBJECTIVES = WIRE_OBJECTIVES
TASK_TYPES = ("classification", "regression")
DATA_TYPES = ("table",)


class Node:
    def check(self, value: Any, path: str) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def _fail(self, path: str, what: str) -> None:
        raise SchemaError(f"{path or 'body'} {what}", field=path or None)


class Str(Node):
    def __init__(self, max_len: int = 1000, min_len: int = 0, pattern: str | None = None,
                 choices: Iterable[str] | None = None):
        self.max_len, self.min_len = max_len, min_len
        self.pattern = re.compile(pattern) if pattern else None
        self.choices = tuple(choices) if choices else None

    def check(self, value, path):
        if not isinstance(value, str):
            self._fail(path, "must be a string")
        if len(value) > self.max_len:
            self._fail(path, f"is longer than {self.max_len} characters")
        if len(value) < self.min_len:
            self._fail(path, "must not be empty" if self.min_len == 1
                       else f"is shorter than {self.min_len} characters")
        if self.choices is not None and value not in self.choices:
            self._fail(path, f"must be one of {list(self.choices)}, got {value[:50]!r}")
        if self.pattern is not None and not self.pattern.fullmatch(value):
            self._fail(path, f"has an invalid format ({value[:50]!r})")


class Int(Node):
    def __init__(self, lo: int | None = None, hi: int | None = None):
        self.lo, self.hi = lo, hi

    def check(self, value, path):
        if not isinstance(value, int) or isinstance(value, bool):
            self._fail(path, "must be an integer")
        if self.lo is not None and value < self.lo:
            self._fail(path, f"must be >= {self.lo}")
        if self.hi is not None and value > self.hi:
            self._fail(path, f"must be <= {self.hi}")


class Float(Node):
    def __init__(self, lo: float | None = None, hi: float | None = None, lo_open: bool = False):
        self.lo, self.hi, self.lo_open = lo, hi, lo_open

    def check(self, value, path):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self._fail(path, "must be a number")
        if isinstance(value, int) and not -1e308 <= value <= 1e308:  # float(10**400) overflows
            self._fail(path, "is out of range")
        if not math.isfinite(value):
            self._fail(path, "must be finite")
        if self.lo is not None and (value < self.lo or (self.lo_open and value == self.lo)):
            self._fail(path, f"must be {'>' if self.lo_open else '>='} {self.lo}")
        if self.hi is not None and value > self.hi:
            self._fail(path, f"must be <= {self.hi}")


class Bool(Node):
    def check(self, value, path):
        if not isinstance(value, bool):
            self._fail(path, "must be true or false")


class Nullable(Node):
    def __init__(self, inner: Node):
        self.inner = inner

    def check(self, value, path):
        if value is not None:
            self.inner.check(value, path)


class AnyOf(Node):
    def __init__(self, *options: Node, what: str):
        self.options, self.what = options, what

    def check(self, value, path):
        for opt in self.options:
            try:
                opt.check(value, path)
                return
            except SchemaError:
                continue
        self._fail(path, f"must be {self.what}")


class List(Node):
    def __init__(self, item: Node, max_items: int = 10_000, min_items: int = 0,
                 unique: bool = False):
        self.item, self.max_items, self.min_items, self.unique = item, max_items, min_items, unique

    def check(self, value, path):
        if not isinstance(value, list):
            self._fail(path, "must be a list")
        if len(value) > self.max_items:
            self._fail(path, f"has more than {self.max_items} items")
        if len(value) < self.min_items:
            self._fail(path, f"needs at least {self.min_items} item(s)")
        for i, v in enumerate(value):
            self.item.check(v, f"{path}[{i}]")
        if self.unique and len({repr(v) for v in value}) != len(value):
            self._fail(path, "must not repeat items")


class Map(Node):
    """A dict with free string keys (e.g. learnware id -> metric)."""

    def __init__(self, key: Str, value: Node, max_items: int = 10_000):
        self.key, self.value, self.max_items = key, value, max_items

    def check(self, value, path):
        if not isinstance(value, dict):
            self._fail(path, "must be an object")
        if len(value) > self.max_items:
            self._fail(path, f"has more than {self.max_items} entries")
        for k, v in value.items():
            self.key.check(k, f"{path}.<key>")
            self.value.check(v, f"{path}.{k}")


class Obj(Node):
    def __init__(self, required: dict[str, Node], optional: dict[str, Node] | None = None):
        self.required, self.optional = required, optional or {}

    def check(self, value, path):
        if not isinstance(value, dict):
            self._fail(path, "must be an object")
        for k in self.required:
            if k not in value:
                sub = f"{path}.{k}" if path else k
                raise SchemaError(f"{sub} is missing", field=sub)
        for k, v in value.items():
            sub = f"{path}.{k}" if path else k
            node = self.required.get(k) or self.optional.get(k)
            if node is None:
                raise SchemaError(f"{sub} is not a known field", field=sub)
            node.check(v, sub)


class Array(Node):
    """An encoded numeric array (see :func:`protocol.encoding.encode_array`)."""

    def __init__(self, ndim: int, max_elements: int = 10_000_000, finite: bool = True,
                 max_rows: int | None = None):
        self.ndim, self.max_elements, self.finite = ndim, max_elements, finite
        self.max_rows = max_rows

    def check(self, value, path):
        if not is_array(value):
            self._fail(path, "must be an encoded array {__array__: {dtype, shape, data}}")
        try:
            shape = value["__array__"].get("shape") if isinstance(value["__array__"], dict) else None
            if isinstance(shape, list) and all(isinstance(s, int) for s in shape) \
                    and math.prod(shape) > self.max_elements:
                self._fail(path, f"has more than {self.max_elements} elements")
            if (self.max_rows is not None and isinstance(shape, list) and shape
                    and isinstance(shape[0], int) and shape[0] > self.max_rows):
                self._fail(path, f"has {shape[0]} rows; at most {self.max_rows} are allowed")
            decode_array(value, field=path, allow_nonfinite=not self.finite, ndim=self.ndim)
        except EncodingError as exc:
            raise SchemaError(exc.message, field=path) from exc

    def check_decoded(self, dtype: str, shape: list, raw: bytes) -> None:
        """:meth:`check` for an array msgspec decoded: ``dtype`` an allowed one, ``shape`` at most
        4 non-negative integers, ``raw`` its base64 decoded (and found canonical by the caller,
        which re-encodes the whole body). Says only *that* the array is wrong: the fast path
        then opens the envelope the checked way, which names what is wrong."""
        count, dt = math.prod(shape), np.dtype(dtype)
        if (count > self.max_elements or len(shape) != self.ndim
                or len(raw) != count * dt.itemsize
                or (self.max_rows is not None and shape and shape[0] > self.max_rows)
                or (self.finite and dt.kind == "f"
                    and not np.isfinite(np.frombuffer(raw, dtype=dt)).all())):
            raise ValueError("invalid array")


# --- building blocks -------------------------------------------------------------------------
ID = Str(max_len=64, min_len=1, pattern=r"[A-Za-z0-9_-]{1,64}")
HEX64 = Str(max_len=64, min_len=64, pattern=r"[0-9a-f]{64}")
B64 = Str(max_len=200_000_000, pattern=r"[A-Za-z0-9+/]*={0,2}")
SIG_B64 = Str(max_len=88, min_len=88, pattern=r"[A-Za-z0-9+/]{86}==")
NAME = Str(max_len=200, min_len=1)
FEATURE = Str(max_len=200, min_len=1)
CLASS_LABEL = AnyOf(Int(lo=-MAX_LABEL_INT, hi=MAX_LABEL_INT), Str(max_len=200, min_len=1), what="an integer or a string label")
METRIC = Str(choices=OBJECTIVES)

# Per input feature: an optional description, unit and aliases (features as identities; matched
# across islands by learnware_core/features.py). Not part of the island key.
FEATURE_INFO = Map(FEATURE, Obj(required={}, optional={
    "description": Str(max_len=500), "unit": Str(max_len=100),
    "aliases": List(Str(max_len=200, min_len=1), max_items=8, unique=True)}),
    max_items=MAX_FEATURES)
# A user's columns mapped to known feature names (column -> feature).
FEATURE_MAP = Map(FEATURE, FEATURE, max_items=MAX_FEATURES)

SEMANTIC = Obj(
    required={"name": NAME, "description": Str(max_len=10_000),
              "data_type": Str(choices=DATA_TYPES), "task_type": Str(choices=TASK_TYPES),
              "input_features": List(FEATURE, max_items=MAX_FEATURES, min_items=1, unique=True),
              "target": Str(max_len=200, min_len=1), "objective": METRIC},
    optional={"tags": List(Str(max_len=100, min_len=1), max_items=100),
              "license": Str(max_len=200),
              "classes": List(CLASS_LABEL, max_items=10_000, min_items=2, unique=True),
              "feature_scales": Array(ndim=1, max_elements=MAX_FEATURES),
              "feature_info": FEATURE_INFO,
              # markdown: intended use, training data in words, limits, licence. Signed with
              # the rest of the semantic spec; not part of the island key.
              "model_card": Str(max_len=MAX_MODEL_CARD_CHARS)})

# What a user states about their task: the island-defining part, with free text optional.
SEMANTIC_QUERY = Obj(
    required={"data_type": Str(choices=DATA_TYPES), "task_type": Str(choices=TASK_TYPES),
              "input_features": List(FEATURE, max_items=MAX_FEATURES, min_items=1, unique=True),
              "target": Str(max_len=200, min_len=1), "objective": METRIC},
    optional={"name": Str(max_len=200), "description": Str(max_len=10_000),
              "tags": List(Str(max_len=100), max_items=100), "license": Str(max_len=200),
              "classes": List(CLASS_LABEL, max_items=10_000), "feature_scales":
              Array(ndim=1, max_elements=MAX_FEATURES), "feature_info": FEATURE_INFO,
              "feature_map": FEATURE_MAP})

COUNT = Int(lo=0, hi=MAX_COUNT)
TIMESTAMP = Int(lo=0, hi=MAX_TIMESTAMP)
GAMMA = Float(lo=0.0, lo_open=True, hi=MAX_REAL)
REAL = Float(lo=-MAX_REAL, hi=MAX_REAL)
NONNEG = Float(lo=0.0, hi=MAX_REAL)
METRIC_VALUE = Float(lo=-MAX_METRIC, hi=MAX_METRIC)

#: the declared privacy budget of a differentially private RKME (issue #19)
DP_BUDGET = Obj(required={"epsilon": Float(lo=0.0, lo_open=True, hi=MAX_DP_EPSILON),
                          "delta": Float(lo=0.0, hi=MAX_DP_DELTA),
                          "mechanism": Str(choices=("gaussian-rff",))},
                optional={"features": Int(lo=1, hi=1_000_000)})

# At most MAX_SPEC_POINTS reduced points (what the SDK ever fits): a requirement's self term
# costs k^2 kernel values, computed before anything else of a search.
RKME = Obj(required={"z": Array(ndim=2, max_elements=2_000_000, max_rows=MAX_SPEC_POINTS),
                     "beta": Array(ndim=1, max_elements=MAX_SPEC_POINTS),
                     "gamma": GAMMA,
                     "n_features": Int(lo=1, hi=MAX_FEATURES)},
           optional={"scales": Nullable(Array(ndim=1, max_elements=MAX_FEATURES)),
                     # issue #19: the (epsilon, delta) budget a differentially private spec was
                     # fitted under (client_sdk/rkme.py, learnware_core/dp.py); signed with it
                     "dp": DP_BUDGET})

KERNEL = Obj(required={"gamma": GAMMA, "scales": Array(ndim=1, max_elements=MAX_FEATURES),
                       "version": COUNT})

ISLAND_INFO = Obj(required={"island_id": ID, "semantic_key": HEX64,
                            "semantic": SEMANTIC_QUERY, "kernel": KERNEL,
                            "n_features": Int(lo=1, hi=MAX_FEATURES), "learnware_count": COUNT},
                  optional={"anchor_count": COUNT, "created_at": TIMESTAMP})

ARTEFACT = Obj(required={"semantic_sha256": HEX64, "spec_sha256": HEX64,
                         "model_sha256": HEX64, "signature": SIG_B64})

PUBLISH = Obj(required={"semantic": SEMANTIC, "spec": RKME,
                        "model": Obj(required={"format": Str(choices=("skops",)),
                                               "sha256": HEX64,
                                               "size": Int(lo=1, hi=MAX_MODEL_BYTES),
                                               "data": B64}),
                        "artefact": ARTEFACT},
              # the operator's certificate for the sender key (protocol/certificate.py)
              optional={"certificate": Obj(required={
                  "developer": Str(max_len=44, min_len=44), "operator": Str(max_len=44, min_len=44),
                  "expires": Int(lo=0, hi=2**40), "signature": SIG_B64})})

PUBLISH_RESULT = Obj(required={"learnware_id": ID, "island_id": ID, "kernel": KERNEL})

#: how a reporting user reused a learnware (client_sdk/reuse.py's reusers, or something else)
REUSE_MODES = ("direct", "averaging", "ensemble_pruning", "job_selector", "feature_augment",
               "other")
#: the market's robust aggregate of a learnware's usage reports: their count, the median and
#: quartiles of the reported objective values, and the rows they were measured on in all
REPORT_SUMMARY = Obj(required={"count": COUNT, "metric": METRIC},
                     optional={"median": Nullable(METRIC_VALUE), "q1": Nullable(METRIC_VALUE),
                               "q3": Nullable(METRIC_VALUE), "rows": Int(lo=0, hi=2**53)})

MATCH = Obj(required={"learnware_id": ID, "mmd": NONNEG, "score": REAL,
                      "fit": Str(choices=("good", "fair", "poor", "unknown"))},
            optional={"name": Str(max_len=200), "estimate": Nullable(METRIC_VALUE),
                      "uncertainty": Nullable(Float(lo=0.0, hi=2 * MAX_METRIC)),
                      "reports": REPORT_SUMMARY})

MIXTURE = Obj(required={"learnware_ids": List(ID, min_items=1, max_items=100),
                        "weights": List(Float(lo=0.0, hi=1.0), min_items=1, max_items=100),
                        "mmd": NONNEG, "score": REAL},
              optional={"estimate": Nullable(METRIC_VALUE)})

SEARCH = Obj(required={"semantic": SEMANTIC_QUERY, "max_results": Int(lo=1, hi=100)},
             optional={"requirement": Nullable(RKME), "island_id": Nullable(ID),
                       "kernel_version": COUNT})

SEARCH_RESULT = Obj(required={"island_id": Nullable(ID), "single": List(MATCH, max_items=100),
                              "mixture": Nullable(MIXTURE)},
                    optional={"baseline_mmd": Nullable(NONNEG), "message": Str(max_len=2000),
                              "kernel": Nullable(KERNEL), "objective": Nullable(METRIC),
                              "text_matches": List(Obj(required={"learnware_id": ID, "name": Str(),
                                                                 "score": REAL}),
                                                   max_items=100),
                              "next_anchors": List(ID, max_items=100),
                              "round": Int(lo=0, hi=100)})

#: the most learnwares one anchor set may name (anchors plus any handed out beside them)
MAX_ANCHOR_SET = 64

ANCHOR_REQUEST = Obj(required={"semantic": SEMANTIC_QUERY},
                     optional={"max_anchors": Int(lo=1, hi=MAX_ANCHOR_SET),
                               "island_id": Nullable(ID)})

ANCHOR_SET = Obj(required={"island_id": ID,
                           "anchors": List(ID, max_items=MAX_ANCHOR_SET),
                           "objective": METRIC, "round": Int(lo=0, hi=100)})

METRICS_REPORT = Obj(required={"island_id": ID, "metric": METRIC,
                               "n_rows": Int(lo=1, hi=MAX_ROWS),
                               "values": Map(ID, METRIC_VALUE, max_items=256),
                               "round": Int(lo=1, hi=100)},
                     optional={"more_anchors": Int(lo=0, hi=MAX_ANCHOR_SET),
                               "max_results": Int(lo=1, hi=100)})

# --- the specification world (islands connected by shared features) ---------------------------
FEATURE_MATCH = Obj(required={"feature": FEATURE, "matched": FEATURE,
                              "by": Str(choices=("name", "alias", "description", "map"))})
COMPONENT = Obj(required={"component_id": ID, "data_type": Str(choices=DATA_TYPES),
                          "task_type": Str(choices=TASK_TYPES), "target": Str(max_len=200),
                          "objective": METRIC,
                          "islands": List(ID, min_items=1, max_items=MAX_COUNT),
                          "features": List(FEATURE, max_items=MAX_COUNT),
                          "connecting_features": List(FEATURE, max_items=MAX_COUNT),
                          "scales": Array(ndim=1, max_elements=MAX_COUNT),
                          "learnware_count": COUNT},
                optional={"feature_info": FEATURE_INFO})
WORLD = Obj(required={"components": List(COMPONENT, max_items=MAX_COUNT),
                      "island_features": Map(ID, List(FEATURE, max_items=MAX_FEATURES),
                                             max_items=MAX_COUNT),
                      "matches": List(FEATURE_MATCH, max_items=MAX_COUNT)})
WORLD_SEARCH = Obj(required={"semantic": SEMANTIC_QUERY, "requirement": RKME,
                             "max_results": Int(lo=1, hi=100)})
WORLD_MATCH = Obj(required={"learnware_id": ID, "island_id": ID, "mmd": NONNEG, "score": REAL,
                            "fit": Str(choices=("good", "fair", "poor", "unknown")),
                            "covered": FEATURE_MAP, "fill": List(FEATURE, max_items=MAX_FEATURES)},
                  optional={"name": Str(max_len=200), "baseline_mmd": Nullable(NONNEG)})
WORLD_SEARCH_RESULT = Obj(
    required={"component_id": Nullable(ID), "single": List(WORLD_MATCH, max_items=100),
              "mixture": Nullable(MIXTURE), "islands": List(ID, max_items=MAX_COUNT),
              "matches": List(FEATURE_MATCH, max_items=MAX_FEATURES)},
    optional={"message": Str(max_len=2000), "objective": Nullable(METRIC),
              "mixture_features": List(FEATURE, max_items=MAX_FEATURES)})

REASON = Str(max_len=MAX_REASON_CHARS)
#: who withdrew a learnware (its developer or the market's operator), why and when.
WITHDRAWAL = Obj(required={"reason": REASON, "by": Str(choices=("developer", "operator")),
                           "at": TIMESTAMP})

DOWNLOAD_MANIFEST = Obj(required={"learnware_id": ID, "island_id": ID, "semantic": SEMANTIC,
                                  "spec": RKME, "model_sha256": HEX64,
                                  "model_size": Int(lo=1, hi=MAX_MODEL_BYTES),
                                  "developer": Str(max_len=44, min_len=44),
                                  "artefact": ARTEFACT, "deleted": Bool()},
                        optional={"created_at": TIMESTAMP, "withdrawn": Nullable(WITHDRAWAL),
                                  "reports": REPORT_SUMMARY})

#: a user's signed report on a learnware it reused: the island objective's value on its own
#: labelled rows, their count (coarsened by the SDK), how it reused it, an optional comment.
#: Nothing else about the data.
USAGE_REPORT = Obj(required={"learnware_id": ID, "metric": METRIC, "value": METRIC_VALUE,
                             "n_rows": Int(lo=1, hi=MAX_ROWS), "reuse": Str(choices=REUSE_MODES)},
                   optional={"comment": Str(max_len=MAX_REPORT_COMMENT_CHARS)})
USAGE_REPORT_RESULT = Obj(required={"learnware_id": ID, "replaced": Bool(),
                                    "summary": REPORT_SUMMARY})
#: a learnware's reports as anyone may read them (reporters by key id)
USAGE_REPORTS = Obj(required={"learnware_id": ID, "summary": REPORT_SUMMARY,
                              "reports": List(Obj(
                                  required={"reporter": Str(max_len=64, min_len=1),
                                            "value": METRIC_VALUE, "n_rows": Int(lo=1, hi=MAX_ROWS),
                                            "reuse": Str(choices=REUSE_MODES), "at": TIMESTAMP},
                                  optional={"comment": Str(max_len=MAX_REPORT_COMMENT_CHARS)}),
                                  max_items=1000)})

DELETE = Obj(required={"learnware_id": ID}, optional={"reason": REASON})
DELETE_RESULT = Obj(required={"learnware_id": ID, "deleted": Bool()},
                    optional={"withdrawn": Nullable(WITHDRAWAL)})

# issue #19, private search: one page of an island's index, and exact specs of candidates
SKETCH_PARAMS = Obj(required={"dim": Int(lo=1, hi=1 << 16), "seed": Int(lo=0, hi=MAX_COUNT),
                              "orthogonal": Bool(),
                              "center": Array(ndim=1, max_elements=MAX_FEATURES),
                              "err": NONNEG, "fingerprint": HEX64,
                              "margin_sigmas": NONNEG, "wide": Int(lo=1, hi=1000)})
ISLAND_DIGEST = Obj(required={"island_id": ID, "kernel": KERNEL,
                              "mode": Str(choices=("sketch", "specs")), "cursor": COUNT,
                              "more": Bool(), "learnware_count": COUNT,
                              "pks": Array(ndim=1, max_elements=MAX_COUNT)},
                    optional={"baseline_mmd": Nullable(NONNEG),
                              "live": Array(ndim=1, max_elements=MAX_ARRAY_ELEMENTS),
                              "sketch_params": SKETCH_PARAMS,
                              "self_inner": Array(ndim=1, max_elements=MAX_ARRAY_ELEMENTS),
                              "sketch": Array(ndim=2, max_elements=MAX_ARRAY_ELEMENTS),
                              "counts": Array(ndim=1, max_elements=MAX_ARRAY_ELEMENTS),
                              "z": Array(ndim=2, max_elements=MAX_ARRAY_ELEMENTS),
                              "beta": Array(ndim=1, max_elements=MAX_ARRAY_ELEMENTS)})
SPEC_BATCH = Obj(required={"island_id": ID, "pks": Array(ndim=1, max_elements=MAX_COUNT),
                           "counts": Array(ndim=1, max_elements=MAX_COUNT),
                           "z": Array(ndim=2, max_elements=MAX_ARRAY_ELEMENTS),
                           "beta": Array(ndim=1, max_elements=MAX_ARRAY_ELEMENTS)})
# A requirement in words ranked (GET /v1/describe): learnwares and islands with scores and why.
WORD_LIST = List(Str(max_len=64), max_items=64)
DESCRIBE_RESULT = Obj(
    required={"query": Str(max_len=500), "ranker": Str(choices=("lexical", "semantic", "hybrid")),
              "learnwares": List(Obj(
                  required={"learnware_id": ID, "island_id": ID, "name": Str(max_len=200),
                            "score": REAL, "lexical": NONNEG, "cosine": Nullable(REAL),
                            "matched_words": Map(Str(max_len=64), WORD_LIST, max_items=16),
                            "best_passage": Nullable(Str(max_len=64))}), max_items=50),
              "islands": List(Obj(
                  required={"island_id": ID, "score": REAL, "best_learnware_id": ID,
                            "matching_learnwares": COUNT,
                            "task_type": Str(max_len=64), "target": Str(max_len=200),
                            "n_features": Int(lo=0, hi=MAX_FEATURES)}), max_items=50),
              "indexed": COUNT, "pending": COUNT, "embedding": Str(max_len=300)})

ERROR = Obj(required={"code": Str(max_len=100, min_len=1), "message": Str(max_len=20_000)},
            optional={"field": Nullable(Str(max_len=1000)),
                      "details": Nullable(List(Obj(required={"code": Str(), "message": Str()},
                                                   optional={"field": Nullable(Str())}),
                                               max_items=100)),
                      "kernel": KERNEL})  # kernel_changed: the island's current kernel

PUBLIC_KEY = Str(max_len=44, min_len=44, pattern=r"[A-Za-z0-9+/]{43}=")
# protocol/rotation.py: the old market key hands over to the new one (both sign)
KEY_ROTATION = Obj(required={"old": PUBLIC_KEY, "new": PUBLIC_KEY, "at": TIMESTAMP,
                             "old_signature": SIG_B64, "new_signature": SIG_B64})
MARKET_KEYS = Obj(required={"market_key": PUBLIC_KEY,
                            "rotations": List(KEY_ROTATION, max_items=MAX_ROTATIONS)})

MESSAGE_TYPES: dict[str, Node] = {
    "publish": PUBLISH, "publish_result": PUBLISH_RESULT,
    "island_info": ISLAND_INFO, "island_list": Obj(required={"islands": List(ISLAND_INFO)}),
    "search": SEARCH, "search_result": SEARCH_RESULT,
    "anchor_request": ANCHOR_REQUEST, "anchor_set": ANCHOR_SET,
    "metrics_report": METRICS_REPORT, "localization_result": SEARCH_RESULT,
    "download_manifest": DOWNLOAD_MANIFEST,
    "delete": DELETE, "delete_result": DELETE_RESULT, "error": ERROR,
    "market_keys": MARKET_KEYS,
    "island_digest": ISLAND_DIGEST, "spec_batch": SPEC_BATCH,
    "world": WORLD, "world_search": WORLD_SEARCH, "world_search_result": WORLD_SEARCH_RESULT,
    "describe_result": DESCRIBE_RESULT,
    "usage_report": USAGE_REPORT, "usage_report_result": USAGE_REPORT_RESULT,
    "usage_reports": USAGE_REPORTS,
}


def validate_body(message_type: str, body: Any) -> None:
    """Check ``body`` against the schema of ``message_type``; SchemaError names the field."""
    from .errors import UnknownMessageError
    node = MESSAGE_TYPES.get(message_type)
    if node is None:
        raise UnknownMessageError(f"unknown message type {str(message_type)[:60]!r}", field="type")
    node.check(body, "")
