"""Private search: the requirement never leaves the client (issue #19).

``MarketClient.search(..., private=True)`` fits the user's RKME requirement as usual but sends
it nowhere. The client mirrors what the island publishes anyway (signed GETs of
``/v1/islands/<id>/digest``): for small islands every learnware's reduced points and weights,
for islands the market ranks with random-feature sketches (``IslandIndex.coarse_min`` and more)
each learnware's sketch and self inner product with the sketch's parameters. It then ranks with
the market's own steps (:mod:`learnware_core.ranking`: the sketch estimate, the same candidate
rule, the exact MMD of the candidates, the same sparse mixture), fetching exact specs only for
its sketch candidates (``/v1/islands/<id>/specs``). What the market learns: that this client
mirrored the island, and in sketch mode which few hundred learnwares were candidates
(docs/PRIVACY.md).

The mirror is cached under the SDK's config dir (``<cache_dir>/private/``), one ``.npz`` file
(no pickle) per market key and island, valid for one kernel version and one sketch (its
fingerprint): a later search asks only for learnwares published after the cached cursor, and
the last page's list of live learnwares removes withdrawn ones. A kernel change, a rebuilt
sketch or a mode change starts the mirror again.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from learnware_core.kernels import embedding_inner
from learnware_core.ranking import coarse_candidates, coarse_mmd, fit_label, sparse_mixture
from learnware_core.sketch import RFFSketch
from protocol.encoding import decode_array
from protocol.errors import LearnwareError, ProtocolError

from .rkme import RKMESpec

if TYPE_CHECKING:  # pragma: no cover
    from .client import MarketClient, SearchResult

#: learnwares whose exact specs one request asks for (the market's bound)
SPEC_BATCH = 512
#: digest pages one sync reads at most (a market that never says "no more" is refused)
MAX_PAGES = 100_000


@dataclass
class IslandMirror:
    """The client's copy of one island's published index (sorted by learnware pk)."""

    island_id: str
    kernel_version: int = -1
    mode: str = ""
    fingerprint: str = ""
    cursor: int = 0
    pks: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    self_inner: np.ndarray = field(default_factory=lambda: np.zeros(0))
    S: np.ndarray | None = None          # sketch mode: N x D float32
    counts: np.ndarray | None = None     # specs mode: reduced points per learnware
    z: np.ndarray | None = None          # specs mode: all reduced points, back to back
    beta: np.ndarray | None = None
    center: np.ndarray | None = None     # sketch parameters
    dim: int = 0
    seed: int = 0
    orthogonal: bool = True
    sketch_err: float = 0.0
    margin_sigmas: float = 2.0
    wide: int = 10
    baseline: float | None = None
    gamma: float = 1.0
    scales: np.ndarray | None = None
    specs: dict = field(default_factory=dict)  # pk -> (z, beta): exact specs fetched

    # --- the cache file ---------------------------------------------------------------------
    ARRAYS = ("pks", "self_inner", "S", "counts", "z", "beta", "center", "scales")

    def save(self, path: Path, *, index: bool = True, specs: bool = True) -> None:
        """Write the mirror: the index to ``path``, the fetched exact specs beside it (two
        files, so a search that only fetched specs does not rewrite the sketches)."""
        if index:
            arrays = {k: getattr(self, k) for k in self.ARRAYS if getattr(self, k) is not None}
            nums = [self.kernel_version, self.cursor, self.dim, self.seed, int(self.orthogonal),
                    self.sketch_err, self.margin_sigmas, self.wide,
                    np.nan if self.baseline is None else self.baseline, self.gamma]
            _write_npz(path, meta=np.asarray([self.island_id, self.mode, self.fingerprint]),
                       nums=np.asarray(nums, dtype=np.float64), **arrays)
        if specs:
            sp = sorted(self.specs)
            d = self.scales.size if self.scales is not None else 1
            _write_npz(_specs_path(path), meta=np.asarray([self.island_id]),
                       spec_pks=np.asarray(sp, dtype=np.int64),
                       spec_counts=np.asarray([len(self.specs[p][1]) for p in sp],
                                              dtype=np.int64),
                       spec_z=(np.concatenate([self.specs[p][0] for p in sp]) if sp
                               else np.zeros((0, d))),
                       spec_beta=(np.concatenate([self.specs[p][1] for p in sp]) if sp
                                  else np.zeros(0)))

    @classmethod
    def load(cls, path: Path, island_id: str) -> "IslandMirror":
        """The cached mirror, or an empty one when there is none or it cannot be read."""
        try:
            with np.load(path, allow_pickle=False) as f:
                meta, nums = [str(x) for x in f["meta"]], f["nums"]
                m = cls(island_id=meta[0], mode=meta[1], fingerprint=meta[2])
                (m.kernel_version, m.cursor, m.dim, m.seed) = (int(x) for x in nums[:4])
                m.orthogonal, m.sketch_err = bool(nums[4]), float(nums[5])
                m.margin_sigmas, m.wide = float(nums[6]), int(nums[7])
                m.baseline = None if np.isnan(nums[8]) else float(nums[8])
                m.gamma = float(nums[9])
                for k in cls.ARRAYS:
                    if k in f.files:
                        setattr(m, k, f[k])
        except (OSError, KeyError, ValueError, IndexError):
            return cls(island_id=island_id)
        if m.island_id != island_id:
            return cls(island_id=island_id)
        try:
            with np.load(_specs_path(path), allow_pickle=False) as f:
                if str(f["meta"][0]) == island_id:
                    # (each f[name] reads the member again: once each, then slices)
                    counts, sz, sb = f["spec_counts"], f["spec_z"], f["spec_beta"]
                    ends = np.cumsum(counts)
                    live = set(m.pks.tolist())
                    for p, a, e in zip(f["spec_pks"].tolist(), (ends - counts).tolist(),
                                       ends.tolist()):
                        if p in live:
                            m.specs[p] = (sz[a:e], sb[a:e])
        except (OSError, KeyError, ValueError, IndexError):
            m.specs = {}
        return m

    # --- updates ----------------------------------------------------------------------------
    def _reset(self, page: dict, fingerprint: str) -> None:
        self.__init__(self.island_id)
        self.kernel_version = int(page["kernel"]["version"])
        self.mode, self.fingerprint = page["mode"], fingerprint

    def apply(self, page: dict) -> None:
        """Add one digest page (its learnwares come after every one held)."""
        pks = _arr(page["pks"], "pks", 1).astype(np.int64)
        if pks.size and self.pks.size and pks.min() <= self.pks.max():
            raise ProtocolError("the market's digest page repeats learnwares already mirrored",
                                code="bad_response", field="pks")
        kernel = page["kernel"]
        self.gamma = float(kernel["gamma"])
        self.scales = _arr(kernel["scales"], "kernel.scales", 1)
        self.baseline = page.get("baseline_mmd")
        if self.mode == "sketch":
            sp = page.get("sketch_params")
            S = _arr(page.get("sketch"), "sketch", 2).astype(np.float32)
            si = _arr(page.get("self_inner"), "self_inner", 1)
            if sp is None or S.shape[0] != pks.size or si.shape != pks.shape:
                raise ProtocolError("the digest page's sketches do not match its learnwares",
                                    code="bad_response", field="sketch")
            self.dim, self.seed = int(sp["dim"]), int(sp["seed"])
            self.orthogonal = bool(sp["orthogonal"])
            self.center = _arr(sp["center"], "sketch_params.center", 1)
            self.sketch_err = float(sp["err"])
            self.margin_sigmas, self.wide = float(sp["margin_sigmas"]), int(sp["wide"])
            if S.shape[1] != self.dim:
                raise ProtocolError("the digest's sketches have another width than declared",
                                    code="bad_response", field="sketch")
            self.S = S if self.S is None else np.concatenate([self.S, S])
            self.self_inner = np.concatenate([self.self_inner, si])
        else:
            counts = _arr(page.get("counts"), "counts", 1).astype(np.int64)
            z, beta = _arr(page.get("z"), "z", 2), _arr(page.get("beta"), "beta", 1)
            if (counts.shape != pks.shape or counts.sum() != z.shape[0]
                    or z.shape[0] != beta.shape[0] or (counts < 1).any()):
                raise ProtocolError("the digest page's specs do not match its learnwares",
                                    code="bad_response", field="counts")
            self.counts = counts if self.counts is None else np.concatenate([self.counts, counts])
            self.z = z if self.z is None else np.concatenate([self.z, z])
            self.beta = beta if self.beta is None else np.concatenate([self.beta, beta])
            ends = np.cumsum(counts)
            si = [embedding_inner(z[s:e], beta[s:e], z[s:e], beta[s:e], self.gamma, self.scales)
                  for s, e in zip(ends - counts, ends)]
            self.self_inner = np.concatenate([self.self_inner, np.asarray(si, np.float64)])
        self.pks = np.concatenate([self.pks, pks])
        self.cursor = int(page["cursor"])

    def keep_live(self, live: np.ndarray) -> bool:
        """Drop the learnwares withdrawn since (not in the market's list of live ones); returns
        whether any was."""
        keep = np.isin(self.pks, live)
        if keep.all():
            return False
        if self.mode == "specs":
            owner = np.repeat(np.arange(self.pks.size), self.counts)
            rows = keep[owner]
            self.z, self.beta, self.counts = self.z[rows], self.beta[rows], self.counts[keep]
        else:
            self.S = self.S[keep]
        self.pks, self.self_inner = self.pks[keep], self.self_inner[keep]
        gone = set(self.specs) - set(int(p) for p in self.pks)
        for p in gone:
            del self.specs[p]
        return True


def _specs_path(path: Path) -> Path:
    return path.with_name(path.stem + ".specs.npz")


def _write_npz(path: Path, **arrays) -> None:
    """``np.savez`` to a temporary file, then renamed: a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, **arrays)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _arr(obj: Any, name: str, ndim: int) -> np.ndarray:
    if obj is None:
        raise ProtocolError(f"the market's digest lacks {name}", code="bad_response", field=name)
    return decode_array(obj, field=name, ndim=ndim)


