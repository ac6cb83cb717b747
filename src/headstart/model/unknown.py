"""'None of the above': how unlike the training data an image is, and a threshold for it.

The score adds two signals, each z-scored on the validation split: the cosine distance of the
image's normalised features to its nearest training image (Sun et al., "Out-of-distribution
detection with deep nearest neighbors", ICML 2022), which catches photos of other kinds, and the
energy of the head's logits (Liu et al., "Energy-based out-of-distribution detection", NeurIPS
2020), which catches photos near the known classes. Measured in bench/openset.py, the sum beats
the maximum softmax probability on AUROC for both. The threshold passes 95% of validation images.
NumPy only; the ONNX export computes the same score in its graph.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

MAX_BANK = 4096  # training images kept for the neighbour search (evenly spaced beyond this)
PASS_RATE = 0.95  # of validation images, which are in distribution by definition
_CHUNK = 1024


@dataclass
class UnknownDetector:
    bank: np.ndarray  # (n, dim) float32, L2-normalised training features
    stats: dict[str, float]  # distance_mean, distance_std, energy_mean, energy_std, threshold

    @classmethod
    def fit(
        cls, train: np.ndarray, val: np.ndarray, train_logits: np.ndarray, val_logits: np.ndarray
    ) -> UnknownDetector:
        """Keep up to MAX_BANK training features; z-score and threshold on validation (on the
        training images, each without itself, when there is none). The distance compares the
        features as wide as `train` is; wider ones given later are cut to that width."""
        step = max(1, -(-len(train) // MAX_BANK))
        # float16 as stored in the model file, so a saved model scores exactly the same
        bank = normalised(train[::step]).astype(np.float16).astype(np.float32)
        detector = cls(bank, {})
        if len(val):
            distance, energy_ = detector.distances(val), energy(val_logits)
        else:
            distance, energy_ = detector.distances(train, skip_self=step == 1), energy(train_logits)
        detector.stats = {
            "distance_mean": float(distance.mean()),
            "distance_std": float(max(distance.std(), 1e-6)),
            "energy_mean": float(energy_.mean()),
            "energy_std": float(max(energy_.std(), 1e-6)),
        }
        detector.stats["threshold"] = float(
            np.quantile(detector.combine(distance, energy_), PASS_RATE)
        )
        return detector

    def distances(self, features: np.ndarray, skip_self: bool = False) -> np.ndarray:
        """Cosine distance to the nearest training image (the second nearest with skip_self)."""
        rank = 2 if skip_self else 1
        out = np.empty(len(features), np.float32)
        for start in range(0, len(features), _CHUNK):
            # The bank's width: the leading features it was fitted on (the pooled head).
            chunk = features[start : start + _CHUNK, : self.bank.shape[1]]
            similarity = normalised(chunk) @ self.bank.T
            nearest = -np.partition(-similarity, rank - 1, axis=1)[:, rank - 1]
            out[start : start + _CHUNK] = 1.0 - nearest
        return out

    def combine(self, distance: np.ndarray, energy_: np.ndarray) -> np.ndarray:
        s = self.stats
        return (distance - s["distance_mean"]) / s["distance_std"] + (
            energy_ - s["energy_mean"]
        ) / s["energy_std"]

    def scores(self, features: np.ndarray, logits: np.ndarray) -> np.ndarray:
        return self.combine(self.distances(features), energy(logits))

    def flags(self, scores: np.ndarray) -> np.ndarray:
        return scores > self.stats["threshold"]

    def to_dict(self) -> dict[str, Any]:
        return {**self.stats, "bank_size": len(self.bank), "pass_rate": PASS_RATE}


def energy(logits: np.ndarray) -> np.ndarray:
    """-logsumexp of the logits: high when no class fits."""
    logits = np.asarray(logits, dtype=np.float64)
    peak = logits.max(axis=1)
    return -(peak + np.log(np.exp(logits - peak[:, None]).sum(axis=1)))


def normalised(features: np.ndarray) -> np.ndarray:
    features = np.asarray(features, dtype=np.float32)
    return features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)
