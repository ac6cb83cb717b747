"""Heat maps drawn over photos: what `predict --explain`, the report and the server show.

Red marks where the photo speaks for the label, blue where it speaks against it, with opacity
growing with the strength; the part of the photo the model does not see (outside the centre
crop) is greyed. A legend under the photo names the label and the scale.
"""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from headstart.data.images import decode_rgb
from headstart.data.locations import read_file
from headstart.errors import HeadstartError
from headstart.model.explanation import Explanation
from headstart.storage import atomic_write_bytes, atomic_write_text, check_output_folder

SHOWN_SIDE = 640  # the overlay's longest side, in pixels
LEGEND_HEIGHT = 44
MIN_WIDTH = 360  # room for the legend
NEIGHBOUR_SIDE = 96  # the nearest training photos' thumbnails
NEIGHBOUR_STRIP = NEIGHBOUR_SIDE + 44
COLOUR_MAP = "RdBu_r"  # diverging: blue against, white neutral, red for
INDEX = "explanations.json"  # marks a folder of explanations, and says what is in it


def overlay(
    photo: Image.Image, explanation: Explanation, side: int = SHOWN_SIDE, legend: bool = True
) -> Image.Image:
    """The photo (upright RGB, as decoded) at most `side` pixels long, with the map over it
    and a legend under it (unless a page says once what the colours mean)."""
    # Large photos shrink to `side`; small ones grow so the legend fits under them.
    scale = side / max(photo.size)
    if legend and scale > 1:
        scale = max(1.0, MIN_WIDTH / photo.width)
    shown = photo.resize(
        (max(1, round(photo.width * scale)), max(1, round(photo.height * scale))),
        Image.Resampling.BILINEAR,
    )
    values = explanation.at_size(*shown.size)
    seen = np.isfinite(values)
    limit = float(np.nanmax(np.abs(values))) if seen.any() else 0.0
    limit = limit or 1.0
    colours = _colours(np.where(seen, values / limit, 0.0))
    alpha = np.where(seen, 0.15 + 0.55 * np.abs(np.nan_to_num(values)) / limit, 0.0)[..., None]
    base = np.asarray(shown, np.float32)
    base = np.where(seen[..., None], base, 0.35 * base + 0.65 * 128)  # unseen: greyed
    blended = (1 - alpha) * base + alpha * colours
    drawn = Image.fromarray(blended.round().astype(np.uint8))
    if not legend:
        return drawn
    strip = NEIGHBOUR_STRIP if explanation.neighbours else 0
    canvas = Image.new("RGB", (shown.width, shown.height + LEGEND_HEIGHT + strip), "white")
    canvas.paste(drawn, (0, 0))
    _legend(canvas, explanation, limit, shown.height)
    if strip:
        _neighbours(canvas, explanation, shown.height + LEGEND_HEIGHT)
    return canvas


def overlay_png(photo: Image.Image, explanation: Explanation, side: int = SHOWN_SIDE) -> bytes:
    buffer = io.BytesIO()
    overlay(photo, explanation, side).save(buffer, "PNG", optimize=False)
    return buffer.getvalue()


def thumbnail_base64(explanation: Explanation, side: int) -> str:
    """The overlay without its legend, at most `side` pixels long: a JPEG in base64."""
    buffer = io.BytesIO()
    overlay(photo_of(explanation, side), explanation, side, legend=False).save(
        buffer, "JPEG", quality=85
    )
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def photo_of(explanation: Explanation, side: int | None = None) -> Image.Image:
    """The explained photo, upright, as the model saw it before its resize; with `side`,
    decoded no larger than needed to show it that large."""
    data = read_file(explanation.path)
    if isinstance(data, str):
        raise HeadstartError(f"{explanation.path}: {data}")
    return decode_rgb(data, draft=None if side is None else lambda w, h: (side, side))


def check_explanations_folder(folder: Path, images: Iterable[str] = ()) -> None:
    """Fail before any work unless `folder` is new, empty or an earlier run's (it holds
    INDEX), and outside every folder of photos being explained."""
    for source in images:
        check_output_folder(folder, "explanations", (INDEX,), source)
    check_output_folder(folder, "explanations", (INDEX,))


