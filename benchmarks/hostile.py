"""Hostile requests for the market's HTTP API (issue #8 "Bad input"), shared by
``benchmarks/fuzz_api.py`` (long run) and ``tests/test_hostile_inputs.py`` (short run in the suite).
It lives with the benchmarks so the fuzzer imports no test code (tests may import benchmarks).

A *case* is a plain tuple built by a hypothesis strategy; :class:`Fuzzer` sends it (sealing signed
cases at send time, so every nonce and timestamp is fresh) and checks the answer: never a 5xx,
always a JSON envelope signed by the market, of type ``error`` (4xx) or the endpoint's type, and
the market's state (learnwares, islands, versions) unchanged.
"""
from __future__ import annotations

import base64
import copy
import json
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable
from urllib.parse import quote

import numpy as np
from hypothesis import HealthCheck, given, settings, strategies as st

from protocol.artefact import sign_artefact
from protocol.encoding import encode_array
from protocol.envelope import (PROTOCOL_VERSION, REQUEST_TYPES, SIGNING_DOMAIN, new_nonce,
                               open_envelope, seal)
from protocol.identity import Identity, b64, key_id_of
from protocol.limits import (MAX_COUNT, MAX_LABEL_INT, MAX_METRIC, MAX_MODEL_BYTES, MAX_REAL,
                             MAX_REASON_CHARS, MAX_ROWS, MAX_SPEC_POINTS, MAX_TIMESTAMP)

# --------------------------------------------------------------------------------------------
# hostile values
# --------------------------------------------------------------------------------------------
NASTY_STRINGS = [
    "", " ", "\x00", "a\x00b", "\u202eevil\u202c", "\u200b", "\u200d\u200c\ufeff", "\ufffd",
    "\U0001f4a9" * 10, "e\u0301", "İ", "ß", "\u2028\u2029", "\r\n", "\t",
    "../../../../etc/passwd", "..", "../", "..%2f..%2f", "%2e%2e", "%2e%2e%2f%2e%2e",
    "/etc/passwd", "C:\\Windows\\system32", "\\\\server\\share", "~", "*", "%", "%00",
    "lw-1", "lw-0", "lw--1", "lw-1/../2", "lw-99999999999999999999", "lw-1\x00", " lw-1",
    "LW-1", "lw-１", "lw-²", "isl-1", "isl-0", "isl-999999999999999999999", "isl-2147483648",
    "'; DROP TABLE learnwares; --", "\" OR 1=1 --", "<script>alert(1)</script>", "{{7*7}}",
    "${jndi:ldap://x}", "a" * 65, "a" * 5000, "x" * 100_000, "0" * 64, "f" * 64, "F" * 64,
    "g" * 64, "NaN", "Infinity", "-0", "1e999", "null", "true", "[]", "{}",
    "__array__", "__proto__", "constructor",
]
NASTY_INTS = [0, -1, 1, 2, 63, 64, 65, 100, 101, 10_000, 10_001, 2**31 - 1, 2**31, 2**32,
              2**53 + 1, 2**63 - 1, 2**63, -2**63, -2**63 - 1, 2**64, 10**30, -10**30, 10**400,
              -10**400]
NASTY_FLOATS = [0.0, -0.0, 5e-324, -5e-324, 1e-308, 1e308, -1e308, 1.7976931348623157e308,
                1e-12, 1 + 1e-9, 0.5, -0.5, 1e16, 123456789.123]
# at and just past the protocol's bounds (protocol/limits.py)
BOUND_INTS = [MAX_SPEC_POINTS, MAX_SPEC_POINTS + 1, MAX_ROWS, MAX_ROWS + 1, MAX_COUNT,
              MAX_COUNT + 1, MAX_LABEL_INT, MAX_LABEL_INT + 1, MAX_MODEL_BYTES,
              MAX_MODEL_BYTES + 1, MAX_TIMESTAMP, MAX_TIMESTAMP + 1]
BOUND_FLOATS = [MAX_METRIC, -MAX_METRIC, MAX_METRIC * (1 + 1e-12), -MAX_METRIC * (1 + 1e-12),
                MAX_REAL, MAX_REAL * (1 + 1e-12), 1e100, -1e100, 1.0 + 1e-12]
NASTY_INTS += BOUND_INTS
NASTY_FLOATS += BOUND_FLOATS
SPECIAL_ELEMENTS = [np.nan, np.inf, -np.inf, 0.0, -0.0, 1.0, -1.0, 1e308, -1e308, 5e-324, 1e300,
                    0.5, 1e-300]
