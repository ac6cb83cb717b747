import numpy as np
import pytest
import torch

from headstart.training.fit import fit_head
from headstart.training.settings import FitSettings


def blobs(seed: int, n: int = 60, dim: int = 16, classes: int = 3):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(classes, dim)) * 3
    y = rng.integers(0, classes, n)
    x = (centres[y] + rng.normal(size=(n, dim))).astype(np.float32)
    return x, y


def test_same_seed_gives_the_same_head():
    (x, y), (vx, vy) = blobs(0), blobs(1)
    settings = FitSettings(strategy="mlp", hidden=32, epochs=30, seed=7)
    first = fit_head(x, y, vx, vy, 3, settings)
    second = fit_head(x, y, vx, vy, 3, settings)
    for a, b in zip(
        first.head.state_dict().values(), second.head.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b)
    assert [h["val_loss"] for h in first.history] == [h["val_loss"] for h in second.history]


def test_early_stopping_restores_the_best_epoch():
    (x, y), (vx, vy) = blobs(0, n=40), blobs(1)
    vy = (vy + 1) % 3  # validation labels disagree with training: val loss rises as training fits
    result = fit_head(x, y, vx, vy, 3, FitSettings(epochs=200, patience=5, learning_rate=1e-2))
    assert result.stopped_early
    assert len(result.history) == result.best_epoch + 5
    best = min(h["val_loss"] for h in result.history)
    assert result.history[result.best_epoch - 1]["val_loss"] == best
    with torch.no_grad():
        restored = torch.nn.functional.cross_entropy(
            result.head.eval()(torch.from_numpy(vx)), torch.from_numpy(vy)
        )
    assert float(restored) == pytest.approx(best, rel=1e-5)


def test_linear_head_learns_separable_features():
    (x, y), (vx, vy) = blobs(0, n=200), blobs(0, n=100)
    result = fit_head(
        x, y, vx, vy, 3, FitSettings(epochs=100, balance_classes=True, label_smoothing=0.1)
    )
    assert result.history[result.best_epoch - 1]["val_accuracy"] > 0.9


def test_without_validation_all_epochs_run():
    x, y = blobs(0)
    empty = np.zeros((0, x.shape[1]), np.float32)
    result = fit_head(x, y, empty, np.zeros(0, np.int64), 3, FitSettings(epochs=7))
    assert len(result.history) == 7 and result.best_epoch == 7


def test_keep_start_gives_back_the_start_when_training_only_hurts():
    from headstart.training.loop import run_epochs

    (x, y), (vx, vy) = blobs(0, n=40), blobs(1)
    vy = (vy + 1) % 3  # training makes validation worse from the first step
    head = torch.nn.Linear(16, 3)
    start = {k: v.clone() for k, v in head.state_dict().items()}
    optimizer = torch.optim.SGD(head.parameters(), lr=0.5)
    tx, ty = torch.from_numpy(x), torch.from_numpy(y)
    vxt, vyt = torch.from_numpy(vx), torch.from_numpy(vy)

    def train_epoch(epoch):
        loss = torch.nn.functional.cross_entropy(head(tx), ty)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return loss.item(), 0.0

    def validate():
        with torch.no_grad():
            return float(torch.nn.functional.cross_entropy(head(vxt), vyt)), 0.0

    state = run_epochs(
        head, optimizer, train_epoch, validate, epochs=5, patience=3, seed=0, keep_start=True
    )
    assert state.best_epoch == 0 and len(state.history) == 3
    assert all(torch.equal(start[k], v) for k, v in head.state_dict().items())
