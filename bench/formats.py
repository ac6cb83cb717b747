"""Every export format against the ONNX file on real photos: size, agreement and speed.

Trains the default model on hymenoptera's training folder and exports it as ONNX (the
baseline), any-size ONNX, TFLite, Core ML, and reads the ONNX file with OpenVINO three ways
(its CPU default, which is bf16 arithmetic on CPUs that have it; fp32 asked for; and the IR
that `openvino.save_model` writes, fp16 weights by default). On every validation photo it
prints each format's file size, top-1 agreement with ONNX Runtime, the largest gap between
the two probabilities, and the milliseconds per photo, one photo a run (the way a phone or a
page runs them), with ONNX Runtime's own as the ratio's baseline in the same run. The
JavaScript client (examples/node) is timed as the whole command. Core ML runs only on Apple's
systems: its size alone is measured here.

    pip install openvino  # only for this comparison: headstart does not use it
    python bench/formats.py [--cache-dir DIR]
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from data_paths import hymenoptera_model

from headstart.data.images import decode_rgb
from headstart.export.coreml import export_coreml
from headstart.export.onnx import export_classifier
from headstart.export.runtime import OnnxClassifier
from headstart.export.tflite import TfliteClassifier, export_tflite

NODE_CLIENT = Path(__file__).resolve().parents[1] / "examples" / "node"


def main() -> None:
    with hymenoptera_model(__doc__.splitlines()[0]) as (classifier, photos, folder):
        files = {
            "onnx": export_classifier(classifier, folder / "fixed.onnx"),
            "any-size onnx": export_classifier(classifier, folder / "any.onnx", any_size=True),
            "tflite": export_tflite(classifier, folder / "m.tflite"),
            "coreml": export_coreml(classifier, folder / "m.mlpackage"),
        }
        pixels = np.stack([classifier.preprocessing.pixels(p.read_bytes()) for p in photos])
        runners = _runners(files, folder)
        baseline, baseline_ms = _timed(runners.pop("onnx"), pixels)
        print(f"{len(photos)} photos, one a run; baseline: ONNX Runtime {baseline_ms:.1f} ms")
        print(f"{'format':28} {'MB':>6} {'top-1 agrees':>13} {'largest gap':>12} {'ms':>7}")
        _row("onnx (ONNX Runtime)", _size(files["onnx"]), baseline, baseline, baseline_ms, 1.0)
        any_size = OnnxClassifier(files["any-size onnx"])
        whole = [np.asarray(decode_rgb(p.read_bytes()), np.uint8)[None] for p in photos]
        theirs, ms = _timed(lambda one: any_size.probabilities(one), whole, each=True)
        _row("any-size onnx (whole photo)", _size(files["any-size onnx"]), theirs, baseline, ms,
             ms / baseline_ms)  # fmt: skip
        for name, (size, run) in runners.items():
            theirs, ms = _timed(run, pixels)
            _row(name, size, theirs, baseline, ms, ms / baseline_ms)
        _node_client(files["any-size onnx"], photos, baseline)
        print(f"{'coreml (fp16, size only)':28} {_size(files['coreml']):6.1f}")


def _runners(files: dict[str, Path], folder: Path) -> dict[str, tuple[float, Callable]]:
    import openvino as ov

    onnx = OnnxClassifier(files["onnx"])
    tflite = TfliteClassifier(files["tflite"])
    core = ov.Core()
    default = core.compile_model(str(files["onnx"]), "CPU")
    fp32 = core.compile_model(str(files["onnx"]), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    ov.save_model(ov.convert_model(str(files["onnx"])), str(folder / "m.xml"))
    ir = core.compile_model(str(folder / "m.xml"), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    precision = default.get_property("INFERENCE_PRECISION_HINT").to_string()
    onnx_mb, ir_mb = _size(files["onnx"]), _size(folder / "m.bin")
    return {
        "onnx": onnx.probabilities,
        "tflite (ai-edge-litert)": (_size(files["tflite"]), tflite.probabilities),
        f"openvino default ({precision})": (onnx_mb, lambda x: default(x)[0]),
        "openvino f32": (onnx_mb, lambda x: fp32(x)[0]),
        "openvino IR fp16 weights": (ir_mb, lambda x: ir(x)[0]),
    }


def _timed(run: Callable, inputs, each: bool = False) -> tuple[np.ndarray, float]:
    """Probabilities for every input, one a run, after a warm-up; ms per run."""
    batches = list(inputs) if each else [x[None] for x in inputs]
    run(batches[0])
    start = time.perf_counter()
    outputs = [np.asarray(run(batch)) for batch in batches]
    return np.concatenate(outputs), 1000 * (time.perf_counter() - start) / len(batches)


def _row(name, size, theirs, baseline, ms, ratio=None) -> None:
    agree = (theirs.argmax(1) == baseline.argmax(1)).sum()
    gap = np.abs(theirs - baseline).max()
    times = "" if ratio is None else f"  ({ratio:.2f}x)"
    print(f"{name:28} {size:6.1f} {agree:>6}/{len(baseline):<6} {gap:12.2e} {ms:7.1f}{times}")


def _node_client(model: Path, photos: list[Path], baseline: np.ndarray) -> None:
    if not (shutil.which("node") and (NODE_CLIENT / "node_modules").is_dir()):
        print("javascript client: skipped (scripts/install.sh installs its packages)")
        return
    command = ["node", str(NODE_CLIENT / "classify.mjs"), str(model), "--json", "--top-k", "99"]
    start = time.perf_counter()
    result = subprocess.run([*command, *map(str, photos)], capture_output=True, text=True)
    ms = 1000 * (time.perf_counter() - start) / len(photos)
    answers = [json.loads(line) for line in result.stdout.splitlines()]
    labels = model.with_suffix(".labels.txt").read_text().split("\n")[:-1]
    theirs = np.array([[dict((t["label"], t["probability"]) for t in a["top"])[label]
                        for label in labels] for a in answers])  # fmt: skip
    _row("javascript (whole command)", _size(model), theirs, baseline, ms)


def _size(path: Path) -> float:
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    return sum(p.stat().st_size for p in files) / 1e6


if __name__ == "__main__":
    main()
