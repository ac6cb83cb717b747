"""Head-training settings, importable without torch so the CLI can show their defaults."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass
class FitSettings:
    head: str = "linear"
    hidden: int = 512
    dropout: float = 0.2
    epochs: int = 200
    batch_size: int = 64
    learning_rate: float = 1e-3
    weight_decay: float = 1e-2
    patience: int = 15
    label_smoothing: float = 0.0
    balance_classes: bool = False
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