DTYPES = ["<f8", "<f4", "<i8", "<i4", "|u1", "|b1"]
BAD_DTYPES = DTYPES + [">f8", "<c16", "|O", "<U4", "float64", "<f2", "<M8[s]", "", None, 8,
                       ["<f8"], {"dtype": "<f8"}]

hostile_strings = st.one_of(st.sampled_from(NASTY_STRINGS), st.text(max_size=80),
                            st.text(alphabet=st.characters(codec="utf-8"), max_size=20))
hostile_ints = st.one_of(st.sampled_from(NASTY_INTS), st.integers(-10**6, 10**6))
hostile_floats = st.one_of(st.sampled_from(NASTY_FLOATS),
                           st.floats(allow_nan=False, allow_infinity=False))
hostile_scalars = st.one_of(st.none(), st.booleans(), hostile_ints, hostile_floats,
                            hostile_strings)


def _deep(depth: int, kind: str) -> Any:
    out: Any = 1
    for _ in range(depth):
        out = [out] if kind == "list" else {"a": out}
    return out


deep_values = st.builds(_deep, st.integers(10, 45), st.sampled_from(["list", "dict"]))
hostile_json = st.recursive(hostile_scalars, lambda kids: st.one_of(
    st.lists(kids, max_size=4), st.dictionaries(hostile_strings, kids, max_size=4)),
    max_leaves=12)


@st.composite
def numpy_arrays(draw, ndim=None, rows=None, cols=None):
    """A well-formed encoded array: any dtype, ndim 0..3, elements that include NaN/Inf."""
    nd = draw(st.integers(0, 3)) if ndim is None else ndim
    shape = [draw(st.integers(0, 6)) for _ in range(nd)]
    if nd >= 1 and rows is not None:
        shape[0] = rows
    if nd >= 2 and cols is not None:
        shape[1] = cols
    n = int(np.prod(shape)) if shape else 1
    vals = draw(st.lists(st.one_of(st.sampled_from(SPECIAL_ELEMENTS),
                                   st.floats(allow_nan=True, allow_infinity=True)),
                         min_size=n, max_size=n))
    dtype = draw(st.sampled_from(DTYPES))
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        arr = np.asarray(vals, dtype=float).reshape(shape).astype(dtype)
    return encode_array(arr)


@st.composite
def claimed_arrays(draw):
    """An ``__array__`` whose claims (dtype, shape) and data disagree or are absurd."""
    shape = draw(st.one_of(
        st.lists(st.one_of(st.integers(-3, 12), st.sampled_from(NASTY_INTS)), max_size=6),
        st.lists(st.booleans(), max_size=3), hostile_scalars))
    data = draw(st.one_of(
        st.binary(max_size=200).map(lambda b: base64.b64encode(b).decode()),
        st.just(base64.b64encode(np.full(8, np.nan).tobytes()).decode()),
        st.just(base64.b64encode(np.full(8, np.inf).tobytes()).decode()),
        st.just("AAAAAAAAAAA="), st.just("===="), st.just("AAA"), hostile_strings,
        hostile_scalars))
    inner = {"dtype": draw(st.sampled_from(BAD_DTYPES)), "shape": shape, "data": data}
    if draw(st.booleans()):
        inner = draw(st.dictionaries(st.sampled_from(["dtype", "shape", "data", "extra"]),
                                     hostile_scalars, max_size=4)) | (
            {} if draw(st.booleans()) else inner)
    return {"__array__": inner} if draw(st.integers(0, 9)) else {"__array__": inner, "x": 1}


hostile_arrays = st.one_of(numpy_arrays(), claimed_arrays())
hostile_values = st.one_of(hostile_scalars, hostile_json, hostile_arrays, deep_values,
                           st.lists(hostile_ints, max_size=30), st.just([]), st.just({}))


