"""The eval-time resize and crop a backbone was trained with, done with Pillow alone.

The values come from the backbone's pretrained config (timm); normalisation happens inside the
network (see network.py), so this stage only produces uint8 RGB pixels.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from PIL import Image

from headstart.data.images import decode_rgb

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
            mean=tuple(float(v) for v in config["mean"]),
            std=tuple(float(v) for v in config["std"]),
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

        if self.interpolation not in _FILTERS:
            raise HeadstartError(f"unsupported interpolation {self.interpolation!r}")
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

    def pixels(self, data: bytes, max_pixels: int | None = None) -> np.ndarray:
        """Decode image bytes to the network's input: uint8 array of shape (height, width, 3)."""
        image = decode_rgb(data, draft=self.scaled_size, max_pixels=max_pixels)
        return self.pixels_from_image(image)

    def resized(self, image: Image.Image) -> Image.Image:
        """The image resized as before the centre crop."""
        return image.resize(self.scaled_size(*image.size), _FILTERS[self.interpolation])

    def pixels_from_image(self, image: Image.Image) -> np.ndarray:
        image = self.resized(image)
        width, height = image.size
        out_h, out_w = self.input_size
        left, top = round((width - out_w) / 2.0), round((height - out_h) / 2.0)
        image = image.crop((left, top, left + out_w, top + out_h))
        return np.asarray(image, dtype=np.uint8)
