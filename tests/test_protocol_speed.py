"""Issue 14, items 8-9: envelopes open on a msgspec fast path (bodies decoded and validated in C
against types generated from protocol/schemas.py), exactly as strict as the hand-written
validator, which still names every error. The speed itself (open <= 2x the bare verify) is
measured by benchmarks/protocol_bench.py, not here."""
from __future__ import annotations

import base64
import json

import msgspec
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import protocol.envelope as envelope
from protocol import Identity, ProtocolError, open_envelope, seal
from protocol.encoding import decode, encode_array
from protocol.envelope import REQUEST_TYPES
from protocol.schemas import MESSAGE_TYPES, SEMANTIC
from protocol.structs import BODY_TYPES, json_schemas
from tests.helpers import signed_envelope
from tests.protocol_samples import bodies, rkme, semantic

AUD = "a0" * 16
ME = Identity.generate()


def _sealed(mtype: str, body: dict) -> bytes:
    if mtype in REQUEST_TYPES:
        return signed_envelope(ME, mtype, body, to=AUD)
    return seal(ME, mtype, body, reply_to="b1" * 16, validate=False)  # answers carry no aud


def _outcome(message: bytes):
    """What opening ``message`` gives: the body, or the error's class, code, field, message."""
    try:
        return "ok", open_envelope(message, nonce_store=None, audience=AUD).body
    except ProtocolError as exc:
        return type(exc).__name__, exc.code, exc.field, exc.message


def _checked_outcome(message: bytes, monkeypatch):
    """The outcome on the hand-written path alone (the code before the fast path)."""
    with monkeypatch.context() as m:
        m.setattr(envelope, "_decode_fast", lambda data, max_bytes: None)
        return _outcome(message)


def _with_body(message: bytes, body_text: bytes) -> bytes:
    """``message`` with its body's bytes replaced (frame kept canonical; signature now wrong)."""
    env = decode(message)
    head = b'{"aud":"' + env["aud"].encode() + b'","body":' if "aud" in env else b'{"body":'
    tail = message[message.rindex(b',"nonce":"'):]
    assert message.startswith(head)
    return head + body_text + tail


def _publish_body() -> dict:
    return {"semantic": semantic(), "spec": rkme(),
            "model": {"format": "skops", "sha256": "ab" * 32, "size": 2048,
                      "data": base64.b64encode(b"\0" * 2048).decode()},
            "artefact": bodies()["publish"]["artefact"]}


def test_a_canonical_envelope_skips_the_hand_written_validator(monkeypatch):
    """Every sample body of every message type is validated in C (the old code ran the Python
    validator on each one: it is the slow part of an open)."""
    def refuse(*_a, **_k):
        raise AssertionError("the hand-written validator ran on a valid canonical body")
    monkeypatch.setattr(envelope, "validate_body", refuse)
    for mtype, body in bodies().items():
        opened = open_envelope(_sealed(mtype, body), nonce_store=None, audience=AUD)
        assert opened.body == body, mtype


