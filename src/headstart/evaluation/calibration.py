"""Calibration: expected calibration error, reliability bins and temperature scaling."""

from __future__ import annotations

from itertools import pairwise

import numpy as np


def reliability_bins(
    probabilities: np.ndarray, truth: np.ndarray, bins: int = 15
) -> list[dict[str, float]]:
    """Per confidence bin: mean confidence, accuracy and count (the reliability diagram)."""
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == truth
    edges = np.linspace(0.0, 1.0, bins + 1)
    rows = []
    for low, high in pairwise(edges):
        inside = (confidence > low) & (confidence <= high)
        if inside.any():
            rows.append(
                {
                    "low": float(low),
                    "high": float(high),
                    "confidence": float(confidence[inside].mean()),
                    "accuracy": float(correct[inside].mean()),
                    "count": int(inside.sum()),
                }
            )
    return rows


def expected_calibration_error(
    probabilities: np.ndarray, truth: np.ndarray, bins: int = 15
) -> float:
    total = len(truth)
    return float(
        sum(
            row["count"] / total * abs(row["accuracy"] - row["confidence"])
            for row in reliability_bins(probabilities, truth, bins)
        )
    )


def fit_temperature(logits: np.ndarray, truth: np.ndarray) -> float:
    """The temperature T in [0.05, 20] minimising the NLL of softmax(logits / T) (Guo et al.,
    2017): a one-dimensional, smooth problem in log T, solved by bounded Brent search."""
    from scipy.optimize import minimize_scalar

    logits = logits.astype(np.float64)
    rows = np.arange(len(truth))

    def loss(log_t: float) -> float:
        scaled = logits / np.exp(log_t)
        scaled -= scaled.max(axis=1, keepdims=True)
        log_normaliser = np.log(np.exp(scaled).sum(axis=1))
        return float((log_normaliser - scaled[rows, truth]).mean())

    best = minimize_scalar(
        loss, bounds=(np.log(0.05), np.log(20.0)), method="bounded", options={"xatol": 1e-6}
    )
    return float(np.exp(best.x))


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    scaled = logits / temperature
    scaled = scaled - scaled.max(axis=1, keepdims=True)
    exp = np.exp(scaled)
    return exp / exp.sum(axis=1, keepdims=True)


def nll(probabilities: np.ndarray, truth: np.ndarray) -> float:
    picked = probabilities[np.arange(len(truth)), truth]
    return float(-np.log(np.clip(picked, 1e-12, 1.0)).mean())