@st.composite
def hostile_specs(draw, n_features: int = 3):
    """RKME specs with absurd parts: off-simplex beta, NaN/huge z, k vs beta length, gamma."""
    k = draw(st.sampled_from([0, 1, 2, 5, 20, MAX_SPEC_POINTS, MAX_SPEC_POINTS + 1]))
    if k >= MAX_SPEC_POINTS:  # at and past the cap: values drawn by numpy (too many to draw)
        z = encode_array(np.random.default_rng(draw(st.integers(0, 99))).normal(
            size=(k, n_features)))
    else:
        z = draw(st.one_of(numpy_arrays(ndim=2, rows=k, cols=n_features), hostile_arrays))
    beta_kind = draw(st.sampled_from(["simplex", "negative", "unnormalised", "special", "len",
                                      "any"]))
    if beta_kind == "simplex":
        beta = encode_array(np.full(k, 1.0 / k) if k else np.zeros(0))
    elif beta_kind == "negative":
        b = np.full(k + 1, 2.0 / max(k, 1))
        b[0] = -1.0 + (2.0 / max(k, 1)) * 0
        beta = encode_array(b[:k] if k else b)
    elif beta_kind == "unnormalised":
        beta = encode_array(np.full(k, draw(st.sampled_from([0.0, 1e307, 1e-320, 3.0, -0.0]))))
    elif beta_kind == "len":
        beta = encode_array(np.full(draw(st.integers(0, 30)), 0.1))
    elif beta_kind == "special" and k < MAX_SPEC_POINTS:
        beta = draw(numpy_arrays(ndim=1, rows=k))
    else:
        beta = draw(hostile_arrays)
    spec = {"z": z, "beta": beta,
            "gamma": draw(st.one_of(st.sampled_from([1 / 6, 1e-300, 5e-324, 1e300, 1e308]),
                                    hostile_floats, hostile_ints)),
            "n_features": draw(st.one_of(st.just(n_features), hostile_ints))}
    scales = draw(st.one_of(st.none(), st.just(encode_array(np.ones(n_features))),
                            st.just("absent"), numpy_arrays(ndim=1, rows=n_features),
                            hostile_arrays))
    if scales != "absent":
        spec["scales"] = scales
    return spec


# --------------------------------------------------------------------------------------------
# body mutation
# --------------------------------------------------------------------------------------------
def _paths(obj: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix]
    if isinstance(obj, dict) and "__array__" not in obj:
        for k, v in obj.items():
            out += _paths(v, prefix + (k,))
    elif isinstance(obj, dict) and isinstance(obj["__array__"], dict):
        out += [prefix + ("__array__", k) for k in obj["__array__"]]
    elif isinstance(obj, list):
        for i, v in enumerate(obj[:5]):
            out += _paths(v, prefix + (i,))
    return out


def _get(obj, path):
    for p in path:
        obj = obj[p]
    return obj


@st.composite
def mutated_bodies(draw, base: dict, extra_values=None):
    """``base`` with 1-3 parts replaced by hostile values, deleted, or joined by unknown keys."""
    body = copy.deepcopy(base)
    values = hostile_values if extra_values is None else st.one_of(hostile_values,
                                                                   extra_values)
    # drawn values are copied: st.just([]) hands out one shared list, which "add" would mutate
    values = values.map(copy.deepcopy)
    for _ in range(draw(st.integers(1, 3))):
        paths = _paths(body)
        path = draw(st.sampled_from(paths))
        op = draw(st.sampled_from(["replace", "replace", "replace", "delete", "add"]))
        if not path:
            if op == "add" and isinstance(body, dict):
                body[draw(hostile_strings)] = draw(values)
            elif op == "replace":
                body = draw(values)
            continue
        parent = _get(body, path[:-1])
        if op == "replace":
            parent[path[-1]] = draw(values)
        elif op == "delete":
            del parent[path[-1]]
        else:
            target = parent[path[-1]]
            if isinstance(target, dict):
                target[draw(hostile_strings)] = draw(values)
            elif isinstance(target, list):
                target.append(draw(values))
            else:
                parent[path[-1]] = draw(values)
    return body


# --------------------------------------------------------------------------------------------
# envelopes
# --------------------------------------------------------------------------------------------
def seal_escaped(identity: Identity, message_type: str, body: Any, *, aud: str | None,
                 v: Any = PROTOCOL_VERSION, ts: Any = None, nonce: str | None = None) -> bytes:
    """A validly signed envelope encoded with ASCII escapes (``ensure_ascii=True``): the one
    way to sign bodies holding lone surrogates, and to sign any version/timestamp. ``aud``: the
    market addressed (None: no ``aud`` member)."""
    import time
    env = {"v": v, "type": message_type, "sender": identity.public_key_b64,
           "ts": int(time.time() * 1000) if ts is None else ts, "nonce": nonce or new_nonce(),
           "body": body}
    if aud is not None:
        env["aud"] = aud
    unsigned = json.dumps(env, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    env["sig"] = b64(identity.sign(SIGNING_DOMAIN + unsigned.encode()))
    return json.dumps(env, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def _surrogate_tweak(text: str) -> str:
    return text + "\ud800" if text else "\udfff"


@st.composite
def byte_mutations(draw):
    """A list of byte-level edits, applied to a freshly sealed envelope at send time."""
    ops = []
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "delete", "insert", "truncate", "dup", "escape",
                                     "surrogate_key", "bom", "ws"]))
        ops.append((kind, draw(st.floats(0, 1)), draw(st.integers(1, 64)),
                    draw(st.binary(min_size=1, max_size=16))))
    return ops


