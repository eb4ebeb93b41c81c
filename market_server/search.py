"""RKME search on one island: vectorised single ranking and a sparse mixture.

The island's specs are stacked once (all reduced points in one matrix, an ``owner`` index per
point, each spec's self inner product cached) so that the squared MMD from a requirement to
every learnware is one kernel block and a bincount. The index is rebuilt incrementally: new
learnwares are appended, deleted ones dropped, and a kernel change recomputes the cached inner
products from the stored reduced points (kept in raw feature units, so every spec stays
comparable under the island's current kernel).

Mixture: the simplex QP of the requirement onto the best candidates' embeddings gives the
weights; it is pruned to at most ``max_size`` learnwares and re-solved, and compared with greedy
forward selection (what the reference does, one QP per candidate) so the answer is never worse
than greedy.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from protocol.encoding import decode_array
from protocol.kernels import gaussian_kernel, mmd2_to_many
from protocol.simplex import simplex_qp


def decode_spec(spec: dict) -> tuple[np.ndarray, np.ndarray]:
    z = decode_array(spec["z"], field="spec.z", ndim=2).astype(np.float64)
    beta = decode_array(spec["beta"], field="spec.beta", ndim=1).astype(np.float64)
    return z, beta


def _self_inners(Z: np.ndarray, B: np.ndarray, owner: np.ndarray, n: int, gamma: float,
                 scales: np.ndarray, chunk: int = 256) -> np.ndarray:
    """<mu_i, mu_i> for every stacked embedding, in chunks of whole embeddings."""
    out = np.zeros(n)
    starts = np.searchsorted(owner, np.arange(n + 1))
    for a in range(0, n, chunk):
        b = min(n, a + chunk)
        lo, hi = starts[a], starts[b]
        Zc, Bc, oc = Z[lo:hi] / scales, B[lo:hi], owner[lo:hi]
        sq = np.einsum("ij,ij->i", Zc, Zc)
        # Only same-owner pairs matter; compute per chunk block and mask the rest.
        K = np.exp(-gamma * np.maximum(sq[:, None] + sq[None, :] - 2 * Zc @ Zc.T, 0.0))
        K *= (oc[:, None] == oc[None, :])
        out[a:b] = np.bincount(oc - a, weights=Bc * (K @ Bc), minlength=b - a)
    return out


@dataclass
class IslandIndex:
    gamma: float
    scales: np.ndarray
    kernel_version: int
    ids: list[str] = field(default_factory=list)
    pks: list[int] = field(default_factory=list)
    Z: np.ndarray | None = None
    B: np.ndarray | None = None
    owner: np.ndarray | None = None
    self_inner: np.ndarray | None = None
    baseline: float | None = None
    version: int = -1

    @classmethod
    def build(cls, kernel: dict, kernel_version: int, rows: list[dict]) -> "IslandIndex":
        idx = cls(float(kernel["gamma"]), np.asarray(kernel["scales"], dtype=np.float64),
                  kernel_version)
        idx.replace(rows)
        return idx

    def replace(self, rows: list[dict], keep: "IslandIndex | None" = None) -> None:
        """(Re)stack ``rows``; reuse decoded points of ``keep`` for learnwares it already has."""
        zs, bs = [], []
        old = {}
        if keep is not None and keep.Z is not None:
            starts = np.searchsorted(keep.owner, np.arange(len(keep.ids) + 1))
            old = {pk: (keep.Z[starts[i]:starts[i + 1]], keep.B[starts[i]:starts[i + 1]])
                   for i, pk in enumerate(keep.pks)}
        for r in rows:
            if r["pk"] in old:
                z, b = old[r["pk"]]
            else:
                z, b = decode_spec(r["spec"])
            zs.append(z)
            bs.append(b)
        self.ids = [r["learnware_id"] for r in rows]
        self.pks = [r["pk"] for r in rows]
        n = len(rows)
        if n == 0:
            self.Z = np.zeros((0, len(self.scales)))
            self.B = np.zeros(0)
            self.owner = np.zeros(0, dtype=np.int64)
            self.self_inner = np.zeros(0)
            self.baseline = None
            return
        self.Z = np.concatenate(zs)
        self.B = np.concatenate(bs)
        self.owner = np.repeat(np.arange(n), [len(b) for b in bs])
        self.self_inner = _self_inners(self.Z, self.B, self.owner, n, self.gamma, self.scales)
        self.baseline = self._baseline_mmd()

    def _baseline_mmd(self, pairs: int = 200, seed: int = 0) -> float | None:
        """Median squared MMD between two different learnwares of the island: the scale of
        'a different task' that makes a requirement's MMD readable in absolute terms."""
        n = len(self.ids)
        if n < 2:
            return None
        rng = np.random.default_rng(seed)
        picks = rng.choice(n, size=min(n, 40), replace=False)
        vals = []
        starts = np.searchsorted(self.owner, np.arange(n + 1))
        for i in picks[: min(len(picks), 40)]:
            z, b = self.Z[starts[i]:starts[i + 1]], self.B[starts[i]:starts[i + 1]]
            d = self.mmd_all(z, b)
            d = np.delete(d, i)
            vals.append(d[rng.choice(len(d), size=min(len(d), max(1, pairs // len(picks))),
                                     replace=False)])
        v = float(np.median(np.concatenate(vals)))
        return v if v > 0 else None

    def __len__(self) -> int:
        return len(self.ids)

    def mmd_all(self, z: np.ndarray, b: np.ndarray) -> np.ndarray:
        return mmd2_to_many(z, b, self.Z, self.B, self.owner, self.self_inner, self.gamma,
                            self.scales)

    def fit_label(self, mmd: float) -> tuple[float, str]:
        """Absolute fit: MMD relative to the island's typical between-learnware MMD."""
        if self.baseline is None:
            return float(max(0.0, 1.0 - mmd / 2.0)), "unknown"
        ratio = mmd / self.baseline
        label = "good" if ratio < 0.3 else "fair" if ratio < 0.7 else "poor"
        return float(max(0.0, 1.0 - ratio)), label

    def _gram(self, cand: np.ndarray, z: np.ndarray, b: np.ndarray):
        """Gram matrix among candidate embeddings and their inner products with (z, b)."""
        starts = np.searchsorted(self.owner, np.arange(len(self.ids) + 1))
        rows = np.concatenate([np.arange(starts[i], starts[i + 1]) for i in cand])
        local = np.repeat(np.arange(len(cand)), [starts[i + 1] - starts[i] for i in cand])
        Zc, Bc = self.Z[rows], self.B[rows]
        K = gaussian_kernel(Zc, Zc, self.gamma, self.scales) * Bc[:, None] * Bc[None, :]
        m = len(cand)
        G = np.zeros((m, m))
        np.add.at(G, (local[:, None], local[None, :]), K)  # small: m <= 30 candidates
        kc = gaussian_kernel(Zc, z, self.gamma, self.scales) @ b
        c = np.bincount(local, weights=Bc * kc, minlength=m)
        return G, c

    def mixture(self, z: np.ndarray, b: np.ndarray, single: np.ndarray, *, max_size: int = 5,
                candidates: int = 30):
        """Sparse simplex mixture closest to the requirement: (indices, weights, mmd)."""
        n = len(self.ids)
        if n == 0:
            return None
        req_self = float(b @ gaussian_kernel(z, z, self.gamma, self.scales) @ b)
        cand = np.argsort(single, kind="stable")[: min(n, candidates)]
        G, c = self._gram(cand, z, b)

        def solve(sel):
            w, _ = simplex_qp(G[np.ix_(sel, sel)], c[sel])
            val = float(w @ G[np.ix_(sel, sel)] @ w - 2 * w @ c[sel] + req_self)
            return w, max(val, 0.0)

        # (a) full QP over all candidates, pruned to the largest weights and re-solved.
        w_all, _ = solve(np.arange(len(cand)))
        keep = np.argsort(-w_all, kind="stable")[:max_size]
        keep = keep[w_all[keep] > 1e-6] if (w_all[keep] > 1e-6).any() else keep[:1]
        w_a, v_a = solve(keep)
        # (b) greedy forward selection.
        sel: list[int] = []
        best_v, best_w = np.inf, None
        for _ in range(min(max_size, len(cand))):
            trial_best = None
            for j in range(len(cand)):
                if j in sel:
                    continue
                w, v = solve(np.array(sel + [j]))
                if trial_best is None or v < trial_best[1]:
                    trial_best = (j, v, w)
            if trial_best is None or trial_best[1] >= best_v - 1e-12:
                break
            sel.append(trial_best[0])
            best_v, best_w = trial_best[1], trial_best[2]
        if best_w is not None and best_v < v_a:
            keep, w_a, v_a = np.array(sel), best_w, best_v
        nz = w_a > 1e-6
        keep, w_a = keep[nz], w_a[nz] / w_a[nz].sum()
        order = np.argsort(-w_a, kind="stable")
        return cand[keep[order]], w_a[order], v_a
