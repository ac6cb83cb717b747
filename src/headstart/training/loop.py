"""The epoch loop shared by head training and fine-tuning.

Early stopping on validation loss with the best weights kept, a history record per epoch
(losses, accuracies, learning rate, seconds) and, when given a Checkpoint, a checkpoint after
every epoch. Each epoch's randomness is seeded from (seed, epoch), so a run resumed from a
checkpoint continues exactly as the uninterrupted run would have.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable

import torch
from torch import nn

from headstart.console import progress_bar
from headstart.training.checkpoint import Checkpoint, LoopState

EpochFn = Callable[[int], tuple[float, float]]  # epoch -> (loss, accuracy)
# -> the validation record ({"val_loss": ..., "val_accuracy": ..., ...}), or None without one
ValidateFn = Callable[[], dict[str, float] | None]


def epoch_seed(seed: int, epoch: int) -> int:
    return seed * 1_000_003 + epoch


def run_epochs(
    module: nn.Module,
    optimizer: torch.optim.Optimizer,
    train_epoch: EpochFn,
    validate: ValidateFn,
    *,
    epochs: int,
    patience: int,
    seed: int,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    checkpoint: Checkpoint | None = None,
    resume: bool = False,
    keep_start: bool = False,
    select: str = "val_loss",
    progress: bool = False,
    description: str = "Training",
) -> LoopState:
    """Train `module` for up to `epochs`; the returned state holds the history and best epoch.

    The module ends with its best weights (the lowest `select` entry of the validation
    record), or its last without validation. With `keep_start` the starting weights compete
    too, as epoch 0: training that only makes validation worse gives them back.
    """
    state = checkpoint.restore(module, optimizer, scheduler) if resume and checkpoint else None
    if state is None:
        state = LoopState()
        scores = validate() if keep_start else None
        if scores is not None:
            state.best_loss, state.best_state = scores[select], copy.deepcopy(module.state_dict())
    with progress_bar(description, epochs, progress) as advance:
        advance(state.epoch)
        while not state.finished and state.epoch < epochs:
            _one_epoch(module, optimizer, train_epoch, validate, seed, patience, select, state)
            state.finished = state.stopped_early or state.epoch == epochs
            if checkpoint is not None:
                checkpoint.save(module, optimizer, scheduler, state)
            advance(1)
    if state.best_state is not None:
        module.load_state_dict(state.best_state)
    else:
        state.best_epoch = state.epoch
    return state


def _one_epoch(
    module, optimizer, train_epoch, validate, seed, patience, select: str, state: LoopState
) -> None:
    epoch = state.epoch + 1
    started = time.perf_counter()
    torch.manual_seed(epoch_seed(seed, epoch))  # dropout and anything else drawing from torch
    loss, accuracy = train_epoch(epoch)
    record = {
        "epoch": epoch,
        "train_loss": loss,
        "train_accuracy": accuracy,
        "lr": optimizer.param_groups[-1]["lr"],
    }
    scores = validate()
    record.update(scores or {})
    record["seconds"] = time.perf_counter() - started
    state.history.append(record)
    state.epoch = epoch
    if scores is None:
        return
    if scores[select] < state.best_loss - 1e-6:
        state.best_loss, state.best_epoch, state.waited = scores[select], epoch, 0
        state.best_state = copy.deepcopy(module.state_dict())
    else:
        state.waited += 1
        state.stopped_early = state.waited >= patience
