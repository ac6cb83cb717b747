"""Calibration: expected calibration error and reliability bins (the temperature is fitted in
training.temperature)."""

from __future__ import annotations

from itertools import pairwise

import numpy as np


def reliability_bins(
    probabilities: np.ndarray, truth: np.ndarray, bins: int = 15
) -> list[dict[str, float]]:
    """Per confidence bin: mean confidence, accuracy and count (the reliability diagram).
    Multi-label (truth a 0/1 matrix): every label's probability is a confidence, and its
    accuracy the share of those in the bin that are true."""
    if truth.ndim == 2:
        confidence, correct = probabilities.ravel(), truth.ravel() > 0.5
    else:
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
    total = truth.size
    return float(
        sum(
            row["count"] / total * abs(row["accuracy"] - row["confidence"])
            for row in reliability_bins(probabilities, truth, bins)
        )
    )


def nll(probabilities: np.ndarray, truth: np.ndarray) -> float:
    """Mean negative log-likelihood of the true class; multi-label, summed over the labels."""
    if truth.ndim == 2:
        p = np.clip(probabilities, 1e-12, 1 - 1e-12)
        return float(-(truth * np.log(p) + (1 - truth) * np.log(1 - p)).sum(axis=1).mean())
    picked = probabilities[np.arange(len(truth)), truth]
    return float(-np.log(np.clip(picked, 1e-12, 1.0)).mean())
