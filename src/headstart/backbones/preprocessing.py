"""The eval-time resize and crop a backbone was trained with, done with Pillow alone.

The values come from the backbone's pretrained config (timm); normalisation happens inside the
network (see network.py), so this stage only produces uint8 RGB pixels.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from PIL import Image

from headstart.data.images import decode_rgb
from headstart.data.locations import ImagePath, read_file

# Augmentation crops at most 4:3 regions, so a longer side beyond 4x the short is never used.
MAX_ASPECT = 4.0
_FILTERS = {
    "bicubic": Image.Resampling.BICUBIC,
    "bilinear": Image.Resampling.BILINEAR,
    "nearest": Image.Resampling.NEAREST,
    "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX,
    "hamming": Image.Resampling.HAMMING,
}


@dataclass(frozen=True)
class Preprocessing:
    input_size: tuple[int, int]  # (height, width)
    interpolation: str
    crop_pct: float
    crop_mode: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    @classmethod
    def from_timm_config(cls, config: dict[str, Any]) -> Preprocessing:
        """Build from timm's resolved data config (input_size, interpolation, crop_pct, ...)."""
        _, height, width = config["input_size"]
        preprocessing = cls(
            input_size=(int(height), int(width)),
            interpolation=str(config.get("interpolation") or "bicubic"),
            crop_pct=float(config.get("crop_pct") or 1.0),
            crop_mode=str(config.get("crop_mode") or "center"),
            mean=_three(config["mean"]),
            std=_three(config["std"]),
        )
        preprocessing.check()
        return preprocessing

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Preprocessing:
        preprocessing = cls(
            input_size=tuple(data["input_size"]),
            interpolation=data["interpolation"],
            crop_pct=float(data["crop_pct"]),
            crop_mode=data["crop_mode"],
            mean=tuple(data["mean"]),
            std=tuple(data["std"]),
        )
        preprocessing.check()
        return preprocessing

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["input_size"] = list(self.input_size)
        data["mean"], data["std"] = list(self.mean), list(self.std)
        return data

    def check(self) -> None:
        from headstart.errors import HeadstartError

        size = self.input_size
        if not (
            isinstance(size, tuple)
            and len(size) == 2
            and all(isinstance(n, int) and not isinstance(n, bool) and 8 <= n <= 4096 for n in size)
        ):
            raise HeadstartError(f"input_size must be [height, width] in pixels, not {size!r}")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise HeadstartError("mean and std must be three numbers each, std above 0")

        if self.interpolation not in _FILTERS:
            raise HeadstartError(f"unsupported interpolation {self.interpolation!r}")
        if not 0 < self.crop_pct <= 1:
            raise HeadstartError(f"crop_pct must be in (0, 1], not {self.crop_pct}")
        if self.crop_mode not in ("center", "squash"):
            raise HeadstartError(f"unsupported crop mode {self.crop_mode!r} (center or squash)")

    def scaled_size(self, width: int, height: int) -> tuple[int, int]:
        """(width, height) after the resize and before the centre crop, as timm's eval transform."""
        out_h, out_w = self.input_size
        if self.crop_mode == "squash":
            return math.floor(out_w / self.crop_pct), math.floor(out_h / self.crop_pct)
        short = math.floor(min(out_h, out_w) / self.crop_pct)
        # torchvision's Resize(int): the short side becomes `short`, the long side is truncated.
        if width <= height:
            return short, int(short * height / width)
        return int(short * width / height), short

    def crop_box(self, width: int, height: int) -> tuple[float, float, float, float]:
        """The region of a (width, height) image that the resize and centre crop keep.

        Resizing only this region gives the same pixels as resizing the whole image and then
        cropping, with memory bounded by the output size whatever the aspect ratio.
        """
        scaled_w, scaled_h = self.scaled_size(width, height)
        out_h, out_w = self.input_size
        left, top = round((scaled_w - out_w) / 2.0), round((scaled_h - out_h) / 2.0)
        x_scale, y_scale = width / scaled_w, height / scaled_h
        return (
            left * x_scale,
            top * y_scale,
            (left + out_w) * x_scale,
            (top + out_h) * y_scale,
        )

    def pixels(self, data: bytes, max_pixels: int | None = None) -> np.ndarray:
        """Decode image bytes to the network's input: uint8 array of shape (height, width, 3)."""
        image = decode_rgb(data, draft=self.scaled_size, max_pixels=max_pixels)
        return self.pixels_from_image(image)

    def resized(self, image: Image.Image) -> Image.Image:
        """The image resized as before the centre crop; its long side is first cut (centred)
        to at most MAX_ASPECT times the short one, so a 1-pixel-high strip stays small."""
        box = central_box(*image.size, MAX_ASPECT)
        size = self.scaled_size(box[2] - box[0], box[3] - box[1])
        return image.resize(size, _FILTERS[self.interpolation], box=box)

    def pixels_from_image(self, image: Image.Image) -> np.ndarray:
        out_h, out_w = self.input_size
        box = self.crop_box(*image.size)
        image = image.resize((out_w, out_h), _FILTERS[self.interpolation], box=box)
        return np.asarray(image, dtype=np.uint8)


def _three(values: Any) -> tuple[float, float, float]:
    """One number per colour channel."""
    red, green, blue = (float(v) for v in values)
    return red, green, blue


def central_box(width: int, height: int, max_aspect: float) -> tuple[int, int, int, int]:
    """The centred region of an image whose long side is at most `max_aspect` x the short."""
    keep_w = min(width, math.ceil(height * max_aspect))
    keep_h = min(height, math.ceil(width * max_aspect))
    left, top = (width - keep_w) // 2, (height - keep_h) // 2
    return left, top, left + keep_w, top + keep_h


def pixels_or_reason(
    preprocessing: Preprocessing,
    source: bytes | ImagePath,
    max_pixels: int | None = None,
    view: Callable[[bytes, int | None], np.ndarray] | None = None,
) -> tuple[np.ndarray | None, str | None]:
    """The network input for an image (bytes or file), or why there is none: the plain one,
    or what `view(data, max_pixels)` makes of the bytes (a flipped or augmented view)."""
    data = source if isinstance(source, bytes) else read_file(source)
    if isinstance(data, str):
        return None, data
    try:
        if view is not None:
            return view(data, max_pixels), None
        return preprocessing.pixels(data, max_pixels), None
    except ValueError as error:
        return None, f"not a readable image: {error}"
    except MemoryError:
        return None, "not a readable image: too large for the memory available"
