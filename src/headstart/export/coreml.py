"""`export -o model.mlpackage`: the classifier as a Core ML program, through coremltools (the
`coreml` extra) from `torch.export`.

Input `image`: an RGB image of the network's size (h, w), already resized and centre-cropped as
the metadata's preprocessing says (Vision's own crop-and-scale options differ from it); outputs
`classLabel` and `classLabel_probs`, the calibrated probabilities by label. Weights and
arithmetic are fp16, coremltools' default for ML programs. coremltools 9.0 converts a
classifier with one output only, so the unknown-image score is not in the file. Core ML runs
only on Apple's systems: on Linux the file's description and the program it was converted from
can be checked, not its predictions.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from pathlib import Path

from headstart.errors import HeadstartError
from headstart.export.onnx import onnx_metadata
from headstart.storage import check_writable_file

INPUT = "image"
EXTRA = "pip install 'headstart[coreml]'"


def export_coreml(classifier, path: Path) -> Path:
    """Write the classifier as a .mlpackage folder; returns its path."""
    path = Path(path)
    classifier.require_single_label("a Core ML export")
    check_coreml_target(path)
    coremltools = _coremltools()
    program = exported_program(classifier)
    height, width = classifier.preprocessing.input_size
    image = coremltools.ImageType(
        name=INPUT, shape=(1, 3, height, width), color_layout=coremltools.colorlayout.RGB
    )
    with _quiet():
        model = coremltools.convert(
            program,
            inputs=[image],
            classifier_config=coremltools.ClassifierConfig(list(classifier.labels)),
            minimum_deployment_target=coremltools.target.iOS16,
            convert_to="mlprogram",
        )
    model.short_description = f"headstart classifier: {', '.join(classifier.labels)}"[:500]
    for key, value in onnx_metadata(classifier).items():
        if key != "headstart.unknown_threshold":  # no unknown score in this file
            model.user_defined_metadata[key] = value
    _save_atomically(model, path)
    return path


def exported_program(classifier):
    """`torch.export` of the network Core ML gets: an RGB image (1, 3, h, w) of 0-255 floats
    to the calibrated probabilities (N, classes)."""
    import torch
    from torch import nn

    from headstart.export.onnx import exported_network

    network = exported_network(classifier, explain=False)
    with_unknown = classifier.unknown is not None

    class FromImage(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.network = network

        def forward(self, image):
            outputs = self.network(image.permute(0, 2, 3, 1))
            return outputs[0] if with_unknown else outputs

    height, width = classifier.preprocessing.input_size
    sample = torch.full((1, 3, height, width), 128.0)
    program = torch.export.export(FromImage().eval(), (sample,))
    return program.run_decompositions({})


def check_coreml_target(path: Path) -> None:
    if path.suffix.lower() != ".mlpackage":
        raise HeadstartError(f"{path}: a Core ML export's name ends in .mlpackage")
    if path.exists() and not (path / "Manifest.json").is_file():
        raise HeadstartError(f"{path}: exists and is not a Core ML package; move it away")
    check_writable_file(path.with_name(f".{path.stem}.partial.mlpackage"), "Core ML package")


def _save_atomically(model, path: Path) -> None:
    """A package is a folder: written beside, then swapped in, so a reader never sees half."""
    import shutil

    partial = path.with_name(f".{path.stem}.partial.mlpackage")  # coremltools wants the suffix
    old = path.with_name(f".{path.stem}.old.mlpackage")
    shutil.rmtree(partial, ignore_errors=True)
    model.save(str(partial))
    if path.exists():
        path.rename(old)
    partial.rename(path)
    shutil.rmtree(old, ignore_errors=True)


def _coremltools():
    try:
        with _quiet():
            import coremltools
    except ImportError as error:
        raise HeadstartError(f"a Core ML export needs coremltools: {EXTRA}") from error
    return coremltools


@contextlib.contextmanager
def _quiet():
    """coremltools prints progress bars and warns about versions it has not tested (it was
    checked with this torch by the tests); headstart's own line says what was written."""
    loggers = [logging.getLogger(name) for name in ("coremltools", "root")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with (
            warnings.catch_warnings(),
            contextlib.redirect_stdout(io.StringIO()),
            contextlib.redirect_stderr(io.StringIO()),
        ):
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)
