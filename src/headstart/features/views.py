"""Views of an image that features are computed for, each cached under its own fingerprint.

The plain view is the backbone's evaluation crop. Test-time augmentation averages over a
mirror and a wider crop; augmented views (a random crop, flip and colour change drawn from a
seed tied to the image's content) let a head train on augmented data at cache speed.
`pixels_or_reason` decodes a file into a view's network input; the plain view is decoded
beside the preprocessing (backbones.preprocessing), where the server and the torch-free runtime
take it from without importing this stage.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
from dataclasses import dataclass

import numpy as np

from headstart.backbones.preprocessing import Preprocessing
from headstart.backbones.preprocessing import pixels_or_reason as decode_pixels
from headstart.data.locations import ImagePath


@dataclass(frozen=True)
class View:
    """`crop_pct` None keeps the backbone's; `augment` is a level name, with `index` its draw."""

    mirror: bool = False
    crop_pct: float | None = None
    augment: str | None = None
    index: int = 0

    @property
    def is_plain(self) -> bool:
        return self == PLAIN

    def key(self) -> str:
        if self.augment is not None:
            from headstart.features.augment import AUGMENT_VERSION

            return f"augment-{self.augment}-v{AUGMENT_VERSION}-{self.index}"
        return f"crop-{self.crop_pct}-mirror-{self.mirror}"

    def fingerprint(self, backbone_fingerprint: str) -> str:
        if self.is_plain:
            return backbone_fingerprint
        text = f"{backbone_fingerprint}|{self.key()}"
        return hashlib.sha256(text.encode()).hexdigest()[:24]

    def pixels(self, preprocessing: Preprocessing, data: bytes, max_pixels: int | None = None):
        """The uint8 HWC network input for this view of the encoded image."""
        if self.augment is not None:
            return self._augmented(preprocessing, data, self.augment)
        if self.crop_pct is not None:
            preprocessing = dataclasses.replace(preprocessing, crop_pct=self.crop_pct)
        pixels = preprocessing.pixels(data, max_pixels)
        return np.ascontiguousarray(pixels[:, ::-1]) if self.mirror else pixels

    def _augmented(self, preprocessing: Preprocessing, data: bytes, level: str) -> np.ndarray:
        from headstart.features.augment import (
            augment_seeded,
            augmentation,
            derived_seed,
            image_for_augmentation,
            to_pixels,
        )

        transform = augmentation(level, preprocessing.input_size)
        if transform is None:  # level "none"
            return preprocessing.pixels(data)
        seed = derived_seed(hashlib.blake2b(data, digest_size=20).digest(), self.index)
        image = image_for_augmentation(preprocessing, data)
        return to_pixels(augment_seeded(transform, image, seed)).numpy()


PLAIN = View()
# Flip and multi-crop: the evaluation crop and the whole centre square, each with its mirror.
TTA_VIEWS = (PLAIN, View(mirror=True), View(crop_pct=1.0), View(crop_pct=1.0, mirror=True))


def augmented_views(level: str, count: int) -> list[View]:
    return [View(augment=level, index=k) for k in range(count)]


def pixels_or_reason(
    preprocessing: Preprocessing,
    source: bytes | ImagePath,
    max_pixels: int | None = None,
    view: View = PLAIN,
) -> tuple[np.ndarray | None, str | None]:
    """The network input for a view of an image (bytes or file), or why there is none."""
    return decode_pixels(
        preprocessing,
        source,
        max_pixels,
        None if view == PLAIN else functools.partial(view.pixels, preprocessing),
    )
