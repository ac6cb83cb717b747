"""The trained classifier and its model folder (safetensors weights + JSON metadata)."""

from headstart.model.classifier import Classifier, Prediction

__all__ = ["Classifier", "Prediction"]
