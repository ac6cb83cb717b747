import numpy as np
import pytest
import torch

from headstart.model.heads import Head
from headstart.training.fit import fit_head
from headstart.training.settings import FitSettings
from headstart.training.solver import L2_PATH, fit_linear, scores


def blobs(seed: int, n: int = 60, dim: int = 16, classes: int = 3):
    """Gaussian blobs around the same centres for every seed (the seed draws the samples)."""
    centres = np.random.default_rng(1000 + dim).normal(size=(classes, dim)) * 3
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    x = (centres[y] + rng.normal(size=(n, dim))).astype(np.float32)
    return x, y


def test_same_seed_gives_the_same_mlp():
    (x, y), (vx, vy) = blobs(0), blobs(1)
    settings = FitSettings(strategy="mlp", hidden=32, epochs=30, seed=7)
    first = fit_head(x, y, vx, vy, 3, settings)
    second = fit_head(x, y, vx, vy, 3, settings)
    for name, value in first.head.parameters.items():
        np.testing.assert_array_equal(value, second.head.parameters[name])
    assert [h["val_loss"] for h in first.history] == [h["val_loss"] for h in second.history]
    other = fit_head(x, y, vx, vy, 3, FitSettings(strategy="mlp", hidden=32, epochs=30, seed=8))
    assert not np.array_equal(other.head.parameters["0.weight"], first.head.parameters["0.weight"])


def test_mlp_early_stopping_restores_the_best_epoch():
    (x, y), (vx, vy) = blobs(0, n=40), blobs(1)
    vy = (vy + 1) % 3  # validation labels disagree with training: val loss rises as training fits
    settings = FitSettings(strategy="mlp", epochs=200, patience=5, learning_rate=1e-2)
    result = fit_head(x, y, vx, vy, 3, settings)
    assert len(result.history) == result.best_epoch + 5 < 200
    best = min(h["val_loss"] for h in result.history)
    assert result.history[result.best_epoch - 1]["val_loss"] == best
    assert scores(result.head.logits(vx), vy)[0] == pytest.approx(best, rel=1e-5)


def test_numpy_heads_give_the_logits_of_their_pytorch_modules():
    (x, y), (vx, vy) = blobs(0), blobs(1)
    for strategy in ("linear", "mlp"):
        head = fit_head(x, y, vx, vy, 3, FitSettings(strategy=strategy, hidden=8, epochs=5)).head
        with torch.no_grad():
            expected = head.module()(torch.from_numpy(vx)).numpy()
        np.testing.assert_allclose(head.logits(vx), expected, rtol=1e-5, atol=1e-5)
        assert (
            Head.from_module(head.config, head.module()).parameters.keys() == head.parameters.keys()
        )


def test_linear_solver_reaches_the_logistic_regression_optimum():
    """The same minimum as scikit-learn's multinomial logistic regression at the chosen L2."""
    from sklearn.linear_model import LogisticRegression

    (x, y), (vx, vy) = blobs(0, n=200, dim=8), blobs(1, n=100, dim=8)
    x += np.random.default_rng(2).normal(size=x.shape).astype(np.float32) * 3  # overlapping
    fit = fit_linear(x, y, vx, vy, 3)
    reference = LogisticRegression(C=1 / (fit.l2 * len(y)), tol=1e-10, max_iter=10_000).fit(x, y)

    def objective(weight, bias) -> float:
        loss = scores(x @ weight.T + bias, y)[0]
        return loss + 0.5 * fit.l2 * float((weight.astype(np.float64) ** 2).sum())

    ours, theirs = objective(fit.weight, fit.bias), objective(reference.coef_, reference.intercept_)
    assert ours == pytest.approx(theirs, abs=1e-5)
    np.testing.assert_allclose(fit.weight, reference.coef_, atol=0.02)


def test_linear_l2_is_the_one_with_the_lowest_validation_loss():
    (x, y), (vx, vy) = blobs(0, n=60), blobs(1, n=200)
    fit = fit_linear(x, y, vx, vy, 3)
    losses = [h["val_loss"] for h in fit.history]
    assert fit.best_index == int(np.argmin(losses)) and fit.l2 == L2_PATH[fit.best_index]
    assert [h["l2"] for h in fit.history] == list(L2_PATH[: len(losses)])
    noisy = (vy + np.random.default_rng(0).integers(0, 2, len(vy))) % 3  # half the labels wrong
    assert fit_linear(x, y, vx, noisy, 3).l2 > fit.l2  # worse validation: stronger L2


def test_balance_classes_raises_the_minority_recall():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(0, 1, (300, 4)), rng.normal(1.2, 1, (30, 4))]).astype(np.float32)
    y = np.array([0] * 300 + [1] * 30)
    vx = np.concatenate([rng.normal(0, 1, (100, 4)), rng.normal(1.2, 1, (100, 4))])
    vy = np.array([0] * 100 + [1] * 100)

    def minority_recall(balance: bool) -> float:
        head = fit_head(x, y, vx.astype(np.float32), vy, 2, FitSettings(balance_classes=balance))
        return float((head.head.logits(vx[vy == 1]).argmax(1) == 1).mean())

    assert minority_recall(True) > minority_recall(False) + 0.2


