"""Exact duplicates (same content digest) and near duplicates, grouped.

Two descriptors find near duplicates, each with its own threshold: backbone features catch
crops and re-encodings, a 16x16 luminance thumbnail catches resized, re-encoded and
re-shaped (squashed) copies, which move features further. A pair is near when its cosine
distance is under a ratio times the dataset's median nearest-neighbour distance in that
descriptor: a ratio rather than a fixed similarity, since how close distinct photos come
depends on the domain (distinct chest X-rays are nearer each other than resized copies of a
flower photo are to their original). bench/doctor.py measures both on planted copies and on
untouched data.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from headstart.doctor.findings import Finding, Item
from headstart.doctor.neighbours import nearest

FEATURE_RATIO = 0.25
THUMBNAIL_RATIO = 0.05
_NEIGHBOURS = 8  # candidates per image; a larger group is found through its members' links


def exact_groups(digests: list[bytes]) -> list[list[int]]:
    """Positions sharing a content digest, for every digest held by more than one image."""
    by_digest: dict[bytes, list[int]] = defaultdict(list)
    for position, digest in enumerate(digests):
        by_digest[digest].append(position)
    return [members for members in by_digest.values() if len(members) > 1]


def near_groups(
    descriptors: list[tuple[np.ndarray, float]], digests: list[bytes]
) -> tuple[list[list[int]], list[float], list[float]]:
    """(groups, their similarities, distance threshold per descriptor) of near-identical images.

    `descriptors` are (unit rows, ratio) pairs. Identical files count as one image here, so
    a group is never only copies of one file. A group's similarity is that of its least
    similar linked pair, in the descriptor that linked it; groups come most similar first.
    """
    first: dict[bytes, int] = {}
    for position, digest in enumerate(digests):
        first.setdefault(digest, position)
    distinct = np.array(sorted(first.values()), np.int64)
    if len(distinct) < 3:
        return [], [], [0.0] * len(descriptors)
    pairs: dict[tuple[int, int], float] = {}  # (i, j) in `distinct` -> best similarity
    thresholds = []
    for unit, ratio in descriptors:
        rows = unit[distinct]
        distances, indices = nearest(rows, rows, _NEIGHBOURS, leave_out_self=True)
        threshold = ratio * float(np.median(distances[:, 0]))
        thresholds.append(threshold)
        for i, j in zip(*np.nonzero(distances <= threshold), strict=True):
            pair = (int(min(i, indices[i, j])), int(max(i, indices[i, j])))
            pairs[pair] = max(pairs.get(pair, -1.0), 1.0 - float(distances[i, j]))
    groups, similarities = _linked_groups(len(distinct), pairs)
    return (
        [sorted(int(distinct[m]) for m in members) for members in groups],
        similarities,
        thresholds,
    )


def _linked_groups(
    size: int, pairs: dict[tuple[int, int], float]
) -> tuple[list[list[int]], list[float]]:
    """Images joined by any chain of near pairs, one group each (connected components), most
    similar first; a group's similarity is that of its least similar pair."""
    if not pairs:
        return [], []
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    first, second = (np.array(side) for side in zip(*pairs, strict=True))
    graph = coo_matrix((np.ones(len(pairs)), (first, second)), shape=(size, size))
    _, component = connected_components(graph, directed=False)
    similarity: dict[int, float] = {}
    for (i, _), value in pairs.items():
        similarity[component[i]] = min(similarity.get(component[i], 1.0), value)
    members: dict[int, list[int]] = defaultdict(list)
    for i in range(size):  # components in the order of their first image
        members[component[i]].append(i)
    groups = [group for group in members.values() if len(group) > 1]
    groups.sort(key=lambda group: -similarity[component[group[0]]])
    return groups, [similarity[component[group[0]]] for group in groups]


def group_issue(members: list[Item], kind: str) -> str:
    """`kind`-conflict (labels differ), -leak (splits differ) or -duplicate."""
    if len({m.label for m in members}) > 1:
        return f"{kind}-conflict"
    if len({m.split for m in members}) > 1:
        return f"{kind}-leak"
    return f"{kind}-duplicate"


def group_findings(
    groups: list[list[int]], items: list[Item], kind: str, scores: list[float], first_group: int
) -> list[Finding]:
    """Rows of issues.csv for duplicate groups: only the images a user should remove.

    Conflicting labels: every member (which label is right is the user's call). Across
    splits: every member but one in training, so excluding them ends the leak and the copies
    inside training alike. Otherwise every member but the first.
    """
    findings = []
    for number, (members, score) in enumerate(zip(groups, scores, strict=True), first_group):
        issue = group_issue([items[m] for m in members], kind)
        if issue.endswith("conflict"):
            flagged = members
            details = "labels " + ", ".join(sorted({items[m].label for m in members}))
        elif issue.endswith("leak"):
            splits = {items[m].split for m in members}
            reference = "train" if "train" in splits else items[members[0]].split
            kept = next(m for m in members if items[m].split == reference)
            flagged = [m for m in members if m != kept]
            details = f"in {', '.join(sorted(splits))}; kept {items[kept].path}"
        else:
            flagged = members[1:]
            details = f"copy of {items[members[0]].path}"
        details += f"; group of {len(members)}"
        for m in flagged:
            item = items[m]
            findings.append(
                Finding(item.path, issue, score, details, item.label, item.split, number)
            )
    return findings
