"""int8 quantization of an exported model (ONNX Runtime static QDQ), and what it costs.

Static quantization calibrates activation ranges on real images; dynamic quantization was
measured here too and ran convolutions about 5x slower on CPU, so it is not offered.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from headstart.backbones.preprocessing import pixels_or_reason
from headstart.data.sources import Sample, load_dataset
from headstart.errors import HeadstartError
from headstart.export.runtime import OnnxClassifier
from headstart.storage import atomic_write_bytes


def quantize_int8(source: Path, target: Path, calibration: np.ndarray, batch: int = 16) -> Path:
    """Write an int8 copy of the ONNX file `source`, calibrated on uint8 pixels (N, H, W, 3)."""
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Batches(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter(
                {"pixels": calibration[i : i + batch]} for i in range(0, len(calibration), batch)
            )

        def get_next(self):
            return next(self.batches, None)

    with tempfile.TemporaryDirectory() as scratch:
        prepared, quantized = Path(scratch) / "prepared.onnx", Path(scratch) / "int8.onnx"
        # ONNX's own shape inference is enough for a CNN; ONNX Runtime's symbolic one failed
        # (an assertion on a Range node) on some exporter and runtime versions.
        quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
        quantize_static(
            str(prepared),
            str(quantized),
            Batches(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
        )
        model = onnx.load(str(quantized))
    del model.metadata_props[:]  # the quantizer keeps none or some; carry the source's over
    for prop in onnx.load(str(source)).metadata_props:
        model.metadata_props.add(key=prop.key, value=prop.value)
    model.metadata_props.add(key="headstart.quantization", value="int8 static QDQ, per channel")
    atomic_write_bytes(target, model.SerializeToString())
    return target


def compare(
    reference: Path, candidate: Path, pixels: np.ndarray, truth: np.ndarray | None = None
) -> dict[str, float]:
    """Speed (img/s) and agreement of two exported models on the same images."""
    report: dict[str, float] = {"images": float(len(pixels))}
    predictions = {}
    for name, path in (("fp32", reference), ("int8", candidate)):
        model = OnnxClassifier(path)
        model.probabilities(pixels[:8])  # warm-up
        started = time.perf_counter()
        probabilities = np.concatenate(
            [model.probabilities(pixels[i : i + 32]) for i in range(0, len(pixels), 32)]
        )
        report[f"{name}_images_per_second"] = len(pixels) / (time.perf_counter() - started)
        report[f"{name}_bytes"] = float(Path(path).stat().st_size)
        predictions[name] = probabilities
        if truth is not None:
            report[f"{name}_accuracy"] = float(np.mean(probabilities.argmax(1) == truth))
    report["top1_agreement"] = float(
        np.mean(predictions["fp32"].argmax(1) == predictions["int8"].argmax(1))
    )
    report["max_probability_difference"] = float(
        np.abs(predictions["fp32"] - predictions["int8"]).max()
    )
    return report


def check_calibration_classes(classifier: Any, calibration: Path) -> None:
    """Refuse calibration data holding classes the model does not know (before any work)."""
    classifier.require_single_label("--quantize")
    unknown = sorted(set(load_dataset(calibration).classes) - set(classifier.labels))
    if unknown:
        raise HeadstartError(
            f"{calibration}: classes the model does not know: {', '.join(unknown)}; calibrate "
            "on the dataset the model was trained on"
        )


def quantize_and_compare(
    classifier: Any, source: Path, calibration: Path
) -> tuple[Path, str, dict[str, float]]:
    """Write SOURCE.int8.onnx, calibrated on up to 64 training images of `calibration` (every
    fourth), and compare it with `source` on the dataset's held-out split: (the file, the
    split, the comparison)."""
    dataset = load_dataset(calibration)

    def pixels_and_truth(samples: list[Sample]) -> tuple[np.ndarray, np.ndarray]:
        decoded = [(pixels_or_reason(classifier.preprocessing, s.path)[0], s) for s in samples]
        kept = [(p, s) for p, s in decoded if p is not None]
        if not kept:
            raise HeadstartError(f"{calibration}: no readable images to calibrate or check on")
        truth = np.array([classifier.labels.index(s.label) for _, s in kept])
        return np.stack([p for p, _ in kept]), truth

    calibration_pixels, _ = pixels_and_truth(dataset.split("train")[::4][:64])
    target = source.with_suffix(".int8.onnx")
    quantize_int8(source, target, calibration_pixels)
    held_out = dataset.evaluation_split()
    pixels, truth = pixels_and_truth(dataset.split(held_out))
    return target, held_out, compare(source, target, pixels, truth)
