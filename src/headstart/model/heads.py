"""Classifier heads that replace the backbone's ImageNet classifier (or, for the
linear+imagenet kind, read its log-probabilities beside the features).

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

# linear+imagenet: a linear head on the features and on the backbone's own ImageNet
# classifier's log-probabilities, which it keeps (training/choice.py chooses it).
PRIOR_KIND = "linear+imagenet"
HEAD_KINDS = ("linear", "mlp", PRIOR_KIND)
HIDDEN_UNITS = number(1, 65536)
DROPOUT = number(0.0, 0.95, kind=float)


def output_probabilities(logits: np.ndarray, multi_label: bool) -> np.ndarray:
    """A softmax over the classes; of a multi-label head, a sigmoid a label."""
    from scipy.special import expit, softmax

    return expit(logits) if multi_label else softmax(logits, axis=1)


@dataclass(frozen=True)
class HeadConfig:
    """A head's shape; the same constraints bind the settings that train it and the model
    records that load it."""

    kind: str = setting(check=lambda v: None if v in HEAD_KINDS else f"must be one of {HEAD_KINDS}")
    in_features: int = setting(check=number(1, 1_000_000))
    num_classes: int = setting(check=number(1, 1_000_000))
    hidden: int = setting(512, HIDDEN_UNITS)
    dropout: float = setting(0.2, DROPOUT)
    # linear+imagenet: the ImageNet classifier reads the first `prior_features` features and
    # gives `prior_classes` log-probabilities; zero for the other kinds.
    prior_features: int = setting(0, number(0, 1_000_000))
    prior_classes: int = setting(0, number(0, 100_000))

    def to_dict(self) -> dict[str, Any]:
        """The record's JSON object; the prior's fields only for a head that has one, so that
        other heads are written as before."""
        out = asdict(self)
        if self.kind != PRIOR_KIND:
            del out["prior_features"], out["prior_classes"]
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> HeadConfig:
        """The config written by `to_dict`; SettingError names a field outside its range."""
        problem = cls.problem(data)
        if problem:
            raise SettingError(f"head.{problem[0]}: {problem[1]}")
        return cls(**cls._fields_of(data))

    @classmethod
    def problem(cls, data: dict[str, Any]) -> tuple[str, str] | None:
        """The first field of `data` that is missing or outside its declared range."""
        optional = () if data.get("kind") == PRIOR_KIND else ("prior_features", "prior_classes")
        missing = [k for k in cls.__dataclass_fields__ if k not in data and k not in optional]
        if missing:
            return missing[0], "missing"
        found = first_problem(cls(**cls._fields_of(data)))
        prior = bool(data.get("prior_classes")) and bool(data.get("prior_features"))
        if found is None and (data["kind"] == PRIOR_KIND) != prior:
            return "prior_classes", f"and prior_features: positive exactly for a {PRIOR_KIND} head"
        if found is None and data.get("prior_features", 0) > data["in_features"]:
            return "prior_features", "must not exceed in_features"
        return (found[0].name, found[1]) if found else None

    @classmethod
    def _fields_of(cls, data: dict[str, Any]) -> dict[str, Any]:
        return {key: data[key] for key in cls.__dataclass_fields__ if key in data}

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
        if self.kind == PRIOR_KIND:
            widened = self.in_features + self.prior_classes
            return {
                "0.weight": (self.prior_classes, self.prior_features),
                "0.bias": (self.prior_classes,),
                "2.weight": (self.num_classes, widened),
                "2.bias": (self.num_classes,),
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
        if self.config.kind == PRIOR_KIND:
            prior = imagenet_log_probabilities(x, p["0.weight"], p["0.bias"])
            return np.concatenate([x, prior], axis=1) @ p["2.weight"].T + p["2.bias"]
        hidden = _gelu(x @ p["0.weight"].T + p["0.bias"])
        return hidden @ p["3.weight"].T + p["3.bias"]

    def module(self, temperature: float = 1.0):
        """The head as a PyTorch module (eval mode), loaded with these parameters; with a
        temperature, its last layer gives the logits already divided by it."""
        import torch

        module = build_head(self.config)
        state = {name: torch.from_numpy(value.copy()) for name, value in self.parameters.items()}
        module.load_state_dict(state, strict=True)
        with torch.no_grad():
            module[-1].weight /= temperature
            module[-1].bias /= temperature
        return module.eval()

    @classmethod
    def from_module(cls, config: HeadConfig, module) -> Head:
        state = module.state_dict()
        return cls(config, {name: state[name].detach().cpu().numpy() for name in config.shapes()})


def _gelu(x: np.ndarray) -> np.ndarray:
    """The exact GELU of torch.nn.GELU: x * Phi(x)."""
    from scipy.special import erf

    return (0.5 * x * (1.0 + erf(x / np.sqrt(2.0)))).astype(np.float32)


def imagenet_log_probabilities(x: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """The ImageNet classifier's log-probabilities of features x (its first weight.shape[1])."""
    from scipy.special import log_softmax

    logits = x[:, : weight.shape[1]].astype(np.float32) @ weight.T + bias
    return log_softmax(logits, axis=1).astype(np.float32)


