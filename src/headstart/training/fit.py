"""Training a head on cached features.

The linear head is solved exactly (training/solver.py: L-BFGS, NumPy and SciPy, no PyTorch);
the MLP trains with AdamW mini-batches and early stopping on validation loss, best kept.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np

from headstart.model.heads import PRIOR_KIND, Head, HeadConfig, imagenet_log_probabilities
from headstart.training.choice import (
    SMALL_VALIDATION,
    CrossValidated,
    FeatureSet,
    can_cross_validate,
    cross_validated_choice,
    leading,
)
from headstart.training.settings import FitSettings
from headstart.training.solver import LinearFit, fit_linear

Prior = tuple[np.ndarray, np.ndarray]  # an ImageNet classifier: weight (classes, features), bias


@dataclass
class FitResult:
    head: Head
    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0
    l2: float | None = None  # the linear head's L2 strength
    features: int | None = None  # the leading features the linear head uses, when not all
    folds: CrossValidated | None = None  # the small-data choice, when folds made it
    refit: bool = False  # fitted on training and validation alike


def fit_head(
    train_x: np.ndarray,
    train_y: np.ndarray,
    val_x: np.ndarray,
    val_y: np.ndarray,
    num_classes: int,
    settings: FitSettings,
    progress: bool = False,
    *,
    head_widths: tuple[int, ...] = (),
    small_data: bool = False,
    prior: Callable[[], Prior | None] | None = None,
) -> FitResult:
    """Train the settings' head kind on features (validation picks L2 or the best epoch).

    `train_y` as class indices trains a softmax head; as a 0/1 matrix (photos, labels), a
    multi-label one: a logistic regression a label, or the MLP with binary cross entropy.

    For each of `head_widths`, the linear head is also fitted on that many leading features
    alone (the pooled head without the pooled stages, say) and, when that wins on validation
    loss, kept with zero weights on the rest: which features pay depends on the data (the
    stages helped flowers, X-rays and digits, and cost ants and bees 4 points).

    `small_data` (one row per training image, no augmented views): with fewer than
    SMALL_VALIDATION validation images (none included), the linear head's choices are made by
    cross-validation over training and validation together (training/choice.py), and unless
    fine-tuning follows (it needs the validation split) the head is then fitted on both. A
    `prior` (gives the backbone's ImageNet classifier, if it has one) is then one more
    candidate."""
    config = HeadConfig(
        settings.head, train_x.shape[1], num_classes, settings.hidden, settings.dropout
    )
    pool_y = np.concatenate([train_y, val_y])
    if (
        small_data
        and config.kind == "linear"
        and len(val_y) < SMALL_VALIDATION
        and can_cross_validate(pool_y, num_classes)
    ):
        refit = settings.strategy != "finetune"
        # fine-tuning (no refit) trains a plain linear head; the prior is read only if offered
        offered = prior() if refit and prior is not None else None
        return _fit_small(train_x, val_x, pool_y, config, settings, head_widths, refit, offered)
    multi_label = train_y.ndim == 2
    balance = settings.balance_classes and not multi_label
    weights = class_weights(train_y, num_classes)[train_y] if balance else None
    if config.kind == "linear":
        fit = fit_linear(
            train_x,
            train_y,
            val_x,
            val_y,
            num_classes,
            label_smoothing=settings.label_smoothing,
            sample_weight=weights,
            multi_label=multi_label,
        )
        chosen_width = None
        for width in head_widths if len(val_y) else ():
            narrow = fit_linear(
                train_x[:, :width],
                train_y,
                val_x[:, :width],
                val_y,
                num_classes,
                label_smoothing=settings.label_smoothing,
                sample_weight=weights,
                multi_label=multi_label,
            )
            if _best_val_loss(narrow) < _best_val_loss(fit):
                fit, chosen_width = _widened(narrow, train_x.shape[1]), width
        parameters = {"1.weight": fit.weight, "1.bias": fit.bias}
        head = Head(config, parameters)
        return FitResult(head, fit.history, fit.best_index + 1, fit.l2, chosen_width)
    return fit_by_gradient(train_x, train_y, val_x, val_y, config, settings, progress)


def _fit_small(
    train_x, val_x, pool_y, config, settings, widths, refit: bool, prior: Prior | None
) -> FitResult:
    """The linear head with L2 and features chosen by cross-validation over training and
    validation; fitted on both (`refit`) or on training alone. The result's `folds` hold the
    out-of-fold logits: honest scores of every photo, for calibration and the summary.

    With a `prior` (the backbone's ImageNet classifier, weight and bias), its log-probabilities
    are candidates too, alone and beside the pooled head: what a few photos a class cannot
    teach, where the classes are ImageNet's own (bench/imagenet_prior.py)."""
    pool_x = np.concatenate([train_x, val_x])
    total = pool_x.shape[1]
    candidates = leading(widths, total)
    if prior is not None:
        pool_x = np.concatenate([pool_x, imagenet_log_probabilities(pool_x, *prior)], axis=1)
        candidates += _prior_sets(prior, total)
    balance = settings.balance_classes and pool_y.ndim == 1
    weights = class_weights(pool_y, config.num_classes) if balance else None
    cv = cross_validated_choice(
        pool_x,
        pool_y,
        config.num_classes,
        candidates,
        label_smoothing=settings.label_smoothing,
        sample_weight=None if weights is None else weights[pool_y],
    )
    fitted = slice(None) if refit else slice(0, len(train_x))
    fitted_x, fitted_y = pool_x[fitted], pool_y[fitted]
    columns = cv.chosen.columns
    fit = fit_linear(
        cv.chosen.of(fitted_x),
        fitted_y,
        cv.chosen.of(fitted_x[:0]),
        fitted_y[:0],
        config.num_classes,
        label_smoothing=settings.label_smoothing,
        sample_weight=None if weights is None else weights[fitted_y],
        l2=cv.l2,
        multi_label=pool_y.ndim == 2,
    )
    weight = np.zeros((config.num_classes, pool_x.shape[1]), np.float32)
    weight[:, columns] = fit.weight
    if prior is not None and columns.max() >= total:  # the head reads the log-probabilities
        classes, features = prior[0].shape
        config = replace(config, kind=PRIOR_KIND, prior_features=features, prior_classes=classes)
        parameters = {"0.weight": prior[0], "0.bias": prior[1]}
        parameters |= {"2.weight": weight, "2.bias": fit.bias}
        narrower = None
    else:
        parameters = {"1.weight": weight[:, :total], "1.bias": fit.bias}
        narrower = len(columns) if len(columns) < total else None
    return FitResult(Head(config, parameters), fit.history, 1, cv.l2, narrower, cv, refit)


def _prior_sets(prior: Prior, total: int) -> tuple[FeatureSet, FeatureSet]:
    classes, features = prior[0].shape
    log_probabilities = np.arange(total, total + classes)
    alone = f"the ImageNet classifier's {classes} log-probabilities"
    beside = f"the first {features} features and the ImageNet classifier's log-probabilities"
    return (
        FeatureSet(alone, log_probabilities),
        FeatureSet(beside, np.r_[np.arange(features), log_probabilities]),
    )


def _best_val_loss(fit: LinearFit) -> float:
    return fit.history[fit.best_index]["val_loss"]


def _widened(fit: LinearFit, width: int) -> LinearFit:
    """The same head taking `width` features, the ones beyond its own weighted zero."""
    weight = np.zeros((fit.weight.shape[0], width), np.float32)
    weight[:, : fit.weight.shape[1]] = fit.weight
    return LinearFit(weight, fit.bias, fit.l2, fit.history, fit.best_index)


def fit_by_gradient(
    train_x: np.ndarray,
    train_y: np.ndarray,
    val_x: np.ndarray,
    val_y: np.ndarray,
    config: HeadConfig,
    settings: FitSettings,
    progress: bool = False,
) -> FitResult:
    """AdamW mini-batches with early stopping on validation loss (the MLP's way)."""
    import torch

    torch.manual_seed(settings.seed)
    # A head's matrices are small: one thread beats several waiting on each other.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _descend(train_x, train_y, val_x, val_y, config, settings, progress)
    finally:
        torch.set_num_threads(threads)


def _descend(train_x, train_y, val_x, val_y, config, settings, progress) -> FitResult:
    import torch
    from torch import nn

    from headstart.model.heads import build_head
    from headstart.training.loop import epoch_seed, run_epochs

    head = build_head(config)
    multi_label = train_y.ndim == 2
    target = (lambda y: torch.from_numpy(y).float()) if multi_label else torch.from_numpy
    x, y = torch.from_numpy(train_x).float(), target(train_y)
    vx, vy = torch.from_numpy(val_x).float(), target(val_y)
    loss_fn = training_loss(train_y, config.num_classes, settings)
    right = decisions_right if multi_label else (lambda logits, y: logits.argmax(1) == y)
    optimizer = torch.optim.AdamW(
        head.parameters(), lr=settings.learning_rate, weight_decay=settings.weight_decay
    )

    def train_epoch(epoch: int) -> tuple[float, float]:
        head.train()
        order = torch.randperm(
            len(y), generator=torch.Generator().manual_seed(epoch_seed(settings.seed, epoch))
        )
        total_loss, correct = 0.0, 0.0
        for start in range(0, len(y), settings.batch_size):
            batch = order[start : start + settings.batch_size]
            logits = head(x[batch])
            loss = loss_fn(logits, y[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total_loss += loss.item() * len(batch)
            correct += float(right(logits, y[batch]).float().mean()) * len(batch)
        return total_loss / len(y), correct / len(y)

    def validate() -> dict[str, float] | None:
        if not len(vy):
            return None
        head.eval()
        with torch.no_grad():
            logits = head(vx)
        if multi_label:  # summed over labels, as the linear head's path measures it
            loss = nn.functional.binary_cross_entropy_with_logits(logits, vy) * vy.shape[1]
        else:
            loss = nn.functional.cross_entropy(logits, vy)
        return {"val_loss": float(loss), "val_accuracy": float(right(logits, vy).float().mean())}

    state = run_epochs(
        head,
        optimizer,
        train_epoch,
        validate,
        epochs=settings.epochs,
        patience=settings.patience,
        seed=settings.seed,
        progress=progress,
    )
    return FitResult(Head.from_module(config, head), state.history, state.best_epoch)


def training_loss(train_y: np.ndarray, num_classes: int, settings: FitSettings):
    """Cross entropy (class-weighted if asked, label-smoothed), or for a 0/1 label matrix
    binary cross entropy summed over the labels, smoothed towards 1/2."""
    import torch
    from torch import nn

    if train_y.ndim == 2:
        smoothing = settings.label_smoothing

        def binary(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            targets = y * (1.0 - smoothing) + 0.5 * smoothing
            loss = nn.functional.binary_cross_entropy_with_logits(logits, targets)
            return loss * y.shape[1]

        return binary
    weights = class_weights(train_y, num_classes) if settings.balance_classes else None
    return nn.CrossEntropyLoss(
        weight=torch.from_numpy(weights).float() if weights is not None else None,
        label_smoothing=settings.label_smoothing,
    )


def decisions_right(logits, y):
    """Multi-label: which label decisions (logit above 0, probability above 1/2) are right."""
    return (logits > 0) == (y > 0.5)


def class_weights(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Inverse class frequency, normalised so that a balanced set weighs 1 everywhere."""
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    return len(labels) / (num_classes * np.maximum(counts, 1.0))
