"""Training settings, importable without torch so the CLI can show their defaults."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from headstart.errors import SettingError

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
        """Raise SettingError naming the first field outside its allowed values."""
        for name, allowed in _CONSTRAINTS.items():
            value = getattr(self, name)
            problem = allowed(value)
            if problem:
                raise SettingError(f"{_option(name)} {problem}, not {value!r}")
        parse_duration(self.time_budget)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse_duration(text: str) -> float:
    """Seconds in '90', '90s', '5m', '1.5h'."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*", text)
    if not match:
        raise SettingError(f"cannot read the duration {text!r}: use e.g. 90s, 5m or 1h")
    value, unit = float(match.group(1)), match.group(2) or "s"
    return value * {"s": 1, "m": 60, "h": 3600}[unit]


def _choice(*allowed: str) -> Callable[[Any], str | None]:
    return lambda value: None if value in allowed else f"must be one of {', '.join(allowed)}"


def _number(low: float, high: float = math.inf, *, low_open: bool = False, kind=int):
    """A check for a number in [low, high] (or (low, high] with low_open) of the given kind."""

    def check(value: Any) -> str | None:
        if isinstance(value, bool) or not isinstance(value, (kind, int)):
            return f"must be {'a whole number' if kind is int else 'a number'}"
        if not math.isfinite(value) or value > high or value < low or (low_open and value == low):
            opening = "(" if low_open else "["
            upper = "" if high == math.inf else f"{high}"
            return f"must be in {opening}{low}, {upper or 'inf'}]"
        return None

    return check


def _unfreeze(value: Any) -> str | None:
    if value == "all" or (isinstance(value, str) and value.isdecimal() and int(value) > 0):
        return None
    return "must be a positive number or all"


def _boolean(value: Any) -> str | None:
    return None if isinstance(value, bool) else "must be true or false"


_CONSTRAINTS: dict[str, Callable[[Any], str | None]] = {
    "strategy": _choice(*STRATEGIES),
    "hidden": _number(1, 65536),
    "dropout": _number(0.0, 0.95, kind=float),
    "epochs": _number(1, 100_000),
    "batch_size": _number(1, 1_000_000),
    "learning_rate": _number(0.0, 10.0, low_open=True, kind=float),
    "weight_decay": _number(0.0, 10.0, kind=float),
    "patience": _number(1, 100_000),
    "label_smoothing": _number(0.0, 0.99, kind=float),
    "balance_classes": _boolean,
    "aug_views": _number(0, 64),
    "unfreeze": _unfreeze,
    "finetune_epochs": _number(1, 10_000),
    "finetune_batch_size": _number(1, 100_000),
    "finetune_learning_rate": _number(0.0, 10.0, low_open=True, kind=float),
    "backbone_lr_scale": _number(0.0, 1.0, kind=float),
    "warmup_epochs": _number(0.0, 1000.0, kind=float),
    "finetune_patience": _number(1, 10_000),
    "grad_clip": _number(0.0, 1e6, low_open=True, kind=float),
    "freeze_bn": _choice("auto", "yes", "no"),
    "augment": _choice(*AUGMENT_LEVELS),
    "device": _choice("auto", "cpu", "cuda"),
    "seed": _number(0, 2**32 - 1),
}
_FLAGS = {"learning_rate": "--lr", "finetune_learning_rate": "--finetune-lr"}


def _option(name: str) -> str:
    return _FLAGS.get(name, "--" + name.replace("_", "-"))