def build_head(config: HeadConfig):
    """A linear softmax head, or an MLP with one hidden layer and dropout (logits out); a
    linear+imagenet head first appends the ImageNet classifier's log-probabilities."""
    from torch import nn

    config.shapes()  # refuses unknown kinds
    if config.kind == "linear":
        return nn.Sequential(
            nn.Dropout(config.dropout), nn.Linear(config.in_features, config.num_classes)
        )
    if config.kind == PRIOR_KIND:
        widened = config.in_features + config.prior_classes
        return nn.Sequential(
            _log_probabilities_module(config.prior_features, config.prior_classes),
            nn.Dropout(config.dropout),
            nn.Linear(widened, config.num_classes),
        )
    return nn.Sequential(
        nn.Linear(config.in_features, config.hidden),
        nn.GELU(),
        nn.Dropout(config.dropout),
        nn.Linear(config.hidden, config.num_classes),
    )


def _log_probabilities_module(features: int, classes: int):
    """A module: features in; the features and the ImageNet classifier's log-probabilities of
    their first `features` out (its weight and bias named as the NumPy head's)."""
    import torch
    from torch import nn

    class WithLogProbabilities(nn.Linear):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            prior = torch.log_softmax(super().forward(x[:, : self.in_features]), dim=1)
            return torch.cat([x, prior], dim=1)

    return WithLogProbabilities(features, classes)


def logit_gradients(module, kind: str, features):
    """Each logit's gradient with respect to the features, (N, classes, features), in closed
    form (so that it exports to ONNX): the weights for a linear head, the chain rule through
    GELU for the MLP, and through the ImageNet log-softmax for linear+imagenet."""
    import math

    import torch

    count = features.shape[0]
    if kind == "linear":
        return module[1].weight.expand(count, -1, -1)
    if kind == "mlp":
        first, last = module[0], module[3]
        z = first(features)
        slope = 0.5 * (1.0 + torch.erf(z / math.sqrt(2.0))) + z * torch.exp(
            -0.5 * z * z
        ) / math.sqrt(2.0 * math.pi)
        return torch.einsum("kh,nh,hd->nkd", last.weight, slope, first.weight)
    prior, last = module[0], module[2]
    width = features.shape[1]
    direct, on_prior = last.weight[:, :width], last.weight[:, width:]
    probabilities = torch.softmax(prior(features)[:, width:], dim=1)
    # d log p_j / d x = W_j - sum_m p_m W_m, for the features the ImageNet classifier reads
    through = (on_prior @ prior.weight).unsqueeze(0) - on_prior.sum(1).view(1, -1, 1) * (
        probabilities @ prior.weight
    ).unsqueeze(1)
    rest = direct[:, prior.in_features :].expand(count, -1, -1)
    return torch.cat([direct[:, : prior.in_features] + through, rest], dim=2)
