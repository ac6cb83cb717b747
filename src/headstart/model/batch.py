"""Predictions for many images, written to a file in parts so that a stopped run resumes.

The images come as files and folders, or as a manifest (a CSV or Parquet file with a `path`
column, relative paths taken from the manifest's folder). They are predicted `part_size` at a
time, each part written atomically into a folder beside the output together with a record of
the run; a run started again with the same model, images and options skips the parts already
written, and refuses to mix its predictions into another run's. At the end the parts become
`output`: a Parquet file (list columns `labels` and `probabilities`) or a CSV (label_1,
probability_1, ... columns, as `predict --csv` prints).
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from headstart.console import warn
from headstart.data.locations import ImagePath
from headstart.errors import HeadstartError
from headstart.features.store import pyarrow_modules
from headstart.model.classifier import Classifier
from headstart.model.prediction import csv_header, csv_row, image_list
from headstart.model.record import finite, optional
from headstart.settings import boolean
from headstart.storage import SafeCsvWriter, atomic_file, atomic_write_text, check_writable_file

PART_SIZE = 4096
FORMATS = (".parquet", ".csv")


@dataclass
class BatchResult:
    output: Path
    images: int
    unreadable: int
    parts: int
    parts_reused: int  # parts a previous run had written


def predict_to_file(
    classifier: Classifier,
    images: str | ImagePath | Iterable[str | ImagePath] | Any,
    output: str | Path,
    top_k: int = 5,
    *,
    reject: bool = False,
    part_size: int = PART_SIZE,
) -> BatchResult:
    """Predict every image and write the predictions to `output` (.parquet or .csv).

    `images`: files and folders, one manifest (.csv or .parquet with a `path` column), or a
    dataset with a `path` column (a Ray Dataset)."""
    output = Path(output)
    if output.suffix.lower() not in FORMATS:
        raise HeadstartError(f"{output}: predictions are written as .parquet or .csv")
    if output.suffix.lower() == ".parquet":
        pyarrow_modules()  # missing, it fails now, not after predicting everything
    check_writable_file(output, "predictions")
    paths = image_list(images)
    parts_dir = output.with_name(output.name + ".parts")
    run = {
        "model": model_identity(classifier),
        "images": hashlib.sha256(
            "\n".join(map(str, paths)).encode("utf-8", "surrogateescape")
        ).hexdigest(),
        "top_k": top_k,
        "reject": reject,
        "part_size": part_size,
    }
    run_id = _claim(parts_dir, run)
    chunks = [paths[start : start + part_size] for start in range(0, len(paths), part_size)]
    parts = [parts_dir / f"part-{n:06d}.json" for n in range(len(chunks))]
    width = min(top_k, len(classifier.labels))
    reused = 0
    for part, chunk in zip(parts, chunks, strict=True):
        if part.exists():  # a previous run's: checked before any work, so a bad one is named now
            _records(part, run_id, chunk, width)
            reused += 1
    for part, chunk in zip(parts, chunks, strict=True):
        if not part.exists():
            predictions = classifier.predict_files(chunk, top_k, reject=reject)
            records = [p.record() for p in predictions]
            atomic_write_text(part, json.dumps({"run": run_id, "records": records}))
    checked = (
        _records(part, run_id, chunk, width) for part, chunk in zip(parts, chunks, strict=True)
    )
    write = _write_parquet if output.suffix.lower() == ".parquet" else _write_csv
    with atomic_file(output) as file:
        unreadable = write(file, checked, width)
    try:
        shutil.rmtree(parts_dir)
    except OSError as error:  # the predictions are written: say what is left, do not fail
        warn(f"{parts_dir}: could not remove the parts folder ({error.strerror or error})")
    return BatchResult(output, len(paths), unreadable, len(parts), reused)


def model_identity(classifier: Classifier) -> str:
    """A digest of what decides the predictions: labels, backbone, head and temperature."""
    identity = [classifier.labels, classifier.backbone.to_dict()]
    digest = hashlib.sha256(json.dumps(identity).encode())
    for name, tensor in sorted(classifier.head.parameters.items()):
        digest.update(name.encode() + np.ascontiguousarray(tensor).tobytes())
    digest.update(repr(classifier.temperature).encode())
    return digest.hexdigest()


def _claim(parts_dir: Path, run: dict[str, Any]) -> str:
    """Start the parts folder, or continue it if it holds this very run; the run's digest,
    which every part carries."""
    record = parts_dir / "run.json"
    run_id = hashlib.sha256(json.dumps(run, sort_keys=True).encode()).hexdigest()
    if record.exists():
        try:
            earlier = json.loads(record.read_text(encoding="utf-8"))
        except (OSError, ValueError, RecursionError):  # not ours, or nested too deep
            earlier = None
        if earlier != run:
            raise HeadstartError(
                f"{parts_dir} holds the parts of another run (other model, images or options): "
                "remove it to start again"
            )
        return run_id
    parts_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(record, json.dumps(run))
    return run_id


_RECORD_KEYS = {"path", "label", "labels", "probabilities", "unknown", "unknown_score", "error"}


def _records(part: Path, run_id: str, chunk: list[ImagePath], width: int) -> list[dict[str, Any]]:
    """A part's predictions, checked against the run and the images it covers: the folder is
    the user's and may have been edited, cut short or copied from another run."""
    try:
        content = json.loads(part.read_text(encoding="utf-8"))
        if not isinstance(content, dict) or content.get("run") != run_id:
            raise ValueError("written by another run")
        records = content.get("records")
        if not isinstance(records, list) or len(records) != len(chunk):
            raise ValueError(f"does not hold one prediction for each of its {len(chunk)} images")
        for record, path in zip(records, chunk, strict=True):
            problem = _record_problem(record, str(path), width)
            if problem:
                raise ValueError(problem)
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as error:
        raise HeadstartError(
            f"{part}: not a predictions part of this run ({error}); delete it to predict its "
            "images again"
        ) from error
    return records


