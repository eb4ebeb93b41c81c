"""The workbench's audit (client_sdk/workbench/audit.py) finds what tests/test_privacy_audit.py
finds: the same raw values hidden the same ways (float64/float32 in both byte orders, base64
inside JSON, zip members, decimal text), in recorded requests; short values are reported as not
checkable, never as passed. Also the recorder's decoded view and the picture's projection."""
from __future__ import annotations

import base64
import io
import json
import struct
import zipfile

import httpx
import numpy as np

from client_sdk.workbench import audit as wa
from client_sdk.workbench.projection import project
from client_sdk.workbench.recorder import RecordingTransport
from tests import test_privacy_audit as tpa

VALUES = np.array([1234.56789, -987.654321, 31.4159265, 0.0123456789])


def _requests():
    """One request per way of hiding a value, and a clean one."""
    v0, v1, v2, v3 = VALUES
    zbuf = io.BytesIO()
    with zipfile.ZipFile(zbuf, "w") as zf:
        zf.writestr("data.npy", struct.pack(">d", v1))
    return [
        ("POST", "http://m.test/v1/search", [],
         json.dumps({"body": {"z": base64.b64encode(struct.pack("<d", v0)).decode()}}).encode()),
        ("POST", "http://m.test/v1/learnwares", [],
         json.dumps({"body": {"model": base64.b64encode(zbuf.getvalue()).decode()}}).encode()),
        ("GET", f"http://m.test/v1/learnwares?q={v2!r}", [], b""),
        ("POST", "http://m.test/v1/localize", [(b"x-note", f"{v3:.6f}".encode())],
         json.dumps({"body": {"f": base64.b64encode(
             np.array([7.25, v3], "<f4").tobytes()).decode()}}).encode()),
        ("POST", "http://m.test/v1/search", [], json.dumps({"body": {"n": 3}}).encode()),
    ]


def _theirs(requests, values) -> set[float]:
    recs = [tpa.Recorded(m, u, h, b) for m, u, h, b in requests]
    found = tpa.scan_requests(recs, tpa.Needles.of(values, "v"))
    return {float(v) for v in values if any(f"value {float(v)!r}" in f for f in found)}


def test_finds_the_same_values_as_the_privacy_test():
    reqs = _requests()
    ours = wa.audit(reqs, VALUES)
    assert {f.value for f in ours.findings} == _theirs(reqs, VALUES) == set(VALUES.tolist())
    assert ours.found == 4 and ours.checked == 4 and not ours.clean
    hows = {f.how.split()[0] for f in ours.findings}
    assert {"float64", "float32", "text"} <= hows
    assert any("!data.npy" in f.where for f in ours.findings)  # inside the zip


def test_each_request_alone():
    for req in _requests()[:4]:
        assert not wa.audit([req], VALUES).clean, req[1]
    assert wa.audit([_requests()[4]], VALUES).clean


def test_short_values_are_reported_not_passed():
    report = wa.audit([_requests()[4]], np.array([3.0, 0.5, 2005.0, 1234.56789]))
    assert report.n_values == 4 and report.too_short == 3 and report.checked == 1
    assert report.clean  # "3" is in the request but 3.0 is not distinctive: not looked for
    # a distinctive value's short forms are left out (0.50000001 as float32 is 0.5)
    n = wa.Needles.of([0.5000000000000001])
    assert n.binary64 and not n.binary32
    assert b"0.500" not in n.text


def test_large_tables_are_sampled_and_say_so():
    vals = np.random.default_rng(0).normal(size=30_000) * 1000
    looked, n, short = wa.distinctive_values(vals, max_values=1_000)
    assert len(looked) == 1_000 and n == 30_000 and short < 100
    report = wa.audit([_requests()[4]], vals[:50])
    assert not report.sampled


def test_the_recorder_keeps_the_bytes_and_decodes_envelopes():
    def answer(request):
        return httpx.Response(200, json={"ok": True})
    rec = RecordingTransport(httpx.MockTransport(answer))
    env = {"v": 1, "type": "search", "sender": "S" * 44, "ts": 1, "nonce": "n",
           "body": {"semantic": {"target": "y"}, "requirement": {
               "z": {"__array__": {"dtype": "<f8", "shape": [2, 3],
                                   "data": base64.b64encode(b"\0" * 48).decode()}}}}}
    with httpx.Client(transport=rec, base_url="http://m.test") as c:
        c.post("/v1/search", content=json.dumps(env).encode())
        c.get("/v1/islands", headers={"X-LWM-Nonce": "abc"})
    post, get = rec.sent()
    assert post.message_type == "search" and post.status == 200 and post.answer_bytes > 0
    fields = dict(post.fields)
    assert fields["body.requirement.z"] == "array <f8 2x3 (48 bytes)"
    assert fields["body.semantic.target"] == '"y"'
    assert post.body == json.dumps(env).encode()
    assert get.message_type == "GET (no body)" and dict(get.fields)["header X-LWM-Nonce"] == "abc"


def test_projection_puts_every_point_in_the_frame():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(3_000, 4)) * [1, 10, 100, 0.1]
    Z = X[:20] + 0.01
    p = project(X, Z, np.linspace(0.1, 1, 20), scales=np.array([1, 10, 100, 0.1]))
    assert len(p.rows) == 1_500 and p.n_rows == 3_000 and len(p.reduced) == 20
    for x, y in p.rows + [(x, y) for x, y, _ in p.reduced]:
        assert 0 <= x <= p.width and 0 <= y <= p.height
    assert 0 < p.explained <= 1
    assert p.reduced[-1][2] > p.reduced[0][2]  # heavier points are drawn larger
