"""Training a head on cached features: AdamW, early stopping on validation loss, best kept."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from headstart.training.heads import HeadConfig, build_head
from headstart.training.loop import epoch_seed, run_epochs
from headstart.training.settings import FitSettings


@dataclass
class FitResult:
    head: nn.Sequential
    config: HeadConfig
    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0
    stopped_early: bool = False


def fit_head(
    train_x: np.ndarray,
    train_y: np.ndarray,
    val_x: np.ndarray,
    val_y: np.ndarray,
    num_classes: int,
    settings: FitSettings,
    progress: bool = False,
) -> FitResult:
    """Train a head on features; without validation images it trains for all epochs."""
    torch.manual_seed(settings.seed)
    config = HeadConfig(
        settings.head, train_x.shape[1], num_classes, settings.hidden, settings.dropout
    )
    head = build_head(config)
    x, y = torch.from_numpy(train_x).float(), torch.from_numpy(train_y).long()
    vx, vy = torch.from_numpy(val_x).float(), torch.from_numpy(val_y).long()
    loss_fn = nn.CrossEntropyLoss(
        weight=class_weights(train_y, num_classes) if settings.balance_classes else None,
        label_smoothing=settings.label_smoothing,
    )
    optimizer = torch.optim.AdamW(
        head.parameters(), lr=settings.learning_rate, weight_decay=settings.weight_decay
    )

    def train_epoch(epoch: int) -> tuple[float, float]:
        head.train()
        order = torch.randperm(
            len(y), generator=torch.Generator().manual_seed(epoch_seed(settings.seed, epoch))
        )
        total_loss, correct = 0.0, 0
        for start in range(0, len(y), settings.batch_size):
            batch = order[start : start + settings.batch_size]
            logits = head(x[batch])
            loss = loss_fn(logits, y[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total_loss += loss.item() * len(batch)
            correct += int((logits.argmax(1) == y[batch]).sum())
        return total_loss / len(y), correct / len(y)

    state = run_epochs(
        head,
        optimizer,
        train_epoch,
        lambda: score(head, vx, vy) if len(vy) else None,
        epochs=settings.epochs,
        patience=settings.patience,
        seed=settings.seed,
        progress=progress,
    )
    return FitResult(head, config, state.history, state.best_epoch, state.stopped_early)


def score(head: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """Plain (unsmoothed, unweighted) cross entropy and accuracy, the numbers users judge by."""
    head.eval()
    with torch.no_grad():
        logits = head(x)
        loss = nn.functional.cross_entropy(logits, y)
    return float(loss), float((logits.argmax(1) == y).float().mean())


def class_weights(labels: np.ndarray, num_classes: int) -> torch.Tensor:
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    weights = len(labels) / (num_classes * np.maximum(counts, 1.0))
    return torch.tensor(weights, dtype=torch.float32)