def _fingerprint(page: dict) -> str:
    sp = page.get("sketch_params")
    return sp["fingerprint"] if page["mode"] == "sketch" and sp else ""


# ------------------------------------------------------------------------------------ sync
def cache_path(client: "MarketClient", island_id: str) -> Path:
    key = hashlib.sha256(f"{client.market_key_id}\0{island_id}".encode()).hexdigest()[:40]
    return client.cache_dir / "private" / f"{key}.npz"


def sync(client: "MarketClient", island_id: str, *, cache: bool = True) -> IslandMirror:
    """The island's mirror, brought up to date with as few pages as the cursor allows."""
    path = cache_path(client, island_id)
    mirror = IslandMirror.load(path, island_id) if cache else IslandMirror(island_id)
    since = mirror.cursor if mirror.mode else 0
    changed = False
    for _ in range(MAX_PAGES):
        page = client.signed_get(f"/v1/islands/{island_id}/digest", "island_digest",
                                 params={"since": since})
        if page["island_id"] != island_id:
            raise ProtocolError("the market answered about another island",
                                code="bad_response", field="island_id")
        key = (int(page["kernel"]["version"]), page["mode"], _fingerprint(page))
        if key != (mirror.kernel_version, mirror.mode, mirror.fingerprint):
            if since != 0:  # the kernel or the sketch changed: start the mirror again
                mirror, since = IslandMirror(island_id), 0
                continue
            mirror._reset(page, key[2])
            changed = True
        mirror.apply(page)
        changed = changed or mirror.cursor != since
        since = mirror.cursor
        if not page["more"]:
            if "live" not in page:
                raise ProtocolError("the digest's last page lacks the live learnwares",
                                    code="bad_response", field="live")
            live = _arr(page["live"], "live", 1).astype(np.int64)
            changed = mirror.keep_live(live) or changed
            break
    else:  # pragma: no cover - a market that pages forever
        raise ProtocolError("the market's digest never ended", code="bad_response")
    if cache and changed:
        mirror.save(path, specs=False)
    return mirror


