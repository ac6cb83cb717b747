"""Training settings, importable without torch so the CLI can show their defaults."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any

from headstart.errors import HeadstartError

STRATEGIES = ("linear", "mlp", "finetune", "auto")
AUGMENT_LEVELS = ("none", "light", "strong")


@dataclass
class FitSettings:
    strategy: str = "linear"
    # Heads on cached features (linear, mlp, and the warm start of finetune).
    hidden: int = 512
    dropout: float = 0.2
    epochs: int = 200
    batch_size: int = 64
    learning_rate: float = 1e-3
    weight_decay: float = 1e-2
    patience: int = 15
    label_smoothing: float = 0.0
    balance_classes: bool = False
    aug_views: int = 0  # augmented views per training image in the feature cache
    # Fine-tuning the top of the backbone.
    unfreeze: str = "3"  # top units (stages, head conv) to train, or "all"
    finetune_epochs: int = 15
    finetune_batch_size: int = 32
    finetune_learning_rate: float = 1e-4  # the head's; the backbone's is scaled down
    backbone_lr_scale: float = 0.1
    warmup_epochs: float = 1.0
    finetune_patience: int = 5
    grad_clip: float = 1.0
    freeze_bn: str = "auto"  # auto: frozen statistics below 5,000 training images
    augment: str = "light"
    device: str = "auto"
    time_budget: str = "5m"  # for strategy auto
    seed: int = 0

    @property
    def head(self) -> str:
        """The head kind: an MLP for the mlp strategy, else linear."""
        return "mlp" if self.strategy == "mlp" else "linear"

    def check(self) -> None:
        if self.strategy not in STRATEGIES:
            raise HeadstartError(
                f"unknown strategy {self.strategy!r}: choose one of {', '.join(STRATEGIES)}"
            )
        if self.augment not in AUGMENT_LEVELS:
            raise HeadstartError(
                f"unknown augment level {self.augment!r}: choose one of {', '.join(AUGMENT_LEVELS)}"
            )
        if self.freeze_bn not in ("auto", "yes", "no"):
            raise HeadstartError(f"--freeze-bn must be auto, yes or no, not {self.freeze_bn!r}")
        if self.aug_views < 0:
            raise HeadstartError("--aug-views must be 0 or more")
        if self.unfreeze != "all" and not (self.unfreeze.isdigit() and int(self.unfreeze) > 0):
            raise HeadstartError(
                f"--unfreeze must be a positive number or all, not {self.unfreeze!r}"
            )
        parse_duration(self.time_budget)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse_duration(text: str) -> float:
    """Seconds in '90', '90s', '5m', '1.5h'."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*", text)
    if not match:
        raise HeadstartError(f"cannot read the duration {text!r}: use e.g. 90s, 5m or 1h")
    value, unit = float(match.group(1)), match.group(2) or "s"
    return value * {"s": 1, "m": 60, "h": 3600}[unit]
