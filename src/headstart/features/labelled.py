"""Features of a list of labelled samples, as the (x, y) arrays that heads train on."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.typing import DTypeLike

from headstart.data.locations import ImagePath
from headstart.data.sources import Sample
from headstart.features.extract import FeatureExtractor


@dataclass
class LabelledFeatures:
    x: np.ndarray  # (n, dim) float32, or float16 for training (features/blocks.py)
    y: np.ndarray  # (n,) int64 class indices; (n, classes) float32 of 0/1 when multi-label
    samples: list[Sample]  # the samples that have features, in the order of x
    skipped: list[tuple[ImagePath, str]]
    computed: int
    digests: list[bytes] = field(default_factory=list)  # content digest of each sample

    def without(self, positions: set[int]) -> LabelledFeatures:
        """These features less the samples at `positions`."""
        keep = [i for i in range(len(self.y)) if i not in positions]
        return LabelledFeatures(
            self.x[keep],
            self.y[keep],
            [self.samples[i] for i in keep],
            self.skipped,
            self.computed,
            [self.digests[i] for i in keep],
        )


def labelled_features(
    extractor: FeatureExtractor,
    samples: list[Sample],
    classes: list[str],
    progress: bool = False,
    description: str = "Features",
    dtype: DTypeLike = np.float32,
    multi_label: bool = False,
) -> LabelledFeatures:
    paths = [s.path for s in samples]
    result = extractor.extract_files(paths, progress, description, dtype)
    kept = [samples[i] for i in result.kept]
    y = label_array(kept, classes, multi_label)
    return LabelledFeatures(
        result.features, y, kept, result.skipped, result.computed, result.digests
    )


def class_counts(y: np.ndarray, classes: int) -> np.ndarray:
    """Photos of each class: of class indices, or of a multi-label 0/1 matrix."""
    return y.sum(axis=0).astype(np.int64) if y.ndim == 2 else np.bincount(y, minlength=classes)


def label_array(samples: list[Sample], classes: list[str], multi_label: bool) -> np.ndarray:
    """Class indices (n,), or for multi-label samples a 0/1 matrix (n, classes)."""
    index = {label: i for i, label in enumerate(classes)}
    if multi_label:
        y = np.zeros((len(samples), len(classes)), np.float32)
        for row, sample in enumerate(samples):
            y[row, [index[label] for label in sample.labels or ()]] = 1.0
        return y
    return np.array([index[s.label] for s in samples], dtype=np.int64)