def fetch_specs(client: "MarketClient", mirror: IslandMirror, pks) -> None:
    """Exact specs of ``pks`` the mirror lacks, in batches the market accepts."""
    want = [int(p) for p in pks if int(p) not in mirror.specs]
    for s in range(0, len(want), SPEC_BATCH):
        part = want[s:s + SPEC_BATCH]
        body = client.signed_get(f"/v1/islands/{mirror.island_id}/specs", "spec_batch",
                                 params={"pks": ",".join(map(str, part))})
        got = _arr(body["pks"], "pks", 1).astype(np.int64)
        counts = _arr(body["counts"], "counts", 1).astype(np.int64)
        z, beta = _arr(body["z"], "z", 2), _arr(body["beta"], "beta", 1)
        if (body["island_id"] != mirror.island_id or counts.shape != got.shape
                or counts.sum() != z.shape[0] or z.shape[0] != beta.shape[0]
                or not set(got.tolist()) <= set(part)):
            raise ProtocolError("the market's specs do not match what was asked",
                                code="bad_response", field="pks")
        ends = np.cumsum(counts)
        for p, a, e in zip(got, ends - counts, ends):
            mirror.specs[int(p)] = (z[a:e], beta[a:e])


# --------------------------------------------------------------------------------- ranking
def _exact_cross(mirror: IslandMirror, z, b, positions) -> np.ndarray:
    """The requirement's inner products with the learnwares at ``positions`` (float64)."""
    g, sc = mirror.gamma, mirror.scales
    if mirror.mode == "specs":
        ends = np.cumsum(mirror.counts)
        starts = ends - mirror.counts
        out = np.empty(len(positions))
        for j, i in enumerate(positions):
            out[j] = embedding_inner(mirror.z[starts[i]:ends[i]], mirror.beta[starts[i]:ends[i]],
                                     z, b, g, sc)
        return out
    out = np.empty(len(positions))
    for j, i in enumerate(positions):
        zi, bi = mirror.specs[int(mirror.pks[i])]
        out[j] = embedding_inner(zi, bi, z, b, g, sc)
    return out


