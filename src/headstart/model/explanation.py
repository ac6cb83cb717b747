"""Why a label: heat maps that add up to the score, and where they lie on the photo.

A head on globally average-pooled maps scores a label with a weighted sum of channel means;
taking the sum inside the mean gives a map per label whose mean is that logit minus its bias:
a class activation map (Zhou et al., CVPR 2016), exact for linear heads. Pooled stage features
add one map per stage, each brought to the finest grid by repeating cells (which keeps its
mean) before they are summed. For heads that are not linear (MLP, linear+imagenet) the weights
are the logit's gradient with respect to the pooled features (Grad-CAM's weights, Selvaraju et
al., ICCV 2017), in closed form so that the ONNX export computes the same maps. A fine-tuned
backbone's maps are its own: the same identity holds on the tuned network.

Maps are in calibrated logit units (divided by the temperature): positive where the photo
speaks for the label, negative where it speaks against it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from headstart.backbones.preprocessing import Preprocessing
from headstart.data.images import decode_rgb
from headstart.data.locations import ImagePath, read_file
from headstart.errors import HeadstartError

# (N, H, W, 3) uint8 network inputs -> probabilities (N, K) and heat maps (N, K, h, w)
RunBatch = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]
BATCH = 16


@dataclass(frozen=True)
class Neighbour:
    """A training photo close to the explained one in the model's feature space."""

    path: str
    label: str
    similarity: float  # cosine similarity of the features the unknown-image score compares


@dataclass(frozen=True)
class Explanation:
    """One photo's heat map for one label, and the part of the photo the model saw."""

    path: ImagePath
    label: str | None = None
    probability: float = 0.0
    heatmap: np.ndarray | None = None  # (h, w) float32 over the network's input
    box: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)  # seen region, photo pixels
    photo_size: tuple[int, int] = (0, 0)  # (width, height), upright (EXIF applied)
    error: str | None = None
    neighbours: tuple[Neighbour, ...] = ()

    def at_photo_size(self) -> np.ndarray:
        """The map as a float32 (height, width) array over the upright photo, bilinearly
        resized onto the region the model sees; NaN outside it."""
        return self.at_size(*self.photo_size)

    def at_size(self, width: int, height: int) -> np.ndarray:
        """The map over the photo shown at (width, height) pixels; NaN outside the region
        the model sees."""
        if self.heatmap is None:
            raise HeadstartError(f"{self.path}: no heat map ({self.error})")
        x_scale, y_scale = width / self.photo_size[0], height / self.photo_size[1]
        out = np.full((height, width), np.nan, np.float32)
        box = self.box
        left, top = round(box[0] * x_scale), round(box[1] * y_scale)
        right, bottom = round(box[2] * x_scale), round(box[3] * y_scale)
        left, top = max(left, 0), max(top, 0)
        right, bottom = min(right, width), min(bottom, height)
        if right > left and bottom > top:
            resized = Image.fromarray(self.heatmap.astype(np.float32), mode="F").resize(
                (right - left, bottom - top), Image.Resampling.BILINEAR
            )
            out[top:bottom, left:right] = np.asarray(resized, np.float32)
        return out


def explain_files(
    paths: Sequence[ImagePath],
    preprocessing: Preprocessing,
    labels: list[str],
    run_batch: RunBatch,
    label: str | None = None,
) -> list[Explanation]:
    """The map of `label` (else each photo's top label) for each file, in order; a file that
    cannot be read gets an explanation with the reason as its error."""
    if label is not None and label not in labels:
        raise HeadstartError(f"label {label!r} is not one of the model's: {labels}")
    explained: list[Explanation] = []
    for start in range(0, len(paths), BATCH):
        batch = paths[start : start + BATCH]
        explained += _explain_batch(batch, preprocessing, labels, run_batch, label)
    return explained


def _explain_batch(paths, preprocessing, labels, run_batch, label) -> list[Explanation]:
    seen = [_seen(path, preprocessing) for path in paths]
    readable = [s.pixels for s in seen if s.pixels is not None]
    if not readable:
        return [s.explanation for s in seen]
    probabilities, maps = run_batch(np.stack(readable))
    results = iter(range(len(readable)))
    explained = []
    for item in seen:
        if item.error is not None:
            explained.append(item.explanation)
            continue
        row = next(results)
        index = labels.index(label) if label is not None else int(np.argmax(probabilities[row]))
        explained.append(
            Explanation(
                item.explanation.path,
                labels[index],
                float(probabilities[row, index]),
                np.asarray(maps[row, index], np.float32),
                item.explanation.box,
                item.explanation.photo_size,
            )
        )
    return explained


@dataclass(frozen=True)
class _Seen:
    explanation: Explanation  # path, box and size, or the error
    pixels: np.ndarray | None = None

    @property
    def error(self) -> str | None:
        return self.explanation.error


def _seen(path: ImagePath, preprocessing: Preprocessing) -> _Seen:
    """The photo as the network sees it (decoded whole, so the region is in its pixels)."""
    data = read_file(path)
    if isinstance(data, str):
        return _Seen(Explanation(path, error=data))
    try:
        photo = decode_rgb(data)
    except ValueError as error:
        return _Seen(Explanation(path, error=f"not a readable image: {error}"))
    box = preprocessing.crop_box(*photo.size)
    pixels = preprocessing.pixels_from_image(photo)
    return _Seen(Explanation(path, box=box, photo_size=photo.size), pixels)


def heat_map_network(maps_module, head, config, preprocessing: Preprocessing):
    """A torch module: uint8 pixels (N, H, W, 3) in; the features, the (calibrated) logits of
    `head` (a module) and every label's heat map (N, K, h, w) out."""
    import torch
    from torch import nn
    from torch.nn import functional

    from headstart.backbones.network import PixelNormalize, as_cached
    from headstart.model.heads import logit_gradients

    class HeatMapped(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.normalize, self.maps, self.head = PixelNormalize(preprocessing), maps_module, head

        def forward(self, pixels: torch.Tensor):
            pooled, maps = self.maps.maps(self.normalize(pixels))
            if any(m.dim() != 4 for m in maps):  # tokens (a ViT), not a grid of cells
                raise HeadstartError("heat maps need a backbone whose features are maps")
            exact = torch.cat([pooled, *(m.mean((2, 3)) for m in maps[1:])], dim=1)
            features = as_cached(exact)
            logits = self.head(features)
            # each map scaled as its mean was rounded: the maps still add up to the logits
            scale = torch.where(exact == 0, torch.ones_like(exact), features / exact)
            gradients = logit_gradients(self.head, config.kind, features) * scale[:, None, :]
            grid = max((m.shape[-2], m.shape[-1]) for m in maps)
            total, start = None, 0
            for m in maps:
                width = m.shape[1]
                part = torch.einsum("nkc,nchw->nkhw", gradients[:, :, start : start + width], m)
                part = _onto(part, grid, functional)
                total = part if total is None else total + part
                start += width
            return features, logits, total

    return HeatMapped().eval()


def _onto(part, grid: tuple[int, int], functional):
    """A map brought to the finest grid: cells repeated where the sizes divide (the mean is
    kept exactly), else bilinear."""
    height, width = part.shape[-2], part.shape[-1]
    if (height, width) == grid:
        return part
    if grid[0] % height == 0 and grid[1] % width == 0:
        return functional.interpolate(part, size=grid, mode="nearest")
    return functional.interpolate(part, size=grid, mode="bilinear", align_corners=False)
