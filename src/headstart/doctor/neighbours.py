"""Nearest neighbours by cosine distance, in row chunks so memory stays bounded."""

from __future__ import annotations

import numpy as np

# Distances held at once, in MiB, whatever the size: scikit-learn computes them in row chunks.
_WORKING_MEMORY_MIB = 128


def unit_rows(x: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """Rows centred on the dataset's mean and scaled to length 1.

    Centring makes the cosine measure where images differ within this dataset rather than
    what all of its images share (every chest X-ray is close to every other before it).
    """
    centred = x.astype(np.float32) - mean.astype(np.float32)
    norms = np.linalg.norm(centred, axis=1, keepdims=True)
    return centred / np.maximum(norms, 1e-12)


def nearest(
    query: np.ndarray, bank: np.ndarray, k: int, *, leave_out_self: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """(distances, indices) of the k nearest rows of `bank` to each row of `query`, by
    1 - cosine. With `leave_out_self`, `query` is `bank` and no row is its own neighbour.

    scikit-learn's brute-force search: the same neighbours as the similarity matrix written
    out here before, 1.45x as fast (6,000 x 1,280 features, 2 cores: 1.24 s against 1.79 s).
    """
    from sklearn import config_context
    from sklearn.neighbors import NearestNeighbors

    k = min(k, len(bank) - leave_out_self)
    if k <= 0 or not len(query):
        return np.zeros((len(query), 0), np.float32), np.zeros((len(query), 0), np.int64)
    index = NearestNeighbors(n_neighbors=k, metric="cosine", algorithm="brute").fit(bank)
    with config_context(working_memory=_WORKING_MEMORY_MIB):
        distances, indices = index.kneighbors(None if leave_out_self else query)
    return np.maximum(distances, 0.0).astype(np.float32), indices.astype(np.int64)
