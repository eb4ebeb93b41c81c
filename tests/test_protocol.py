import json
import os
import random
import stat
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from protocol import (EncodingError, Identity, MemoryNonceStore, ProtocolError, ReplayError,
                      SchemaError, SignatureError, StaleMessageError, UnknownMessageError,
                      canonical_bytes, decode, decode_array, encode_array, open_envelope, seal)
from protocol.artefact import sign_artefact, verify_artefact
from protocol.envelope import REQUEST_TYPES
from protocol.errors import IdentityError
from protocol.schemas import MESSAGE_TYPES
from learnware_core.semantic import island_key, text_score
from tests.protocol_samples import bodies, rkme, semantic


AUD = "a0" * 16  # the key id of the market the requests of these tests are addressed to


def _seal(identity, mtype, body, **kw):
    """``seal``, addressed to market AUD when ``mtype`` is a request."""
    if mtype in REQUEST_TYPES:
        kw.setdefault("audience", AUD)
    return seal(identity, mtype, body, **kw)


@pytest.fixture(scope="module")
def me():
    return Identity.generate()


def test_every_message_type_has_a_sample():
    assert set(bodies()) == set(MESSAGE_TYPES)


@pytest.mark.parametrize("mtype", sorted(MESSAGE_TYPES))
def test_round_trip_every_message_type(me, mtype):
    body = bodies()[mtype]
    data = _seal(me, mtype, body)
    env = open_envelope(data, nonce_store=MemoryNonceStore())
    assert env.type == mtype and env.body == body and env.sender_key_id == me.key_id
    assert canonical_bytes(env.body) == canonical_bytes(body)


@pytest.mark.parametrize("mtype", sorted(MESSAGE_TYPES))
def test_sealed_bytes_are_canonical(me, mtype):
    """seal inserts the signature into the one encoding it signs: the result must still be
    the canonical form, with or without reply_to (which sorts before sig)."""
    for reply_to in (None, "ab" * 16):
        data = _seal(me, mtype, bodies()[mtype], reply_to=reply_to)
        assert canonical_bytes(decode(data)) == data


def test_seal_places_sig_before_the_top_level_ts_only(me):
    # a nested "ts" key in the body (an error message may carry any field name) must not
    # attract the signature member
    body = {"code": "bad", "message": ',"ts":1', "field": "ts", "details": [
        {"code": "x", "message": "m", "field": "ts"}]}
    data = _seal(me, "error", body, reply_to="cd" * 16)
    assert canonical_bytes(decode(data)) == data
    assert open_envelope(data, nonce_store=None).body == body


def _shuffled(obj, rng):
    if isinstance(obj, dict):
        items = list(obj.items())
        rng.shuffle(items)
        return {k: _shuffled(v, rng) for k, v in items}
    if isinstance(obj, list):
        return [_shuffled(v, rng) for v in obj]
    return obj


def test_canonical_bytes_ignore_dict_order():
    rng = random.Random(0)
    for body in bodies().values():
        ref = canonical_bytes(body)
        for _ in range(5):
            assert canonical_bytes(_shuffled(body, rng)) == ref
    assert canonical_bytes({"b": 1, "a": [1.5, "é"]}) == '{"a":[1.5,"é"],"b":1}'.encode()


def test_arrays_round_trip_bit_exact():
    rng = np.random.default_rng(1)
    for a in (rng.normal(size=(7, 3)), rng.normal(size=5).astype(np.float32),
              np.array([1e-310, -0.0, 5e-324, 1.7976931348623157e308]), np.arange(6).reshape(2, 3)):
        b = decode_array(decode(canonical_bytes(encode_array(a))))
        assert b.dtype == a.dtype.newbyteorder("<") or b.dtype.kind == a.dtype.kind
        assert a.tobytes() == b.astype(a.dtype).tobytes()
    big_endian = np.arange(4, dtype=">f8")
    assert np.array_equal(decode_array(encode_array(big_endian)), big_endian)


@pytest.mark.parametrize("bad", [b'{"a":1,"a":2}', b'{"a":NaN}', b'{"a":Infinity}',
                                 b'[' * 100 + b']' * 100, b'\xff\xfe', b'{"a":', b''])
