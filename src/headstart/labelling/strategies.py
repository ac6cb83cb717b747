"""Which unlabelled photos to label next, from their features alone.

- typical: while few photos are labelled, the most typical photo of each group that no
  labelled photo covers (TypiClust, Hacohen et al., ICML 2022): k-means into as many groups as
  labelled plus wanted photos, the largest uncovered groups first, in each the photo densest
  among its neighbours. Outliers, which a head learns little from early on, come last.
- margin over clusters: once a head can be fitted, the photos it is least sure of (smallest
  gap between its two most probable labels) among five times the wanted number, spread over
  as many k-means groups as photos wanted, so a batch is not ten views of one confusion.
- margin, random: the baselines bench/active.py measures them against.

Distances are on the features' leading principal components (cosine geometry): k-means on
10,000 photos then takes about a second.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

COMPONENTS = 64
TYPICALITY_NEIGHBOURS = 20
MIN_GROUP = 3  # smaller groups are outliers: left for last
CANDIDATES_PER_PICK = 5


@dataclass(frozen=True)
class Pick:
    index: int  # into the pool
    score: float  # typicality, or the margin (smaller: less sure)
    reason: str


def embedded(features: np.ndarray, seed: int = 0) -> np.ndarray:
    """Unit-length features projected on their leading principal components."""
    from sklearn.decomposition import PCA

    x = np.asarray(features, np.float32)
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    components = min(COMPONENTS, x.shape[0], x.shape[1])
    if len(x) < 3:  # too few photos to have directions of variance
        return x
    return PCA(components, random_state=seed).fit_transform(x).astype(np.float32)


def typical(z: np.ndarray, labelled: np.ndarray, count: int, seed: int = 0) -> list[Pick]:
    """`count` typical unlabelled photos of groups no labelled photo covers. `z`: every
    photo's embedding (pool then labelled); `labelled`: a boolean mask over its rows."""
    groups = min(len(z), int(labelled.sum()) + count)
    assignment = _kmeans(z, groups, seed)
    covered = set(assignment[labelled].tolist())
    sizes = np.bincount(assignment, minlength=groups)
    order = sorted(range(groups), key=lambda g: (g in covered, sizes[g] < MIN_GROUP, -sizes[g]))
    picks: list[Pick] = []
    taken = labelled.copy()
    for group in _cycled(order, count):
        members = np.flatnonzero((assignment == group) & ~taken)
        if not len(members):
            continue
        density = _typicality(z[assignment == group], z[members])
        best = int(members[int(np.argmax(density))])
        taken[best] = True
        state = "already covered" if group in covered else "no labelled photo covers"
        photos = f"{sizes[group]} photo" + ("s" if sizes[group] != 1 else "")
        reason = f"typical of a group of {photos} that {state}"
        picks.append(Pick(best, float(density.max()), reason))
        if len(picks) == count:
            break
    return picks


def margin_over_clusters(
    z: np.ndarray, probabilities: np.ndarray, unlabelled: np.ndarray, count: int, seed: int = 0
) -> list[Pick]:
    """The least sure unlabelled photos, one per k-means group of the most uncertain
    `CANDIDATES_PER_PICK * count`. `probabilities` are the pool's, rows as `z`'s."""
    margins = _margins(probabilities)
    pool = np.flatnonzero(unlabelled)
    candidates = pool[np.argsort(margins[pool], kind="stable")[: CANDIDATES_PER_PICK * count]]
    if len(candidates) <= count:
        return [_unsure(int(i), margins[i], probabilities[i]) for i in candidates]
    assignment = _kmeans(z[candidates], count, seed)
    picks = []
    for group in range(count):
        members = candidates[assignment == group]
        if len(members):
            best = int(members[np.argmin(margins[members])])
            picks.append(_unsure(best, margins[best], probabilities[best]))
    return sorted(picks, key=lambda pick: pick.score)


def margin(probabilities: np.ndarray, unlabelled: np.ndarray, count: int) -> list[Pick]:
    margins = _margins(probabilities)
    pool = np.flatnonzero(unlabelled)
    chosen = pool[np.argsort(margins[pool], kind="stable")[:count]]
    return [_unsure(int(i), margins[i], probabilities[i]) for i in chosen]


def at_random(unlabelled: np.ndarray, count: int, seed: int = 0) -> list[Pick]:
    pool = np.flatnonzero(unlabelled)
    chosen = np.random.default_rng(seed).choice(pool, min(count, len(pool)), replace=False)
    return [Pick(int(i), 0.0, "at random") for i in chosen]


def _unsure(index: int, gap: float, row: np.ndarray) -> Pick:
    first, second = np.argsort(-row)[:2]
    reason = f"among the least sure: {row[first]:.0%} for its label, {row[second]:.0%} the next"
    return Pick(index, float(gap), reason)


def _margins(probabilities: np.ndarray) -> np.ndarray:
    top = -np.partition(-probabilities, 1, axis=1)[:, :2]
    return top[:, 0] - top[:, 1]


def _kmeans(z: np.ndarray, groups: int, seed: int) -> np.ndarray:
    from sklearn.cluster import KMeans, MiniBatchKMeans

    groups = max(1, min(groups, len(z)))
    if len(z) > 5000:
        model = MiniBatchKMeans(groups, random_state=seed, n_init=3, batch_size=2048)
    else:
        model = KMeans(groups, random_state=seed, n_init=1)
    return model.fit_predict(z)


def _typicality(group: np.ndarray, members: np.ndarray) -> np.ndarray:
    """The inverse of the mean distance to the nearest photos of the group."""
    neighbours = min(TYPICALITY_NEIGHBOURS, len(group) - 1)
    if neighbours < 1:
        return np.ones(len(members), np.float32)
    distances = np.sqrt(np.maximum(_squared_distances(members, group), 0.0))
    nearest = np.sort(distances, axis=1)[:, 1 : neighbours + 1]  # itself is at distance 0
    return 1.0 / (nearest.mean(axis=1) + 1e-8)


def _squared_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * a).sum(1)[:, None] - 2 * a @ b.T + (b * b).sum(1)[None, :]


def _cycled(order: list[int], count: int):
    """The groups in order, then again (a group may give a second photo once all have)."""
    for _ in range(max(1, count)):
        yield from order
