"""headstart: a folder of labelled photos to a good image classifier, by transfer learning."""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

from headstart import threads as _threads

__version__ = "0.1.0"

# Before anything can import PyTorch: its OpenMP threads sleep when idle rather than spin
# (beside other busy processes, spinning made a small head's training 4-8x slower).
_threads.prefer_passive_waiting()

# Imported on first use: `import headstart` stays instant and `headstart --help` never loads torch.
_EXPORTS = {
    "train": "headstart.pipeline",
    "evaluate": "headstart.evaluation.score",
    "diagnose": "headstart.doctor.run",
    "FitSettings": "headstart.training.settings",
    "RunContext": "headstart.context",
    "SettingError": "headstart.errors",
    "Classifier": "headstart.model.classifier",
    "Prediction": "headstart.model.prediction",
    "Explanation": "headstart.model.explanation",
    "load_dataset": "headstart.data.sources",
    "list_backbones": "headstart.backbones.registry",
    "HeadstartError": "headstart.errors",
    "on_ray": "headstart.cluster",
    "predict_to_file": "headstart.model.batch",
    "suggest": "headstart.labelling.suggest",
}

if TYPE_CHECKING:
    from headstart.backbones.registry import list_backbones
    from headstart.cluster import on_ray
    from headstart.context import RunContext
    from headstart.data.sources import load_dataset
    from headstart.doctor.run import diagnose
    from headstart.errors import HeadstartError, SettingError
    from headstart.evaluation.score import evaluate
    from headstart.labelling.suggest import suggest
    from headstart.model.batch import predict_to_file
    from headstart.model.classifier import Classifier
    from headstart.model.explanation import Explanation
    from headstart.model.prediction import Prediction
    from headstart.pipeline import train
    from headstart.training.settings import FitSettings


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    if name == "load":
        return import_module("headstart.model.classifier").Classifier.load
    raise AttributeError(f"module 'headstart' has no attribute {name!r}")


__all__ = [
    "Classifier",
    "Explanation",
    "FitSettings",
    "HeadstartError",
    "Prediction",
    "RunContext",
    "SettingError",
    "__version__",
    "diagnose",
    "evaluate",
    "list_backbones",
    "load_dataset",
    "on_ray",
    "predict_to_file",
    "suggest",
    "train",
]