# --- the fast path refuses exactly what the hand-written path refuses, with the same error ---
def _hostile_bodies():
    """Body texts (bytes) each differing from a valid one in one way the fast path must not
    get wrong: every one must come out exactly as the hand-written path has it."""
    base = _publish_body()
    z = base["spec"]["z"]["__array__"]
    cases = {}

    def variant(name, edit):
        b = json.loads(json.dumps(base))
        edit(b)
        cases[name] = json.dumps(b, sort_keys=True, separators=(",", ":")).encode()

    variant("valid", lambda b: None)
    # base64 whose unused low bits are set: msgspec decodes it, the protocol refuses it
    variant("non-canonical base64", lambda b: b["spec"]["beta"]["__array__"].update(
        data=b["spec"]["beta"]["__array__"]["data"][:-2] + ("B=" if b["spec"]["beta"][
            "__array__"]["data"][-2:] != "B=" else "C=")))
    variant("base64 without padding", lambda b: b["model"].update(data="QQ"))
    variant("nan in z", lambda b: b["spec"].update(z=encode_array(np.full((3, 3), np.nan))))
    variant("1-d z", lambda b: b["spec"].update(z=encode_array(np.ones(9))))
    variant("too many points", lambda b: b["spec"].update(z=encode_array(np.ones((2001, 1)))))
    variant("object dtype", lambda b: b["spec"]["z"]["__array__"].update(dtype="|O"))
    variant("float as int", lambda b: b["spec"].update(n_features=3.0))
    variant("bool as int", lambda b: b["spec"].update(n_features=True))
    variant("int as float", lambda b: b["spec"].update(gamma=1))
    variant("gamma zero", lambda b: b["spec"].update(gamma=0.0))
    variant("repeated feature", lambda b: b["semantic"].update(input_features=["a", "a", "b"]))
    variant("unknown field", lambda b: b["semantic"].update(colour="red"))
    variant("missing field", lambda b: b["semantic"].pop("target"))
    variant("trailing newline in id", lambda b: b["artefact"].update(
        semantic_sha256="ab" * 32 + "\n"))
    variant("upper-case hex", lambda b: b["artefact"].update(semantic_sha256="AB" * 32))
    variant("huge int", lambda b: b["spec"].update(n_features=10 ** 30))
    variant("null where not nullable", lambda b: b["semantic"].update(license=None))
    variant("explicit null scales", lambda b: b["spec"].update(scales=None))
    canonical = cases["valid"]
    cases["duplicate key"] = canonical.replace(b'"gamma":', b'"gamma":7,"gamma":', 1)
    cases["whitespace"] = canonical.replace(b'"gamma":', b'"gamma": ', 1)
    cases["escaped key"] = canonical.replace(b'"gamma":', b'"g\\u0061mma":', 1)
    cases["lone surrogate"] = canonical.replace(b'"description":"',
                                                b'"description":"\\ud800', 1)
    cases["exponent float"] = canonical.replace(b'"gamma":0.1', b'"gamma":1e-05', 1)
    cases["deep nesting"] = canonical.replace(b'"license":', b'"x":' + b"[" * 40 + b"]" * 40
                                              + b',"license":', 1)
    assert z["shape"]
    return cases


@pytest.mark.parametrize("name", sorted(_hostile_bodies()))
def test_the_fast_path_agrees_with_the_hand_written_one(name, monkeypatch):
    message = _with_body(_sealed("publish", _publish_body()), _hostile_bodies()[name])
    assert _outcome(message) == _checked_outcome(message, monkeypatch)


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(mtype=st.sampled_from(sorted(MESSAGE_TYPES)), data=st.data())
def test_random_edits_open_alike_on_both_paths(mtype, data):
    """Replace one value anywhere in a sample body by a hostile one: both paths, same outcome."""
    body = bodies()[mtype]
    paths, stack = [], [((), body)]
    while stack:
        path, node = stack.pop()
        paths.append(path)
        children = (node.items() if isinstance(node, dict) else
                    enumerate(node) if isinstance(node, list) else ())
        stack.extend(((*path, k), v) for k, v in children)
    path = data.draw(st.sampled_from(paths))
    value = data.draw(st.one_of(
        st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=False),
        st.text(max_size=70), st.sampled_from(["ab" * 32, "x" * 65, "rmse", "", "a\n"]),
        st.lists(st.integers(0, 3), max_size=3), st.just({"__array__": {"dtype": "<f8",
                                                                        "shape": [1],
                                                                        "data": "AAAAAAAA8D8="}})))
    edited = json.loads(json.dumps(body))
    if path:
        parent = edited
        for k in path[:-1]:
            parent = parent[k]
        parent[path[-1]] = value
    else:
        edited = value
    text = json.dumps(edited, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=True).encode()
    message = _with_body(_sealed(mtype, body), text)
    fast = _outcome(message)
    saved = envelope._decode_fast
    envelope._decode_fast = lambda data, max_bytes: None
    try:
        assert fast == _outcome(message)
    finally:
        envelope._decode_fast = saved


# --- the OpenAPI document is generated from the same schemas -------------------------------
def test_openapi_bodies_come_from_the_protocol_schemas():
    from market_server.openapi import openapi_document
    doc = openapi_document()
    refs, components = json_schemas()
    assert doc["components"]["schemas"] == components
    publish = doc["paths"]["/v1/learnwares"]["post"]["requestBody"]["content"][
        "application/json"]["schema"]
    assert publish["properties"]["body"] == refs["publish"]
    semantic_schema = components["Semantic"]
    assert semantic_schema["required"] == list(SEMANTIC.required)
    assert set(semantic_schema["properties"]) == set(SEMANTIC.required) | set(SEMANTIC.optional)
    # patterns are JSON Schema patterns ($, not Python's \Z)
    assert "\\Z" not in json.dumps(doc)


def test_every_message_type_has_a_generated_type():
    assert set(BODY_TYPES) == set(MESSAGE_TYPES)
    for mtype, body in bodies().items():
        msgspec.json.decode(json.dumps(body).encode(), type=BODY_TYPES[mtype])
