"""Predictions and the images they are asked for; torch-free, shared by every runtime."""

from __future__ import annotations

import csv
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from headstart.data.images import visible_images
from headstart.data.locations import ImagePath, ObjectURI, image_location
from headstart.errors import HeadstartError
from headstart.storage import unquoted

UNKNOWN_LABEL = "unknown"


@dataclass
class Prediction:
    """One image's top-k labels and probabilities, or the reason it could not be read."""

    path: ImagePath
    labels: list[str] = field(default_factory=list)  # most probable first
    probabilities: list[float] = field(default_factory=list)
    error: str | None = None  # set when the image could not be read
    unknown_score: float | None = None  # how unlike the training data (model's threshold)
    unknown: bool | None = None  # like none of the classes
    rejected: bool = False  # unknown, and asked to say so instead of a class
    # A multi-label model's answer: the labels past their thresholds, most probable first
    # (empty: none of them), and every label's probability.
    label_set: list[str] | None = None
    scores: dict[str, float] | None = None

    @property
    def label(self) -> str | None:
        """The predicted class; "unknown" when rejected; None for an unreadable image. Of a
        multi-label model, its label set as one line ("" for none)."""
        if self.rejected:
            return UNKNOWN_LABEL
        if self.label_set is not None:
            return "; ".join(self.label_set)
        return self.labels[0] if self.labels else None

    def mark_unknown(self, score: float, unknown: bool, reject: bool) -> None:
        """Record how unlike the training data the image is, and reject it if asked."""
        self.unknown_score, self.unknown = score, unknown
        self.rejected = unknown and reject

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON: path, label, top (label, probability pairs), unknown, error; of a
        multi-label model, `labels` (the set) and `scores` (every label's) for `label`."""
        data: dict[str, Any] = {"path": str(self.path)}
        if self.error:
            data["error"] = self.error
        elif self.label_set is not None:
            data["labels"] = [UNKNOWN_LABEL] if self.rejected else self.label_set
            data["scores"] = self.scores
        else:
            data["label"] = self.label
        if not self.error:
            if self.unknown is not None:
                data["unknown"], data["unknown_score"] = self.unknown, self.unknown_score
            data["top"] = [
                {"label": label, "probability": p}
                for label, p in zip(self.labels, self.probabilities, strict=True)
            ]
        return data

    def record(self) -> dict[str, Any]:
        """Flat and complete, for tables: labels and probabilities as lists."""
        return {
            "path": str(self.path),
            "label": self.label,
            "labels": self.labels,
            "probabilities": self.probabilities,
            "unknown": self.unknown,
            "unknown_score": self.unknown_score,
            "error": self.error,
        }


def csv_header(top_k: int) -> list[str]:
    header = ["path", "error", "label", "unknown", "unknown_score"]
    for rank in range(1, top_k + 1):
        header += [f"label_{rank}", f"probability_{rank}"]
    return header


def csv_row(record: dict[str, Any], top_k: int) -> list[str]:
    """A Prediction.record() as the columns csv_header names."""
    score = record["unknown_score"]
    unknown = record["unknown"]
    row = [
        record["path"],
        record["error"] or "",
        record["label"] or "",
        "" if unknown is None else str(unknown).lower(),
        "" if score is None else f"{score:.4f}",
    ]
    for label, prob in zip(record["labels"][:top_k], record["probabilities"], strict=False):
        row += [label, f"{prob:.6f}"]
    return row + [""] * (len(csv_header(top_k)) - len(row))


def top_k_predictions(
    paths: list[ImagePath],
    kept: list[int],
    probabilities: np.ndarray,
    skipped: list[tuple[ImagePath, str]],
    labels: list[str],
    top_k: int,
    thresholds: tuple[float, ...] = (),
) -> list[Prediction]:
    """One Prediction per path, in order: top-k labels where it decoded, the reason where not;
    with `thresholds` (a multi-label model's), each one's label set and scores too."""
    predictions = {str(path): Prediction(path, error=reason) for path, reason in skipped}
    k = max(1, min(top_k, len(labels)))
    ranked = np.argsort(-probabilities, axis=1, kind="stable")
    passed = probabilities >= np.asarray(thresholds) if thresholds else None
    for row, index in enumerate(kept):
        top = ranked[row, :k]
        prediction = Prediction(
            paths[index], [labels[i] for i in top], [float(p) for p in probabilities[row, top]]
        )
        if passed is not None:
            prediction.label_set = [labels[i] for i in ranked[row] if passed[row, i]]
            prediction.scores = {
                label: float(p) for label, p in zip(labels, probabilities[row], strict=True)
            }
        predictions[str(paths[index])] = prediction
    return [predictions[str(path)] for path in paths]


def expand_image_paths(images: str | ImagePath | Iterable[str | ImagePath]) -> list[ImagePath]:
    """Files as given, folders expanded to the images inside them; a missing path is an
    error. Objects named by URI are taken as given (one missing is skipped and named)."""
    items = [images] if isinstance(images, (str, Path, ObjectURI)) else list(images)
    paths: list[ImagePath] = []
    for item in items:
        path = image_location(item, expand_user=True)
        if isinstance(path, ObjectURI):
            paths.append(path)
        elif path.is_dir():
            paths.extend(visible_images(path))
        elif path.is_file():
            paths.append(path)
        else:
            raise HeadstartError(f"{path}: no such file or folder")
    if not paths:
        raise HeadstartError("no images to predict")
    return paths


MANIFEST_FORMATS = (".csv", ".parquet")


def image_list(images: str | ImagePath | Iterable[str | ImagePath] | Any) -> list[ImagePath]:
    """The images: files and folders as `predict` takes them, one manifest file, or a
    dataset with a `path` column (a Ray Dataset, say: read here, as a manifest is)."""
    if hasattr(images, "select_columns") and hasattr(images, "iter_rows"):
        rows = images.select_columns(["path"]).iter_rows()
        return [image_location(str(row["path"])) for row in rows if row["path"]]
    items = [images] if isinstance(images, (str, Path, ObjectURI)) else list(images)
    first = items[0] if len(items) == 1 else None
    if isinstance(first, (str, Path)) and Path(first).suffix.lower() in MANIFEST_FORMATS:
        return read_manifest(Path(first))
    return expand_image_paths(items)


def read_manifest(manifest: Path) -> list[ImagePath]:
    """The `path` column of a CSV or Parquet file: paths (relative ones from the file's
    folder) or URIs."""
    if not manifest.is_file():
        raise HeadstartError(f"{manifest}: no such manifest file")
    if manifest.suffix.lower() == ".parquet":
        from headstart.features.store import pyarrow_modules

        _, _, pq = pyarrow_modules()
        try:
            table = pq.read_table(manifest, columns=["path"])
        except Exception as error:  # pyarrow raises several types for bad files
            raise HeadstartError(f"{manifest}: no readable `path` column ({error})") from error
        names = [str(p) for p in table.column("path").to_pylist() if p]
    else:
        names = _csv_paths(manifest)
    if not names:
        raise HeadstartError(f"{manifest}: the manifest lists no images")
    return [image_location(name, manifest.parent) for name in names]


def _csv_paths(manifest: Path) -> list[str]:
    try:
        with manifest.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            if "path" not in (reader.fieldnames or []):
                raise HeadstartError(f"{manifest}: a manifest needs a `path` column")
            cells = [unquoted((row["path"] or "").strip()) for row in reader]
            return [cell for cell in cells if cell]
    except UnicodeDecodeError as error:
        raise HeadstartError(f"{manifest}: not UTF-8 text ({error.reason})") from error
    except csv.Error as error:
        raise HeadstartError(f"{manifest}: not a readable CSV ({error})") from error
