"""Nearest neighbours by cosine distance, in row chunks so memory stays bounded."""

from __future__ import annotations

import numpy as np

_CHUNK_CELLS = 1 << 25  # similarities held at once: 128 MiB of float32, whatever the size


def unit_rows(x: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """Rows centred on the dataset's mean and scaled to length 1.

    Centring makes the cosine measure where images differ within this dataset rather than
    what all of its images share (every chest X-ray is close to every other before it).
    """
    centred = x.astype(np.float32) - mean.astype(np.float32)
    norms = np.linalg.norm(centred, axis=1, keepdims=True)
    return centred / np.maximum(norms, 1e-12)


def nearest(
    query: np.ndarray,
    bank: np.ndarray,
    k: int,
    same: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(distances, indices) of the k nearest rows of `bank` to each row of `query`.

    Rows are unit vectors; distance is 1 - cosine. `same[i]` is the bank position of query
    row i itself (or -1), left out of its own neighbours.
    """
    k = min(k, len(bank) - (same is not None))
    if k <= 0 or not len(query):
        return np.zeros((len(query), 0), np.float32), np.zeros((len(query), 0), np.int64)
    distances = np.empty((len(query), k), np.float32)
    indices = np.empty((len(query), k), np.int64)
    chunk = max(1, _CHUNK_CELLS // len(bank))
    for start in range(0, len(query), chunk):
        rows = slice(start, start + chunk)
        similarity = query[rows] @ bank.T
        if same is not None:
            own = same[rows]
            has = own >= 0
            similarity[np.flatnonzero(has), own[has]] = -np.inf
        top = np.argpartition(-similarity, k - 1, axis=1)[:, :k]
        top_similarity = np.take_along_axis(similarity, top, axis=1)
        order = np.argsort(-top_similarity, axis=1)
        indices[rows] = np.take_along_axis(top, order, axis=1)
        distances[rows] = 1.0 - np.take_along_axis(top_similarity, order, axis=1)
    return np.maximum(distances, 0.0), indices
