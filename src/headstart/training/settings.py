"""Training settings, importable without torch so the CLI can show their defaults."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from headstart.model.heads import DROPOUT, HIDDEN_UNITS
from headstart.settings import (
    Augment,
    FreezeBN,
    Strategy,
    as_choices,
    boolean,
    check_settings,
    choice,
    duration,
    number,
    setting,
)


def _unfreeze(value: Any) -> str | None:
    if value == "all" or (isinstance(value, str) and value.isdecimal() and int(value) > 0):
        return None
    return "must be a positive number or all"


@dataclass
class FitSettings:
    """How to train: the strategy, the head on cached features, and fine-tuning.

    Every field declares its allowed values; `check()` (called by `headstart.train`) raises
    a SettingError naming the first one outside them.
    """

    strategy: Strategy = setting(
        Strategy.AUTO,
        choice(Strategy),
        "auto (fine-tune photos unlike ImageNet's within --time-budget, else linear), linear, "
        "mlp or finetune",
    )
    # Heads on cached features (linear, mlp, and the warm start of finetune).
    hidden: int = setting(512, HIDDEN_UNITS, "MLP hidden units")
    dropout: float = setting(0.2, DROPOUT, "Dropout before the last layer")
    epochs: int = setting(200, number(1, 100_000), "Most epochs to train an MLP head")
    batch_size: int = setting(64, number(1, 1_000_000), "MLP head batch size")
    learning_rate: float = setting(
        1e-3, number(0.0, 10.0, low_open=True, kind=float), "MLP head AdamW learning rate", "--lr"
    )
    weight_decay: float = setting(1e-2, number(0.0, 10.0, kind=float), "MLP head weight decay")
    patience: int = setting(15, number(1, 100_000), "MLP epochs without a better val loss")
    label_smoothing: float = setting(0.0, number(0.0, 0.99, kind=float), "Label smoothing")
    balance_classes: bool = setting(False, boolean, "Weight classes by inverse frequency")
    aug_views: int = setting(
        0, number(0, 64), "Cached augmented views per training image (linear, mlp)"
    )
    # Fine-tuning the top of the backbone.
    unfreeze: str = setting("3", _unfreeze, "Fine-tune the top N units (head conv, stages) or all")
    finetune_epochs: int = setting(6, number(1, 10_000), "Most fine-tuning epochs")
    finetune_batch_size: int = setting(32, number(1, 100_000), "Fine-tuning batch size")
    finetune_learning_rate: float = setting(
        1e-4,
        number(0.0, 10.0, low_open=True, kind=float),
        "Fine-tuning learning rate of the head",
        "--finetune-lr",
    )
    backbone_lr_scale: float = setting(
        1.0, number(0.0, 1.0, kind=float), "Backbone learning rate as a fraction of the head's"
    )
    warmup_epochs: float = setting(
        1.0, number(0.0, 1000.0, kind=float), "Fine-tuning warm-up epochs"
    )
    finetune_patience: int = setting(
        5, number(1, 10_000), "Fine-tuning epochs without a better validation score"
    )
    grad_clip: float = setting(
        1.0, number(0.0, 1e6, low_open=True, kind=float), "Gradient norm clip"
    )
    freeze_bn: FreezeBN = setting(
        FreezeBN.AUTO,
        choice(FreezeBN),
        "Freeze BatchNorm statistics: auto (below 5,000 images), yes, no",
    )
    augment: Augment = setting(
        Augment.LIGHT, choice(Augment), "Augmentation for fine-tuning and --aug-views"
    )
    time_budget: str = setting("5m", duration, "For --strategy auto, e.g. 90s, 5m, 1h")
    seed: int = setting(0, number(0, 2**32 - 1), "Makes a run repeatable")

    def __post_init__(self) -> None:
        as_choices(self)

    @property
    def head(self) -> str:
        """The head kind: an MLP for the mlp strategy, else linear."""
        return "mlp" if self.strategy == "mlp" else "linear"

    def check(self) -> None:
        """Raise SettingError naming the first field outside its allowed values."""
        check_settings(self)

    def to_dict(self) -> dict[str, Any]:
        """The settings as plain JSON (closed choices as their text), as records keep them."""
        return {
            key: str(value) if isinstance(value, str) else value
            for key, value in asdict(self).items()
        }