def test_label_smoothing_lowers_the_confidence_on_training_images():
    (x, y), (vx, vy) = blobs(0, n=200), blobs(1, n=100)

    def top_probability(smoothing: float) -> float:
        head = fit_head(x, y, vx, vy, 3, FitSettings(label_smoothing=smoothing)).head
        logits = head.logits(x).astype(np.float64)
        probabilities = np.exp(logits - logits.max(1, keepdims=True))
        return float((probabilities.max(1) / probabilities.sum(1)).mean())

    assert top_probability(0.3) < top_probability(0.0) - 0.05


def test_without_validation_l2_is_cross_validated():
    x, y = blobs(0)
    empty = np.zeros((0, x.shape[1]), np.float32)
    result = fit_head(x, y, empty, np.zeros(0, np.int64), 3, FitSettings())
    assert len(result.history) == 1 and result.l2 in L2_PATH
    assert scores(result.head.logits(x), y)[1] > 0.9


def test_keep_start_gives_back_the_start_when_training_only_hurts():
    from headstart.training.loop import run_epochs

    (x, y), (vx, vy) = blobs(0, n=40), blobs(1)
    vy = (vy + 1) % 3  # training makes validation worse from the first step
    torch.manual_seed(0)
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
            return {"val_loss": float(torch.nn.functional.cross_entropy(head(vxt), vyt))}

    state = run_epochs(
        head, optimizer, train_epoch, validate, epochs=5, patience=3, seed=0, keep_start=True
    )
    assert state.best_epoch == 0 and len(state.history) == 3
    assert all(torch.equal(start[k], v) for k, v in head.state_dict().items())


def test_the_linear_head_keeps_the_pooled_stages_only_when_validation_says_they_pay():
    rng = np.random.default_rng(3)

    def data(n, signal_in_extra):
        y = rng.integers(0, 3, n)
        head = rng.normal(size=(n, 8)).astype(np.float32)
        extra = rng.normal(size=(n, 300)).astype(np.float32)
        if signal_in_extra:
            extra[:, :3] += 3.0 * np.eye(3, dtype=np.float32)[y]
        else:
            head[:, :3] += 3.0 * np.eye(3, dtype=np.float32)[y]
        return np.concatenate([head, extra], axis=1), y

    for signal_in_extra in (False, True):
        x, y = data(60, signal_in_extra)  # few images, many noisy columns: easy to overfit
        vx, vy = data(300, signal_in_extra)
        result = fit_head(x, y, vx, vy, 3, FitSettings(), head_widths=(8,))
        weight = result.head.parameters["1.weight"]
        assert weight.shape == (3, 308)
        if signal_in_extra:
            assert result.features is None and np.abs(weight[:, 8:]).sum() > 0
        else:
            assert result.features == 8
            assert not weight[:, 8:].any()  # the head ignores the stages, same logits
            plain = fit_head(x[:, :8], y, vx[:, :8], vy, 3, FitSettings())
            assert np.allclose(result.head.logits(vx), plain.head.logits(vx[:, :8]), atol=1e-5)


@pytest.mark.slow
def test_the_linear_fit_never_holds_float16_features_at_float32(monkeypatch):
    """Beyond the float32 copy budget, the solver reads float16 features a block at a time:
    its peak allocation stays far below the float32 matrix it would otherwise build."""
    import tracemalloc

    from headstart.features import blocks

    monkeypatch.setattr(blocks, "BLOCK_ROWS", 2048)
    monkeypatch.setattr(blocks, "copy_budget", lambda: 0)
    (x, y), (vx, vy) = blobs(0, n=30_000, dim=256), blobs(1, n=3_000, dim=256)
    x, vx = x.astype(np.float16), vx.astype(np.float16)
    tracemalloc.start()
    try:
        fit = fit_head(x, y, vx, vy, 3, FitSettings())
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert scores(fit.head.logits(vx), vy)[1] > 0.95
    assert peak < 0.25 * x.size * 4, f"peak {peak / 1e6:.1f} MB"


def signal_in(extra: bool, n: int, rng: np.random.Generator):
    """3 classes: 8 leading features and 300 more, the class signal in one group only."""
    y = np.arange(n) % 3
    head = rng.normal(size=(n, 8)).astype(np.float32)
    rest = rng.normal(size=(n, 300)).astype(np.float32)
    (rest if extra else head)[:, :3] += 2.5 * np.eye(3, dtype=np.float32)[y]
    return np.concatenate([head, rest], axis=1), y


