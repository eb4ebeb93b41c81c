"""RKME search on one island: exact single ranking by pruning, and a sparse mixture.

The island's specs are stacked once in a :class:`market_server.embedding_stack.EmbeddingStack` (all reduced
points in one matrix, an ``owner`` index per point, each spec's self inner product cached), and
each spec's enclosing ball is kept (:mod:`market_server.bounds`). A search bounds every
learnware's MMD from below at one kernel value per requirement point and learnware, then
computes exact MMDs in order of the bound until none can beat the best found
(:meth:`IslandIndex.rank`); where the balls overlap too much for that to pay, small islands
take one vectorised kernel block over all points. Refreshes reuse what is indexed: after
publishes the stack, balls and sketches grow in place (amortised O(new)); a kernel change
recomputes the cached inner products from the stored reduced points (kept in raw feature units,
so every spec stays comparable under the island's current kernel).

Scale (issue #8): from ``IslandIndex.coarse_min`` learnwares on, each embedding also has a
fixed random-feature sketch (:mod:`market_server.sketch`, N x D float32); when the bounds leave
too many candidates, the sketch ranks them with one matrix-vector product and the best few
hundred are re-ranked with the exact MMD.

Mixture (:meth:`IslandIndex.mixture`): greedy forward selection over the best singles (exact
line search for every candidate at once, then the QP on the chosen set), the Gram matrix
computed a column at a time; a learnware joins only with a real share of the weight. When greedy
fills every place, the full QP over the candidates, pruned, may replace it.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field

import numpy as np

from learnware_core.kernels import augmented_cols, augmented_rows, embedding_inner
from learnware_core.ranking import (MIXTURE_MIN_WEIGHT, MIXTURE_RTOL, coarse_candidates,
                                    coarse_mmd, fit_label, sparse_mixture)
# a spec's (z, beta): decoded in learnware_core/spec.py, the one home of the spec
from learnware_core.spec import decode_points as decode_spec

from .embedding_stack import EmbeddingStack, LazyGram
from .bounds import balls, cross_bounds_of_balls, cross_upper
from .rows import LiveSpec
from .sketch import RFFSketch

_GROW_LOCK = threading.Lock()  # who may write the spare rows of a sketch buffer


@dataclass
class IslandIndex:
    gamma: float
    scales: np.ndarray
    kernel_version: int
    ids: list[str] = field(default_factory=list)
    pks: list[int] = field(default_factory=list)
    points: dict = field(default_factory=dict)  # pk -> (z, beta), decoded once (views of stack)
    stack: EmbeddingStack | None = None
    baseline: float | None = None
    version: int = -1
    # Two-stage search (issue #8): islands of at least ``coarse_min`` learnwares are ranked by
    # a random-feature sketch first (N x D float32, one matrix-vector product), then the exact
    # MMD re-ranks the best candidates. Smaller islands are ranked exactly over all.
    coarse_min: int = 2000
    sketch_dim: int = 512
    sketch_seed: int = 0
    sketch: RFFSketch | None = None
    S: np.ndarray | None = None  # N x D float32 sketches, row i = learnware i
    sketch_err: float = 0.0
    margin_sigmas: float = 2.0
    wide: int = 10  # rms error of the sketch's cross term, measured on random pairs
    # Exact pruning (market_server.bounds): each learnware's enclosing ball, scaled units, the
    # centres relative to the stack's centre; ``ball_src`` the same centres uncentred (reused
    # by later builds while the kernel is unchanged)
    ball_C: np.ndarray | None = None
    ball_r: np.ndarray | None = None
    ball_w: np.ndarray | None = None
    ball_src: np.ndarray | None = None
    #: largest number of learnwares a large island evaluates exactly after pruning before it
    #: leaves the rest to the sketch
    exact_budget: int = 2000
    pair_mmd: dict = field(default_factory=dict)  # (pk, pk) -> squared MMD (baseline pairs)
    baseline_sample: tuple = ()  # the pks whose pairs give the baseline
    pk_sums: tuple = (0, 0, 0)  # count, sum and sum of squares of pks (Store.island_appended)
    _S_buf: dict | None = None  # the sketches' buffer with spare rows (appends write in place)

    #: defaults for new indexes (``build`` keeps those of the index it refreshes)
    COARSE_MIN = 2000
    SKETCH_DIM = 512
    SKETCH_SEED = 0

    @classmethod
    def build(cls, kernel: dict, kernel_version: int, rows: list[LiveSpec],
              keep: "IslandIndex | None" = None, *, appended: bool = False,
              **options) -> "IslandIndex":
        """The index of these store rows. ``keep``: the island's previous index, whose decoded
        points (always), self inner products and sketches (when the kernel is unchanged) are
        reused. ``appended``: ``rows`` are only learnwares
        added after all of ``keep``'s (``Store.island_appended``). ``options``: coarse_min,
        sketch_dim, sketch_seed."""
        if appended:
            points = dict(keep.points)
            points.update((r.pk, decode_spec(r.spec)) for r in rows)
            return cls.from_points(kernel, kernel_version,
                                   keep.ids + [r.learnware_id for r in rows],
                                   keep.pks + [r.pk for r in rows], points, keep=keep,
                                   **options)
        old = keep.points if keep is not None else {}
        points = {r.pk: old.get(r.pk) or decode_spec(r.spec) for r in rows}
        return cls.from_points(kernel, kernel_version, [r.learnware_id for r in rows],
                               [r.pk for r in rows], points, keep=keep, **options)

    @classmethod
    def from_points(cls, kernel: dict, kernel_version: int, ids: list[str], pks: list[int],
                    points: dict, keep: "IslandIndex | None" = None, *,
                    coarse_min: int | None = None, sketch_dim: int | None = None,
                    sketch_seed: int | None = None) -> "IslandIndex":
        """The index of learnwares given as decoded arrays: ``points[pk] = (z, beta)``."""
        idx = cls(float(kernel["gamma"]), np.asarray(kernel["scales"], dtype=np.float64),
                  kernel_version)
        idx.coarse_min = int(coarse_min if coarse_min is not None else
                             keep.coarse_min if keep is not None else cls.COARSE_MIN)
        idx.sketch_dim = int(sketch_dim if sketch_dim is not None else
                             keep.sketch_dim if keep is not None else cls.SKETCH_DIM)
        idx.sketch_seed = int(sketch_seed if sketch_seed is not None else
                              keep.sketch_seed if keep is not None else cls.SKETCH_SEED)
        idx.ids, idx.pks = list(ids), list(pks)
        # keep's learnwares first, unchanged, then new ones: the usual refresh after publishes
        n_keep = len(keep.pks) if keep is not None else 0
        prefix = keep is not None and idx.pks[:n_keep] == keep.pks
        grown = prefix and n_keep < len(idx.pks)
        if prefix:
            tail = idx.pks[n_keep:]
            idx.pk_sums = (keep.pk_sums[0] + len(tail), keep.pk_sums[1] + sum(tail),
                           keep.pk_sums[2] + sum(p * p for p in tail))
        else:
            idx.pk_sums = (len(idx.pks), sum(idx.pks), sum(p * p for p in idx.pks))
        if not idx.pks:
            return idx
        same_kernel = (keep is not None and keep.stack is not None and keep.gamma == idx.gamma
                       and np.array_equal(keep.scales, idx.scales))
        appended = only_new = same_kernel and grown
        if appended:
            idx._append(keep, points)
        else:
            idx._assemble(keep if same_kernel else None, points)
        st, counts = idx.stack, idx.stack.counts
        if np.all(st.B >= 0):  # (always so for published specs: simplex weights)
            idx._build_balls(counts, keep if same_kernel else None, appended)
        if len(idx.pks) >= idx.coarse_min:
            appended = idx._build_sketches(counts, keep if same_kernel else None, appended)
            idx.stack.prepare_row_index()  # now, not by the first search
            # the sketch's error is a property of its features: re-measured when they change
            idx.sketch_err = keep.sketch_err if appended else idx._sketch_error()
        idx.baseline = idx._baseline_mmd(keep if same_kernel else None, only_new)
        return idx

    def _append(self, keep: "IslandIndex", points: dict) -> None:
        """``keep``'s stack (same kernel, same learnwares first) extended by the new ones
        (:meth:`EmbeddingStack.extended`: amortised O(new rows)); nothing is recomputed for the
        old ones (centre kept)."""
        old = keep.stack
        new_pks = self.pks[len(keep.pks):]
        zs = [points[pk][0] for pk in new_pks]
        bs = [points[pk][1] for pk in new_pks]
        cnt = np.array([len(b) for b in bs])
        Z_new, B_new = np.concatenate(zs), np.concatenate(bs)
        if len(new_pks) <= 4:  # the usual refresh: one or two publishes
            self_inner = [embedding_inner(z, b, z, b, self.gamma, self.scales)
                          for z, b in zip(zs, bs)]
        else:
            self_inner = EmbeddingStack(Z_new, B_new, np.repeat(np.arange(len(new_pks)), cnt),
                                        self.gamma, self.scales).self_inner
        self.stack = old.extended(Z_new, B_new, cnt, self_inner)
        if self.stack.grew_in_place_from(old):  # old views hold
            self._point_views(keep.points)
        else:  # a new buffer: views into it (the old one can then be freed)
            self._point_views()

    def _assemble(self, keep: "IslandIndex | None", points: dict) -> None:
        """The stack of every learnware; ``keep`` (same kernel): its self inner products."""
        zs = [points[pk][0] for pk in self.pks]
        bs = [points[pk][1] for pk in self.pks]
        counts = np.array([len(b) for b in bs])
        owner = np.repeat(np.arange(len(self.pks)), counts)
        self_inner = None
        if keep is not None:
            # unchanged kernel: reuse the inner products of learnwares already indexed
            # (a publish computes only the new learnware's own inner product)
            known = dict(zip(keep.pks, keep.stack.self_inner))
            self_inner = np.array([known.get(pk, np.nan) for pk in self.pks])
            new = np.flatnonzero(np.isnan(self_inner))
            if new.size:
                sub = EmbeddingStack(np.concatenate([zs[i] for i in new]),
                                     np.concatenate([bs[i] for i in new]),
                                     np.repeat(np.arange(new.size), counts[new]), self.gamma,
                                     self.scales)
                self_inner[new] = sub.self_inner
        Z, B = np.concatenate(zs), np.concatenate(bs)
        del zs, bs
        self.stack = EmbeddingStack(Z, B, owner, self.gamma, self.scales, self_inner=self_inner)
        self._point_views()

    def _point_views(self, held: dict | None = None) -> None:
        """``points[pk]``: views of the stack's rows (one copy of the points in memory);
        ``held``: views still valid for the first learnwares, only the others are made."""
        held = held or {}
        first = len(held)
        counts = self.stack.counts
        ends = np.cumsum(counts)
        Z, B = self.stack.points, self.stack.B
        self.points = dict(held)
        self.points.update((pk, (Z[s:e], B[s:e])) for pk, s, e in
                           zip(self.pks[first:], (ends - counts)[first:], ends[first:]))

    def _build_balls(self, counts: np.ndarray, keep: "IslandIndex | None",
                     appended: bool = False) -> None:
        """Each learnware's enclosing ball (scaled units); reuse those of ``keep`` (same
        kernel; ``appended``: its learnwares come first) and compute the new ones in chunks of
        embeddings (memory stays flat)."""
        n, d = len(self.pks), self.stack.n_features
        src, r, w = np.empty((n, d)), np.empty(n), np.empty(n)
        appended = appended and keep.ball_src is not None
        if appended:  # keep's learnwares first: their balls as they are
            n_old = len(keep.pks)
            src[:n_old], r[:n_old], w[:n_old] = keep.ball_src, keep.ball_r, keep.ball_w
            new = np.arange(n_old, n)
        else:
            known = ({pk: i for i, pk in enumerate(keep.pks)}
                     if keep is not None and keep.ball_src is not None else {})
            reuse = np.array([known.get(pk, -1) for pk in self.pks], dtype=np.intp)
            old = np.flatnonzero(reuse >= 0)
            if old.size:
                src[old], r[old], w[old] = (keep.ball_src[reuse[old]], keep.ball_r[reuse[old]],
                                            keep.ball_w[reuse[old]])
            new = np.flatnonzero(reuse < 0)
        per = max(1, (1 << 20) // max(1, int(counts.max())))  # embeddings per chunk
        for s in range(0, new.size, per):
            part = new[s:s + per]
            Zs = np.concatenate([self.points[self.pks[i]][0] for i in part]) / self.scales
            Bp = np.concatenate([self.points[self.pks[i]][1] for i in part])
            src[part], r[part], w[part] = balls(Zs, Bp, counts[part])
        self.ball_src, self.ball_r, self.ball_w = src, r, w
        # an extended stack keeps its centre: only the new balls are re-centred
        self.ball_C = (np.concatenate([keep.ball_C, src[n_old:] - self.stack.center])
                       if appended else src - self.stack.center)

    def _build_sketches(self, counts: np.ndarray, keep: "IslandIndex | None",
                        appended: bool = False) -> bool:
        """Sketch every learnware; reuse the rows of ``keep`` (same kernel) when it has them.
        With ``appended`` (keep's learnwares first, unchanged) only the new ones are sketched,
        into spare rows of keep's buffer when no other refresh has used them; returns whether
        that happened."""
        n = len(self.pks)
        reuse = None
        if (keep is not None and keep.sketch is not None and keep.S is not None
                and keep.sketch.matches(self.gamma, self.scales, self.sketch_dim,
                                        self.sketch_seed)):
            self.sketch = keep.sketch  # same features (and reference point) as the kept rows
            n_old = len(keep.pks)
            if appended:
                Z = np.concatenate([self.points[pk][0] for pk in self.pks[n_old:]])
                B = np.concatenate([self.points[pk][1] for pk in self.pks[n_old:]])
                rows = self.sketch.embed(Z, B, counts[n_old:])
                buf = keep._S_buf
                with _GROW_LOCK:
                    in_place = (buf is not None and buf["filled"] == n_old
                                and buf["S"].shape[0] >= n)
                    if in_place:
                        buf["filled"] = n
                if not in_place:
                    buf = {"S": np.empty((n + max(64, n // 4), self.sketch_dim), np.float32),
                           "filled": n}
                    buf["S"][:n_old] = keep.S
                buf["S"][n_old:n] = rows
                self._S_buf, self.S = buf, buf["S"][:n]
                return True
            known = {pk: i for i, pk in enumerate(keep.pks)}
            reuse = np.array([known.get(pk, -1) for pk in self.pks])
        else:
            center = self.stack.points.mean(axis=0)  # a reference point: small float32 arguments
            self.sketch = RFFSketch(self.gamma, self.scales, self.stack.n_features,
                                    self.sketch_dim, self.sketch_seed, center=center)
        S = np.empty((n, self.sketch_dim), dtype=np.float32)
        new = np.arange(n) if reuse is None else np.flatnonzero(reuse < 0)
        if reuse is not None:
            old = np.flatnonzero(reuse >= 0)
            S[old] = keep.S[reuse[old]]
        if new.size:
            if new.size == n:
                S[:] = self.sketch.embed(self.stack.points, self.stack.B, counts)
            else:
                Z = np.concatenate([self.points[self.pks[i]][0] for i in new])
                B = np.concatenate([self.points[self.pks[i]][1] for i in new])
                S[new] = self.sketch.embed(Z, B, counts[new])
        self.S = S
        self._S_buf = {"S": S, "filled": n}
        return False

    def _sketch_error(self, pairs: int = 400, seed: int = 1) -> float:
        """Root mean square error of ``S_i . S_j`` against the exact ``<mu_i, mu_j>`` over random
        pairs of learnwares (mostly far apart, where the estimate is noisiest)."""
        n = len(self.ids)
        if n < 2 or self.S is None:
            return 0.0
        rng = np.random.default_rng(seed)
        errs = []
        for i in rng.choice(n, size=min(n, max(1, pairs // 10)), replace=False):
            j = rng.choice(n - 1, size=min(n - 1, 10), replace=False)
            j = j + (j >= i)
            z, b = self.points[self.pks[i]]
            mmd = self._exact_mmd(z, b, j)
            cross = 0.5 * (self.stack.self_inner[i] + self.stack.self_inner[j] - mmd)
            est = self.S[j].astype(np.float64) @ self.S[i].astype(np.float64)
            errs.append(est - cross)
        return float(np.sqrt(np.mean(np.concatenate(errs) ** 2)))

    def __len__(self) -> int:
        return len(self.ids)

    #: learnwares in the baseline's sample (all pairs among them: 435 pairs for 30)
    BASELINE_SAMPLE = 30

    @staticmethod
    def _sample_hash(pks) -> np.ndarray:
        pks = np.asarray(pks, dtype=np.uint64)
        return (pks * np.uint64(0x9E3779B97F4A7C15)) ^ (pks >> np.uint64(7))  # fixed mixing

    def _baseline_mmd(self, keep: "IslandIndex | None" = None,
                      appended: bool = False) -> float | None:
        """Median squared MMD between two different learnwares of the island: the scale of
        'a different task' that makes a requirement's MMD readable in absolute terms.

        Over all pairs of a sample of ``BASELINE_SAMPLE`` learnwares chosen by a fixed hash
        of their ids, so the figure depends only on the island's current learnwares and
        kernel (every worker computes the same one) and a publish rarely changes the sample
        (the chance is BASELINE_SAMPLE / N); pair values already known under this kernel
        (``keep``'s ``pair_mmd``, same kernel) are reused, so a refresh costs ~nothing."""
        n = len(self.ids)
        self.pair_mmd = {}
        if n < 2:
            return None
        if (appended and len(keep.baseline_sample) == self.BASELINE_SAMPLE
                and self._sample_hash(self.pks[len(keep.pks):]).min()
                > self._sample_hash(keep.baseline_sample).max()):
            # only learnwares added, none of them hashes into the full sample: it is unchanged
            self.baseline_sample, self.pair_mmd = keep.baseline_sample, keep.pair_mmd
            return keep.baseline
        h = self._sample_hash(self.pks)
        sample = np.sort(np.argsort(h, kind="stable")[: min(n, self.BASELINE_SAMPLE)])
        self.baseline_sample = tuple(self.pks[i] for i in sample)
        if keep is not None and keep.baseline_sample == self.baseline_sample:
            self.pair_mmd = keep.pair_mmd  # same learnwares, same kernel: same figure
            return keep.baseline
        known = keep.pair_mmd if keep is not None else {}
        vals = []
        for a, i in enumerate(sample[:-1]):
            others = sample[a + 1:]
            keys = [(self.pks[i], self.pks[j]) for j in others]
            missing = [j for j, key in zip(others, keys) if key not in known]
            if missing:
                z, b = self.points[self.pks[i]]
                for j, v in zip(missing, self._exact_mmd(z, b, np.array(missing))):
                    self.pair_mmd[(self.pks[i], self.pks[j])] = float(v)
            for key in keys:
                v = self.pair_mmd.get(key, known.get(key))
                self.pair_mmd[key] = v
                vals.append(v)
        v = float(np.median(vals))
        return v if v > 0 else None

    def requirement_self(self, z: np.ndarray, b: np.ndarray) -> float:
        """The requirement's own ``<mu_q, mu_q>``: k_q^2 kernel values, the one part of a search
        that grows with the square of the requirement's size. A search computes it once and
        hands it to :meth:`rank` and :meth:`mixture`."""
        zc, bq = self.stack.centred_query(z, b)
        return embedding_inner(zc, bq, zc, bq, self.gamma)  # already scaled and centred

    def _exact_mmd(self, z: np.ndarray, b: np.ndarray, idx: np.ndarray,
                   q_self: float | None = None) -> np.ndarray:
        """Squared MMD from (z, b) to the learnwares ``idx`` only, with the precision of
        :meth:`mmd_all` (float32 kernel blocks of "augmented" rows, sums in float64; float64
        throughout when a weight is negative)."""
        zc, bq = self.stack.centred_query(z, b)
        if q_self is None:
            q_self = embedding_inner(zc, bq, zc, bq, self.gamma)  # already scaled and centred
        return self._mmd_of(zc, bq, q_self, idx)

    def _mmd_of(self, zc, bq, q_self, idx, with_cross: bool = False):
        idx = np.asarray(idx, dtype=np.intp).ravel()
        cross = self._cross(zc, bq, idx)
        mmd = np.maximum(q_self + self.stack.self_inner[idx] - 2.0 * cross, 0.0)
        return (mmd, cross) if with_cross else mmd

    def _cross(self, zc: np.ndarray, bq: np.ndarray, idx) -> np.ndarray:
        """``<mu_q, mu_i>`` for the learnwares ``idx``; ``zc`` already scaled and centred."""
        st = self.stack
        idx = np.asarray(idx, dtype=np.intp).ravel()
        rows, pos = st.rows_of(idx)
        if rows.size == 0:
            return np.zeros(idx.size)
        if np.all(bq >= 0) and (self.ball_C is not None or np.all(st.B[rows] >= 0)):
            keep = bq > 0
            Q = augmented_cols(zc[keep], self.gamma, np.log(bq[keep]))
            A = st.prepared_augmented_rows(rows)  # small islands: a gather
            if A is None:
                w = st.B[rows]
                logw = np.full(w.shape, -1.0e4)  # exp() of it is exactly 0
                logw[w > 0] = np.log(w[w > 0])
                A = augmented_rows(st.centred_rows(rows), self.gamma, logw)
            G = A @ Q
            np.exp(G, out=G)
            return np.bincount(pos, weights=G @ np.ones(G.shape[1], dtype=np.float32),
                               minlength=idx.size)
        return st.cross_centred(zc, bq, idx, "double")

    def mmd_all(self, z: np.ndarray, b: np.ndarray, q_self: float | None = None) -> np.ndarray:
        return self.stack.mmd2_to(z, b, q_self=q_self)

    def coarse_mmd(self, z: np.ndarray, b: np.ndarray,
                   q_self: float | None = None) -> np.ndarray:
        """Sketch estimate of the squared MMD to every learnware (needs the sketches): exact
        self inner products and the sketch's estimate of the cross term, ``|s_q|^2`` replaced by
        the requirement's exact ``<mu_q, mu_q>`` too (only the cross term is estimated)."""
        s = self.sketch.embed_one(z, b)
        if q_self is None:
            q_self = self.requirement_self(z, b)
        return coarse_mmd(q_self, self.stack.self_inner, self.S, s)

    def rank(self, z: np.ndarray, b: np.ndarray, top: int = 10,
             candidates: int | None = None, *, widen: bool = True, prune: bool = True,
             with_cross: bool = False, q_self: float | None = None):
        """The ``top`` best learnwares for the requirement (z, b): ``(indices, squared MMD)``,
        sorted by the MMD (ties to the lower index), fewer when the island is smaller.

        1. Exact pruning (``prune``, non-negative weights): ball bounds
           (:mod:`market_server.bounds`) give a lower bound on every learnware's MMD in
           ``O(N k_q)``; the exact MMD is evaluated in order of the bound until no bound is below
           the ``top``-th best exact value. The answer is the exact ranking's head; it is
           returned whenever the learnwares left to evaluate are at most half the island (small
           islands) or ``exact_budget`` (islands with sketches).
        2. Otherwise, below ``coarse_min`` learnwares: the MMD to every learnware (float32
           kernel blocks).
        3. Otherwise the sketch picks ``candidates`` (default ``max(200, 20 * top)``) among the
           learnwares the bounds did not exclude, widened (``widen``) to all whose estimate is
           within the sketch's noise of the top-th best estimate (at most ``wide`` times as
           many); their exact MMD (same precision as :meth:`mmd_all`) re-ranks them. Nothing is
           ``O(N k)`` per query on this path.

        ``with_cross``: also return the requirement's inner products with those learnwares
        (what :meth:`mixture` needs), ``(indices, squared MMD, inner products)``. ``q_self``:
        the requirement's :meth:`requirement_self`, when the caller has it."""
        if q_self is None:
            q_self = self.requirement_self(z, b)
        out = self._rank(z, b, top, candidates, widen, prune, q_self)
        if not with_cross:
            return out[:2]
        if out[2] is None:
            zc, bq = self.stack.centred_query(z, b)
            return out[0], out[1], self._cross(zc, bq, out[0])
        return out

    def _rank(self, z, b, top, candidates, widen, prune, q_self):
        n = len(self.ids)
        top = min(n, max(1, int(top)))
        if n == 0:
            return np.zeros(0, dtype=np.intp), np.zeros(0), np.zeros(0)
        lower = threshold = None
        if prune and self.ball_C is not None and np.all(np.asarray(b) >= 0):
            lower, threshold, done = self._pruned(z, b, top, q_self)
            if done is not None:
                return done
        if n < self.coarse_min or self.S is None:
            mmd = self.mmd_all(z, b, q_self)
            order = np.argsort(mmd, kind="stable")[:top]
            return order, mmd[order], None
        m = min(n, max(top, int(candidates) if candidates is not None else max(200, 20 * top)))
        coarse = self.coarse_mmd(z, b, q_self)
        if not np.isfinite(coarse).all():
            return np.arange(top), np.full(top, np.nan), None  # the caller refuses non-finite
        if lower is not None:
            coarse[lower > threshold] = np.inf  # provably outside the top: never a candidate
        # Candidates: the best m by the sketch, widened to every learnware within the sketch's
        # noise of the top-th best (learnware_core.ranking: the private-search client's too)
        cand = coarse_candidates(coarse, top, m, sketch_err=self.sketch_err,
                                 margin_sigmas=self.margin_sigmas, wide=self.wide, widen=widen)
        exact = self._exact_mmd(z, b, cand, q_self)
        order = np.argsort(exact, kind="stable")[:top]
        return cand[order], exact[order], None

    #: squared-MMD slack of the pruning test: covers the float32 error of the exact values
    PRUNE_TOL = 1e-5

    def _pruned(self, z, b, top, q_self):
        """Exact top by bound-ordered evaluation: ``(lower bounds, threshold, result or None)``.

        The result is None when too many learnwares survive the bounds for an exact answer to
        pay off; the caller then uses ``lower > threshold`` to exclude learnwares for sure."""
        n, st = len(self.ids), self.stack
        zc, bq = st.centred_query(z, b)
        # Two levels: the requirement's own ball against every learnware's (one kernel value
        # each) excludes the learnwares that cannot make the top whatever the details; the
        # point-by-ball bound (one value per requirement point) sharpens the rest.
        lo0, up0 = cross_bounds_of_balls(zc, bq, self.ball_C, self.ball_r, self.ball_w,
                                         self.gamma)
        lower = q_self + st.self_inner - 2.0 * up0
        upper = q_self + st.self_inner - 2.0 * lo0
        if not (np.isfinite(lower).all() and np.isfinite(upper).all()):
            return None, None, None
        t0 = float(np.partition(upper, top - 1)[top - 1]) + self.PRUNE_TOL
        alive = np.flatnonzero(lower <= t0)
        fine = cross_upper(zc, bq, self.ball_C[alive], self.ball_r[alive], self.ball_w[alive],
                           self.gamma)
        lower[alive] = np.maximum(lower[alive], q_self + st.self_inner[alive] - 2.0 * fine)
        if not np.isfinite(lower).all():
            return None, None, None
        # (alive holds at least the top learnwares by the upper bound, so at least ``top``)
        first = min(alive.size, max(2 * top, 16))
        idx0 = (alive[np.argpartition(lower[alive], first - 1)[:first]] if first < alive.size
                else alive)
        ex0, cr0 = self._mmd_of(zc, bq, q_self, idx0, with_cross=True)
        threshold = float(np.partition(ex0, top - 1)[top - 1]) + self.PRUNE_TOL
        mask = lower <= threshold
        mask[idx0] = False
        rest = np.flatnonzero(mask)
        small = n < self.coarse_min or self.S is None
        if rest.size > (n // 2 if small else self.exact_budget):
            return lower, threshold, None
        idx = np.concatenate([idx0, rest])
        mmd, cross = ex0, cr0
        if rest.size:
            ex1, cr1 = self._mmd_of(zc, bq, q_self, rest, with_cross=True)
            mmd, cross = np.concatenate([ex0, ex1]), np.concatenate([cr0, cr1])
        order = np.lexsort((idx, mmd))[:top]
        return lower, threshold, (idx[order], mmd[order], cross[order])

    def fit_label(self, mmd: float) -> tuple[float, str]:
        """Absolute fit: MMD relative to the island's typical between-learnware MMD."""
        return fit_label(mmd, self.baseline)

    #: parsimony of the recommended mixture: a learnware joins it only if it lowers the
    #: mixture's squared MMD by at least ``MIXTURE_RTOL`` of it and takes at least
    #: ``MIXTURE_MIN_WEIGHT`` of the weight; the full QP runs only when the Frank-Wolfe gap says
    #: a mixture of the candidates could do better by that fraction. (Without them, far
    #: learnwares join with weights ~1e-3 that shave a fraction of a percent off the MMD and
    #: only add models for the user to download and run.)
    MIXTURE_RTOL = MIXTURE_RTOL
    MIXTURE_MIN_WEIGHT = MIXTURE_MIN_WEIGHT

    def mixture(self, z: np.ndarray, b: np.ndarray, single: np.ndarray, *, max_size: int = 5,
                candidates: int = 12, among: np.ndarray | None = None,
                cross: np.ndarray | None = None, q_self: float | None = None):
        """Sparse simplex mixture closest to the requirement: (indices, weights, mmd).

        ``single``: squared MMD to every learnware, or, with ``among`` (learnware indices), to
        those learnwares only (e.g. the candidates of :meth:`rank`); ``cross``: the
        requirement's inner products with the same learnwares, when known (``rank`` gives them);
        ``q_self``: the requirement's :meth:`requirement_self`, when known.

        Greedy forward selection over the best ``candidates`` singles first (exact line search
        for every candidate at once, then the QP on the chosen set, warm-started); the Gram
        matrix is computed a column at a time as learnwares are chosen, and a learnware is kept
        only when it lowers the squared MMD by ``MIXTURE_RTOL`` of it and takes at least
        ``MIXTURE_MIN_WEIGHT``. Then, only if greedy filled all ``max_size`` places and the
        Frank-Wolfe gap of its mixture over all candidates says a mixture of them could be
        better by more than ``MIXTURE_RTOL``, the full QP over the candidates, pruned to
        ``max_size`` and re-solved; it replaces the greedy answer when it is better by that
        fraction too."""
        n = len(self.ids)
        if n == 0 or len(single) == 0:
            return None
        pos = np.argsort(single, kind="stable")[: min(len(single), candidates)]
        cand = pos if among is None else np.asarray(among, dtype=np.intp)[pos]
        zc, bq = self.stack.centred_query(z, b)
        c = self._cross(zc, bq, cand) if cross is None else np.asarray(cross, float)[pos]
        r = embedding_inner(zc, bq, zc, bq, self.gamma) if q_self is None else float(q_self)
        lazy = LazyGram(self.stack, cand)
        G, need = lazy.G, lazy.need

        keep, w_a, v_a = sparse_mixture(G, need, c, r, max_size, rtol=self.MIXTURE_RTOL,
                                        min_weight=self.MIXTURE_MIN_WEIGHT)
        return cand[keep], w_a, v_a
