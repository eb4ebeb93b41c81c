"""Search across the islands of a component: marginal MMD on the features a user shares.

For each island of the component, ``S`` = the island's features the user holds. Every
learnware's reduced points restricted to ``S`` embed its marginal on ``S``
(:mod:`learnware_core.marginal`), and so do the user's; their MMD under the component's kernel
on ``S`` (one width per feature, ``market_server/world.py``) needs nothing but the specs the
market holds and the requirement. Learnwares are ranked by that MMD; each result's fit figure
(score, fit) divides it by the typical MMD between learnwares on the *same* marginal (the median
over pairs of a hash-chosen sample of the component's learnwares that cover ``S``), like an
island's baseline in ``search.py``. Ranking by the ratio erased, on txhousing, the discrepancy on
the level features that predicts transfer (``benchmarks/hetero_diag.py``).

The mixture: the simplex QP over the best candidates on the features that all of them share with
the user (so it may combine learnwares of several islands).

Bounded work: the market adds learnwares to a search (those of the islands sharing most
features first) while their kernel values (``k_q x k`` cross terms plus ``k x k`` self terms)
fit ``WORK_BUDGET``; a baseline takes sample learnwares while their pairs fit
``BASELINE_BUDGET`` and is cached by the market per marginal until the world changes; the
requirement's self term is computed once per marginal.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from learnware_core.kernels import embedding_inner
from learnware_core.marginal import marginal_kernel
from learnware_core.simplex import simplex_qp

BASELINE_SAMPLE = 30
#: kernel values one search may spend on learnwares (cross + self terms), and on a baseline
WORK_BUDGET = 50_000_000
BASELINE_BUDGET = 20_000_000
MIXTURE_CANDIDATES = 12
MIXTURE_MIN_WEIGHT = 0.05


@dataclass
class Candidate:
    """A learnware of the component as a search sees it."""
    learnware_id: str
    island_id: str
    pk: int
    z: np.ndarray            # reduced points, the island's input order
    beta: np.ndarray
    features: list[str]      # the island's input names
    canonical: list[str]     # the canonical feature of each input


def _hash_rank(pk: int) -> str:
    return hashlib.sha256(f"world:{pk}".encode()).hexdigest()


def _cols(cand: Candidate, shared: list[str]) -> list[int]:
    return [cand.canonical.index(f) for f in shared]


class WorldSearch:
    """One search: the requirement ``(zq, bq)`` on the user's columns, ``user_canon`` the
    canonical feature of each requirement column (None: matches no feature of the component),
    ``widths`` the component's width per canonical feature."""

    def __init__(self, zq: np.ndarray, bq: np.ndarray, user_canon: list[str | None],
                 widths: dict[str, float], baselines: dict | None = None):
        self.zq, self.bq, self.widths = zq, bq, widths
        self.ucol = {f: j for j, f in enumerate(user_canon) if f is not None}
        # marginal -> typical MMD; the market passes a cache that lives until the world changes
        self._baselines: dict[tuple, float | None] = {} if baselines is None else baselines
        self._q_self: dict[tuple, float] = {}

    def shared(self, cand: Candidate) -> list[str]:
        return [f for f in cand.canonical if f in self.ucol]

    def kernel(self, shared: list[str]):
        return marginal_kernel([self.widths[f] for f in shared])

    def mmd(self, cand: Candidate, shared: list[str]) -> float:
        g, s = self.kernel(shared)
        key = tuple(shared)
        zq = self.zq[:, [self.ucol[f] for f in shared]]
        if key not in self._q_self:
            self._q_self[key] = embedding_inner(zq, self.bq, zq, self.bq, g, s)
        zc = cand.z[:, _cols(cand, shared)]
        v = (self._q_self[key] + embedding_inner(zc, cand.beta, zc, cand.beta, g, s)
             - 2.0 * embedding_inner(zq, self.bq, zc, cand.beta, g, s))
        return max(v, 0.0)

    @staticmethod
    def cost(k_q: int, cand: Candidate) -> int:
        """Kernel values :meth:`mmd` spends on a candidate."""
        k = len(cand.beta)
        return k_q * k + k * k

    def baseline(self, shared: list[str], pool: list[Candidate]) -> float | None:
        """The typical MMD between learnwares on this marginal (None with fewer than 2)."""
        key = tuple(shared)
        if key in self._baselines:
            return self._baselines[key]
        cover = [c for c in pool if set(shared) <= set(c.canonical)]
        sample, work = [], 0
        for c in sorted(cover, key=lambda c: _hash_rank(c.pk)):
            extra = len(c.beta) * (len(c.beta) + sum(len(o.beta) for o in sample))
            if len(sample) >= BASELINE_SAMPLE or work + extra > BASELINE_BUDGET:
                break
            sample.append(c)
            work += extra
        cover = sample
        val = None
        if len(cover) >= 2:
            g, s = self.kernel(shared)
            zs = [c.z[:, _cols(c, shared)] for c in cover]
            own = [embedding_inner(z, c.beta, z, c.beta, g, s) for z, c in zip(zs, cover)]
            v = [max(own[i] + own[j] - 2.0 * embedding_inner(zs[i], cover[i].beta, zs[j],
                                                            cover[j].beta, g, s), 0.0)
                 for i in range(len(cover)) for j in range(i + 1, len(cover))]
            val = float(np.median(v)) if np.median(v) > 0 else None
        self._baselines[key] = val
        return val

    def rank(self, pool: list[Candidate]) -> list[dict]:
        """Every candidate sharing a feature with the user, best (lowest marginal MMD) first."""
        out = []
        for c in pool:
            shared = self.shared(c)
            if not shared:
                continue
            v = self.mmd(c, shared)
            base = self.baseline(shared, pool)
            ratio = v / base if base else None
            out.append({"cand": c, "shared": shared, "mmd": v, "baseline": base,
                        "ratio": ratio})
        # Ranked by the MMD itself, not by the ratio: the baseline grows with how much the
        # component's learnwares differ on a marginal, so dividing by it erases the very
        # discrepancy that predicts transfer (on txhousing the level features; see
        # benchmarks/hetero_diag.py). The ratio stays in the answer as the fit figure.
        out.sort(key=lambda r: (r["mmd"], r["cand"].pk))
        return out

    def mixture(self, ranked: list[dict], max_size: int = 5):
        """Simplex QP over the best candidates on the features they all share with the user:
        ``(candidates, weights, squared MMD, features)`` or None."""
        top = ranked[:MIXTURE_CANDIDATES]
        if not top:
            return None
        common = [f for f in top[0]["shared"] if all(f in r["shared"] for r in top)]
        if not common:
            top, common = top[:1], top[0]["shared"]
        g, s = self.kernel(common)
        qc = [self.ucol[f] for f in common]
        zs = [r["cand"].z[:, _cols(r["cand"], common)] for r in top]
        bs = [r["cand"].beta for r in top]
        m = len(top)
        G = np.empty((m, m))
        for i in range(m):
            for j in range(i, m):
                G[i, j] = G[j, i] = embedding_inner(zs[i], bs[i], zs[j], bs[j], g, s)
        zq = self.zq[:, qc]
        c = np.array([embedding_inner(zq, self.bq, zs[i], bs[i], g, s) for i in range(m)])
        r0 = embedding_inner(zq, self.bq, zq, self.bq, g, s)
        w, _ = simplex_qp(G, c)
        keep = np.argsort(-w, kind="stable")[:max_size]
        keep = keep[w[keep] >= MIXTURE_MIN_WEIGHT] if (w[keep] >= MIXTURE_MIN_WEIGHT).any() \
            else keep[:1]
        w2, _ = simplex_qp(G[np.ix_(keep, keep)], c[keep])
        nz = w2 > 1e-9
        keep, w2 = keep[nz], w2[nz] / w2[nz].sum()
        v = max(float(w2 @ G[np.ix_(keep, keep)] @ w2 - 2 * w2 @ c[keep] + r0), 0.0)
        order = np.argsort(-w2, kind="stable")
        return [top[i] for i in keep[order]], w2[order], v, common
