"""Decoding any common photo file into an 8-bit RGB image, the way a person would see it."""

from __future__ import annotations

import io
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".jfif"}
)

# Alpha is flattened onto white: transparent product shots and logos are drawn on white pages.
_BACKGROUND = (255, 255, 255)


def is_image_file(path: Path) -> bool:
    """True for a visible file whose suffix names a supported image format."""
    return (
        path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".") and path.is_file()
    )


def decode_rgb(
    data: bytes,
    draft: Callable[[int, int], tuple[int, int]] | None = None,
    max_pixels: int | None = None,
) -> Image.Image:
    """Decode image bytes to an upright 8-bit RGB image.

    `draft` maps the stored (width, height) to the smallest size the caller needs; JPEGs are
    then decoded at a reduced scale, which is several times faster for large photos.
    Images over `max_pixels` (or Pillow's own limit) are refused before they are decoded.
    Raises ValueError (with Pillow's reason) for anything that is not a readable image.
    """
    try:
        with warnings.catch_warnings():
            # A decompression-bomb warning is an error here: such files are refused, not decoded.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            if max_pixels is not None and width * height > max_pixels:
                raise ValueError(f"{width}x{height} pixels is over the limit of {max_pixels}")
            if draft is not None and image.format == "JPEG":
                image.draft("RGB", draft(*image.size))
            image.load()
            image = ImageOps.exif_transpose(image)
            return _to_rgb(image)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombWarning) as error:
        raise ValueError(_reason(error)) from error
    except Image.DecompressionBombError as error:
        raise ValueError(_reason(error)) from error


def _reason(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    if text.startswith("cannot identify image file"):
        return "unknown image format"  # Pillow's text ends in the repr of our BytesIO
    return text.splitlines()[0]


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode == "RGB":
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        return Image.fromarray(_to_uint8(np.asarray(image)), "L").convert("RGB")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (*_BACKGROUND, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def _to_uint8(pixels: np.ndarray) -> np.ndarray:
    """Scale a 16-bit, 32-bit or float single-channel image to 0..255 instead of clipping it."""
    peak = float(pixels.max(initial=0))
    if pixels.dtype.kind == "f" and peak <= 1.0:
        full_scale = 1.0
    else:
        full_scale = 65535.0 if peak > 255 else 255.0
    scaled = pixels.astype(np.float64) * (255.0 / full_scale)
    return np.clip(scaled + 0.5, 0, 255).astype(np.uint8)
