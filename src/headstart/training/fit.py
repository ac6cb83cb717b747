"""Training a head on cached features: AdamW, early stopping on validation loss, best kept."""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from headstart.console import progress_bar
from headstart.training.heads import HeadConfig, build_head
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
    generator = torch.Generator().manual_seed(settings.seed)
    config = HeadConfig(
        settings.head, train_x.shape[1], num_classes, settings.hidden, settings.dropout
    )
    head = build_head(config)
    x, y = torch.from_numpy(train_x).float(), torch.from_numpy(train_y).long()
    vx, vy = torch.from_numpy(val_x).float(), torch.from_numpy(val_y).long()
    loss_fn = nn.CrossEntropyLoss(
        weight=_class_weights(train_y, num_classes) if settings.balance_classes else None,
        label_smoothing=settings.label_smoothing,
    )
    optimizer = torch.optim.AdamW(
        head.parameters(), lr=settings.learning_rate, weight_decay=settings.weight_decay
    )
    result = FitResult(head, config)
    best_loss, best_state, waited = float("inf"), None, 0
    with progress_bar("Training", settings.epochs, progress) as advance:
        for epoch in range(1, settings.epochs + 1):
            started = time.perf_counter()
            train_loss, train_acc = _train_epoch(
                head, x, y, loss_fn, optimizer, settings, generator
            )
            record = {"epoch": epoch, "train_loss": train_loss, "train_accuracy": train_acc}
            advance(1)
            if len(vy):
                val_loss, val_acc = _score(head, vx, vy)
                record |= {"val_loss": val_loss, "val_accuracy": val_acc}
            record["seconds"] = time.perf_counter() - started
            result.history.append(record)
            if not len(vy):
                continue
            if val_loss < best_loss - 1e-6:
                best_loss, best_state, waited = val_loss, copy.deepcopy(head.state_dict()), 0
                result.best_epoch = epoch
            else:
                waited += 1
                if waited >= settings.patience:
                    result.stopped_early = True
                    break
    if best_state is not None:
        head.load_state_dict(best_state)
    else:
        result.best_epoch = len(result.history)
    return result


def _train_epoch(head, x, y, loss_fn, optimizer, settings, generator) -> tuple[float, float]:
    head.train()
    order = torch.randperm(len(y), generator=generator)
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


def _score(head: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """Plain (unsmoothed, unweighted) cross entropy and accuracy, the numbers users judge by."""
    head.eval()
    with torch.no_grad():
        logits = head(x)
        loss = nn.functional.cross_entropy(logits, y)
    return float(loss), float((logits.argmax(1) == y).float().mean())


def _class_weights(labels: np.ndarray, num_classes: int) -> torch.Tensor:
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    weights = len(labels) / (num_classes * np.maximum(counts, 1.0))
    return torch.tensor(weights, dtype=torch.float32)
