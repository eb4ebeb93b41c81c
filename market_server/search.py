"""RKME search on one island: vectorised single ranking and a sparse mixture.

The island's specs are stacked once in a :class:`protocol.kernels.EmbeddingStack` (all reduced
points in one matrix, an ``owner`` index per point, each spec's self inner product cached) so
that the squared MMD from a requirement to every learnware is one kernel block and a bincount.
Rebuilds reuse the decoded points of learnwares already indexed; a kernel change recomputes the
cached inner products from the stored reduced points (kept in raw feature units, so every spec
stays comparable under the island's current kernel).

Mixture: among the best single candidates, (a) the exact simplex QP of the requirement onto all
of them, pruned to at most ``max_size`` learnwares and re-solved, and (b) greedy forward
selection (the reference's strategy: add the learnware that lowers the mixture MMD most, exact
line search for every candidate at once, then re-solve the QP on the chosen set). The better of
the two is returned, so the answer is never worse than greedy.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from protocol.encoding import decode_array
from protocol.kernels import EmbeddingStack, embedding_inner
from protocol.simplex import simplex_qp


def decode_spec(spec: dict) -> tuple[np.ndarray, np.ndarray]:
    z = decode_array(spec["z"], field="spec.z", ndim=2).astype(np.float64)
    beta = decode_array(spec["beta"], field="spec.beta", ndim=1).astype(np.float64)
    return z, beta


@dataclass
class IslandIndex:
    gamma: float
    scales: np.ndarray
    kernel_version: int
    ids: list[str] = field(default_factory=list)
    pks: list[int] = field(default_factory=list)
    points: dict = field(default_factory=dict)  # pk -> (z, beta), decoded once
    stack: EmbeddingStack | None = None
    baseline: float | None = None
    version: int = -1

    @classmethod
    def build(cls, kernel: dict, kernel_version: int, rows: list[dict],
              keep: "IslandIndex | None" = None) -> "IslandIndex":
        idx = cls(float(kernel["gamma"]), np.asarray(kernel["scales"], dtype=np.float64),
                  kernel_version)
        old = keep.points if keep is not None else {}
        for r in rows:
            idx.points[r["pk"]] = old.get(r["pk"]) or decode_spec(r["spec"])
        idx.ids = [r["learnware_id"] for r in rows]
        idx.pks = [r["pk"] for r in rows]
        if rows:
            zs = [idx.points[pk][0] for pk in idx.pks]
            bs = [idx.points[pk][1] for pk in idx.pks]
            owner = np.repeat(np.arange(len(rows)), [len(b) for b in bs])
            self_inner = None
            if (keep is not None and keep.stack is not None and keep.gamma == idx.gamma
                    and np.array_equal(keep.scales, idx.scales)):
                # unchanged kernel: reuse the inner products of learnwares already indexed
                known = dict(zip(keep.pks, keep.stack.self_inner))
                if all(pk in known for pk in idx.pks):
                    self_inner = np.array([known[pk] for pk in idx.pks])
            idx.stack = EmbeddingStack(np.concatenate(zs), np.concatenate(bs), owner, idx.gamma,
                                       idx.scales, self_inner=self_inner)
            idx.baseline = idx._baseline_mmd()
        return idx

    def __len__(self) -> int:
        return len(self.ids)

    def _baseline_mmd(self, probes: int = 40, seed: int = 0) -> float | None:
        """Median squared MMD between two different learnwares of the island: the scale of
        'a different task' that makes a requirement's MMD readable in absolute terms."""
        n = len(self.ids)
        if n < 2:
            return None
        rng = np.random.default_rng(seed)
        vals = []
        for i in rng.choice(n, size=min(n, probes), replace=False):
            z, b = self.points[self.pks[i]]
            d = np.delete(self.mmd_all(z, b), i)
            vals.append(d[rng.choice(len(d), size=min(len(d), 10), replace=False)])
        v = float(np.median(np.concatenate(vals)))
        return v if v > 0 else None

    def mmd_all(self, z: np.ndarray, b: np.ndarray) -> np.ndarray:
        return self.stack.mmd2_to(z, b)

    def fit_label(self, mmd: float) -> tuple[float, str]:
        """Absolute fit: MMD relative to the island's typical between-learnware MMD."""
        if self.baseline is None:
            return float(max(0.0, 1.0 - mmd / 2.0)), "unknown"
        ratio = mmd / self.baseline
        label = "good" if ratio < 0.3 else "fair" if ratio < 0.7 else "poor"
        return float(max(0.0, 1.0 - ratio)), label

    def mixture(self, z: np.ndarray, b: np.ndarray, single: np.ndarray, *, max_size: int = 5,
                candidates: int = 12):
        """Sparse simplex mixture closest to the requirement: (indices, weights, mmd)."""
        n = len(self.ids)
        if n == 0:
            return None
        cand = np.argsort(single, kind="stable")[: min(n, candidates)]
        G = self.stack.gram(cand)
        c = self.stack.cross_inner(z, b, cand)
        r = embedding_inner(z, b, z, b, self.gamma, self.scales)

        def value(sel, w):
            return max(float(w @ G[np.ix_(sel, sel)] @ w - 2 * w @ c[sel] + r), 0.0)

        def solve(sel):
            w, _ = simplex_qp(G[np.ix_(sel, sel)], c[sel])
            return w, value(sel, w)

        # (a) full QP over the candidates, pruned to the largest weights and re-solved.
        w_all, _ = solve(np.arange(len(cand)))
        keep = np.argsort(-w_all, kind="stable")[:max_size]
        keep = keep[w_all[keep] > 1e-9] if (w_all[keep] > 1e-9).any() else keep[:1]
        w_a, v_a = solve(keep)
        # (b) greedy forward selection with an exact line search for every candidate at once.
        diag = np.diag(G)
        first = int(np.argmin(diag - 2 * c))
        sel, w = [first], np.array([1.0])
        v_b = value(np.array(sel), w)
        while len(sel) < min(max_size, len(cand)):
            full = np.zeros(len(cand))
            full[sel] = w
            Gw = G @ full
            wGw, cw = float(full @ Gw), float(full @ c)
            # mixture (1 - t) w + t e_j: quadratic in t with these coefficients
            A = wGw - 2 * Gw + diag
            B = -2 * wGw + 2 * Gw + 2 * cw - 2 * c
            t = np.clip(np.where(A > 1e-15, -B / (2 * np.maximum(A, 1e-15)), 1.0), 0.0, 1.0)
            gain = A * t ** 2 + B * t
            gain[sel] = np.inf
            j = int(np.argmin(gain))
            if not np.isfinite(gain[j]) or gain[j] >= -1e-12:
                break
            sel.append(j)
            w, v_new = solve(np.array(sel))
            if v_new >= v_b - 1e-15:
                sel.pop()
                w, _ = solve(np.array(sel))
                break
            v_b = v_new
        if v_b < v_a:
            keep, w_a, v_a = np.array(sel), w, v_b
        nz = w_a > 1e-9
        keep, w_a = keep[nz], w_a[nz] / w_a[nz].sum()
        order = np.argsort(-w_a, kind="stable")
        return cand[keep[order]], w_a[order], v_a