def test_decoder_refuses_bad_json(bad):
    with pytest.raises(EncodingError):
        decode(bad)


def test_depth_check_ignores_brackets_inside_strings():
    assert decode(canonical_bytes({"a": "[[[[" * 50})) == {"a": "[[[[" * 50}
    with pytest.raises(EncodingError, match="out of range"):
        decode(b'{"a":1e999}')


def test_size_limit_and_nonfinite():
    with pytest.raises(EncodingError, match="larger than the limit"):
        decode(b'{"a":"' + b"x" * 2000 + b'"}', max_bytes=1000)
    with pytest.raises(EncodingError):
        canonical_bytes({"x": float("nan")})
    with pytest.raises(EncodingError, match="NaN or Inf"):
        decode_array(encode_array(np.array([1.0, np.inf])))
    body = bodies()["search"]
    body["requirement"]["z"] = encode_array(np.full((100, 3), np.nan))
    with pytest.raises(SchemaError) as ei:
        _seal(Identity.generate(), "search", body)
    assert ei.value.field == "requirement.z"


def test_schema_names_offending_field(me):
    body = bodies()["publish"]
    body["semantic"]["task_type"] = "clustering"
    with pytest.raises(SchemaError) as ei:
        _seal(me, "publish", body)
    assert ei.value.field == "semantic.task_type" and "clustering" in ei.value.message
    body = bodies()["publish"]
    del body["artefact"]["signature"]
    with pytest.raises(SchemaError, match="artefact.signature is missing"):
        _seal(me, "publish", body)
    with pytest.raises(UnknownMessageError):
        _seal(me, "launch_missiles", {})


def test_random_bit_flips_are_all_rejected(me):
    """1,000+ single-bit flips spread over signature, header and body: every one refused."""
    data = _seal(me, "metrics_report", bodies()["metrics_report"])
    text = data.decode()
    sig_at = text.index('"sig"')
    body_at = text.index('"body"')
    regions = {"sig": range(sig_at, sig_at + 96), "body": range(body_at, body_at + 120),
               "header": [i for i in range(len(data)) if i < body_at or body_at + 120 <= i < sig_at
                          or i >= sig_at + 96]}
    rng = random.Random(42)
    tried = 0
    for name, positions in regions.items():
        positions = list(positions)
        for _ in range(400):
            pos = rng.choice(positions)
            bit = rng.randrange(8)
            mutated = bytearray(data)
            mutated[pos] ^= 1 << bit
            with pytest.raises(ProtocolError):
                open_envelope(bytes(mutated), nonce_store=MemoryNonceStore())
            tried += 1
    assert tried >= 1000
    open_envelope(data, nonce_store=MemoryNonceStore())  # the original still verifies


def test_replay_rejected(me):
    store = MemoryNonceStore()
    data = _seal(me, "delete", {"learnware_id": "lw-1"})
    open_envelope(data, nonce_store=store)
    with pytest.raises(ReplayError):
        open_envelope(data, nonce_store=store)


def test_wrong_key_rejected(me):
    other = Identity.generate()
    env = json.loads(_seal(me, "delete", {"learnware_id": "lw-1"}))
    env["sender"] = other.public_key_b64
    with pytest.raises(SignatureError):
        open_envelope(canonical_bytes(env), nonce_store=MemoryNonceStore())
    data = _seal(me, "delete", {"learnware_id": "lw-1"})
    with pytest.raises(SignatureError):
        open_envelope(data, nonce_store=None, expected_sender=other.public_key_b64)


def test_expired_and_future_timestamps_rejected(me):
    now = time.time()
    for offset in (-301, 301, -10_000):
        data = _seal(me, "delete", {"learnware_id": "lw-1"}, now=now + offset)
        with pytest.raises(StaleMessageError):
            open_envelope(data, nonce_store=MemoryNonceStore(), now=now)
    data = _seal(me, "delete", {"learnware_id": "lw-1"}, now=now - 100)
    open_envelope(data, nonce_store=MemoryNonceStore(), now=now)
    with pytest.raises(StaleMessageError):
        open_envelope(data, nonce_store=MemoryNonceStore(), now=now, window_s=50)


