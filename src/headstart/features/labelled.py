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
    y: np.ndarray  # (n,) int64 class indices
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
) -> LabelledFeatures:
    paths = [s.path for s in samples]
    result = extractor.extract_files(paths, progress, description, dtype)
    kept = [samples[i] for i in result.kept]
    index = {label: i for i, label in enumerate(classes)}
    y = np.array([index[s.label] for s in kept], dtype=np.int64)
    return LabelledFeatures(
        result.features, y, kept, result.skipped, result.computed, result.digests
    )
