"""The market's search index arithmetic: every reduced point of an island stacked in one
prepared (centred, scaled, float32) array, with its caches.

Used only by the market (``search.py``); the kernel itself, which client and server must compute
identically, is ``learnware_core/kernels.py``. Squared MMDs from a requirement to every
stacked embedding are one chunked kernel block and a bincount; sums in float64.
"""
from __future__ import annotations

import threading

import numpy as np

from learnware_core.kernels import (BLOCK_ELEMENTS, as_points, augmented_cols, augmented_rows,
                                    check_kernel, embedding_inner, neg_sqdist, rows_per_block,
                                    safe_log, scaled)

__all__ = ["EmbeddingStack", "LazyGram", "self_inners", "mmd2_to_many", "embedding_gram",
           "cross_inner"]


class EmbeddingStack:
    """N embeddings stored row-wise under one kernel, prepared once for fast one-to-many queries.

    ``Z_stack`` (sum k_i x d, raw units), ``B_stack`` (weights), ``owner`` (the index in
    ``0..N-1`` of the embedding each row belongs to; rows need not be sorted). ``self_inner`` (each
    embedding's ``<mu_i, mu_i>``) is computed when not given. The market keeps one stack per island
    and calls :meth:`mmd2_to` per search.
    """

    def __init__(self, Z_stack, B_stack, owner, gamma, scales=None, *, self_inner=None,
                 n_embeddings: int | None = None):
        Z = as_points(Z_stack, "Z_stack")
        B = np.asarray(B_stack, dtype=np.float64).ravel()
        owner = np.asarray(owner).ravel()
        if B.shape[0] != Z.shape[0] or owner.shape[0] != Z.shape[0]:
            raise ValueError("Z_stack, B_stack and owner must have one entry per row")
        if owner.size and (owner.dtype.kind not in "iu" or owner.min() < 0):
            raise ValueError("owner must hold non-negative integer embedding indices")
        if not (np.all(np.isfinite(Z)) and np.all(np.isfinite(B))):
            raise ValueError("Z_stack and B_stack must be finite")
        self.gamma, self.scales = check_kernel(gamma, scales, Z.shape[1])
        owner = owner.astype(np.intp)
        n_emb = int(owner.max()) + 1 if owner.size else 0
        if self_inner is not None:
            n_emb = max(n_emb, len(np.ravel(self_inner)))
        if n_embeddings is not None:
            if n_embeddings < n_emb:
                raise ValueError("n_embeddings is smaller than the largest owner index")
            n_emb = int(n_embeddings)
        self.n_embeddings = n_emb
        self.n_features = Z.shape[1]
        self.owner = owner
        self.B = B
        self._Z = Z  # raw units; everything else is derived lazily
        mean = Z.mean(axis=0) if len(Z) else np.zeros(Z.shape[1])
        self.center = scaled(mean, self.scales)
        self._Zc_cache = None
        self._A32_cache = None
        self._csr = None
        if self_inner is None:
            self.self_inner = self._self_inners()
        else:
            si = np.asarray(self_inner, dtype=np.float64).ravel()
            if si.shape[0] != n_emb:
                raise ValueError(f"self_inner has {si.shape[0]} entries for {n_emb} embeddings")
            self.self_inner = si

    def extended(self, Z_new, B_new, counts_new, self_inner_new) -> "EmbeddingStack":
        """This stack with ``len(counts_new)`` embeddings appended (rows ``Z_new``, weights
        ``B_new``, embedding j owning the next ``counts_new[j]`` rows), same kernel and centre.

        Amortised O(new rows): the rows live in a buffer with spare capacity, and an extension
        writes into the spare part when no other extension of this stack has (this stack never
        reads past its own rows, so it stays valid); otherwise the buffer is copied with room
        to grow. The new stack's rows are sorted by owner, so its owner/count index is built by
        concatenation too. ``self_inner_new`` are the new embeddings' own inner products."""
        Z_new = as_points(Z_new, "Z_new")
        B_new = np.asarray(B_new, dtype=np.float64).ravel()
        counts_new = np.asarray(counts_new, dtype=np.intp).ravel()
        if Z_new.shape[1] != self.n_features or B_new.shape[0] != Z_new.shape[0] \
                or int(counts_new.sum()) != Z_new.shape[0]:
            raise ValueError("the new embeddings do not fit this stack")
        if not (np.all(np.isfinite(Z_new)) and np.all(np.isfinite(B_new))):
            raise ValueError("Z_stack and B_stack must be finite")
        M, m, n = self._Z.shape[0], Z_new.shape[0], self.n_embeddings
        owner_new = np.repeat(np.arange(n, n + counts_new.size), counts_new)
        buf = getattr(self, "_buf", None)
        with _STACK_GROW_LOCK:
            in_place = (buf is not None and buf["filled"] == M
                        and buf["Z"].shape[0] >= M + m and self._sorted)
            if in_place:
                buf["filled"] = M + m
        if not in_place:
            cap = M + m + max(64, (M + m) // 4)  # 25% room: amortised O(1), modest memory
            buf = {"Z": np.empty((cap, self.n_features)), "B": np.empty(cap),
                   "owner": np.empty(cap, dtype=np.intp), "filled": M + m}
            buf["Z"][:M], buf["B"][:M], buf["owner"][:M] = self._Z, self.B, self.owner
        buf["Z"][M:M + m], buf["B"][M:M + m], buf["owner"][M:M + m] = Z_new, B_new, owner_new
        out = object.__new__(EmbeddingStack)
        out.gamma, out.scales, out.n_features = self.gamma, self.scales, self.n_features
        out.n_embeddings = n + counts_new.size
        out._Z, out.B, out.owner = buf["Z"][:M + m], buf["B"][:M + m], buf["owner"][:M + m]
        out._buf = buf
        out.center = self.center
        out._Zc_cache = out._A32_cache = None
        out.self_inner = np.concatenate([self.self_inner,
                                         np.asarray(self_inner_new, dtype=np.float64).ravel()])
        if out.self_inner.shape[0] != out.n_embeddings:
            raise ValueError("one self inner product per new embedding is needed")
        out._sorted = self._sorted
        out._csr = None
        if self._sorted:
            counts = np.concatenate([self._csr_view()[1], counts_new])
            out._csr = (np.arange(M + m), counts,
                        np.concatenate(([0], np.cumsum(counts)[:-1])))
        return out

    @property
    def _sorted(self) -> bool:
        """Rows sorted by owner (what :meth:`extended` needs to grow in place)."""
        if "_sorted_flag" not in self.__dict__:
            self._sorted_flag = bool(np.all(self.owner[1:] >= self.owner[:-1]))
        return self._sorted_flag

    @_sorted.setter
    def _sorted(self, value: bool) -> None:
        self._sorted_flag = bool(value)

    def _zc_rows(self, rows) -> np.ndarray:
        """Centred, scaled float64 coordinates of some rows."""
        if self._Zc_cache is not None:
            return self._Zc_cache[rows]
        return scaled(self._Z[rows], self.scales) - self.center

    @property
    def _Zc(self) -> np.ndarray:
        if self._Zc_cache is None:
            self._Zc_cache = scaled(self._Z, self.scales) - self.center
        return self._Zc_cache

    @property
    def _A32(self) -> np.ndarray:
        """float32 augmented rows ``[z, 1, -gamma|z|^2 + log B]``, built in float64 chunks."""
        if self._A32_cache is None:
            M, d = self._Z.shape
            A = np.empty((M, d + 2), dtype=np.float32)
            step = max(1, 4 * BLOCK_ELEMENTS // (d + 2))
            for s in range(0, M, step):
                zc = scaled(self._Z[s:s + step], self.scales) - self.center
                A[s:s + step] = augmented_rows(zc, self.gamma, safe_log(self.B[s:s + step]))
            self._A32_cache = A
        return self._A32_cache

    @property
    def _counts(self) -> np.ndarray:
        return self._csr_view()[1]

    def _csr_view(self):
        """Rows sorted by owner, with counts and starts: gathers embeddings without a loop."""
        if self._csr is None:
            order = np.argsort(self.owner, kind="stable")
            counts = np.bincount(self.owner, minlength=self.n_embeddings)
            starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
            self._csr = (order, counts, starts)
        return self._csr

    # -- what the island index (market_server/search.py) reads and reuses
    @property
    def points(self) -> np.ndarray:
        """Every reduced point, stacked, in raw feature units (read-only use)."""
        return self._Z

    @property
    def counts(self) -> np.ndarray:
        """The number of reduced points of each embedding."""
        return self._counts

    def prepare_row_index(self) -> None:
        """Build the by-embedding row index now (so the first search does not pay for it)."""
        self._csr_view()

    def grew_in_place_from(self, other: "EmbeddingStack") -> bool:
        """Whether this stack (from ``other.extended``) shares ``other``'s row buffer, so views
        into ``other``'s rows stay valid."""
        return getattr(self, "_buf", None) is not None and self._buf is getattr(other, "_buf", None)

    def centred_query(self, z, b) -> tuple[np.ndarray, np.ndarray]:
        """A query's points scaled and centred like the stack's rows, and its weights: computed
        once per search and passed to :meth:`cross_centred`."""
        return self._query(z, b)

    def rows_of(self, idx) -> tuple[np.ndarray, np.ndarray]:
        """Row indices of embeddings ``idx`` and, for each row, its position in ``idx``."""
        return self._rows_of(idx)

    def centred_rows(self, rows) -> np.ndarray:
        """Scaled, centred float64 coordinates of some rows."""
        return self._zc_rows(rows)

    def prepared_augmented_rows(self, rows) -> np.ndarray | None:
        """The float32 augmented rows ``[z, 1, -gamma|z|^2 + log B]`` of ``rows`` when they are
        already prepared (small islands), else None (the caller builds only those it needs)."""
        return None if self._A32_cache is None else self._A32_cache[rows]

    def cross_centred(self, zc, b, idx, precision: str = "double") -> np.ndarray:
        """``<mu_query, mu_i>`` for the embeddings ``idx`` from a :meth:`centred_query`."""
        return self._cross(zc, b, idx, precision)

    # -- helpers
    def _query(self, z, b):
        z = as_points(z, "z")
        if z.shape[1] != self.n_features:
            raise ValueError(f"the query has {z.shape[1]} features, the stack {self.n_features}")
        b = np.asarray(b, dtype=np.float64).ravel()
        if b.shape[0] != z.shape[0]:
            raise ValueError("the query needs one weight per point")
        return scaled(z, self.scales) - self.center, b

    def _rows_of(self, idx) -> tuple[np.ndarray, np.ndarray]:
        """Row indices of embeddings ``idx`` and, for each row, its position in ``idx``."""
        idx = np.asarray(idx, dtype=np.intp).ravel()
        if idx.size and (idx.min() < 0 or idx.max() >= self.n_embeddings):
            raise ValueError("embedding index out of range")
        order, counts, starts = self._csr_view()
        lengths = counts[idx]
        total = int(lengths.sum())
        pos = np.repeat(np.arange(idx.size), lengths)
        first = np.repeat(starts[idx] - np.concatenate(([0], np.cumsum(lengths)[:-1])), lengths)
        rows = order[first + np.arange(total)]
        return rows, pos

    def _self_inners(self) -> np.ndarray:
        """Each embedding's <mu_i, mu_i>, batched by embedding size (no loop over embeddings)."""
        out = np.zeros(self.n_embeddings)
        sizes = np.unique(self._counts[self._counts > 0])
        for m in sizes:  # a handful of distinct sizes
            ids = np.flatnonzero(self._counts == m)
            per = max(1, BLOCK_ELEMENTS // (m * m))
            for s in range(0, ids.size, per):
                sel = ids[s:s + per]
                rows, _ = self._rows_of(sel)
                Zb = self._zc_rows(rows).reshape(sel.size, m, -1)
                Bb = self.B[rows].reshape(sel.size, m)
                sq = np.einsum("nij,nij->ni", Zb, Zb)
                G = np.matmul(Zb, Zb.transpose(0, 2, 1))
                G *= 2.0
                G -= sq[:, :, None]
                G -= sq[:, None, :]
                np.minimum(G, 0.0, out=G)
                G *= self.gamma
                np.exp(G, out=G)
                out[sel] = np.einsum("ni,nij,nj->n", Bb, G, Bb)
        return out

    def _cross_all_double(self, zc, b) -> np.ndarray:
        zsq = np.einsum("ij,ij->i", zc, zc)
        acc = np.empty(self._Zc.shape[0])
        step = rows_per_block(zc.shape[0])
        for s in range(0, self._Zc.shape[0], step):
            G = neg_sqdist(self._Zc[s:s + step], zc, zsq)
            G *= self.gamma
            np.exp(G, out=G)
            acc[s:s + step] = G @ b
        acc *= self.B
        return np.bincount(self.owner, weights=acc, minlength=self.n_embeddings)

    def _cross_all_single(self, zc, b) -> np.ndarray:
        A = self._A32
        keep = b > 0  # zero weights contribute nothing; dropping them saves columns
        Q = augmented_cols(zc[keep], self.gamma, np.log(b[keep]))
        k = Q.shape[1]
        ones = np.ones(k, dtype=np.float32)
        acc = np.empty(A.shape[0], dtype=np.float32)
        step = rows_per_block(k)
        G = np.empty((min(step, A.shape[0]), k), dtype=np.float32)
        for s in range(0, A.shape[0], step):
            e = min(s + step, A.shape[0])
            g = G[:e - s]
            np.matmul(A[s:e], Q, out=g)
            np.exp(g, out=g)
            np.matmul(g, ones, out=acc[s:e])
        return np.bincount(self.owner, weights=acc.astype(np.float64),
                           minlength=self.n_embeddings)

    # -- public
    def cross_inner(self, z, b, idx=None, *, precision: str = "double") -> np.ndarray:
        """``<mu_query, mu_i>`` for the embeddings ``idx`` (all when None)."""
        zc, b = self._query(z, b)
        return self._cross(zc, b, idx, precision)

    def _cross(self, zc, b, idx, precision):
        if idx is None:
            if precision == "single" and np.all(b >= 0) and np.all(self.B >= 0):
                return self._cross_all_single(zc, b)
            if precision not in ("single", "double"):
                raise ValueError("precision must be 'single' or 'double'")
            return self._cross_all_double(zc, b)
        rows, pos = self._rows_of(idx)
        zsq = np.einsum("ij,ij->i", zc, zc)
        G = neg_sqdist(self._zc_rows(rows), zc, zsq) if rows.size else np.zeros((0, zc.shape[0]))
        G *= self.gamma
        np.exp(G, out=G)
        return np.bincount(pos, weights=(G @ b) * self.B[rows], minlength=np.size(idx))

    def mmd2_to(self, z, b, *, precision: str = "single", q_self: float | None = None
                ) -> np.ndarray:
        """Squared MMD from the query embedding ``(z, b)`` to every embedding of the stack.
        ``q_self``: the query's own inner product, when the caller already has it."""
        zc, bq = self._query(z, b)
        if q_self is None:
            q_self = embedding_inner(zc, bq, zc, bq, self.gamma)  # already scaled and centred
        cross = self._cross(zc, bq, None, precision)
        out = q_self + self.self_inner - 2.0 * cross
        return np.maximum(out, 0.0)

    def gram(self, idx) -> np.ndarray:
        """Gram matrix ``G[a, c] = <mu_idx[a], mu_idx[c]>`` of the selected embeddings (float64).
        (:class:`LazyGram`: the same a column at a time, in float32 blocks.)"""
        idx = np.asarray(idx, dtype=np.intp).ravel()
        rows, pos = self._rows_of(idx)
        zc = self._zc_rows(rows)
        K = np.exp(self.gamma * neg_sqdist(zc, zc, np.einsum("ij,ij->i", zc, zc)))
        W = np.zeros((idx.size, rows.size))
        W[pos, np.arange(rows.size)] = self.B[rows]
        G = W @ K @ W.T
        return 0.5 * (G + G.T)


class LazyGram:
    """``G[a, c] = <mu_idx[a], mu_idx[c]>`` computed a column at a time (``need``), for a search
    that only ever looks at the columns of the learnwares it picks (greedy mixtures).

    ``G`` holds NaN where nothing was computed yet; its diagonal is the cached self inner
    products. Single precision blocks as in :meth:`EmbeddingStack.gram` (non-negative weights;
    otherwise every column is computed in double at the first call)."""

    def __init__(self, stack: "EmbeddingStack", idx):
        self.stack = stack
        self.idx = np.asarray(idx, dtype=np.intp).ravel()
        m = self.idx.size
        self.G = np.full((m, m), np.nan)
        self.G[np.diag_indices(m)] = stack.self_inner[self.idx]
        self.known = np.zeros(m, dtype=bool)
        rows, pos = stack._rows_of(self.idx)
        w = stack.B[rows]
        self._single = bool(m and np.all(w >= 0) and np.all(stack._counts[self.idx] > 0))
        if self._single:
            self._zc, self._logw = stack._zc_rows(rows), safe_log(w)
            self._A = augmented_rows(self._zc, stack.gamma, self._logw)
            self._starts = np.flatnonzero(np.r_[True, pos[1:] != pos[:-1]])
            self._ends = np.r_[self._starts[1:], rows.size]

    def need(self, cols) -> np.ndarray:
        """Make columns ``cols`` (positions in ``idx``) available; returns G."""
        cols = np.atleast_1d(np.asarray(cols, dtype=np.intp))
        cols = cols[~self.known[cols]]
        if cols.size == 0:
            return self.G
        if not self._single:
            cols = np.arange(self.idx.size)
            self.G[:] = self.stack.gram(self.idx)
        else:
            sel = np.concatenate([np.arange(self._starts[j], self._ends[j]) for j in cols])
            E = self._A @ augmented_cols(self._zc[sel], self.stack.gamma, self._logw[sel])
            np.exp(E, out=E)
            cstarts = np.r_[0, np.cumsum(self._ends[cols] - self._starts[cols])[:-1]]
            block = np.add.reduceat(np.add.reduceat(E, cstarts, axis=1, dtype=np.float64),
                                    self._starts, axis=0)
            self.G[:, cols] = block
            self.G[cols, :] = block.T
            self.G[cols, cols] = self.stack.self_inner[self.idx[cols]]
        self.known[cols] = True
        return self.G


def self_inners(Z_stack, B_stack, owner, gamma, scales=None, n_embeddings=None) -> np.ndarray:
    """Each stacked embedding's own ``<mu_i, mu_i>`` (what :func:`mmd2_to_many` needs)."""
    return EmbeddingStack(Z_stack, B_stack, owner, gamma, scales,
                          n_embeddings=n_embeddings).self_inner


_STACK_GROW_LOCK = threading.Lock()  # EmbeddingStack.extended: who may write a buffer's spare
_STACK_CACHE: list = []  # [(arrays, key, stack)], most recent last; see mmd2_to_many
_STACK_CACHE_SIZE = 2
_STACK_CACHE_LOCK = threading.Lock()


def _cached_stack(Z_stack, B_stack, owner, gamma, scales) -> EmbeddingStack:
    """The prepared stack for these very arrays, reused across calls.

    Keyed by the identity of the caller's arrays (held, so an id cannot be recycled), the kernel
    and a full-content checksum (sums: about 1 ms), so arrays edited in place are re-prepared."""
    arrays = (Z_stack, B_stack, owner)
    try:
        checksum = (float(np.sum(Z_stack)), float(np.sum(B_stack)), int(np.sum(owner)))
    except (TypeError, ValueError):
        checksum = None
    key = (gamma, None if scales is None else np.asarray(scales, dtype=np.float64).tobytes(),
           checksum)
    with _STACK_CACHE_LOCK:
        for i, (arrs, k, stack) in enumerate(_STACK_CACHE):
            if k == key and checksum is not None and all(a is b for a, b in zip(arrs, arrays)):
                _STACK_CACHE.append(_STACK_CACHE.pop(i))
                return stack
    stack = EmbeddingStack(Z_stack, B_stack, owner, gamma, scales,
                           self_inner=np.zeros(_n_emb(owner, [])))
    if checksum is not None and all(isinstance(a, np.ndarray) for a in arrays):
        with _STACK_CACHE_LOCK:
            _STACK_CACHE.append((arrays, key, stack))
            del _STACK_CACHE[:-_STACK_CACHE_SIZE]
    return stack


def mmd2_to_many(z, b, Z_stack, B_stack, owner, self_inner, gamma, scales=None, *,
                 precision: str = "single") -> np.ndarray:
    """Squared MMD from ``(z, b)`` to each of the N stacked embeddings: one chunked kernel block
    and a bincount (see :class:`EmbeddingStack`).

    The prepared (centred, float32) stack of the last two sets of arrays is kept between calls,
    so repeated searches of one island pay the preparation once.
    """
    stack = _cached_stack(Z_stack, B_stack, owner, gamma, scales)
    si = np.asarray(self_inner, dtype=np.float64).ravel()
    if si.shape[0] < stack.n_embeddings:
        raise ValueError(f"self_inner has {si.shape[0]} entries for {stack.n_embeddings} "
                         "embeddings")
    zc, bq = stack._query(z, b)
    q_self = embedding_inner(zc, bq, zc, bq, stack.gamma)
    cross = stack._cross(zc, bq, None, precision)
    if si.shape[0] > cross.shape[0]:  # trailing embeddings without rows
        cross = np.concatenate([cross, np.zeros(si.shape[0] - cross.shape[0])])
    return np.maximum(q_self + si - 2.0 * cross, 0.0)


def embedding_gram(Z_stack, B_stack, owner, idx, gamma, scales=None) -> np.ndarray:
    """Gram matrix of inner products among the stacked embeddings ``idx`` (for mixture QPs)."""
    stack = EmbeddingStack(Z_stack, B_stack, owner, gamma, scales,
                           self_inner=np.zeros(_n_emb(owner, idx)))
    return stack.gram(idx)


def cross_inner(z, b, Z_stack, B_stack, owner, idx, gamma, scales=None) -> np.ndarray:
    """``<mu_query, mu_i>`` for the stacked embeddings ``idx`` (the linear term of mixture QPs)."""
    stack = EmbeddingStack(Z_stack, B_stack, owner, gamma, scales,
                           self_inner=np.zeros(_n_emb(owner, idx)))
    return stack.cross_inner(z, b, idx)


def _n_emb(owner, idx) -> int:
    owner = np.asarray(owner)
    m = int(owner.max()) + 1 if owner.size else 0
    idx = np.asarray(idx).ravel()
    return max(m, int(idx.max()) + 1 if idx.size else 0)
