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

from dataclasses import dataclass, replace

import numpy as np

from headstart.model.record import UnknownStats

MAX_BANK = 4096  # training images kept for the neighbour search (evenly spaced beyond this)
PASS_RATE = 0.95  # of validation images, which are in distribution by definition
_CHUNK = 1024


@dataclass
class UnknownDetector:
    bank: np.ndarray  # (n, dim) float32, L2-normalised training features
    stats: UnknownStats
    # The photo of each bank row: (local path, relative to the dataset when inside it, and
    # label index); empty when not known (older models, photos in object stores).
    photos: tuple[tuple[str, int], ...] = ()

    def nearest(self, features: np.ndarray, count: int = 3) -> tuple[np.ndarray, np.ndarray]:
        """The bank rows most similar to each image, most similar first, and their cosine
        similarities: (n, count) each."""
        similarity = normalised(features[:, : self.bank.shape[1]]) @ self.bank.T
        count = min(count, len(self.bank))
        rows = np.argsort(-similarity, axis=1)[:, :count]
        return rows, np.take_along_axis(similarity, rows, axis=1)

    @classmethod
    def fit(
        cls, train: np.ndarray, val: np.ndarray, train_logits: np.ndarray, val_logits: np.ndarray
    ) -> UnknownDetector:
        """Keep up to MAX_BANK training features; z-score and threshold on validation (on the
        training images, each without itself, when there is none). The distance compares the
        features as wide as `train` is; wider ones given later are cut to that width."""
        step = bank_step(len(train))
        # float16 as stored in the model file, so a saved model scores exactly the same
        bank = normalised(train[::step]).astype(np.float16).astype(np.float32)
        if len(val):
            distance = nearest_distances(bank, val)
            energy_ = energy(val_logits)
        else:
            distance = nearest_distances(bank, train, skip_self=step == 1)
            energy_ = energy(train_logits)
        unscaled = UnknownStats(
            distance_mean=float(distance.mean()),
            distance_std=float(max(distance.std(), 1e-6)),
            energy_mean=float(energy_.mean()),
            energy_std=float(max(energy_.std(), 1e-6)),
            threshold=0.0,
            bank_size=len(bank),
            pass_rate=PASS_RATE,
        )
        combined = combine(unscaled, distance, energy_)
        return cls(bank, replace(unscaled, threshold=float(np.quantile(combined, PASS_RATE))))

    def distances(self, features: np.ndarray) -> np.ndarray:
        return nearest_distances(self.bank, features)

    def scores(self, features: np.ndarray, logits: np.ndarray) -> np.ndarray:
        return combine(self.stats, self.distances(features), energy(logits))

    def flags(self, scores: np.ndarray) -> np.ndarray:
        return np.asarray(self.stats.is_unknown(scores), bool)


def bank_step(count: int) -> int:
    """Every how many training images one is kept in the bank."""
    return max(1, -(-count // MAX_BANK))


def nearest_distances(bank: np.ndarray, features: np.ndarray, skip_self: bool = False):
    """Cosine distance to the nearest training image (the second nearest with skip_self)."""
    rank = 2 if skip_self else 1
    out = np.empty(len(features), np.float32)
    for start in range(0, len(features), _CHUNK):
        # The bank's width: the leading features it was fitted on (the pooled head).
        chunk = features[start : start + _CHUNK, : bank.shape[1]]
        similarity = normalised(chunk) @ bank.T
        nearest = -np.partition(-similarity, rank - 1, axis=1)[:, rank - 1]
        out[start : start + _CHUNK] = 1.0 - nearest
    return out


def combine(stats: UnknownStats, distance, energy_):
    """The score: the two signals z-scored on validation, added (PyTorch's tensors too: the
    ONNX export computes it with this function)."""
    return (distance - stats.distance_mean) / stats.distance_std + (
        energy_ - stats.energy_mean
    ) / stats.energy_std


def energy(logits: np.ndarray) -> np.ndarray:
    """-logsumexp of the logits: high when no class fits."""
    logits = np.asarray(logits, dtype=np.float64)
    peak = logits.max(axis=1)
    return -(peak + np.log(np.exp(logits - peak[:, None]).sum(axis=1)))


def normalised(features: np.ndarray) -> np.ndarray:
    features = np.asarray(features, dtype=np.float32)
    return features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)
