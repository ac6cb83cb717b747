"""The linear head as what it is, a convex problem: multinomial logistic regression with L2,
solved full-batch by L-BFGS (SciPy), its regularisation chosen on the validation split.

NumPy and SciPy only: a warm `train` never needs PyTorch. A short path of regularisation
strengths, strongest first, each warm-started from the last, costs little more than one fit.
Features may be float16 (features/blocks.py): a large set is then read a block of rows at a
time, and beyond the features the fit needs memory in proportion to the images alone.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy.optimize import minimize
from scipy.special import log_expit, log_softmax

from headstart.features.blocks import column_mean, float32_blocks, map_rows, working_copy

# Strongest first; the path stops once validation loss has risen twice in a row.
L2_PATH = tuple(float(v) for v in np.geomspace(1e-1, 1e-5, 9))
_MAX_ITERATIONS = 500
DEFAULT_L2 = 1e-3  # without validation images: the best strength on the sets measured
_CV_FOLDS = 3


@dataclass
class LinearFit:
    weight: np.ndarray  # (classes, dim) float32
    bias: np.ndarray  # (classes,) float32
    l2: float
    history: list[dict[str, float]] = field(default_factory=list)
    best_index: int = 0


def fit_linear(
    train_x: np.ndarray,
    train_y: np.ndarray,
    val_x: np.ndarray,
    val_y: np.ndarray,
    num_classes: int,
    *,
    label_smoothing: float = 0.0,
    sample_weight: np.ndarray | None = None,
    l2: float | None = None,
    multi_label: bool = False,
) -> LinearFit:
    """Fit on the training features; the L2 strength with the lowest validation loss wins.

    Without validation images the strength is chosen by 3-fold cross-validation on training;
    a given `l2` is used as it is. `multi_label` (y a 0/1 matrix): one logistic regression a
    label (a sigmoid head), solved together since the loss is their sum.
    """
    # Centred features decouple the (unpenalised) bias from the weights: the same optimum in
    # fewer L-BFGS iterations. The bias is folded back so the head takes raw features.
    mean = column_mean(train_x)
    kind = SigmoidProblem if multi_label else LinearProblem
    problem = kind(train_x, train_y, num_classes, label_smoothing, sample_weight, mean)
    if l2 is None and len(val_y):
        fit = _path(problem, val_x, val_y)
    else:
        if l2 is None:
            l2 = _cross_validated_l2(
                kind, train_x, train_y, num_classes, label_smoothing, sample_weight, mean
            )
        params, record = problem.solve(l2, problem.zeros())
        weight, bias = problem.unpack(params)
        fit = LinearFit(weight, bias, l2, [{"epoch": 1, **record}], 0)
    fit.bias = (fit.bias - fit.weight @ mean).astype(np.float32)
    return fit


def _path(problem: LinearProblem, val_x: np.ndarray, val_y: np.ndarray) -> LinearFit:
    params = problem.zeros()
    best: tuple[float, np.ndarray, float, int] | None = None
    history: list[dict[str, float]] = []
    rises = 0
    for index, l2 in enumerate(L2_PATH):
        params, record = problem.solve(l2, params)
        val_loss, val_accuracy = problem.scores(problem.logits(val_x, params), val_y)
        history.append(
            {"epoch": index + 1, **record, "val_loss": val_loss, "val_accuracy": val_accuracy}
        )
        if best is None or val_loss < best[0] - 1e-9:
            best, rises = (val_loss, params.copy(), l2, index), 0
        else:
            rises += 1
            if rises == 2:
                break
    assert best is not None
    weight, bias = problem.unpack(best[1])
    return LinearFit(weight, bias, best[2], history, best[3])


def _cross_validated_l2(kind, x, y, num_classes, label_smoothing, sample_weight, mean) -> float:
    folds = np.arange(len(y)) % _CV_FOLDS
    if len(y) < 2 * _CV_FOLDS:
        return DEFAULT_L2
    losses = np.zeros(len(L2_PATH))
    for fold in range(_CV_FOLDS):
        train, held = folds != fold, folds == fold
        weights = sample_weight[train] if sample_weight is not None else None
        problem = kind(x[train], y[train], num_classes, label_smoothing, weights, mean)
        params = problem.zeros()
        for index, l2 in enumerate(L2_PATH):
            params, _ = problem.solve(l2, params)
            losses[index] += problem.scores(problem.logits(x[held], params), y[held])[0]
    return L2_PATH[int(np.argmin(losses))]


class LinearProblem:
    """Weighted, label-smoothed softmax cross entropy plus 0.5 * l2 * |W|^2 (bias free), on
    the features less `mean`: centred in the products, never copied (the features can be
    most of the memory a large run has), and summed a block of rows at a time."""

    def __init__(self, x, y, num_classes, label_smoothing, sample_weight, mean=None) -> None:
        self.x = working_copy(x)  # a float32 column slice stays a view: BLAS strides it
        self.mean = np.zeros(self.x.shape[1], np.float32) if mean is None else mean
        self.classes = num_classes
        self.dim = x.shape[1]
        self.smoothing = label_smoothing
        weights = np.ones(len(y)) if sample_weight is None else np.asarray(sample_weight, float)
        self.weights = (weights / weights.sum()).astype(np.float32)[:, None]
        self.y = y

    def zeros(self) -> np.ndarray:
        return np.zeros(self.classes * (self.dim + 1))

    def unpack(self, params: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        matrix = params.reshape(self.classes, self.dim + 1).astype(np.float32)
        return np.ascontiguousarray(matrix[:, :-1]), matrix[:, -1].copy()

    def logits(self, x: np.ndarray, params: np.ndarray) -> np.ndarray:
        """Logits of raw (uncentred) features under `params`."""
        weight, bias = self.unpack(params)
        return map_rows(lambda rows: rows @ weight.T, x) + (bias - weight @ self.mean)

    def _weighted_targets(self, start: int, stop: int) -> np.ndarray:
        y = self.y[start:stop]
        targets = np.full((len(y), self.classes), self.smoothing / self.classes, np.float32)
        targets[np.arange(len(y)), y] += 1.0 - self.smoothing
        return targets * self.weights[start:stop]

    def loss_and_gradient(self, params: np.ndarray, l2: float) -> tuple[float, np.ndarray]:
        weight, bias = self.unpack(params)
        shift = bias - weight @ self.mean
        loss = 0.5 * l2 * float((weight.astype(np.float64) ** 2).sum())
        grad_weight, delta_sum = l2 * weight, np.zeros(self.classes, np.float32)
        for start, rows in float32_blocks(self.x):
            stop = start + len(rows)
            block_loss, delta = self._block(rows @ weight.T + shift, start, stop)
            loss += block_loss
            grad_weight += delta.T @ rows
            delta_sum += delta.sum(axis=0)
        # (x - mean)^T delta, as x^T delta less mean's share
        grad_weight -= np.outer(delta_sum, self.mean)
        grad = np.concatenate([grad_weight, delta_sum[:, None]], axis=1)
        return loss, grad.ravel().astype(np.float64)

    def _block(self, logits: np.ndarray, start: int, stop: int) -> tuple[float, np.ndarray]:
        """A block of rows' weighted loss, and its gradient with respect to their logits."""
        log_probabilities = log_softmax(logits, axis=1)
        weighted_targets = self._weighted_targets(start, stop)
        loss = -float((weighted_targets * log_probabilities).sum())
        # d loss / d logits = w_i * (p - t); probabilities under e^-80 are flushed to zero,
        # since float32 subnormals slow the matrix products several times over.
        probabilities = np.exp(np.maximum(log_probabilities, -80.0))
        probabilities[log_probabilities < -80.0] = 0.0
        return loss, probabilities * self.weights[start:stop] - weighted_targets

    def solve(
        self, l2: float, start: np.ndarray, gtol: float = 1e-6
    ) -> tuple[np.ndarray, dict[str, float]]:
        began = time.perf_counter()
        with scipy_blas_single_threaded():
            result = minimize(
                self.loss_and_gradient,
                start,
                args=(l2,),
                jac=True,
                method="L-BFGS-B",
                options={"maxiter": _MAX_ITERATIONS, "gtol": gtol},
            )
        train_loss, train_accuracy = self.scores(self.logits(self.x, result.x), self.y)
        record = {
            "l2": l2,
            "iterations": int(result.nit),
            "evaluations": int(result.nfev),
            "train_loss": train_loss,
            "train_accuracy": train_accuracy,
            "seconds": time.perf_counter() - began,
        }
        return result.x, record

    @staticmethod
    def scores(logits: np.ndarray, y: np.ndarray) -> tuple[float, float]:
        return scores(logits, y)


