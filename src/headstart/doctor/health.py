"""Image health from the pixels: size, shape, flatness, exposure, blur and colour.

Each image's measurements are a short vector kept in the feature cache under its content
digest, like its features, so a second look decodes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from PIL import Image

from headstart.data.images import decode_rgb
from headstart.data.locations import ImagePath, read_image
from headstart.doctor.findings import Finding, Item
from headstart.features.extract import content_digest
from headstart.features.store import FeatureSource
from headstart.threads import cpu_threads

FINGERPRINT = "image-health-2"  # change it when the measurements change
_MEASURED_SIDE = 256  # blur and colour are judged near the size the network sees
# Columns of a measurement vector; then a THUMB x THUMB luminance thumbnail, squashed to a
# square, centred and scaled to length 1: resized, re-encoded and re-shaped copies keep it.
WIDTH, HEIGHT, MEAN, SPREAD, SHARPNESS, COLOUR = range(6)
THUMB = 16
COLUMNS = 6 + THUMB * THUMB

MAX_ASPECT = 4.0
FLAT_SPREAD = 3.0  # standard deviation of luminance, of 255
DARK, BRIGHT = 25.0, 230.0  # mean luminance
SHARP_ENOUGH = np.log1p(100.0)  # never blurry above a Laplacian variance of 100
GRAY_COLOUR, COLOUR_DATASET = 2.0, 8.0  # mean |chroma| of an image, median of a colour set


def measure(data: bytes) -> np.ndarray:
    """The measurement vector of one image's bytes (ValueError if it does not decode)."""
    stored: list[int] = []

    def draft(width: int, height: int) -> tuple[int, int]:
        stored.extend((width, height))
        return _MEASURED_SIDE, _MEASURED_SIDE

    image = decode_rgb(data, draft=draft)
    scale = _MEASURED_SIDE / min(image.size)
    if scale < 1:
        image = image.resize((round(image.width * scale), round(image.height * scale)))
    pixels = np.asarray(image, np.float32)
    luminance = pixels @ np.array([0.299, 0.587, 0.114], np.float32)
    laplacian = (
        luminance[:-2, 1:-1]
        + luminance[2:, 1:-1]
        + luminance[1:-1, :-2]
        + luminance[1:-1, 2:]
        - 4 * luminance[1:-1, 1:-1]
    )
    sharpness = np.log1p(float(laplacian.var())) if laplacian.size else 0.0
    chroma = np.abs(pixels - luminance[..., None]).mean()
    width, height = stored or image.size
    stats = [width, height, luminance.mean(), luminance.std(), sharpness, chroma]
    return np.concatenate([np.array(stats, np.float32), _thumbnail(luminance)])


def _thumbnail(luminance: np.ndarray) -> np.ndarray:
    small = Image.fromarray(luminance, "F").resize((THUMB, THUMB), Image.Resampling.BOX)
    centred = np.asarray(small, np.float32).ravel()
    centred = centred - centred.mean()
    return centred / max(float(np.linalg.norm(centred)), 1e-6)


def thumbnails(values: np.ndarray) -> np.ndarray:
    """The unit-length thumbnail vectors of measurements (blank images give zeros)."""
    thumbs = np.nan_to_num(values[:, 6:].astype(np.float32))
    norms = np.linalg.norm(thumbs, axis=1, keepdims=True)
    return thumbs / np.maximum(norms, 1e-6)


def measurements(
    paths: Sequence[ImagePath], digests: Sequence[bytes], cache: FeatureSource
) -> np.ndarray:
    """(n, COLUMNS) measurements of images that decoded before; NaN rows if they no longer do."""
    found = cache.get_many(FINGERPRINT, list(digests))
    missing = [i for i, d in enumerate(digests) if d not in found]
    with ThreadPoolExecutor(cpu_threads()) as pool:
        measured = pool.map(lambda i: _measure_file(paths[i], digests[i]), missing)
        # Rounded through float16 like the cache, so a first and second look agree exactly.
        fresh = {
            i: None if v is None else v.astype(np.float16).astype(np.float32)
            for i, v in zip(missing, measured, strict=True)
        }
    cache.put_many(FINGERPRINT, [(digests[i], v) for i, v in fresh.items() if v is not None])
    rows = [found[d].astype(np.float32) if d in found else fresh[i] for i, d in enumerate(digests)]
    return np.stack([r if r is not None else np.full(COLUMNS, np.nan, np.float32) for r in rows])


def _measure_file(path: ImagePath, digest: bytes) -> np.ndarray | None:
    """Measurements of the file if it still holds the content of `digest`, else None: what
    is kept under a digest must come from exactly those bytes, as with features."""
    try:
        data = read_image(path)
        return measure(data) if content_digest(data) == digest else None
    except (OSError, ValueError, MemoryError):
        return None  # vanished or undecodable since its features were read; nothing to say


def health_findings(values: np.ndarray, items: list[Item], input_size: int) -> list[Finding]:
    """Per-image health issues. Blur is judged against the dataset itself (robust z below
    -3) and an absolute floor, since X-rays are smooth and product shots sharp."""
    from scipy.stats import median_abs_deviation  # cleanlab loads it in every doctor run

    findings = []
    sharp = values[:, SHARPNESS]
    median = np.nanmedian(sharp)
    spread = float(median_abs_deviation(sharp, scale="normal", nan_policy="omit")) or 1.0
    colour_dataset = np.nanmedian(values[:, COLOUR]) >= COLOUR_DATASET
    for i, row in enumerate(values):
        if np.isnan(row[:6]).any():
            continue
        width, height = int(row[WIDTH]), int(row[HEIGHT])
        found: list[tuple[str, float, str]] = []
        if min(width, height) < input_size / 4:
            found.append(("tiny", min(width, height), f"{width}x{height} px"))
        if max(width, height) > MAX_ASPECT * min(width, height):
            ratio = max(width, height) / min(width, height)
            found.append(("extreme-aspect", ratio, f"{width}x{height} px"))
        if row[SPREAD] < FLAT_SPREAD:
            found.append(("blank", row[SPREAD], f"luminance spread {row[SPREAD]:.1f} of 255"))
        elif row[MEAN] < DARK:
            found.append(("dark", row[MEAN], f"mean luminance {row[MEAN]:.0f} of 255"))
        elif row[MEAN] > BRIGHT:
            found.append(("bright", row[MEAN], f"mean luminance {row[MEAN]:.0f} of 255"))
        z = (row[SHARPNESS] - median) / spread
        if z < -3 and row[SHARPNESS] < SHARP_ENOUGH:
            variance = float(np.expm1(row[SHARPNESS]))
            found.append(("blurry", variance, f"Laplacian variance {variance:.1f}"))
        if colour_dataset and row[COLOUR] < GRAY_COLOUR and row[SPREAD] >= FLAT_SPREAD:
            found.append(("grayscale", row[COLOUR], "no colour; most images have it"))
        findings += [
            Finding(items[i].path, issue, float(score), details, items[i].label, items[i].split)
            for issue, score, details in found
        ]
    return findings
