"""Decoding any common photo file into an 8-bit RGB image, the way a person would see it.

Every file is hostile until decoded: only the documented formats are opened, any failure of
any kind becomes a ValueError with a one-line reason, and memory is bounded by the input's
pixel count (limited) and the size the caller needs, never by what a header claims.
"""

from __future__ import annotations

import base64
import io
import math
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from PIL import ExifTags, Image

from headstart.data.locations import ImagePath, read_image

IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".jfif"}
)
# Pillow opens dozens of formats, some through external programs (EPS runs Ghostscript):
# only these are ever parsed (Pillow's JPEG opener also reads the MPO files phones write).
DECODED_FORMATS = ("JPEG", "PNG", "BMP", "GIF", "WEBP", "TIFF")
# Panoramas reach about 10:1; past this a file is a strip or a crafted header, not a photo.
MAX_ASPECT_RATIO = 100
# When the caller gives no limit: formats decoded at full size (PNG, WebP, ...) cost memory in
# proportion to the pixels their header claims, so they stop at 40 MP (about 160 MB decoded);
# JPEGs are decoded at a reduced scale (draft), so Pillow's own limit (89 MP) applies.
DEFAULT_MAX_PIXELS = 40_000_000
JPEG_MAX_PIXELS = Image.MAX_IMAGE_PIXELS or 89_478_485  # Pillow's default, if unset to None

# Alpha is flattened onto white: transparent product shots and logos are drawn on white pages.
_BACKGROUND = (255, 255, 255)
_ORIENTATIONS = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")

Size = tuple[int, int]


class DecodingMemoryError(ValueError):
    """The image may be fine: this process lacked the memory to decode it (a server answers
    503, not 415)."""


def declared_pixels(data: bytes) -> int:
    """The pixel count an image's header claims (nothing decoded); 0 when it has none that
    Pillow reads, since decoding will then name the problem."""
    try:
        with Image.open(io.BytesIO(data), formats=DECODED_FORMATS) as image:
            width, height = image.size
            return width * height
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException:  # a crafted header can make Pillow raise anything
        return 0


def is_image_file(path: Path) -> bool:
    """True for a visible file whose suffix names a supported image format."""
    return (
        path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".") and path.is_file()
    )


def visible_images(folder: Path) -> list[Path]:
    """The image files under `folder`, sorted, skipping hidden files and hidden folders."""
    return sorted(
        path
        for path in folder.rglob("*")
        if is_image_file(path)
        and not any(part.startswith(".") for part in path.relative_to(folder).parts)
    )


def decode_rgb(
    data: bytes,
    draft: Callable[[int, int], Size] | None = None,
    max_pixels: int | None = None,
) -> Image.Image:
    """Decode image bytes to an upright 8-bit RGB image.

    `draft` maps the stored (width, height) to the smallest size the caller needs; larger
    images are then decoded (JPEG) or shrunk (others) to no less than twice that size before
    any colour conversion, which bounds memory and time. Images over `max_pixels` (Pillow's
    limit by default) are refused before they are decoded. Raises ValueError with a one-line
    reason for anything that is not a readable image of a supported format.
    """
    try:
        with warnings.catch_warnings():
            # Pillow's warnings about damaged metadata are noise per file; a decompression-bomb
            # warning is an error: such files are refused, not decoded.
            warnings.simplefilter("ignore")
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image: Image.Image = Image.open(io.BytesIO(data), formats=DECODED_FORMATS)
            width, height = image.size
            limit = max_pixels or (
                JPEG_MAX_PIXELS if image.format == "JPEG" and draft else DEFAULT_MAX_PIXELS
            )
            if width * height > limit:
                raise ValueError(f"{width}x{height} pixels is over the limit of {limit}")
            if max(width, height) > MAX_ASPECT_RATIO * min(width, height):
                raise ValueError(
                    f"{width}x{height} pixels: a strip, not a photo (aspect ratio over "
                    f"{MAX_ASPECT_RATIO}:1)"
                )
            needed = draft(width, height) if draft is not None else None
            if needed is not None and image.format in ("JPEG", "MPO"):
                image.draft("RGB", needed)
            orientation = image.getexif().get(ExifTags.Base.Orientation, 1)
            image.load()
            if needed is not None:
                image = _shrink(image, needed)
            image = _to_rgb(image)
            if orientation in _ORIENTATIONS:
                image = image.transpose(_ORIENTATIONS[orientation])
            return image
    except (KeyboardInterrupt, SystemExit):
        raise
    except MemoryError:
        raise DecodingMemoryError("too large to decode in the memory available") from None
    except BaseException as error:  # a crafted file can make Pillow raise anything
        raise ValueError(_reason(error)) from error


def _reason(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    if text.startswith("cannot identify image file"):
        return "unknown or unsupported image format"  # Pillow's text ends in a BytesIO repr
    return text.splitlines()[0][:200]


def _shrink(image: Image.Image, needed: Size) -> Image.Image:
    """Reduce by a whole factor while the image stays at least twice the needed size."""
    width, height = image.size
    ratio = min(width / max(needed[0], 1), height / max(needed[1], 1))
    factor = math.floor(ratio / 2)
    if factor < 2:
        return image
    if image.mode in ("P", "1", "PA"):
        image = image.convert("RGBA" if _has_alpha(image) else "RGB")
    if image.mode in _SIXTEEN_BIT:  # reduce() has no 16-bit path; a box filter is the same
        size = (max(1, width // factor), max(1, height // factor))
        return image.resize(size, Image.Resampling.BOX)
    return image.reduce(factor)


def _has_alpha(image: Image.Image) -> bool:
    return image.mode == "PA" or "transparency" in image.info


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode == "RGB":
        return image
    if image.mode in _SIXTEEN_BIT:
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
    is_float = pixels.dtype.kind == "f"
    pixels = np.nan_to_num(pixels.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    peak = float(pixels.max(initial=0))
    full_scale = 1.0 if is_float and peak <= 1.0 else 65535.0 if peak > 255 else 255.0
    scaled = pixels * np.float32(255.0 / full_scale)
    return np.clip(scaled + 0.5, 0, 255).astype(np.uint8)


def thumbnail_base64(path: ImagePath, size: int) -> str:
    """A JPEG thumbnail of an image file, base64-encoded for a self-contained page.

    An image that no longer reads gives a flat grey square: a page of findings is still
    worth showing when one file has changed since.
    """
    try:
        image = decode_rgb(read_image(path), draft=lambda w, h: (size, size))
        image.thumbnail((size, size))
    except (OSError, ValueError):
        image = Image.new("RGB", (size, size), (200, 200, 200))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=80)
    return base64.b64encode(buffer.getvalue()).decode()


def typical_short_side(images: Sequence[ImagePath], sample: int = 200) -> int | None:
    """The median shorter side, in pixels, of up to `sample` images spread over `images`, read
    from their headers alone (nothing is decoded); None when none can be read."""
    step = max(1, len(images) // sample)
    sides = []
    for path in images[::step][:sample]:
        try:
            # An object is fetched whole (its header's place varies); the same images must
            # get the same size wherever they are stored.
            source = path if isinstance(path, Path) else io.BytesIO(read_image(path))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                with Image.open(source, formats=DECODED_FORMATS) as image:
                    sides.append(min(image.size))
        except Exception:  # any unreadable file is the decoder's to report, later
            continue
    return int(np.median(sides)) if sides else None