class SigmoidProblem(LinearProblem):
    """One logistic regression a label (y a 0/1 matrix): binary cross entropy summed over the
    labels and averaged over the (weighted) images, plus the same L2. Label smoothing pulls
    each target towards 1/2."""

    def _weighted_targets(self, start: int, stop: int) -> np.ndarray:
        targets = self.y[start:stop].astype(np.float32)
        targets = targets * (1.0 - self.smoothing) + 0.5 * self.smoothing
        return targets * self.weights[start:stop]

    def _block(self, logits: np.ndarray, start: int, stop: int) -> tuple[float, np.ndarray]:
        weighted_targets = self._weighted_targets(start, stop)
        row_weights = self.weights[start:stop]
        # -[t log s(z) + (1 - t) log s(-z)], weighted: log_expit stays finite everywhere
        loss = -float(
            (weighted_targets * log_expit(logits)).sum()
            + ((row_weights - weighted_targets) * log_expit(-logits)).sum()
        )
        return loss, np.exp(log_expit(logits)) * row_weights - weighted_targets

    @staticmethod
    def scores(logits: np.ndarray, y: np.ndarray) -> tuple[float, float]:
        return binary_scores(logits, y)


@contextmanager
def scipy_blas_single_threaded() -> Iterator[None]:
    """SciPy's own OpenBLAS (used by L-BFGS-B) on one thread while it runs.

    SciPy and NumPy wheels each bring an OpenBLAS; with both on all cores, the threads of one
    spin while the other computes, and the solve ran 3.4x slower than with SciPy's on one.
    """
    _SCIPY_BLAS.enter()
    try:
        yield
    finally:
        _SCIPY_BLAS.leave()


