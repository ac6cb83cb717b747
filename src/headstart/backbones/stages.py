"""Splitting a backbone into a frozen trunk and a trainable top, for fine-tuning.

The units counted from the top are those of timm's EfficientNet family: the 1x1 head
convolution (with its norm), then each stage of `blocks`, then the stem.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from headstart.errors import HeadstartError


@dataclass
class BackboneSplit:
    trunk: nn.Sequential  # frozen, run without gradients (and, on CPU, by ONNX Runtime)
    top: nn.Sequential  # trained; ends with the global pooling, so it outputs features
    tuned_prefixes: tuple[str, ...]  # state-dict prefixes of the top's weights in the backbone
    units: int  # units in the top

    def tuned_tensors(self, backbone: nn.Module) -> dict:
        """The backbone weights that fine-tuning may have changed."""
        return {
            name: tensor.detach().clone()
            for name, tensor in backbone.state_dict().items()
            if name.startswith(self.tuned_prefixes)
        }


def split_backbone(backbone: nn.Module, unfreeze: str) -> BackboneSplit:
    """Trunk and top sharing `backbone`'s modules; `unfreeze` is a unit count or 'all'."""
    from timm.models.efficientnet import EfficientNet

    if not isinstance(backbone, EfficientNet):
        raise HeadstartError(
            f"fine-tuning supports timm's EfficientNet family (efficientnet_lite0/1/2, "
            f"tf_efficientnet_*, mixnet_*, ...), not {type(backbone).__name__}; "
            "use --strategy linear or mlp"
        )
    units: list[tuple[str, list[nn.Module]]] = [
        ("conv_stem.|bn1.", [backbone.conv_stem, backbone.bn1])
    ]
    units += [(f"blocks.{i}.", [stage]) for i, stage in enumerate(backbone.blocks)]
    units.append(("conv_head.|bn2.", [backbone.conv_head, backbone.bn2]))
    count = len(units) if unfreeze == "all" else int(unfreeze)
    if not 0 < count <= len(units):
        raise HeadstartError(
            f"--unfreeze must be between 1 and {len(units)} or all, not {unfreeze}"
        )
    frozen, tuned = units[: len(units) - count], units[len(units) - count :]
    prefixes = tuple(p for names, _ in tuned for p in names.split("|"))
    return BackboneSplit(
        trunk=nn.Sequential(*[m for _, modules in frozen for m in modules]),
        top=nn.Sequential(*[m for _, modules in tuned for m in modules], backbone.global_pool),
        tuned_prefixes=prefixes,
        units=count,
    )
