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
    """The temperature T minimising the NLL of softmax(logits / T) (Guo et al., 2017)."""
    import torch

    x, y = torch.from_numpy(logits).double(), torch.from_numpy(truth).long()
    log_t = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t], lr=0.1, max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(x / log_t.exp(), y)
        loss.backward()
        return loss

    optimizer.step(closure)
    return float(log_t.detach().exp().clamp(0.05, 20.0))


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    scaled = logits / temperature
    scaled = scaled - scaled.max(axis=1, keepdims=True)
    exp = np.exp(scaled)
    return exp / exp.sum(axis=1, keepdims=True)


def nll(probabilities: np.ndarray, truth: np.ndarray) -> float:
    picked = probabilities[np.arange(len(truth)), truth]
    return float(-np.log(np.clip(picked, 1e-12, 1.0)).mean())