class _OneThreadWhileUsed:
    """The setting is the process's: the first of overlapping users (the studio's training
    and its doctor, say) sets it, and the last one out restores what was there before."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._users = 0
        self._before: list[tuple[Any, int]] = []

    def enter(self) -> None:
        from threadpoolctl import ThreadpoolController

        with self._lock:
            if not self._users:
                controllers = ThreadpoolController().lib_controllers
                scipy = [c for c in controllers if "scipy" in Path(c.filepath).parts[-2]]
                self._before = [(c, c.num_threads) for c in scipy]
                for controller in scipy:
                    controller.set_num_threads(1)
            self._users += 1

    def leave(self) -> None:
        with self._lock:
            self._users -= 1
            if not self._users:
                for controller, threads in self._before:
                    controller.set_num_threads(threads)
                self._before = []


_SCIPY_BLAS = _OneThreadWhileUsed()


def binary_scores(logits: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Binary cross entropy summed over labels (mean over images), and the share of
    label decisions right at 1/2."""
    z = logits.astype(np.float64)
    return binary_cross_entropy(z, y), float(((z > 0) == (y > 0.5)).mean())


def binary_cross_entropy(logits: np.ndarray, y: np.ndarray) -> float:
    """-[y log s(z) + (1 - y) log s(-z)], summed over the labels, averaged over the images."""
    return float(-(y * log_expit(logits) + (1.0 - y) * log_expit(-logits)).sum(axis=1).mean())


def scores(logits: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Plain (unsmoothed, unweighted) cross entropy and accuracy."""
    log_probabilities = log_softmax(logits.astype(np.float64), axis=1)
    loss = -float(log_probabilities[np.arange(len(y)), y].mean())
    return loss, float((logits.argmax(axis=1) == y).mean())