def test_small_validation_chooses_by_cross_validation_and_fits_on_every_photo():
    """Below 100 validation photos the width and L2 come from folds over training and
    validation, and the head is fitted on both: a validation photo's own label is learnt."""
    from headstart.training.choice import SMALL_VALIDATION

    rng = np.random.default_rng(5)
    for extra in (False, True):
        x, y = signal_in(extra, 90, rng)
        train, val = slice(0, 75), slice(75, 90)
        result = fit_head(
            x[train], y[train], x[val], y[val], 3, FitSettings(), head_widths=(8,), small_data=True
        )
        folds = result.folds
        assert folds is not None and folds.photos == 90 and result.refit
        assert result.features == (None if extra else 8)
        assert folds.l2 == result.l2
        # fitted on all 90: the same head as fitting them directly with the chosen L2
        width = len(folds.chosen.columns)
        assert np.array_equal(folds.chosen.columns, np.arange(width))
        direct = fit_linear(x[:, :width], y, x[:0, :width], y[:0], 3, l2=folds.l2)
        assert np.allclose(result.head.parameters["1.weight"][:, :width], direct.weight, atol=1e-5)
    assert SMALL_VALIDATION > 15
    # 100 validation photos and more: validation decides, as before
    x, y = signal_in(True, 300, rng)
    result = fit_head(x[:150], y[:150], x[150:], y[150:], 3, FitSettings(), small_data=True)
    assert result.folds is None


def test_out_of_fold_logits_never_come_from_a_head_that_saw_the_photo():
    """Labels that are pure noise: a head that saw a photo knows its label, one that did not
    is at chance."""
    from headstart.training.choice import cross_validated_choice, leading, stratified_folds

    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 200)).astype(np.float32)
    y = rng.permutation(np.arange(120) % 3)
    folds = stratified_folds(y, 3)
    assert folds.max() == 4 and all(np.bincount(y[folds == f]).min() == 8 for f in range(5))
    chosen = cross_validated_choice(x, y, 3, leading((), 200))
    assert chosen.accuracy < 0.5  # chance is 1/3
    seen = fit_linear(x, y, x[:0], y[:0], 3, l2=chosen.l2)
    assert (((x @ seen.weight.T + seen.bias).argmax(1)) == y).mean() > 0.9


def test_the_imagenet_classifier_is_a_candidate_only_where_the_folds_prefer_it():
    """A prior that reads the signal where the features alone hide it (at a scale the L2 path
    cannot reach) is chosen: the head becomes linear+imagenet and computes its logits from the
    features; where the prior is noise, the plain linear head stays, as it was."""
    from headstart.model.heads import PRIOR_KIND, imagenet_log_probabilities

    rng = np.random.default_rng(3)
    n, classes = 90, 3
    y = np.arange(n) % classes
    x = rng.normal(size=(n, 40)).astype(np.float32)
    x[:, :8] *= 1e-4  # the pooled head: the signal is there, too faint for the head itself
    x[:, :classes] += 4e-4 * np.eye(classes, dtype=np.float32)[y]
    directions = np.zeros((5, 8), np.float32)
    directions[:classes, :classes] = 3e4 * np.eye(classes)
    informative = (directions, np.zeros(5, np.float32))
    noise = (rng.normal(size=(5, 8)).astype(np.float32), np.zeros(5, np.float32))
    train, val = slice(0, 75), slice(75, 90)
    settings = FitSettings(strategy="linear")

    def fit(prior):
        return fit_head(
            x[train], y[train], x[val], y[val], classes, settings,
            head_widths=(8,), small_data=True, prior=lambda: prior,
        )  # fmt: skip

    chosen = fit(informative)
    config = chosen.head.config
    assert config.kind == PRIOR_KIND and (config.prior_features, config.prior_classes) == (8, 5)
    assert config.in_features == 40 and "ImageNet classifier" in chosen.folds.chosen.name
    weight = chosen.head.parameters["2.weight"]
    with_prior = np.concatenate([x, imagenet_log_probabilities(x, *informative)], axis=1)
    expected = with_prior @ weight.T + chosen.head.parameters["2.bias"]
    np.testing.assert_allclose(chosen.head.logits(x), expected, rtol=1e-5, atol=1e-4)
    assert (chosen.head.logits(x).argmax(1) == y).mean() > 0.95
    x[:, :8] *= 1e4  # the same signal, now at a scale the head itself reads
    plain = fit(noise)
    assert plain.head.config.kind == "linear" and "ImageNet" not in plain.folds.chosen.name
    assert plain.head.parameters["1.weight"].shape == (classes, 40)
    with_finetuning = fit_head(
        x[train], y[train], x[val], y[val], classes, FitSettings(strategy="finetune"),
        small_data=True, prior=lambda: informative,
    )  # fmt: skip
    assert with_finetuning.head.config.kind == "linear"  # fine-tuning trains a plain head
