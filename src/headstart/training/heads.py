"""Classifier heads that replace the backbone's ImageNet classifier."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from torch import nn

from headstart.errors import HeadstartError

HEAD_KINDS = ("linear", "mlp")


@dataclass(frozen=True)
class HeadConfig:
    kind: str
    in_features: int
    num_classes: int
    hidden: int = 512
    dropout: float = 0.2

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> HeadConfig:
        return cls(**{key: data[key] for key in cls.__dataclass_fields__})


def build_head(config: HeadConfig) -> nn.Sequential:
    """A linear softmax head, or an MLP with one hidden layer and dropout (logits out)."""
    if config.kind == "linear":
        return nn.Sequential(
            nn.Dropout(config.dropout), nn.Linear(config.in_features, config.num_classes)
        )
    if config.kind == "mlp":
        return nn.Sequential(
            nn.Linear(config.in_features, config.hidden),
            nn.GELU(),
            nn.Dropout(config.dropout),
            nn.Linear(config.hidden, config.num_classes),
        )
    raise HeadstartError(f"unknown head {config.kind!r}: choose one of {', '.join(HEAD_KINDS)}")
