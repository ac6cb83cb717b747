"""The backbone with its input normalisation inside: uint8 NHWC pixels in, features out."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from headstart.backbones.preprocessing import Preprocessing
from headstart.backbones.stages import stage_outputs


class PixelNormalize(nn.Module):
    """uint8 (N, H, W, 3) pixels to the float NCHW tensor a pretrained network expects."""

    mean: torch.Tensor
    inv_std: torch.Tensor

    def __init__(self, preprocessing: Preprocessing) -> None:
        super().__init__()
        mean = torch.tensor(preprocessing.mean).view(1, 3, 1, 1) * 255.0
        std = torch.tensor(preprocessing.std).view(1, 3, 1, 1) * 255.0
        self.register_buffer("mean", mean, persistent=False)
        self.register_buffer("inv_std", 1.0 / std, persistent=False)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        images = pixels.permute(0, 3, 1, 2).float()
        return ((images - self.mean) * self.inv_std).contiguous(memory_format=torch.channels_last)


def as_cached(features: torch.Tensor) -> torch.Tensor:
    """Features rounded through float16, as the feature cache holds them: the head was trained
    and calibrated on these, and a model folder predicts from them, so an exported network
    that reads them gives the folder's scores (to 1e-6, not 5e-4 apart)."""
    return features.half().float()


class PixelsToFeatures(nn.Sequential):
    """Normalisation followed by the pooled backbone; the unit that feature extraction runs."""

    def __init__(self, backbone: nn.Module, preprocessing: Preprocessing) -> None:
        super().__init__(PixelNormalize(preprocessing), backbone)


class StagePooled(nn.Module):
    """A timm network whose features are the pooled outputs of some of its stages, beside the
    usual pooled head: mid-level patterns (edges, textures, strokes) that the last layer, tuned
    to ImageNet's objects, keeps little of. The same forward pass, so the same cost."""

    network: Any  # a timm model: forward_intermediates and forward_head
    stages: tuple[int, ...]

    def __init__(self, network: nn.Module, stages: tuple[int, ...]) -> None:
        super().__init__()
        self.network, self.stages = network, stages

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        head, maps = self.maps(images)
        return torch.cat([head, *(x.mean((2, 3)) for x in maps[1:])], dim=1)

    def maps(self, images: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The pooled head, and the maps the features are the means of: the final map (which
        the head pools), then each stage's, in the features' order."""
        if self.stages:
            final, outputs = stage_outputs(self.network, images, self.stages)
        else:
            final, outputs = self.network.forward_features(images), []
        return self.network.forward_head(final, pre_logits=True), [final, *outputs]


class Concatenated(nn.Module):
    """Several backbones on the same input, their features side by side."""

    def __init__(self, networks: list[nn.Module]) -> None:
        super().__init__()
        self.networks = nn.ModuleList(networks)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return torch.cat([network(images) for network in self.networks], dim=1)
