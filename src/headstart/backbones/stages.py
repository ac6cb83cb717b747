"""A backbone's stages and units, for any timm architecture: pooled stage features, and the
split into a frozen trunk and a trainable top for fine-tuning.

Stages are what timm's `forward_intermediates` returns: every block for the families that
offer `extra_blocks` (EfficientNet, MobileNet; stage i is `blocks[i]`), else the feature
levels of `feature_info`. Units are timm's coarse parameter groups (`group_matcher`), counted
from the top, except that a head projection (EfficientNet's 1x1 `conv_head`) stays a unit of
its own where timm merges it into the last stage.

For timm's EfficientNet, whose forward pass is its units in order, the trunk and the top are
separate modules: the trunk runs once, without gradients (on CPU in ONNX Runtime) and hands
the pooled outputs of its own stages to the top beside its activations, packed into one
tensor. For every other family the whole network is the top, with the frozen units held in
evaluation mode and without gradients.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from headstart.errors import HeadstartError


def stage_outputs(
    network: Any, images: torch.Tensor, stages: tuple[int, ...]
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The network's final feature map and the outputs of `stages`, in one forward pass."""
    if _offers_every_block(network):  # index 0 is the stem; stage i is block i
        indices = [stage + 1 for stage in stages]
        return network.forward_intermediates(images, indices=indices, extra_blocks=True)
    return network.forward_intermediates(images, indices=list(stages))


def _offers_every_block(network: Any) -> bool:
    return "extra_blocks" in inspect.signature(network.forward_intermediates).parameters


@dataclass(frozen=True)
class Layout:
    """What a backbone's features are made of, read from its architecture alone."""

    head_features: int  # width of the pooled head
    stage_widths: tuple[int, ...]  # output channels of each stage
    default_stages: tuple[int, ...]  # the stages pooled beside the head by default


