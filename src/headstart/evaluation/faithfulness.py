"""Whether heat maps point at what the model uses: deletion and insertion on real photos.

Deletion blanks the cells of the map's grid that the map ranks highest (a fifth of them by
default) and measures how far the predicted label's probability falls; a map that points at
the evidence makes it fall further than blanking as many cells at random. Insertion starts
from a blank input and restores those cells: the probability should rise further than with
random ones (Petsiuk et al., RISE, BMVC 2018). Blank is the backbone's mean colour, which its
normalisation turns into zeros.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from headstart.backbones.preprocessing import Preprocessing, pixels_or_reason
from headstart.data.locations import ImagePath

RunBatch = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class Faithfulness:
    """Mean change of the predicted label's probability over the photos scored."""

    photos: int
    fraction: float  # of the map's cells blanked or restored
    deletion_by_map: float  # fall when the top cells are blanked
    deletion_at_random: float  # fall when as many random cells are blanked
    insertion_by_map: float  # rise from blank when the top cells are restored
    insertion_at_random: float

    def to_dict(self) -> dict[str, float | int]:
        return dict(self.__dict__)


def measure_faithfulness(
    explain_pixels: RunBatch,
    preprocessing: Preprocessing,
    paths: Sequence[ImagePath],
    fraction: float = 0.2,
    seed: int = 0,
    batch: int = 16,
) -> Faithfulness:
    """Deletion and insertion of the map's top `fraction` of cells against random ones, for
    the readable photos of `paths` (explain_pixels: Classifier's or OnnxClassifier's)."""
    rng = np.random.default_rng(seed)
    blank = np.round(np.asarray(preprocessing.mean) * 255).astype(np.uint8)
    changes = []
    decoded = [pixels_or_reason(preprocessing, path)[0] for path in paths]
    readable = [pixels for pixels in decoded if pixels is not None]
    for start in range(0, len(readable), batch):
        pixels = np.stack(readable[start : start + batch])
        changes.append(_changes(explain_pixels, pixels, blank, fraction, rng))
    table = np.concatenate(changes) if changes else np.zeros((0, 4))
    means = table.mean(axis=0) if len(table) else np.full(4, np.nan)
    return Faithfulness(len(table), fraction, *(float(m) for m in means))


def _changes(explain_pixels, pixels, blank, fraction, rng) -> np.ndarray:
    """(N, 4): deletion by map, at random; insertion by map, at random."""
    probabilities, maps = explain_pixels(pixels)
    chosen = probabilities.argmax(axis=1)
    rows = np.arange(len(pixels))
    own_maps = maps[rows, chosen]  # (N, h, w)
    cells = own_maps[0].size
    count = max(1, round(fraction * cells))
    top = np.argsort(-own_maps.reshape(len(pixels), -1), axis=1)[:, :count]
    random = np.stack([rng.choice(cells, count, replace=False) for _ in rows])
    size = pixels.shape[1:3]
    top_masks = _masks(top, own_maps.shape[1:], size)
    random_masks = _masks(random, own_maps.shape[1:], size)
    variants = [
        np.where(top_masks[..., None], blank, pixels),
        np.where(random_masks[..., None], blank, pixels),
        np.where(top_masks[..., None], pixels, blank),
        np.where(random_masks[..., None], pixels, blank),
    ]
    blank_input = np.broadcast_to(blank, pixels.shape).astype(np.uint8)
    scored = explain_pixels(np.concatenate([*variants, blank_input]).astype(np.uint8))[0]
    n = len(pixels)
    own = [scored[i * n : (i + 1) * n][rows, chosen] for i in range(5)]
    before, empty = probabilities[rows, chosen], own[4]
    return np.stack([before - own[0], before - own[1], own[2] - empty, own[3] - empty], axis=1)


def _masks(cells: np.ndarray, grid: tuple[int, ...], size: tuple[int, ...]) -> np.ndarray:
    """Boolean (N, H, W) masks of the chosen cells of an (h, w) grid, at the input's size."""
    masks = []
    for chosen in cells:
        grid_mask = np.zeros(grid[0] * grid[1], np.uint8)
        grid_mask[chosen] = 255
        image = Image.fromarray(grid_mask.reshape(grid)).resize(
            (size[1], size[0]), Image.Resampling.NEAREST
        )
        masks.append(np.asarray(image) > 127)
    return np.stack(masks)