def apply_mutations(data: bytes, ops) -> bytes:
    b = bytearray(data)
    for kind, where, n, junk in ops:
        pos = int(where * max(len(b) - 1, 0))
        if kind == "flip":
            if b:
                b[pos] ^= 1 << (n % 8)
        elif kind == "delete":
            del b[pos:pos + n]
        elif kind == "insert":
            b[pos:pos] = junk
        elif kind == "truncate":
            del b[pos:]
        elif kind == "dup":
            b[pos:pos] = b[pos:pos + n]
        elif kind == "escape":  # a lone surrogate escape inside the first string at/after pos
            i = b.find(b'"', pos)
            if i >= 0:
                b[i + 1:i + 1] = b"\\ud800"
        elif kind == "surrogate_key":
            i = b.find(b"{", pos)
            if i >= 0:
                b[i + 1:i + 1] = b'"\\udc00\\u202e":1,'
        elif kind == "bom":
            b[0:0] = b"\xef\xbb\xbf"
        elif kind == "ws":
            b[pos:pos] = b" "
    return bytes(b)


# --------------------------------------------------------------------------------------------
# the target market and its cases
# --------------------------------------------------------------------------------------------
ENDPOINTS = {  # message type -> (method, path template, answer type)
    "publish": ("POST", "/v1/learnwares", "publish_result"),
    "search": ("POST", "/v1/search", "search_result"),
    "anchor_request": ("POST", "/v1/anchors", "anchor_set"),
    "metrics_report": ("POST", "/v1/localize", "localization_result"),
    "delete": ("DELETE", "/v1/learnwares/{lid}", "delete_result"),
}
GET_TEMPLATES = [
    ("/v1/learnwares/{}", {"download_manifest"}, False),
    ("/v1/learnwares/{}/model", set(), True),
    ("/v1/models/{}", set(), True),
    ("/v1/islands/{}", {"island_info"}, False),
    ("/v1/islands/by-key/{}", {"island_info"}, False),
]


@dataclass
class Context:
    """What the strategies need to know about the market under test."""

    learnware_ids: list[str]
    island_ids: list[str]
    semantic_keys: list[str]
    model_shas: list[str]
    bases: dict[str, dict]       # message type -> a valid (or market-refused) body


class Unsendable(Exception):
    """The HTTP client itself refused to send the request (e.g. an invalid URL)."""


@dataclass
class Stats:
    cases: int = 0
    unsendable: int = 0
    server_errors: int = 0
    crashes: int = 0
    by_status: dict = field(default_factory=dict)
    by_answer: dict = field(default_factory=dict)   # answer type or error code -> count
    failures: list = field(default_factory=list)

    def line(self) -> str:
        return (f"cases tried: {self.cases - self.unsendable}  5xx: {self.server_errors}  crashes: "
                f"{self.crashes}  statuses: {dict(sorted(self.by_status.items()))}")


#: the fuzzer sends thousands of requests from one address in a minute: a load test, not a
#: client, so the per-address budgets (tested in test_security_text_limits.py) are off for it
NO_ADDRESS_LIMITS = {"rate_limit_address": "", "rate_limit_address_text": "",
                     "rate_limit_address_publish": ""}
NO_ADDRESS_LIMIT_ARGS = ["--rate-limit-address", "off", "--rate-limit-address-text", "off",
                         "--rate-limit-address-publish", "off"]