def layout_of(network: Any, input_size: int = 224) -> Layout:
    """Run on PyTorch's meta device (shapes only, no arithmetic). The default stages are
    those at strides 16 and 32: mid-level patterns that the last layer, tuned to ImageNet's
    objects, keeps little of. A last stage as wide as the head is left out when the head
    pools it alone (ResNet, ConvNeXt): it would repeat the head."""
    images = torch.zeros(1, 3, input_size, input_size, device="meta")
    every = tuple(range(len(_all_stage_indices(network))))
    _, outputs = stage_outputs(network, images, every)
    widths = tuple(int(x.shape[1]) for x in outputs)
    strides = [input_size // int(x.shape[-1]) for x in outputs]
    chosen = [stage for stage, stride in zip(every, strides, strict=True) if stride >= 16]
    if chosen and chosen[-1] == every[-1] and widths[-1] == network.num_features:
        chosen.pop()
    return Layout(int(network.num_features), widths, tuple(chosen))


def _all_stage_indices(network: Any) -> list[int]:
    if _offers_every_block(network):
        return list(range(len(network.blocks)))
    return list(range(len(network.feature_info)))


class Tapped(nn.Module):
    """Units run in order; after each tapped one, its output's spatial mean is kept."""

    def __init__(self, units: list[nn.Module], taps: tuple[int, ...]) -> None:
        super().__init__()
        self.units, self.taps = nn.ModuleList(units), taps

    def run(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        pooled = []
        for index, unit in enumerate(self.units):
            x = unit(x)
            if index in self.taps:
                pooled.append(x.mean((2, 3)))
        return x, pooled


class PackedTrunk(Tapped):
    """The frozen units: activations out, and with taps, (N, C*H*W + pooled) in one tensor."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, pooled = self.run(x)
        return torch.cat([x.flatten(1), *pooled], dim=1) if pooled else x


class StageTop(Tapped):
    """The trained units on the trunk's output: features as the whole backbone makes them
    (pooled head, then the pooled stages in order)."""

    def __init__(
        self,
        units: list[nn.Module],
        taps: tuple[int, ...],
        pool: nn.Module,
        activation_shape: tuple[int, ...] | None,
    ) -> None:
        super().__init__(units, taps)
        self.pool = pool
        self.activation_shape = activation_shape  # (C, H, W) of packed trunk output

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        below: list[torch.Tensor] = []
        if self.activation_shape is not None:
            size = math.prod(self.activation_shape)
            below = [inputs[:, size:]]
            inputs = inputs[:, :size].unflatten(1, self.activation_shape)
        x, pooled = self.run(inputs.contiguous(memory_format=torch.channels_last))
        return torch.cat([self.pool(x), *below, *pooled], dim=1)


class FrozenBelow(nn.Module):
    """The whole backbone trained in place: the frozen units stay in evaluation mode (their
    BatchNorm statistics fixed) whatever mode the rest is put in."""

    def __init__(self, features: nn.Module, frozen: list[nn.Module]) -> None:
        super().__init__()
        self.features = features
        self._frozen = frozen  # a plain list: their weights are registered in `features`

    def train(self, mode: bool = True) -> FrozenBelow:
        super().train(mode)
        for module in self._frozen:
            module.eval()
        return self

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.features(images)


@dataclass
class BackboneSplit:
    trunk: PackedTrunk  # frozen, run without gradients (and, on CPU, by ONNX Runtime)
    top: nn.Module  # trained; outputs the backbone's features
    network: nn.Module  # the timm model both share
    tuned_prefixes: tuple[str, ...]  # state-dict names (and prefixes) of the tuned units
    units: int  # units in the top

    def tunes(self, name: str) -> bool:
        return any(name == p or name.startswith(f"{p}.") for p in self.tuned_prefixes)

    def tuned_parameters(self) -> list[nn.Parameter]:
        """The backbone weights fine-tuning trains."""
        return [p for name, p in self.network.named_parameters() if self.tunes(name)]

    def tuned_tensors(self) -> dict:
        """The backbone weights that fine-tuning may have changed (BatchNorm statistics too)."""
        return {
            name: tensor.detach().clone()
            for name, tensor in self.network.state_dict().items()
            if self.tunes(name)
        }


def units_of(network: Any) -> list[list[str]]:
    """Each unit's module (or parameter) names, from the bottom: timm's coarse parameter
    groups, each named by the shortest prefixes that hold its parameters and no others."""
    from timm.models import group_parameters

    matcher = _head_kept_apart(network.group_matcher(coarse=True))
    groups = group_parameters(network, matcher)
    owner = {name: group for group, names in groups.items() for name in names}
    units = []
    for group in sorted(groups):
        names: list[str] = []
        for parameter in groups[group]:
            prefix = _own_prefix(parameter, group, owner)
            if prefix not in names:
                names.append(prefix)
        units.append(names)
    return units


def _head_kept_apart(matcher: Any) -> Any:
    """timm merges a head projection into the last stage's group (MATCH_PREV_GROUP); give it
    an ordinal just below, so that it sorts after every stage but stands alone."""
    from timm.models._manipulate import MATCH_PREV_GROUP

    if not isinstance(matcher, dict):
        return matcher
    apart = (MATCH_PREV_GROUP[0] - 1,)

    def rewrite(spec: Any) -> Any:
        if not isinstance(spec, list | tuple):
            return spec
        return [(regex, apart if end == MATCH_PREV_GROUP else end) for regex, end in spec]

    return {name: rewrite(spec) for name, spec in matcher.items()}


def _own_prefix(parameter: str, group: int, owner: dict[str, int]) -> str:
    parts = parameter.split(".")
    for depth in range(1, len(parts)):
        prefix = ".".join(parts[:depth])
        inside = [g for name, g in owner.items() if name.startswith(f"{prefix}.")]
        if all(g == group for g in inside):
            return prefix
    return parameter


def split_backbone(
    backbone: nn.Module, unfreeze: str, input_size: tuple[int, int] = (224, 224)
) -> BackboneSplit:
    """Trunk and top sharing `backbone`'s modules (a timm model, or one in StagePooled);
    `unfreeze` is a unit count or 'all'; `input_size` is the images' (height, width), which
    fixes the shape of the trunk's packed output."""
    from timm.models.efficientnet import EfficientNet

    from headstart.backbones.network import StagePooled

    features = backbone
    pooled_stages: tuple[int, ...] = ()
    if isinstance(backbone, StagePooled):
        pooled_stages, backbone = backbone.stages, backbone.network
    units = units_of(backbone)
    count = len(units) if unfreeze == "all" else int(unfreeze)
    if not 0 < count <= len(units):
        raise HeadstartError(f"unfreeze must be between 1 and {len(units)} or all, not {unfreeze}")
    frozen, tuned = units[: len(units) - count], units[len(units) - count :]
    prefixes = tuple(name for unit in tuned for name in unit)
    trunk: PackedTrunk
    top: nn.Module
    if isinstance(backbone, EfficientNet):
        trunk, top = _sequential(backbone, frozen, tuned, pooled_stages, input_size)
    else:
        names = [name for unit in frozen for name in unit if _is_module(backbone, name)]
        modules = [backbone.get_submodule(name) for name in names]
        trunk, top = PackedTrunk([], ()), FrozenBelow(features, modules)
    return BackboneSplit(trunk, top, backbone, prefixes, count)


def _is_module(network: nn.Module, name: str) -> bool:
    try:
        network.get_submodule(name)
    except AttributeError:
        return False
    return True


def _sequential(
    network: Any,
    frozen: list[list[str]],
    tuned: list[list[str]],
    pooled_stages: tuple[int, ...],
    input_size: tuple[int, int],
) -> tuple[PackedTrunk, StageTop]:
    """Trunk and top as separate modules: an EfficientNet's forward pass is its units in order
    (stem, each stage of `blocks`, head projection), each unit's modules in name order."""

    def module(unit: list[str]) -> nn.Module:
        return nn.Sequential(*(network.get_submodule(name) for name in unit))

    def taps(part: list[list[str]]) -> tuple[int, ...]:
        stage_names = {f"blocks.{stage}" for stage in pooled_stages}
        return tuple(i for i, unit in enumerate(part) if set(unit) & stage_names)

    trunk = PackedTrunk([module(unit) for unit in frozen], taps(frozen))
    shape = None
    if trunk.taps:
        with torch.no_grad():
            x, _ = trunk.eval().run(torch.zeros(1, 3, *input_size))
        shape = tuple(x.shape[1:])
    top = StageTop([module(unit) for unit in tuned], taps(tuned), network.global_pool, shape)
    return trunk, top
