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
    links = _Links(len(distinct))
    pairs: dict[tuple[int, int], float] = {}  # (i, j) in `distinct` -> best similarity
    thresholds = []
    for unit, ratio in descriptors:
        rows = unit[distinct]
        distances, indices = nearest(rows, rows, _NEIGHBOURS, same=np.arange(len(distinct)))
        threshold = ratio * float(np.median(distances[:, 0]))
        thresholds.append(threshold)
        for i, j in zip(*np.nonzero(distances <= threshold), strict=True):
            pair = (min(i, indices[i, j]), max(i, indices[i, j]))
            pairs[pair] = max(pairs.get(pair, -1.0), 1.0 - float(distances[i, j]))
            links.join(int(i), int(indices[i, j]))
    similarity: dict[int, float] = {}
    for (i, _), value in pairs.items():
        root = links.root(int(i))
        similarity[root] = min(similarity.get(root, 1.0), value)
    groups = sorted(links.groups(), key=lambda members: -similarity[links.root(members[0])])
    return (
        [sorted(int(distinct[m]) for m in members) for members in groups],
        [similarity[links.root(members[0])] for members in groups],
        thresholds,
    )


class _Links:
    """Union-find: images joined by any near pair end in one group."""

    def __init__(self, size: int) -> None:
        self.parent = list(range(size))

    def root(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def join(self, a: int, b: int) -> None:
        self.parent[self.root(a)] = self.root(b)

    def groups(self) -> list[list[int]]:
        grouped: dict[int, list[int]] = defaultdict(list)
        for i in range(len(self.parent)):
            grouped[self.root(i)].append(i)
        return [members for members in grouped.values() if len(members) > 1]


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
    splits: the copies outside training, so excluding them ends the leak. Otherwise every
    member but the first.
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
            flagged = [m for m in members if items[m].split != reference]
            details = "in " + ", ".join(sorted(splits))
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
