"""The picture of an island: a 2-D map of a sample of its learnwares from their MMD matrix.

Pure numerics (no store, no HTTP): which learnwares to draw (:func:`sample_pks`), the squared
MMDs between their RKMEs under the island's kernel (:func:`mmd_matrix`), classical MDS of those
distances (:func:`classical_mds`) and how faithful the 2-D picture is (:func:`stress`). The
catalogue caches the result per island and kernel version (market_server/catalogue.py).

The sample is the learnwares with the smallest sha256 of their public id: a publish changes it
by at most one learnware, and every worker draws the same one, so the cached map survives most
publishes and two pages of the same market agree.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from learnware_core.kernels import as_points, check_kernel, neg_sqdist, rows_per_block, scaled

#: learnwares drawn on the map at most
MAP_LEARNWARES = 120
#: reduced points of the sample at most (the MMD matrix costs their square in kernel values)
MAP_POINTS = 4000
#: points^2 x features of the MMD matrix at most: with many features, fewer points
MAP_WORK = 4000 * 4000 * 10


def rank_key(pk: int) -> bytes:
    """The order in which learnwares enter the sample: the sha256 of their public id."""
    return hashlib.sha256(f"lw-{pk}".encode()).digest()


def point_budget(n_features: int) -> int:
    """Reduced points the map may stack for an island of ``n_features`` features: at most
    ``MAP_POINTS``, fewer when ``points^2 x features`` would pass ``MAP_WORK``."""
    return max(1, min(MAP_POINTS, int(np.sqrt(MAP_WORK / max(1, n_features)))))


def sample_pks(pks, sizes: dict[int, int] | None = None, *, max_learnwares: int = MAP_LEARNWARES,
               max_points: int = MAP_POINTS) -> list[int]:
    """The learnwares to draw: those with the smallest sha256 of their id, at most
    ``max_learnwares`` and (when ``sizes`` gives each one's number of reduced points) at most
    ``max_points`` reduced points together. Returned in id order."""
    ranked = sorted(pks, key=rank_key)
    chosen, total = [], 0
    for pk in ranked:
        if len(chosen) >= max_learnwares:
            break
        k = sizes.get(pk, 0) if sizes else 0
        if sizes and total + k > max_points:
            continue
        chosen.append(pk)
        total += k
    return sorted(chosen)


def mmd_matrix(embeddings: list[tuple[np.ndarray, np.ndarray]], gamma: float, scales=None
               ) -> np.ndarray:
    """Squared MMDs between the RKMEs ``(z_i, beta_i)`` under ``k = exp(-gamma
    ||(x - y)/scales||^2)``: ``M_ij = <mu_i, mu_i> + <mu_j, mu_j> - 2 <mu_i, mu_j>``, clipped
    at 0. All reduced points are stacked once and the Gram matrix of the embeddings is
    accumulated block by block (memory stays flat)."""
    n = len(embeddings)
    if n == 0:
        return np.zeros((0, 0))
    Z = np.vstack([as_points(z, "z") for z, _ in embeddings])
    w = np.concatenate([np.asarray(b, dtype=np.float64).ravel() for _, b in embeddings])
    sizes = np.array([len(np.asarray(b).ravel()) for _, b in embeddings])
    if Z.shape[0] != w.shape[0] or (sizes < 1).any():
        raise ValueError("each embedding needs one weight per reduced point (at least one)")
    gamma, scales = check_kernel(gamma, scales, Z.shape[1])
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    Zs = scaled(Z, scales)
    center = Zs.mean(axis=0)
    Zc = Zs - center
    zsq = np.einsum("ij,ij->i", Zc, Zc)
    # per point p: sum_j over embedding j of beta k(z_p, z_j.)  -> (P x n)
    per_point = np.empty((Z.shape[0], n))
    step = rows_per_block(Z.shape[0])
    for s in range(0, Z.shape[0], step):
        K = neg_sqdist(Zc[s:s + step], Zc, zsq)
        K *= gamma
        np.exp(K, out=K)
        K *= w[None, :]
        per_point[s:s + step] = np.add.reduceat(K, starts, axis=1)
    G = np.add.reduceat(per_point * w[:, None], starts, axis=0)  # (n x n) inner products
    G = (G + G.T) / 2.0
    d = np.diag(G)
    M = d[:, None] + d[None, :] - 2.0 * G
    np.maximum(M, 0.0, out=M)
    np.fill_diagonal(M, 0.0)
    return M


def classical_mds(sq_dist: np.ndarray, dims: int = 2) -> np.ndarray:
    """Classical (Torgerson) MDS: coordinates whose Euclidean distances best match the given
    squared distances (double centring, top eigenvectors; negative eigenvalues, which a
    non-Euclidean input gives, count as 0). Signs are fixed so that the result is deterministic."""
    D2 = np.asarray(sq_dist, dtype=np.float64)
    n = D2.shape[0]
    if D2.shape != (n, n):
        raise ValueError("classical_mds needs a square matrix of squared distances")
    if n == 0:
        return np.zeros((0, dims))
    J = np.eye(n) - 1.0 / n
    B = -0.5 * J @ D2 @ J
    vals, vecs = np.linalg.eigh((B + B.T) / 2.0)
    order = np.argsort(vals)[::-1][:dims]
    vals, vecs = np.maximum(vals[order], 0.0), vecs[:, order]
    X = vecs * np.sqrt(vals)[None, :]
    for j in range(X.shape[1]):  # eigenvector signs are arbitrary: make the largest entry +
        i = int(np.argmax(np.abs(X[:, j])))
        if X[i, j] < 0:
            X[:, j] = -X[:, j]
    if X.shape[1] < dims:
        X = np.hstack([X, np.zeros((n, dims - X.shape[1]))])
    return X


def stress(sq_dist: np.ndarray, coords: np.ndarray) -> float:
    """Kruskal's stress-1 of the map: sqrt(sum (d_ij - e_ij)^2 / sum d_ij^2), with d the MMDs
    and e the distances drawn; 0 is a faithful picture, above ~0.2 a rough one."""
    d = np.sqrt(np.maximum(np.asarray(sq_dist, dtype=np.float64), 0.0))
    diff = coords[:, None, :] - coords[None, :, :]
    e = np.sqrt(np.einsum("ijk,ijk->ij", diff, diff))
    total = float((d ** 2).sum())
    return 0.0 if total == 0 else float(np.sqrt(((d - e) ** 2).sum() / total))


@dataclass(frozen=True)
class IslandMap:
    """A drawn island: the sampled learnwares (pks, in id order), their 2-D coordinates in
    [0, 1] (aspect kept), the stress of the picture and the median MMD between them."""

    pks: tuple[int, ...]
    xy: np.ndarray
    stress: float
    median_mmd: float
    kernel_version: int


def island_map(pks: list[int], embeddings: list[tuple[np.ndarray, np.ndarray]], gamma: float,
               scales, kernel_version: int) -> IslandMap:
    """MDS of the sampled learnwares, scaled into the unit square (centred, aspect kept)."""
    M = mmd_matrix(embeddings, gamma, scales)
    X = classical_mds(M, 2)
    s = stress(M, X) if len(pks) > 2 else 0.0
    if len(pks):
        lo, hi = X.min(axis=0), X.max(axis=0)
        span = float((hi - lo).max())
        X = (X - (lo + hi) / 2.0) / span + 0.5 if span > 0 else np.full_like(X, 0.5)
    off = M[np.triu_indices(len(pks), 1)]
    median = float(np.sqrt(np.median(off))) if off.size else 0.0
    return IslandMap(tuple(int(p) for p in pks), X, s, median, int(kernel_version))
