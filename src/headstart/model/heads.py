"""Classifier heads that replace the backbone's ImageNet classifier.

A head is its config and its parameters as NumPy arrays, named as in the PyTorch module they
load into, so predicting with a trained head needs NumPy only; PyTorch comes in when a head is
trained by gradient descent (MLP, fine-tuning) or exported.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from headstart.errors import HeadstartError, SettingError
from headstart.features.blocks import map_rows
from headstart.settings import first_problem, number, setting

HEAD_KINDS = ("linear", "mlp")
HIDDEN_UNITS = number(1, 65536)
DROPOUT = number(0.0, 0.95, kind=float)


@dataclass(frozen=True)
class HeadConfig:
    """A head's shape; the same constraints bind the settings that train it and the model
    records that load it."""

    kind: str = setting(check=lambda v: None if v in HEAD_KINDS else f"must be one of {HEAD_KINDS}")
    in_features: int = setting(check=number(1, 1_000_000))
    num_classes: int = setting(check=number(1, 1_000_000))
    hidden: int = setting(512, HIDDEN_UNITS)
    dropout: float = setting(0.2, DROPOUT)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> HeadConfig:
        """The config written by `to_dict`; SettingError names a field outside its range."""
        problem = cls.problem(data)
        if problem:
            raise SettingError(f"head.{problem[0]}: {problem[1]}")
        return cls(**{key: data[key] for key in cls.__dataclass_fields__})

    @classmethod
    def problem(cls, data: dict[str, Any]) -> tuple[str, str] | None:
        """The first field of `data` that is missing or outside its declared range."""
        missing = [key for key in cls.__dataclass_fields__ if key not in data]
        if missing:
            return missing[0], "missing"
        found = first_problem(cls(**{key: data[key] for key in cls.__dataclass_fields__}))
        return (found[0].name, found[1]) if found else None

    def shapes(self) -> dict[str, tuple[int, ...]]:
        """Parameter names and shapes, as in the module `build_head` makes."""
        if self.kind == "linear":
            return {"1.weight": (self.num_classes, self.in_features), "1.bias": (self.num_classes,)}
        if self.kind == "mlp":
            return {
                "0.weight": (self.hidden, self.in_features),
                "0.bias": (self.hidden,),
                "3.weight": (self.num_classes, self.hidden),
                "3.bias": (self.num_classes,),
            }
        raise HeadstartError(f"unknown head {self.kind!r}: choose one of {', '.join(HEAD_KINDS)}")


class Head:
    """A trained head: logits from features with NumPy alone."""

    def __init__(self, config: HeadConfig, parameters: dict[str, np.ndarray]) -> None:
        expected = config.shapes()
        found = {name: tuple(np.shape(value)) for name, value in parameters.items()}
        if found != expected:
            raise HeadstartError(f"head parameters {found} do not match the {config.kind} head")
        self.config = config
        self.parameters = {
            k: np.ascontiguousarray(v, dtype=np.float32) for k, v in parameters.items()
        }

    def logits(self, features: np.ndarray) -> np.ndarray:
        return map_rows(self._logits, np.asarray(features))

    def _logits(self, x: np.ndarray) -> np.ndarray:
        p = self.parameters
        if self.config.kind == "linear":
            return x @ p["1.weight"].T + p["1.bias"]
        hidden = _gelu(x @ p["0.weight"].T + p["0.bias"])
        return hidden @ p["3.weight"].T + p["3.bias"]

    def module(self):
        """The head as a PyTorch module (eval mode), loaded with these parameters."""
        import torch

        module = build_head(self.config)
        state = {name: torch.from_numpy(value.copy()) for name, value in self.parameters.items()}
        module.load_state_dict(state, strict=True)
        return module.eval()

    @classmethod
    def from_module(cls, config: HeadConfig, module) -> Head:
        state = module.state_dict()
        return cls(config, {name: state[name].detach().cpu().numpy() for name in config.shapes()})


def _gelu(x: np.ndarray) -> np.ndarray:
    """The exact GELU of torch.nn.GELU: x * Phi(x)."""
    from scipy.special import erf

    return (0.5 * x * (1.0 + erf(x / np.sqrt(2.0)))).astype(np.float32)


def build_head(config: HeadConfig):
    """A linear softmax head, or an MLP with one hidden layer and dropout (logits out)."""
    from torch import nn

    config.shapes()  # refuses unknown kinds
    if config.kind == "linear":
        return nn.Sequential(
            nn.Dropout(config.dropout), nn.Linear(config.in_features, config.num_classes)
        )
    return nn.Sequential(
        nn.Linear(config.in_features, config.hidden),
        nn.GELU(),
        nn.Dropout(config.dropout),
        nn.Linear(config.hidden, config.num_classes),
    )