def _points(mirror: IslandMirror, i: int):
    if mirror.mode == "specs":
        ends = np.cumsum(mirror.counts)
        s, e = ends[i] - mirror.counts[i], ends[i]
        return mirror.z[s:e], mirror.beta[s:e]
    return mirror.specs[int(mirror.pks[i])]


def rank(client: "MarketClient", mirror: IslandMirror, z, b, top: int):
    """``(positions, squared MMD, cross)`` of the ``top`` best learnwares, exact MMD."""
    n = mirror.pks.size
    top = min(n, max(1, int(top)))
    q_self = embedding_inner(z, b, z, b, mirror.gamma, mirror.scales)
    if mirror.mode == "sketch":
        sk = RFFSketch(mirror.gamma, mirror.scales, mirror.scales.size, mirror.dim, mirror.seed,
                       center=mirror.center, orthogonal=mirror.orthogonal)
        coarse = coarse_mmd(q_self, mirror.self_inner, mirror.S, sk.embed_one(z, b))
        m = min(n, max(top, max(200, 20 * top)))
        cand = coarse_candidates(coarse, top, m, sketch_err=mirror.sketch_err,
                                 margin_sigmas=mirror.margin_sigmas, wide=mirror.wide)
        fetch_specs(client, mirror, mirror.pks[cand])
        cand = cand[[int(mirror.pks[i]) in mirror.specs for i in cand]]  # withdrawn meanwhile
    else:
        cand = np.arange(n)
    cross = _exact_cross(mirror, z, b, cand)
    mmd = np.maximum(q_self + mirror.self_inner[cand] - 2.0 * cross, 0.0)
    order = np.argsort(mmd, kind="stable")[:top]
    return cand[order], mmd[order], cross[order], q_self


def mixture(mirror: IslandMirror, z, b, single, among, cross, q_self, max_size: int):
    """The market's sparse mixture (learnware_core.ranking) over the 12 best singles."""
    if len(single) == 0:
        return None
    pos = np.argsort(single, kind="stable")[:min(len(single), 12)]
    cand = np.asarray(among)[pos]
    pts = [_points(mirror, int(i)) for i in cand]
    m = len(cand)
    G = np.empty((m, m))
    for i in range(m):
        for j in range(i, m):
            G[i, j] = G[j, i] = embedding_inner(pts[i][0], pts[i][1], pts[j][0], pts[j][1],
                                                mirror.gamma, mirror.scales)
    keep, w, v = sparse_mixture(G, lambda j: None, np.asarray(cross, float)[pos], q_self,
                                max_size)
    return cand[keep], w, v


def private_search(client: "MarketClient", X: np.ndarray, semantic: dict, max_results: int = 5,
                   *, k: int = 100, random_state: int = 0, cache: bool = True
                   ) -> "SearchResult":
    """:meth:`MarketClient.search` without sending the requirement (module docstring)."""
    from .client import Match, Mixture, SearchResult
    island = client.island(semantic)
    if island is None:
        raise LearnwareError("no island matches this semantic specification yet",
                             code="no_island")
    mirror = sync(client, island.island_id, cache=cache)
    out = SearchResult(island_id=island.island_id, single=[], mixture=None,
                       objective=island.semantic.get("objective"), baseline_mmd=mirror.baseline)
    if mirror.pks.size == 0:
        out.message = "the island has no live learnwares"
        return out
    spec = RKMESpec.fit_checked(X, k=k, gamma=mirror.gamma, scales=mirror.scales,
                                random_state=random_state)
    top = max(int(max_results), 12)
    held_specs = len(mirror.specs)
    cand, mmd, cross, q_self = rank(client, mirror, spec.z, spec.beta, top)
    for i, v in zip(cand[:max_results], mmd[:max_results]):
        score, label = fit_label(float(v), mirror.baseline)
        out.single.append(Match(f"lw-{int(mirror.pks[i])}", score, float(v), label))
    mix = mixture(mirror, spec.z, spec.beta, mmd, cand, cross, q_self,
                  max_size=min(5, int(max_results)))
    if mix is not None:
        ids, w, v = mix
        out.mixture = Mixture([f"lw-{int(mirror.pks[i])}" for i in ids],
                              [float(x) for x in w], fit_label(v, mirror.baseline)[0], float(v))
    if cache and mirror.mode == "sketch" and len(mirror.specs) != held_specs:
        mirror.save(cache_path(client, island.island_id), index=False)  # for next time
    out.message = "ranked on this machine: the requirement was not sent (private search)"
    return out
