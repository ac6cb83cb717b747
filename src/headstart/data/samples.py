"""Real sample images that ship inside an installed package, for trying headstart offline."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def write_digits(folder: Path, size: int = 64) -> int:
    """Write scikit-learn's 1,797 handwritten digits as a folder of class folders of PNGs.

    Dark ink on white paper, upscaled from 8x8; returns the number of images written.
    """
    from sklearn.datasets import load_digits

    digits = load_digits()
    folder = Path(folder)
    for index, (pixels, label) in enumerate(zip(digits.images, digits.target, strict=True)):
        ink = (255 - pixels * (255 / 16)).clip(0, 255).astype(np.uint8)
        image = Image.fromarray(ink, "L").resize((size, size), Image.Resampling.BICUBIC)
        target = folder / str(label) / f"{index:04d}.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        image.save(target)
    return len(digits.target)