def build_context(env) -> Context:
    """Inspect a market holding a few learnwares (see :func:`populate`)."""
    rows = env.store.all_live_learnwares()
    lids = [r.learnware_id for r in rows]
    isl = env.store.list_islands()
    island_ids = [i.island_id for i in isl]
    keys = [i.island_key for i in isl]
    manifest = env.state.market.manifest(lids[0])
    shas = [env.state.market.learnware_row(l).model_sha256 for l in lids]
    sem = manifest["semantic"]
    q = {f: sem[f] for f in ("data_type", "task_type", "input_features", "target",
                             "objective")}
    dev = Identity.generate()
    junk_model = b"not a model file"
    import hashlib
    model_sha = hashlib.sha256(junk_model).hexdigest()
    pub_sem = dict(sem, name="hostile")
    publish_body = {"semantic": pub_sem, "spec": manifest["spec"],
                    "model": {"format": "skops", "sha256": model_sha, "size": len(junk_model),
                              "data": base64.b64encode(junk_model).decode()},
                    "artefact": sign_artefact(dev, pub_sem, manifest["spec"], model_sha)}
    bases = {
        "publish": publish_body,
        "search": {"semantic": q, "max_results": 5, "requirement": manifest["spec"],
                   "island_id": manifest["island_id"], "kernel_version": 0},
        "anchor_request": {"semantic": q, "max_anchors": 4, "island_id": manifest["island_id"]},
        "metrics_report": {"island_id": manifest["island_id"], "metric": sem["objective"],
                           "n_rows": 30, "values": {lids[0]: 0.5}, "round": 1,
                           "more_anchors": 2, "max_results": 5},
        "delete": {"learnware_id": lids[0], "reason": "fuzzing"},
    }
    return Context(lids, island_ids, keys, shas, bases)


def snapshot(env) -> tuple:
    """What no refused request may change."""
    import sqlalchemy as sa
    with env.store.engine.connect() as conn:
        lw = conn.execute(sa.text("SELECT id, deleted_at FROM learnwares ORDER BY id")).all()
        isl = conn.execute(sa.text("SELECT id, version, kernel_version FROM islands "
                                   "ORDER BY id")).all()
    return tuple(map(tuple, lw)), tuple(map(tuple, isl))



def state_checker(env) -> Callable[[], str | None]:
    """A check that the market's state is still what it is now (None, or what changed)."""
    before = snapshot(env)

    def check():
        after = snapshot(env)
        return None if after == before else f"{before} -> {after}"
    return check


def run_cases(fuzzer: "Fuzzer", strategy, examples: int, *, seed: int | None = None,
              derandomize: bool = False) -> None:
    """Send ``examples`` hypothesis cases of ``strategy`` through ``fuzzer``."""
    if examples <= 0:
        return

    @settings(max_examples=examples, deadline=None, database=None, derandomize=derandomize,
              suppress_health_check=list(HealthCheck))
    @given(strategy)
    def run(case):
        fuzzer.run(case)

    if seed is not None:
        from hypothesis import seed as hseed
        run = hseed(seed)(run)
    run()

def cases(ctx: Context) -> st.SearchStrategy:
    """Every kind of hostile case: (a) raw/mutated, (b) signed hostile bodies, (c) GETs."""
    return st.one_of(raw_cases(ctx), signed_cases(ctx), get_cases(ctx))


def _post_path(ctx, draw, mtype):
    method, tpl, _ = ENDPOINTS[mtype]
    if "{lid}" in tpl:
        lid = draw(st.one_of(st.sampled_from(ctx.learnware_ids), hostile_strings))
        tpl = tpl.replace("{lid}", quote(lid, safe="") or "x")
    return method, tpl