def write_explanations(explanations: Iterable[Explanation], folder: Path) -> list[Path]:
    """STEM.png (the overlay) and STEM.npy (the map at the photo's size, NaN where the model
    does not look) per explained photo, into `folder` (names that repeat get -2, -3, ...), and
    INDEX: which photo each is, its label and probability."""
    folder = Path(folder)
    check_explanations_folder(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    taken: set[str] = set()
    index: list[dict] = []
    for explanation in explanations:
        if explanation.heatmap is None:
            continue
        stem = _free_stem(_stem_of(explanation), taken)
        buffer = io.BytesIO()
        np.save(buffer, explanation.at_photo_size(), allow_pickle=False)
        atomic_write_bytes(folder / f"{stem}.npy", buffer.getvalue())
        atomic_write_bytes(folder / f"{stem}.png", overlay_png(photo_of(explanation), explanation))
        written.append(folder / f"{stem}.png")
        index.append(
            {
                "image": str(explanation.path),
                "overlay": f"{stem}.png",
                "map": f"{stem}.npy",
                "label": explanation.label,
                "probability": explanation.probability,
                "nearest_training_photos": [
                    {"path": n.path, "label": n.label, "similarity": n.similarity}
                    for n in explanation.neighbours
                ],
            }
        )
    atomic_write_text(folder / INDEX, json.dumps(index, indent=2) + "\n")
    return written


def _stem_of(explanation: Explanation) -> str:
    name = str(explanation.path).rstrip("/").rsplit("/", 1)[-1]
    stem = name.rsplit(".", 1)[0] if "." in name.lstrip(".") else name
    # A name from a listing or a URI may hold what no file name should.
    cleaned = "".join(c if c.isprintable() and c not in '/\\:*?"<>|' else "_" for c in stem)
    return cleaned.lstrip(".")[:120] or "image"


def _free_stem(stem: str, taken: set[str]) -> str:
    chosen, number = stem, 1
    while chosen.casefold() in taken:
        number += 1
        chosen = f"{stem}-{number}"
    taken.add(chosen.casefold())
    return chosen


def _colours(normalised: np.ndarray) -> np.ndarray:
    from matplotlib import colormaps

    return colormaps[COLOUR_MAP]((normalised + 1.0) / 2.0)[..., :3] * 255.0


def _legend(canvas: Image.Image, explanation: Explanation, limit: float, top: int) -> None:
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default(size=13)
    bar_width = min(160, canvas.width // 3)
    ramp = np.linspace(-1.0, 1.0, bar_width)
    bar = np.repeat(_colours(ramp)[None], 10, axis=0).round().astype(np.uint8)
    canvas.paste(Image.fromarray(bar), (8, top + 8))
    draw.text((8, top + 20), f"-{limit:.2g}", fill="black", font=font)
    draw.text((8 + bar_width, top + 20), f"+{limit:.2g}", fill="black", font=font, anchor="ra")
    left = bar_width + 20
    draw.text(
        (left, top + 4),
        f"{explanation.label}: {explanation.probability:.0%}",
        fill="black",
        font=font,
    )
    draw.text((left, top + 22), "red speaks for it, blue against", fill="dimgray", font=font)


def _neighbours(canvas: Image.Image, explanation: Explanation, top: int) -> None:
    """The nearest training photos in a row, each with its label and similarity."""
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default(size=12)
    draw.text((8, top), "nearest training photos", fill="dimgray", font=font)
    for number, neighbour in enumerate(explanation.neighbours):
        left = 8 + number * (NEIGHBOUR_SIDE + 12)
        if left + NEIGHBOUR_SIDE > canvas.width:
            break
        canvas.paste(_thumbnail(neighbour.path), (left, top + 16))
        caption = f"{neighbour.label} {neighbour.similarity:.2f}"
        draw.text((left, top + 20 + NEIGHBOUR_SIDE), caption, fill="black", font=font)


def _thumbnail(path: str) -> Image.Image:
    """A square thumbnail; flat grey when the photo no longer reads."""
    side = NEIGHBOUR_SIDE
    data = read_file(path)
    try:
        if isinstance(data, str):
            raise ValueError(data)
        image = decode_rgb(data, draft=lambda w, h: (side, side))
    except ValueError:
        return Image.new("RGB", (side, side), (200, 200, 200))
    short = min(image.size)
    left, top = (image.width - short) // 2, (image.height - short) // 2
    return image.resize(
        (side, side), Image.Resampling.BILINEAR, (left, top, left + short, top + short)
    )