def _record_problem(record: Any, path: str, width: int) -> str | None:
    """Why `record` is not a prediction for `path`, or None."""
    if not isinstance(record, dict) or set(record) != _RECORD_KEYS:
        return "not a list of predictions"
    if record["path"] != path:
        return f"a prediction for another image than {path!r}"
    labels, probabilities = record["labels"], record["probabilities"]
    fields_ok = (
        _optional_string(record["label"])
        and _optional_string(record["error"])
        and optional(boolean)(record["unknown"]) is None
        and optional(finite)(record["unknown_score"]) is None
        and isinstance(labels, list)
        and isinstance(probabilities, list)
        and len(labels) == len(probabilities) <= width
        and all(isinstance(label, str) for label in labels)
        and all(finite(p) is None and 0 <= p <= 1 for p in probabilities)
    )
    return None if fields_ok else f"the prediction for {path!r} has fields of the wrong type"


def _optional_string(value: Any) -> bool:
    return value is None or isinstance(value, str)


def _write_parquet(file: BinaryIO, parts: Iterable[list[dict[str, Any]]], top_k: int) -> int:
    pa, _, pq = pyarrow_modules()
    schema = pa.schema(
        [
            ("path", pa.string()),
            ("label", pa.string()),
            ("labels", pa.list_(pa.string())),
            ("probabilities", pa.list_(pa.float32())),
            ("unknown", pa.bool_()),
            ("unknown_score", pa.float32()),
            ("error", pa.string()),
        ]
    )
    unreadable = 0
    with pq.ParquetWriter(file, schema) as writer:
        for part in parts:
            records = [{**r, "path": _utf8(r["path"])} for r in part]
            unreadable += sum(bool(r["error"]) for r in records)
            writer.write_table(pa.Table.from_pylist(records, schema))
    return unreadable


def _utf8(path: str) -> str:
    """Parquet holds UTF-8 text: a name's bytes that are not are written as \\xNN."""
    return path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _write_csv(file: BinaryIO, parts: Iterable[list[dict[str, Any]]], top_k: int) -> int:
    # A file name that is not UTF-8 keeps its own bytes, as `predict --csv` prints it.
    text = io.TextIOWrapper(file, encoding="utf-8", errors="surrogateescape", newline="")
    writer = SafeCsvWriter(text)
    writer.writerow(csv_header(top_k))
    unreadable = 0
    for part in parts:
        for record in part:
            unreadable += bool(record["error"])
            writer.writerow(csv_row(record, top_k))
    text.flush()
    text.detach()
    return unreadable
