"""Which images an evaluation scores, said plainly.

On the dataset a model was trained on (the same folder or listing), its held-out split; on any
other data, every image in it. Either way, images whose content is identical to a training
image are named and left out of the score unless asked to keep them: a leaked copy measures
memory, not generalisation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from headstart.data.locations import ImagePath
from headstart.data.sources import Dataset
from headstart.errors import HeadstartError
from headstart.features.extract import DIGEST_SIZE
from headstart.features.labelled import LabelledFeatures


@dataclass
class EvaluationSet:
    dataset: Dataset
    split: str  # the split scored, or "all"
    scope: str  # what was scored, in words
    labelled: LabelledFeatures
    duplicates: list[ImagePath] = field(default_factory=list)  # identical to a training image
    duplicates_kept: bool = False

    def describe(self) -> str:
        """One line: how many images were scored, of what, and what was left out."""
        text = f"scored {len(self.labelled.y):,} images: {self.scope}"
        if self.duplicates:
            verb = "kept" if self.duplicates_kept else "left out (--keep-duplicates keeps them)"
            text += f"; {len(self.duplicates):,} identical to training images, {verb}"
        if self.labelled.skipped:
            text += f"; {len(self.labelled.skipped):,} unreadable, skipped"
        return text


def choose_samples(dataset: Dataset, split: str | None, trained_on: str | None):
    """(split name, samples, scope) for `dataset`, given the model's training dataset path."""
    training = trained_on is not None and _same_path(dataset.root, Path(trained_on))
    if split is None and not training:
        scope = f"every image in {dataset.root} (not the dataset the model was trained on)"
        return "all", dataset.samples, scope
    split = split or dataset.evaluation_split()
    samples = dataset.split(split)
    if not samples:
        raise HeadstartError(f"{dataset.root}: the {split} split has no images")
    whose = "the training dataset " if training else ""
    return split, samples, f"the {split} split of {whose}{dataset.root}"


def leave_out_training_copies(
    labelled: LabelledFeatures, training_digests: set[bytes], keep: bool
) -> tuple[LabelledFeatures, list[ImagePath]]:
    positions = {i for i, digest in enumerate(labelled.digests) if digest in training_digests}
    copies = [labelled.samples[i].path for i in sorted(positions)]
    return (labelled if keep else labelled.without(positions)), copies


def digest_set(digests: np.ndarray | None) -> set[bytes]:
    """Digests stored as an (n, 20) uint8 array, as a set of bytes."""
    return set() if digests is None else {row.tobytes() for row in digests}


def digest_array(digests: list[bytes]) -> np.ndarray:
    """Digests as one (n, 20) uint8 array, for the model file."""
    return np.frombuffer(b"".join(digests), np.uint8).reshape(len(digests), DIGEST_SIZE).copy()


def _same_path(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return False
