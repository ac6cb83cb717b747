"""`export --web DIR`: a static folder that classifies photos and the webcam in the browser,
offline, with no server of ours: the any-size ONNX model, its labels and limits in model.json,
a page, and onnxruntime-web's wasm runtime (vendored from npm when headstart is built:
scripts/vendor_web.sh).

Any static host serves it (a browser runs modules and wasm only over http(s), and the webcam
only on a secure origin: https or localhost); nothing is fetched from another host.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

from headstart.data.images import DEFAULT_MAX_PIXELS, MAX_ASPECT_RATIO
from headstart.errors import HeadstartError
from headstart.export.onnx import export_classifier
from headstart.storage import atomic_write_bytes, atomic_write_text, check_output_folder

PAGE_FILES = ("index.html",)
RUNTIME_FILES = (
    "ort.wasm.min.mjs",
    "ort-wasm-simd-threaded.mjs",
    "ort-wasm-simd-threaded.wasm",
    "NOTICE.txt",  # its licence
)
MODEL_FILE, SETTINGS_FILE = "model.onnx", "model.json"
FORMAT = "headstart-web/1"  # in model.json: what the page reads


def export_web_page(classifier, folder: Path) -> list[Path]:
    """Write the page's folder; returns the files written."""
    folder = Path(folder)
    check_output_folder(folder, "web page", (SETTINGS_FILE,))
    runtime = _runtime_files()
    folder.mkdir(parents=True, exist_ok=True)
    written = [export_classifier(classifier, folder / MODEL_FILE, any_size=True)]
    for name, source in [*_page_files(), *runtime]:
        atomic_write_bytes(folder / name, source.read_bytes())
        written.append(folder / name)
    atomic_write_text(folder / SETTINGS_FILE, json.dumps(page_settings(classifier), indent=2))
    return [*written, folder / SETTINGS_FILE]


def page_settings(classifier) -> dict:
    """What the page needs beside the model: labels, outputs, and the limits Python applies."""
    from headstart import __version__

    unknown = classifier.unknown
    return {
        "format": FORMAT,
        "headstart_version": __version__,
        "model": MODEL_FILE,
        "labels": classifier.labels,
        "unknown_threshold": None if unknown is None else float(unknown.stats.threshold),
        # a multi-label model's: the page gives each photo the labels past them
        "thresholds": list(classifier.thresholds) or None,
        "max_pixels": DEFAULT_MAX_PIXELS,
        "max_aspect_ratio": MAX_ASPECT_RATIO,
    }


def _page_files() -> list[tuple[str, Path]]:
    return [(name, _WEB / name) for name in PAGE_FILES]


def runtime_folder() -> Path:
    """Where scripts/vendor_web.sh put onnxruntime-web's files."""
    return _WEB / "runtime"


_WEB = Path(str(resources.files("headstart.export") / "web"))  # the page and its runtime


def _runtime_files() -> list[tuple[str, Path]]:
    folder = runtime_folder()
    missing = [name for name in RUNTIME_FILES if not (folder / name).is_file()]
    if missing:
        raise HeadstartError(
            f"export --web needs onnxruntime-web's files ({', '.join(missing)} missing from "
            f"{folder}); this headstart was installed without them: run scripts/vendor_web.sh "
            "(npm) in its source folder, or install a built wheel"
        )
    return [(name, folder / name) for name in RUNTIME_FILES]