def test_non_canonical_wire_form_rejected(me):
    data = _seal(me, "delete", {"learnware_id": "lw-1"})
    pretty = json.dumps(json.loads(data), indent=1).encode()
    with pytest.raises(ProtocolError):
        open_envelope(pretty, nonce_store=MemoryNonceStore())


def test_identity_save_load(tmp_path, me):
    p = me.save(tmp_path / "k.pem")
    assert stat.S_IMODE(os.stat(p).st_mode) == 0o600
    assert Identity.load(p).public_key_b64 == me.public_key_b64
    q = me.save(tmp_path / "enc.pem", passphrase="s3cret")
    assert b"ENCRYPTED" in q.read_bytes()
    assert Identity.load(q, passphrase="s3cret").key_id == me.key_id
    with pytest.raises(IdentityError, match="passphrase"):
        Identity.load(q)
    with pytest.raises(IdentityError):
        Identity.load(q, passphrase="wrong")
    with pytest.raises(IdentityError, match="already exists"):
        me.save(p)


def test_artefact_signature_binds_all_parts(me):
    sem, spec, sha = semantic(), rkme(), "cd" * 32
    art = sign_artefact(me, sem, spec, sha)
    verify_artefact(me.public_key_b64, art, semantic=sem, spec=spec, model_sha256=sha)
    with pytest.raises(SignatureError):
        verify_artefact(me.public_key_b64, art, semantic=sem, spec=spec, model_sha256="ef" * 32)
    sem2 = dict(sem, name="other")
    with pytest.raises(SignatureError):
        verify_artefact(me.public_key_b64, art, semantic=sem2, spec=spec, model_sha256=sha)
    forged = dict(art, semantic_sha256=sign_artefact(me, sem2, spec, sha)["semantic_sha256"])
    with pytest.raises(SignatureError):
        verify_artefact(me.public_key_b64, forged, semantic=sem2, spec=spec, model_sha256=sha)
    with pytest.raises(SignatureError):
        verify_artefact(Identity.generate().public_key_b64, art, semantic=sem, spec=spec,
                        model_sha256=sha)


def test_island_key_and_text_search():
    a = semantic()
    b = dict(a, name="Something else", tags=[])
    assert island_key(a) == island_key(b)
    assert island_key(a) != island_key(dict(a, input_features=["b", "a", "c"]))
    assert text_score("austin SALES", a) == 1.0
    assert text_score("austn slaes", a) > 0.7
    assert text_score("weather", a) == 0.0


_valid = [_seal(Identity.generate(), t, b) for t, b in sorted(bodies().items())]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2000))
def test_fuzz_arbitrary_bytes(data):
    try:
        open_envelope(data, nonce_store=MemoryNonceStore())
    except ProtocolError:
        pass


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(_valid), st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)),
                                         min_size=1, max_size=4),
       st.integers(0, 3))
def test_fuzz_mutated_valid_messages(data, edits, mode):
    buf = bytearray(data)
    for pos, val in edits:
        if not buf:
            break
        pos %= len(buf)
        if mode == 0:
            buf[pos] = val
        elif mode == 1:
            del buf[pos]
        elif mode == 2:
            buf.insert(pos, val)
        else:
            buf = buf[:pos]
    try:
        env = open_envelope(bytes(buf), nonce_store=MemoryNonceStore())
    except ProtocolError:
        return
    assert bytes(buf) == data  # only the untouched message may verify
    assert env.type in MESSAGE_TYPES


@settings(max_examples=200, deadline=None)
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True)
                    | st.text(max_size=20),
                    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=5), c,
                                                                       max_size=4),
                    max_leaves=30))
def test_fuzz_structured_json(obj):
    try:
        data = json.dumps(obj).encode()
    except ValueError:
        return
    try:
        decode(data)
        open_envelope(data, nonce_store=MemoryNonceStore())
    except ProtocolError:
        pass
