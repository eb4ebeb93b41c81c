"""Sign and verify throughput of a publish envelope carrying a 100 x 10 RKME (one core).

Run: OMP_NUM_THREADS=1 .venv/bin/python benchmarks/protocol_bench.py
Goal (issue #2): >= 5,000 verifications per second on one core.
Goal (issue 14): opening an envelope costs at most 2x the bare Ed25519 verification it contains
(same message; both timed in alternating rounds so a shared machine slows both alike).
"""
from __future__ import annotations

import base64
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from protocol import Identity, MemoryNonceStore, open_envelope, seal  # noqa: E402
from protocol.encoding import decode  # noqa: E402
from protocol.envelope import SIGNING_DOMAIN, _signed_bytes  # noqa: E402
from protocol.identity import PublicKey, unb64  # noqa: E402
from protocol.artefact import sign_artefact  # noqa: E402
from protocol.encoding import encode_array  # noqa: E402


AUD = "a0" * 16  # the key id of the market the envelopes are addressed to


def publish_body(identity: Identity) -> dict:
    rng = np.random.default_rng(0)
    beta = rng.random(100)
    spec = {"z": encode_array(rng.normal(size=(100, 10))), "beta": encode_array(beta / beta.sum()),
            "gamma": 0.1, "scales": encode_array(np.ones(10)), "n_features": 10}
    semantic = {"name": "bench", "description": "a benchmark learnware", "data_type": "table",
                "task_type": "regression", "input_features": [f"x{i}" for i in range(10)],
                "target": "y", "objective": "rmse"}
    model = b"\0" * 2048  # the model file's bytes ride along base64-encoded
    sha = "ab" * 32
    return {"semantic": semantic, "spec": spec,
            "model": {"format": "skops", "sha256": sha, "size": len(model),
                      "data": base64.b64encode(model).decode()},
            "artefact": sign_artefact(identity, semantic, spec, sha)}


def open_vs_verify(message: bytes, repeats: int = 15, n: int = 1000) -> tuple[float, float]:
    """Median microseconds (CPU) of the bare signature check and of the whole open, same
    message; each round times both, so load on the machine moves both figures alike."""
    env = decode(message)
    key, sig = PublicKey(env["sender"]), unb64(env["sig"], field="sig", size=64)
    signed = SIGNING_DOMAIN + _signed_bytes(message, env)
    verify_us, open_us = [], []
    for _ in range(repeats):
        t = time.process_time()
        for _ in range(n):
            key.verify(sig, signed)
        verify_us.append((time.process_time() - t) / n * 1e6)
        t = time.process_time()
        for _ in range(n):
            open_envelope(message, nonce_store=None, audience=AUD)
        open_us.append((time.process_time() - t) / n * 1e6)
    return statistics.median(verify_us), statistics.median(open_us)


def main(repeats: int = 5, n: int = 2000) -> None:
    me = Identity.generate()
    body = publish_body(me)
    # CPU time of this process, so the figure is per core even when the machine is shared.
    sign_rates, verify_rates = [], []
    for _ in range(repeats):
        t = time.process_time()
        msgs = [seal(me, "publish", body, audience=AUD) for _ in range(n)]
        sign_rates.append(n / (time.process_time() - t))
        store = MemoryNonceStore()
        t = time.process_time()
        for m in msgs:
            open_envelope(m, nonce_store=store, audience=AUD)
        verify_rates.append(n / (time.process_time() - t))
    size = len(msgs[0])
    print(f"publish envelope: {size} bytes (100 x 10 RKME + 2 KiB model)")
    print("rates per CPU-second of this one process (one core)")
    print(f"sign:   median {statistics.median(sign_rates):8.0f} msg/s "
          f"(min {min(sign_rates):.0f}, max {max(sign_rates):.0f})")
    print(f"verify: median {statistics.median(verify_rates):8.0f} msg/s "
          f"(min {min(verify_rates):.0f}, max {max(verify_rates):.0f})  goal >= 5000")
    bare, whole = open_vs_verify(msgs[0])
    print(f"side by side (median us per message, same message): bare Ed25519 verify {bare:6.1f}"
          f", open_envelope {whole:6.1f}; ratio {whole / bare:.2f}  goal <= 2.00")


if __name__ == "__main__":
    main()
