"""What the doctor found, one row per image and issue, and the files a user fixes from."""

from __future__ import annotations

import io
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from headstart.storage import SafeCsvWriter, atomic_write_text

# Issue names as they appear in issues.csv, with what each means, in the order shown.
ISSUES = {
    "exact-conflict": "identical files under different labels",
    "exact-leak": "identical files in training and in val/test",
    "exact-duplicate": "identical files in one class and split",
    "near-conflict": "near-identical photos under different labels",
    "near-leak": "near-identical photos in training and in val/test",
    "near-duplicate": "near-identical photos in one class and split",
    "label-error": "likely mislabelled (confident learning)",
    "outlier-in-class": "far from every other image of its class",
    "far-from-training": "a val/test image unlike any training image",
    "unreadable": "not a readable image: left out of everything",
    "tiny": "much smaller than the network's input",
    "extreme-aspect": "so long and thin that the centre crop loses most of it",
    "blank": "nearly one flat colour",
    "dark": "very dark",
    "bright": "very bright",
    "blurry": "far blurrier than the rest of the dataset",
    "grayscale": "grayscale in a colour dataset",
    "class-imbalance": "the largest class has many times the images of the smallest",
}


@dataclass
class Item:
    """An examined image."""

    path: str
    label: str
    split: str


@dataclass
class Finding:
    path: str  # empty for an issue of the whole dataset
    issue: str  # a key of ISSUES
    score: float  # in the issue's own unit; the README says which
    details: str
    label: str = ""
    split: str = ""
    group: int | None = None  # duplicate group number, shared by its members
    suggested: str = ""  # the label confident learning suggests

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def issues_csv(findings: list[Finding]) -> str:
    buffer = io.StringIO()
    writer = SafeCsvWriter(buffer, lineterminator="\n")
    writer.writerow(["path", "issue", "score", "details", "label", "split", "group", "suggested"])
    for f in findings:
        group = "" if f.group is None else f.group
        row = [f.path, f.issue, f"{f.score:.6g}", f.details, f.label, f.split, group, f.suggested]
        writer.writerow(row)
    return buffer.getvalue()


def write_issues_csv(path: Path, findings: list[Finding]) -> None:
    atomic_write_text(path, issues_csv(findings))