@st.composite
def raw_cases(draw, ctx: Context):
    """(a) arbitrary bytes, or a freshly sealed valid-ish envelope mutated byte-wise."""
    mtype = draw(st.sampled_from(sorted(ENDPOINTS)))
    method, path = _post_path(ctx, draw, mtype)
    if draw(st.booleans()):
        ascii_only = draw(st.booleans())
        data = draw(st.one_of(st.binary(max_size=3000), hostile_json.map(
            lambda v: json.dumps(v, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass"))))
        return ("raw", method, path, data, None, None)
    if draw(st.integers(0, 4)) == 0:  # sometimes a message of another type
        mtype = draw(st.sampled_from(sorted(ENDPOINTS)))
    return ("mutated", method, path, mtype, ctx.bases[mtype], draw(byte_mutations()))


@st.composite
def targeted_bodies(draw, ctx: Context, mtype: str):
    """A valid body with a few fields swapped for plausible-typed hostile values, so that the
    request gets past the schema and into the market's own checks and numerics."""
    body = copy.deepcopy(ctx.bases[mtype])
    ids = st.one_of(st.sampled_from(ctx.learnware_ids), hostile_strings)
    isl = st.one_of(st.sampled_from(ctx.island_ids), st.sampled_from(
        ["isl-0", "isl-2", "isl-99", "isl-2147483647", "isl-999999999999999999"]))
    small = st.one_of(hostile_ints, st.integers(0, 130))
    metric = st.sampled_from(["rmse", "mae", "r2", "accuracy", "f1"])
    value = st.one_of(hostile_floats, st.sampled_from(NASTY_INTS), st.floats(-2, 2),
                      st.sampled_from(BOUND_FLOATS))
    fields = {
        "search": {"max_results": small, "kernel_version": small, "island_id": st.one_of(
            st.none(), isl), "requirement": st.one_of(st.none(), hostile_specs())},
        "anchor_request": {"max_anchors": small, "island_id": st.one_of(st.none(), isl)},
        "metrics_report": {"island_id": isl, "metric": metric, "n_rows": small, "round": small,
                           "more_anchors": small, "max_results": small,
                           "values": st.dictionaries(ids, value, max_size=6)},
        "delete": {"learnware_id": ids, "reason": st.one_of(
            hostile_strings, st.sampled_from(["r" * MAX_REASON_CHARS,
                                              "r" * (MAX_REASON_CHARS + 1)]))},
        "publish": {"spec": hostile_specs()},
    }[mtype]
    for name, strat in fields.items():
        if draw(st.integers(0, 2)) == 0:
            continue
        v = draw(strat)
        if v is None and name not in ("island_id",):
            body.pop(name, None)
        else:
            body[name] = v
    if mtype == "publish" and draw(st.booleans()):
        sem = body["semantic"]
        sem["feature_scales"] = draw(st.one_of(numpy_arrays(ndim=1, rows=3), hostile_arrays))
        if draw(st.booleans()):
            sem["classes"] = draw(st.lists(st.one_of(hostile_ints, hostile_strings),
                                           max_size=5))
    return body


@st.composite
def signed_cases(draw, ctx: Context):
    """(b) validly signed envelopes whose bodies are hostile."""
    mtype = draw(st.sampled_from(sorted(ENDPOINTS)))
    method, path = _post_path(ctx, draw, mtype)
    base = ctx.bases[mtype]
    extra = st.one_of(st.sampled_from(ctx.learnware_ids + ctx.island_ids), hostile_specs(),
                      st.dictionaries(st.one_of(st.sampled_from(ctx.learnware_ids),
                                                hostile_strings),
                                      st.one_of(hostile_floats, hostile_ints, hostile_scalars),
                                      max_size=5))
    how = draw(st.sampled_from(["mutate", "mutate", "spec", "whole", "envelope", "targeted",
                                "targeted", "targeted"]))
    if how == "targeted":
        body = draw(targeted_bodies(ctx, mtype))
    elif how == "spec" and mtype in ("search", "publish"):
        body = copy.deepcopy(base)
        if mtype == "search":
            body["requirement"] = draw(hostile_specs())
        else:
            body["spec"] = draw(hostile_specs())
    elif how == "whole":
        body = draw(st.one_of(hostile_values, st.just({})))
    else:
        body = draw(mutated_bodies(base, extra))
    mode = draw(st.sampled_from(["canonical", "canonical", "escaped", "surrogate"]))
    env_fields = None
    if how == "envelope":  # hostile envelope fields on a valid body, validly signed
        env_fields = {"v": draw(st.one_of(st.just(PROTOCOL_VERSION), hostile_ints,
                                          hostile_scalars)),
                      "ts": draw(st.one_of(st.none(), hostile_ints, hostile_floats,
                                           hostile_strings))}
        if draw(st.integers(0, 3)) == 0:  # another market's key id, none, or not a key id
            env_fields["aud"] = draw(st.one_of(st.none(), st.just("0" * 32), hostile_strings))
        mode = "escaped"
    send_as = mtype if draw(st.integers(0, 9)) else draw(st.sampled_from(
        sorted(ENDPOINTS) + ["error", "publish_result", "nope", "\u202e"]))
    return ("signed", method, path, send_as, body, (mode, env_fields))


@st.composite
def get_cases(draw, ctx: Context):
    """(c) GET (and stray methods) with hostile path segments and query strings."""
    kind = draw(st.sampled_from(["template", "template", "search", "random", "method",
                                 "catalogue"]))
    if kind == "catalogue":  # the web catalogue's pages: hostile ids and query parameters
        tpl = draw(st.sampled_from(["/islands/{}", "/learnwares/{}", "/developers/{}",
                                    "/assets/{}", "/search", "/", "/api"]))
        seg = draw(st.one_of(st.sampled_from(ctx.learnware_ids + ctx.island_ids),
                             hostile_strings))
        params = draw(st.lists(st.tuples(st.sampled_from(["page", "per_page", "sort", "order",
                                                          "withdrawn", "q", ""]),
                                         st.one_of(hostile_strings, hostile_ints.map(str))),
                               max_size=4))
        qs = "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in params)
        path = tpl.format(quote(seg, safe="") or "x") + ("?" + qs if qs else "")
        return ("get", "GET", path, None, None, False)
    if kind == "template":
        tpl, types, binary = draw(st.sampled_from(GET_TEMPLATES))
        seg = draw(st.one_of(st.sampled_from(ctx.learnware_ids + ctx.island_ids
                                             + ctx.semantic_keys + ctx.model_shas),
                             hostile_strings))
        raw = draw(st.integers(0, 3)) == 0
        seg = seg if raw else quote(seg, safe="")
        return ("get", "GET", tpl.format(seg), None, types, binary)
    if kind == "search":
        params = draw(st.lists(st.tuples(st.sampled_from(["q", "limit", "x", "q[]", ""]),
                                         st.one_of(hostile_strings,
                                                   hostile_ints.map(str))), max_size=4))
        qs = "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in params)
        return ("get", "GET", "/v1/learnwares?" + qs, None, {"search_result"}, False)
    if kind == "random":
        # (no empty segment: a path opening with "//" is a scheme-relative URL to the client)
        segs = draw(st.lists(hostile_strings.map(lambda s: quote(s, safe="") or "x"),
                             max_size=5))
        prefix = draw(st.sampled_from(["", "/v1", "/v1/learnwares", "/v1/islands",
                                       "/v1/models"]))
        return ("get", "GET", prefix + "/" + "/".join(segs), None, None, True)
    method = draw(st.sampled_from(["PUT", "PATCH", "DELETE", "POST", "GET"]))
    path = draw(st.sampled_from(["/healthz", "/openapi.json", "/v1/market", "/v1/islands",
                                 "/v1/search", "/v1/anchors", "/v1/localize",
                                 "/v1/learnwares", "/v1/models/" + "0" * 64]))
    return ("get", method, path, None, None, True)


# --------------------------------------------------------------------------------------------
# sending and checking
# --------------------------------------------------------------------------------------------
PLAIN_JSON = {"/healthz", "/openapi.json", "/v1/market"}
#: the web catalogue (market_server/web/): HTML pages and their assets, each answer with the
#: catalogue's Content-Security-Policy
CATALOGUE_PAGES = {"/", "/search", "/api"}
CATALOGUE_PREFIXES = ("/islands/", "/learnwares/", "/developers/", "/assets/")


def is_catalogue(path: str) -> bool:
    p = path.split("?")[0]
    return p in CATALOGUE_PAGES or p.startswith(CATALOGUE_PREFIXES)


def _seal_to(aud: str, ident: Identity, mtype: str, body: Any) -> bytes:
    """``seal`` addressed to ``aud`` when ``mtype`` is a request (hostile cases also sign
    answer types and unknown ones, which seal refuses to address)."""
    return seal(ident, mtype, body, validate=False,
                audience=aud if mtype in REQUEST_TYPES else None)


def materialise(case, aud: str) -> tuple[str, str, bytes | None, set | None, bool]:
    """(method, path, body bytes, acceptable answer types or None=any, binary ok); signed
    requests are addressed to the market whose key id is ``aud``."""
    kind, method, path, a, b, c = case
    if kind == "raw":
        return method, path, a, None, False
    if kind == "get":
        return method, path, None, b, c
    ident = Identity.generate() if kind == "signed" else _ident()
    if kind == "mutated":
        return method, path, apply_mutations(_seal_to(aud, ident, a, b), c), None, False
    mode, env_fields = c
    if mode == "canonical":
        try:
            data = _seal_to(aud, ident, a, b)
        except Exception:  # noqa: BLE001 - unencodable on the client side: send it escaped
            data = seal_escaped(ident, a, b, aud=aud)
    elif mode == "escaped" or env_fields:
        fields = {"aud": aud} | (env_fields or {})
        data = seal_escaped(ident, a, b, **{k: v for k, v in fields.items()
                                            if v is not None or k == "aud"})
    else:
        data = seal_escaped(ident, a, _surrogate_deep(b), aud=aud)
    return method, path, data, None, False


_IDENT: list = []


def _ident() -> Identity:
    if not _IDENT:
        _IDENT.append(Identity.generate())
    return _IDENT[0]


def _surrogate_deep(obj):
    if isinstance(obj, str):
        return _surrogate_tweak(obj)
    if isinstance(obj, dict):
        return {(_surrogate_tweak(k) if k == "name" else k): _surrogate_deep(v)
                for k, v in obj.items()}
    if isinstance(obj, list):
        return [_surrogate_deep(v) for v in obj]
    return obj


class Fuzzer:
    """Sends cases through ``send(method, path, data) -> (status, headers, content)`` and
    checks every answer; counts cases, 5xx and crashes (exceptions out of ``send``)."""

    def __init__(self, market_key: str, send: Callable, check_state: Callable | None = None,
                 strict: bool = True):
        self.market_key, self.send, self.check_state = market_key, send, check_state
        self.audience = key_id_of(market_key)
        self.strict = strict
        self.stats = Stats()

    def problem(self, msg: str) -> None:
        self.stats.failures.append(msg)
        if self.strict:
            raise AssertionError(msg)

    def run(self, case) -> None:
        method, path, data, types, binary = materialise(case, self.audience)
        self.stats.cases += 1
        try:
            status, headers, content = self.send(method, path, data)
        except Unsendable:
            self.stats.unsendable += 1
            return
        except Exception as exc:  # noqa: BLE001 - a crash of the server or transport
            self.stats.crashes += 1
            self.problem(f"crash: {method} {path[:120]!r} -> {type(exc).__name__}: {exc}")
            return
        self.stats.by_status[status] = self.stats.by_status.get(status, 0) + 1
        where = f"{method} {path[:120]!r} body={None if data is None else data[:300]!r}"
        if status >= 500:
            self.stats.server_errors += 1
            self.problem(f"{status} for {where}: {content[:500]!r}")
            return
        ctype = headers.get("content-type", "")
        if binary and status == 200 and ctype.startswith("application/octet-stream"):
            return
        if path.split("?")[0] in PLAIN_JSON and status == 200:
            json.loads(content)
            return
        if method == "HEAD":
            return
        if method == "GET" and is_catalogue(path) and not ctype.startswith("application/json"):
            if "script-src 'self'" not in headers.get("content-security-policy", ""):
                return self.problem(f"catalogue answer without its CSP for {where}")
            self.stats.by_answer["html"] = self.stats.by_answer.get("html", 0) + 1
            return
        if not ctype.startswith("application/json"):
            return self.problem(f"non-JSON answer ({status}, {ctype}) for {where}")
        try:
            env = open_envelope(content, nonce_store=None, expected_sender=self.market_key,
                                window_s=3600)
        except Exception as exc:  # noqa: BLE001
            return self.problem(f"answer is not a signed envelope ({exc}) for {where}")
        label = env.body.get("code", "?") if env.type == "error" else env.type
        self.stats.by_answer[label] = self.stats.by_answer.get(label, 0) + 1
        if env.type == "error":
            if not 400 <= status < 500:
                self.problem(f"error envelope with status {status} for {where}")
        elif status >= 400:
            self.problem(f"{env.type} answer with status {status} for {where}")
        elif types is not None and env.type not in types:
            self.problem(f"unexpected answer type {env.type} for {where}")
        elif types is None and data is not None and env.type not in {
                t for _, _, t in ENDPOINTS.values()}:
            self.problem(f"unexpected answer type {env.type} for {where}")
        if self.check_state is not None and method in ("POST", "DELETE"):
            msg = self.check_state()
            if msg:
                self.problem(f"state changed ({msg}) after {where} -> {status} {env.type}")


def flask_sender(app):
    client = app.test_client()

    def send(method, path, data):
        r = client.open(path, method=method, data=data,
                        headers={"Content-Type": "application/json"} if data is not None
                        else None)
        return r.status_code, r.headers, r.get_data()
    return send


def httpx_sender(http):
    def send(method, path, data):
        r = http.request(method, path, content=data,
                         headers={"Content-Type": "application/json"} if data is not None
                         else None)
        return r.status_code, r.headers, r.content
    return send


def populate(env) -> None:
    """Two learnwares on one regression island (the state the fuzzer must not change)."""
    from sklearn.linear_model import Ridge
    sem = {"name": "hostile inputs", "description": "a toy task", "data_type": "table",
           "task_type": "regression", "input_features": ["a", "b", "c"], "target": "y",
           "objective": "rmse", "tags": ["fuzz"]}
    rng = np.random.default_rng(8)
    for center, w in (((0, 0, 0), (1, 2, 3)), ((3, 3, 3), (-1, 0, 2))):
        X = np.asarray(center, dtype=float) + rng.normal(size=(100, 3))
        y = X @ np.asarray(w, dtype=float) + 0.1 * rng.normal(size=len(X))
        env.client().publish(Ridge(alpha=1e-3).fit(X, y), X, sem)
