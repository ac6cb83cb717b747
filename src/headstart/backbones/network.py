"""The backbone with its input normalisation inside: uint8 NHWC pixels in, features out."""

from __future__ import annotations

import torch
from torch import nn

from headstart.backbones.preprocessing import Preprocessing


class PixelNormalize(nn.Module):
    """uint8 (N, H, W, 3) pixels to the float NCHW tensor a pretrained network expects."""

    def __init__(self, preprocessing: Preprocessing) -> None:
        super().__init__()
        mean = torch.tensor(preprocessing.mean).view(1, 3, 1, 1) * 255.0
        std = torch.tensor(preprocessing.std).view(1, 3, 1, 1) * 255.0
        self.register_buffer("mean", mean, persistent=False)
        self.register_buffer("inv_std", 1.0 / std, persistent=False)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        images = pixels.permute(0, 3, 1, 2).float()
        return ((images - self.mean) * self.inv_std).contiguous(memory_format=torch.channels_last)


class PixelsToFeatures(nn.Sequential):
    """Normalisation followed by the pooled backbone; the unit that feature extraction runs."""

    def __init__(self, backbone: nn.Module, preprocessing: Preprocessing) -> None:
        super().__init__(PixelNormalize(preprocessing), backbone)
