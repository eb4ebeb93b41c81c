"""Search across the islands of a component: marginal MMD on the features a user shares.

For each island of the component, ``S`` = the island's features the user holds. Every
learnware's reduced points restricted to ``S`` embed its marginal on ``S``
(:mod:`learnware_core.marginal`), and so do the user's; their MMD under the component's kernel
on ``S`` (one width per feature, ``market_server/world.py``) needs nothing but the specs the
market holds and the requirement. Each result's fit figure
(score, fit) divides it by the typical MMD between learnwares on the *same* marginal (the median
over pairs of a hash-chosen sample of the component's learnwares that cover ``S``), like an
island's baseline in ``search.py``. Ranking by the ratio erased, on txhousing, the discrepancy on
the level features that predicts transfer (``benchmarks/hetero_diag.py``).

Ranked by :func:`rank_key`: the MMD raised by the share of the learnware's inputs the user lacks.
The mixture: the best candidates weighed by the inverse of that key (so it may combine
learnwares of several islands; :meth:`WorldSearch.mixture` says why not the simplex QP).

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

BASELINE_SAMPLE = 30
#: kernel values one search may spend on learnwares (cross + self terms), and on a baseline
WORK_BUDGET = 50_000_000
BASELINE_BUDGET = 20_000_000
MIXTURE_CANDIDATES = 12
#: how much a fully filled input set raises the ranking key (see :func:`rank_key`)
FILL_PENALTY = 1.0


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


def filled_share(cand: Candidate, shared: list[str]) -> float:
    """The share of the candidate's inputs the user lacks: the client fills them."""
    return 1.0 - len(shared) / len(cand.canonical)


def rank_key(mmd: float, filled: float) -> float:
    """What a search ranks by: the marginal MMD on the shared features, raised by the share of
    the learnware's inputs that must be filled (``mmd * (1 + FILL_PENALTY * filled)``).

    The MMD on shared features says nothing about the features the user lacks, yet the
    learnware's outputs depend on them; a filled input is the developer's typical value, not
    the user's. Ranking by the MMD alone prefers a learnware that matches on two shared
    features over one that matches nearly as well on all of its inputs. Not divided by the
    marginal's baseline: the baseline grows with how much the component's learnwares differ on
    a marginal, so dividing by it erases the very discrepancy that predicts transfer (on
    txhousing the level features; ``benchmarks/hetero_diag.py``). The ratio stays in the
    answer as the fit figure."""
    return float(mmd) * (1.0 + FILL_PENALTY * float(filled))


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
        """Every candidate sharing a feature with the user, best (lowest :func:`rank_key`)
        first."""
        out = []
        for c in pool:
            shared = self.shared(c)
            if not shared:
                continue
            v = self.mmd(c, shared)
            base = self.baseline(shared, pool)
            ratio = v / base if base else None
            out.append({"cand": c, "shared": shared, "mmd": v, "baseline": base,
                        "ratio": ratio, "key": rank_key(v, filled_share(c, shared))})
        out.sort(key=lambda r: (r["key"], r["cand"].pk))
        return out

    def mixture(self, ranked: list[dict], max_size: int = MIXTURE_CANDIDATES):
        """The best ``max_size`` candidates (at most ``MIXTURE_CANDIDATES``), weighed by the
        inverse of their ranking key: ``(candidates, weights, squared MMD, features)`` or
        None. The squared MMD is the weighted mixture's, on the features all its members
        share with the user.

        Not the simplex QP of one island's search: across islands the QP can only weigh the
        few features every candidate shares with the user, and it concentrates on one or two
        learnwares. When inputs must be filled, the learnwares' errors differ more from one
        another than their marginals do, and spreading the weight over the best candidates
        averages those errors out (``benchmarks/hetero_diag.py`` compares the two)."""
        top = ranked[:max(1, min(int(max_size), MIXTURE_CANDIDATES))]
        if not top:
            return None
        common = [f for f in top[0]["shared"] if all(f in r["shared"] for r in top)]
        if not common:
            top, common = top[:1], top[0]["shared"]
        key = np.array([r["key"] for r in top], dtype=np.float64)
        w = 1.0 / np.maximum(key, 1e-6 * max(float(key.max()), 1e-300))
        w /= w.sum()
        g, s = self.kernel(common)
        zs = [r["cand"].z[:, _cols(r["cand"], common)] for r in top]
        bs = [r["cand"].beta for r in top]
        m = len(top)
        G = np.empty((m, m))
        for i in range(m):
            for j in range(i, m):
                G[i, j] = G[j, i] = embedding_inner(zs[i], bs[i], zs[j], bs[j], g, s)
        zq = self.zq[:, [self.ucol[f] for f in common]]
        c = np.array([embedding_inner(zq, self.bq, zs[i], bs[i], g, s) for i in range(m)])
        r0 = embedding_inner(zq, self.bq, zq, self.bq, g, s)
        v = max(float(w @ G @ w - 2 * w @ c + r0), 0.0)
        order = np.argsort(-w, kind="stable")
        return [top[i] for i in order], w[order], v, common
