"""Temperature scaling: what a validation loss is once overconfidence is divided out.

Fine-tuning often raises the validation loss while accuracy rises, by growing the logits; the
loss at the best temperature (which the saved model applies anyway) judges the ranking alone.
"""

from __future__ import annotations

import numpy as np


def fit_temperature(logits: np.ndarray, truth: np.ndarray) -> float:
    """The temperature T in [0.05, 20] minimising the NLL of softmax(logits / T) (Guo et al.,
    2017): a one-dimensional, smooth problem in log T, solved by bounded Brent search. For a
    0/1 label matrix, one T shared by every label's sigmoid, minimising their summed NLL."""
    from scipy.optimize import minimize_scalar

    logits = logits.astype(np.float64)

    def loss(log_t: float) -> float:
        return _nll(logits / np.exp(log_t), truth)

    best = minimize_scalar(
        loss, bounds=(np.log(0.05), np.log(20.0)), method="bounded", options={"xatol": 1e-6}
    )
    return float(np.exp(best.x))


def calibrated_nll(logits: np.ndarray, truth: np.ndarray) -> float:
    """The mean negative log-likelihood of softmax(logits / T) at the best temperature T."""
    return _nll(logits.astype(np.float64) / fit_temperature(logits, truth), truth)


def _nll(logits: np.ndarray, truth: np.ndarray) -> float:
    from scipy.special import logsumexp

    from headstart.training.solver import binary_cross_entropy

    if truth.ndim == 2:
        return binary_cross_entropy(logits, truth)
    return float((logsumexp(logits, axis=1) - logits[np.arange(len(truth)), truth]).mean())
