"""Splitting a backbone into a frozen trunk and a trainable top, for fine-tuning.

The units counted from the top are those of timm's EfficientNet family: the 1x1 head
convolution (with its norm), then each stage of `blocks`, then the stem. A backbone whose
features include pooled stage outputs (StagePooled) keeps them: the trunk hands the pooled
outputs of its own stages to the top beside its activations, packed into one tensor so that
ONNX Runtime can run it, and the top outputs the same features, in the same order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from headstart.errors import HeadstartError


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


@dataclass
class BackboneSplit:
    trunk: PackedTrunk  # frozen, run without gradients (and, on CPU, by ONNX Runtime)
    top: StageTop  # trained; outputs the backbone's features
    network: nn.Module  # the EfficientNet both share
    tuned_prefixes: tuple[str, ...]  # state-dict prefixes of the top's weights in `network`
    units: int  # units in the top

    def tuned_tensors(self) -> dict:
        """The backbone weights that fine-tuning may have changed."""
        return {
            name: tensor.detach().clone()
            for name, tensor in self.network.state_dict().items()
            if name.startswith(self.tuned_prefixes)
        }


def split_backbone(
    backbone: nn.Module, unfreeze: str, input_size: tuple[int, int] = (224, 224)
) -> BackboneSplit:
    """Trunk and top sharing `backbone`'s modules (an EfficientNet, or one in StagePooled);
    `unfreeze` is a unit count or 'all'; `input_size` is the images' (height, width), which
    fixes the shape of the trunk's packed output."""
    from timm.models.efficientnet import EfficientNet

    from headstart.backbones.network import StagePooled

    pooled_stages: tuple[int, ...] = ()
    if isinstance(backbone, StagePooled):
        pooled_stages = backbone.stages
        backbone = backbone.network
    if not isinstance(backbone, EfficientNet):
        raise HeadstartError(
            f"fine-tuning supports timm's EfficientNet family (efficientnet_lite0/1/2, "
            f"tf_efficientnet_*, mixnet_*, ...), not {type(backbone).__name__}; "
            "use --strategy linear or mlp"
        )
    # (state-dict prefixes, module, stage index or None)
    units: list[tuple[str, nn.Module, int | None]] = [
        ("conv_stem.|bn1.", nn.Sequential(backbone.conv_stem, backbone.bn1), None)
    ]
    units += [(f"blocks.{i}.", stage, i) for i, stage in enumerate(backbone.blocks)]
    units.append(("conv_head.|bn2.", nn.Sequential(backbone.conv_head, backbone.bn2), None))
    count = len(units) if unfreeze == "all" else int(unfreeze)
    if not 0 < count <= len(units):
        raise HeadstartError(
            f"--unfreeze must be between 1 and {len(units)} or all, not {unfreeze}"
        )
    frozen, tuned = units[: len(units) - count], units[len(units) - count :]

    def taps(part: list) -> tuple[int, ...]:
        return tuple(i for i, (_, _, stage) in enumerate(part) if stage in pooled_stages)

    trunk = PackedTrunk([module for _, module, _ in frozen], taps(frozen))
    shape = None
    if trunk.taps:
        with torch.no_grad():
            x, _ = trunk.eval().run(torch.zeros(1, 3, *input_size))
        shape = tuple(x.shape[1:])
    top = StageTop([module for _, module, _ in tuned], taps(tuned), backbone.global_pool, shape)
    return BackboneSplit(
        trunk=trunk,
        top=top,
        network=backbone,
        tuned_prefixes=tuple(p for names, _, _ in tuned for p in names.split("|")),
        units=count,
    )
