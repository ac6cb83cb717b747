"""Training-time augmentation with torchvision, reproducible per (seed, image).

Every augmented image is drawn from its own seed, so an epoch's augmentations are the same
whichever worker or thread makes them, a resumed run sees what the uninterrupted run saw,
and cached augmented views can be recomputed bit for bit.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision.transforms import v2

from headstart.backbones.preprocessing import Preprocessing
from headstart.data.images import decode_rgb

# Bump when a level's transforms change: cached augmented views depend on them.
AUGMENT_VERSION = 1
_RNG_LOCK = threading.Lock()  # torchvision draws from torch's global generator

Transform = Callable[[torch.Tensor], torch.Tensor]


def augmentation(level: str, input_size: tuple[int, int]) -> Transform | None:
    """uint8 CHW image in, uint8 CHW crop of `input_size` out; None for level 'none'."""
    if level == "none":
        return None
    if level == "light":
        return v2.Compose(
            [
                v2.RandomResizedCrop(input_size, scale=(0.35, 1.0), antialias=True),
                v2.RandomHorizontalFlip(),
                v2.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2),
            ]
        )
    if level == "strong":
        return v2.Compose(
            [
                v2.RandomResizedCrop(input_size, scale=(0.2, 1.0), antialias=True),
                v2.RandomHorizontalFlip(),
                v2.ColorJitter(brightness=0.3, contrast=0.3, saturation=0.3, hue=0.05),
                v2.TrivialAugmentWide(),
            ]
        )
    raise ValueError(f"unknown augmentation level {level!r}")


def derived_seed(*parts: int | bytes) -> int:
    """A 63-bit seed from its parts, the same in every process and on every machine."""
    digest = hashlib.blake2b(digest_size=8)
    for part in parts:
        digest.update(part if isinstance(part, bytes) else str(part).encode() + b"|")
    return int.from_bytes(digest.digest(), "little") >> 1


def augment_seeded(transform: Transform, image: torch.Tensor, seed: int) -> torch.Tensor:
    """Apply `transform` with randomness drawn from `seed` only; leaves torch's RNG as it was."""
    with _RNG_LOCK, torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return transform(image)


def image_for_augmentation(preprocessing: Preprocessing, data: bytes) -> torch.Tensor:
    """The whole image, resized as for evaluation but not cropped, as a uint8 CHW tensor.

    Crops are then taken from it, so decoding and resizing happen once per image, not per epoch.
    """
    image = decode_rgb(data, draft=preprocessing.scaled_size)
    image = preprocessing.resized(image)
    return torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1)


def to_pixels(image: torch.Tensor) -> torch.Tensor:
    """CHW to the HWC layout the networks take."""
    return image.permute(1, 2, 0).contiguous()


class AugmentedImages(Dataset):
    """Pre-decoded images augmented afresh for each (epoch, index), as worker processes need."""

    def __init__(
        self, images: list[torch.Tensor], labels: np.ndarray, transform: Transform, seed: int
    ) -> None:
        self.images = images
        self.labels = labels
        self.transform = transform
        self.seed = seed

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, int | torch.Tensor]:
        epoch, index = key
        seed = derived_seed(self.seed, epoch, index)
        pixels = to_pixels(augment_seeded(self.transform, self.images[index], seed))
        label = self.labels[index]  # a class index, or a multi-label row of 0/1
        return pixels, (torch.from_numpy(label) if label.ndim else int(label))
