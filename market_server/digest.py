"""What an island publishes for private search: its index, page by page, and exact specs.

A user who must not send even an RKME requirement (issue #19) ranks on their own machine. The
market gives them what it ranks with: for islands with sketches (``IslandIndex.coarse_min``
learnwares and more) each learnware's random-feature sketch and exact self inner product plus
the sketch's parameters; for smaller islands the reduced points and weights themselves. Pages
are ordered by learnware pk, and ``cursor`` (the last pk of a page) lets a client ask only for
what was published since; the last page carries every live pk, so a client drops withdrawn
learnwares without the market keeping a log of withdrawals. Exact specs of a client's
candidates come from :func:`spec_batch`. Everything here is read from the island's index (the
decoded arrays the market already holds): no store access, no per-user state.
"""
from __future__ import annotations

import hashlib

import numpy as np

from protocol.encoding import encode_array
from protocol.errors import LearnwareError

from .search import IslandIndex

#: learnwares per page with sketches (512 float32 each: about 4 MiB a page)
SKETCH_PAGE = 2048
#: reduced-point coordinates per page of specs (float64: about 8 MiB a page)
SPEC_PAGE_ELEMENTS = 1_000_000
#: learnwares whose exact specs one request may ask for
MAX_SPEC_BATCH = 512


def sketch_fingerprint(idx: IslandIndex) -> str:
    """Names the sketch's features: a client's cached rows are comparable to new ones only
    under the same fingerprint (a rebuilt index may centre its features elsewhere)."""
    sk = idx.sketch
    h = hashlib.sha256()
    h.update(np.float64(sk.gamma).tobytes() + sk.scales.tobytes() + sk.center.tobytes())
    h.update(f"{sk.dim}:{sk.seed}:{int(sk.orthogonal)}".encode())
    return h.hexdigest()


def island_digest(idx: IslandIndex, island_id: str, kernel: dict, since: int = 0,
                  limit: int | None = None) -> dict:
    """One page of the island's index: learnwares with pk > ``since``, in pk order."""
    pks = np.asarray(idx.pks, dtype=np.int64)
    later = np.flatnonzero(pks > since)
    later = later[np.argsort(pks[later], kind="stable")]
    sketched = idx.S is not None and idx.sketch is not None
    if sketched:
        page = later[:min(limit or SKETCH_PAGE, SKETCH_PAGE)]
    else:
        counts = idx.stack.counts[later] if later.size else np.zeros(0, dtype=np.intp)
        d = idx.stack.n_features if idx.stack is not None else 1
        fits = np.cumsum(counts * d) <= SPEC_PAGE_ELEMENTS
        n = max(1, int(fits.sum())) if later.size else 0
        page = later[:min(n, limit or n)]
    more = page.size < later.size
    body = {"island_id": island_id, "kernel": kernel, "mode": "sketch" if sketched else "specs",
            "cursor": int(pks[page[-1]]) if page.size else int(since), "more": bool(more),
            "learnware_count": int(pks.size), "baseline_mmd": idx.baseline,
            "pks": encode_array(pks[page])}
    if not more:
        body["live"] = encode_array(np.sort(pks))
    if sketched:
        sk = idx.sketch
        body["sketch_params"] = {"dim": int(sk.dim), "seed": int(sk.seed),
                                 "orthogonal": bool(sk.orthogonal),
                                 "center": encode_array(np.asarray(sk.center, np.float64)),
                                 "err": float(idx.sketch_err),
                                 "fingerprint": sketch_fingerprint(idx),
                                 "margin_sigmas": float(idx.margin_sigmas),
                                 "wide": int(idx.wide)}
        body["self_inner"] = encode_array(np.asarray(idx.stack.self_inner[page], np.float64))
        body["sketch"] = encode_array(np.ascontiguousarray(idx.S[page], dtype=np.float32))
    else:
        body.update(_specs_of(idx, [idx.pks[i] for i in page]))
    return body


def spec_batch(idx: IslandIndex, island_id: str, pks: list[int]) -> dict:
    """The reduced points and weights of the live learnwares among ``pks`` (others left out)."""
    if len(pks) > MAX_SPEC_BATCH:
        raise LearnwareError(f"at most {MAX_SPEC_BATCH} learnwares per request "
                             f"({len(pks)} asked)", code="bad_query", field="pks")
    live = [pk for pk in dict.fromkeys(pks) if pk in idx.points]
    return {"island_id": island_id, **_specs_of(idx, live)}


def _specs_of(idx: IslandIndex, pks: list[int]) -> dict:
    d = idx.stack.n_features if idx.stack is not None else 1
    zs = [idx.points[pk][0] for pk in pks]
    bs = [idx.points[pk][1] for pk in pks]
    return {"pks": encode_array(np.asarray(pks, dtype=np.int64)),
            "counts": encode_array(np.asarray([len(b) for b in bs], dtype=np.int64)),
            "z": encode_array(np.concatenate(zs).astype(np.float64) if zs
                              else np.zeros((0, d))),
            "beta": encode_array(np.concatenate(bs).astype(np.float64) if bs
                                 else np.zeros(0))}


def parse_pks(text: str) -> list[int]:
    """``"3,17,42"`` -> [3, 17, 42]; a clear 400 naming ``pks`` for anything else."""
    parts = [p for p in text.split(",") if p] if text else []
    if not parts:
        raise LearnwareError("pks must list learnware numbers, e.g. pks=3,17,42",
                             code="bad_query", field="pks")
    if len(parts) > MAX_SPEC_BATCH:
        raise LearnwareError(f"at most {MAX_SPEC_BATCH} learnwares per request "
                             f"({len(parts)} asked)", code="bad_query", field="pks")
    if not all(p.isdigit() and len(p) <= 10 for p in parts):
        raise LearnwareError("pks must be comma-separated non-negative integers",
                             code="bad_query", field="pks")
    return [int(p) for p in parts]
