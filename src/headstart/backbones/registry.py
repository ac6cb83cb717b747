"""Which backbones exist, where their weights come from, and what identifies their features."""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np

from headstart.backbones.packaged import (
    PACKAGED_WEIGHTS,
    file_sha256,
    load_packaged_module,
)
from headstart.backbones.preprocessing import Preprocessing
from headstart.errors import HeadstartError, SettingError
from headstart.settings import number
from headstart.storage import atomic_write_text

DEFAULT_BACKBONE = "efficientnet_lite0"
# Networks trained on random-resized crops see objects larger than a centre crop of the same
# size shows them; feeding images at about 1.3x the training size undoes that (Touvron et al.,
# "Fixing the train-test resolution discrepancy", 2019: 224 -> 288 for ResNet-50). Measured
# here with EfficientNet-Lite0 and a linear head: hymenoptera 94.8% -> 97.2% validation
# accuracy, flowers5 (227 px photos) 92.5% -> 92.5%.
TEST_SIZE_RATIO = 1.29
INPUT_SIZE = number(32, 1024)
# Bump when the features a backbone produces change meaning (pooling, input format, ...).
_FEATURE_FORMAT = 1


@dataclass
class Backbone:
    """A pretrained feature extractor: the name users give, its weights and its preprocessing."""

    name: str
    architecture: str
    weights_id: str
    preprocessing: Preprocessing
    _build: Callable[[bool], Any] = field(repr=False)

    @property
    def fingerprint(self) -> str:
        """Identifies the features: same fingerprint and same image bytes give the same vector."""
        identity = {
            "architecture": self.architecture,
            "weights": self.weights_id,
            "preprocessing": self.preprocessing.to_dict(),
            "format": _FEATURE_FORMAT,
        }
        text = json.dumps(identity, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:24]

    def build_module(self, with_classifier: bool = False):
        """The torch module: pooled features (or ImageNet logits with `with_classifier`)."""
        return self._build(with_classifier)

    def tuned(self, tensors: dict[str, Any]) -> Backbone:
        """This backbone with weights replaced by fine-tuning: a new weights id and features."""
        weights_id = f"{self.weights_id}+tuned:{tensors_sha256(tensors)}"

        def build(with_classifier: bool):
            module = self._build(with_classifier)
            load_tuned_tensors(module, tensors, self.name)
            return module

        return Backbone(self.name, self.architecture, weights_id, self.preprocessing, build)

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "architecture": self.architecture,
            "weights": self.weights_id,
            "fingerprint": self.fingerprint,
        }


def tensors_sha256(tensors: dict[str, Any]) -> str:
    """A hash of named tensors (NumPy arrays or PyTorch tensors: the same values hash alike)."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        array = _as_numpy(tensors[name])
        digest.update(f"{name}|torch.{array.dtype}|{tuple(array.shape)}|".encode())
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()[:24]


def _as_numpy(tensor: Any) -> np.ndarray:
    return tensor if isinstance(tensor, np.ndarray) else tensor.detach().cpu().numpy()


def load_tuned_tensors(module, tensors: dict[str, Any], name: str) -> None:
    """Replace weights in `module` by name, checking every name and shape."""
    import torch

    tensors = {key: torch.as_tensor(_as_numpy(value)) for key, value in tensors.items()}
    own = module.state_dict()
    for key, tensor in tensors.items():
        if key not in own or own[key].shape != tensor.shape:
            raise HeadstartError(
                f"fine-tuned weight {key} does not fit backbone {name!r}: "
                "the model was trained with a different architecture"
            )
    module.load_state_dict(tensors, strict=False)


def check_input_size(size: int | None) -> None:
    """Refuse an input size outside [32, 1024] pixels (None: the backbone's default)."""
    problem = None if size is None else INPUT_SIZE(size)
    if problem:
        raise SettingError(f"--input-size {problem}, not {size!r}")


def can_finetune(backbone: Backbone) -> bool:
    """Whether fine-tuning can split this backbone into units: timm's EfficientNet family."""
    if backbone.name in PACKAGED_WEIGHTS:
        return True  # every offline backbone is an EfficientNet-Lite
    import timm.models

    architecture = timm.models.get_arch_name(backbone.architecture)
    try:
        module = timm.models.model_entrypoint(architecture).__module__
    except RuntimeError:  # not a timm name; resolving it would have failed first
        return False
    return module == "timm.models.efficientnet"


def list_backbones() -> list[str]:
    """Backbones that work offline; any timm model name also works when online."""
    return sorted(PACKAGED_WEIGHTS)


def resolve_backbone(
    name: str = DEFAULT_BACKBONE, config_dir: Path | None = None, input_size: int | None = None
) -> Backbone:
    """Find a backbone by headstart name (offline weights) or timm model name (downloads).

    `config_dir` memoises the preprocessing config read from timm, so that a warm run whose
    features are all cached never imports timm (several seconds on a small machine).
    `input_size` (square, pixels) is the size images are fed at; by default the pretrained
    size times TEST_SIZE_RATIO. The resize-to-crop ratio, interpolation, mean and std stay.
    """
    backbone = _resolve(name, config_dir)
    height, width = backbone.preprocessing.input_size
    if input_size is None and height != width:
        return backbone
    size = round(height * TEST_SIZE_RATIO / 32) * 32 if input_size is None else input_size
    check_input_size(size)
    backbone.preprocessing = dataclasses.replace(backbone.preprocessing, input_size=(size, size))
    return backbone


def _resolve(name: str, config_dir: Path | None) -> Backbone:
    packaged = PACKAGED_WEIGHTS.get(name)
    if packaged is not None:
        weights_file = packaged.weights_file()
        weights_id = f"sha256:{file_sha256(weights_file)}"
        preprocessing = Preprocessing.from_timm_config(packaged.timm_config)
        return Backbone(
            name,
            packaged.architecture,
            weights_id,
            preprocessing,
            lambda with_classifier: load_packaged_module(packaged, with_classifier),
        )
    return _timm_backbone(name, config_dir)


def _timm_backbone(name: str, config_dir: Path | None) -> Backbone:
    architecture = name.removeprefix("timm/")
    weights_id = f"timm:{architecture}"
    preprocessing = _memoised_preprocessing(
        config_dir, architecture, weights_id, _timm_config_of(architecture)
    )
    return Backbone(
        name,
        architecture,
        weights_id,
        preprocessing,
        lambda with_classifier: _download_timm_module(architecture, with_classifier),
    )


def _timm_config_of(architecture: str) -> Callable[[], dict[str, Any]]:
    def read() -> dict[str, Any]:
        import timm
        from timm.data import resolve_data_config

        if not timm.is_model(architecture):
            raise HeadstartError(_unknown_backbone_message(architecture, timm.list_models()))
        pretrained = timm.get_pretrained_cfg(architecture)
        if pretrained is None:
            raise HeadstartError(f"timm has no pretrained weights for {architecture!r}")
        return resolve_data_config(pretrained_cfg=pretrained.to_dict())

    return read


def _unknown_backbone_message(name: str, timm_names: list[str]) -> str:
    close = difflib.get_close_matches(name, list_backbones() + timm_names, n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    offline = ", ".join(list_backbones())
    return f"unknown backbone {name!r} (offline: {offline}; or any timm model name){hint}"


def _download_timm_module(architecture: str, with_classifier: bool):
    import timm

    try:
        model = timm.create_model(architecture, pretrained=True)
    except Exception as error:  # timm surfaces network failures as many different types
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise HeadstartError(
            f"could not download the pretrained weights of {architecture!r} ({reason}). "
            f"timm backbones need the network the first time; offline, use one of "
            f"{', '.join(list_backbones())}"
        ) from error
    if not with_classifier:
        model.reset_classifier(0)
    return model.eval()


def _memoised_preprocessing(
    config_dir: Path | None,
    architecture: str,
    weights_id: str,
    read_config: Callable[[], dict[str, Any]],
) -> Preprocessing:
    if config_dir is None:
        return Preprocessing.from_timm_config(read_config())
    key = hashlib.sha256(f"{architecture}|{weights_id}|{_timm_version()}".encode()).hexdigest()
    memo = Path(config_dir) / "backbones" / f"{architecture}-{key[:16]}.json"
    try:
        return Preprocessing.from_dict(json.loads(memo.read_text()))
    except (OSError, ValueError, KeyError, TypeError):
        preprocessing = Preprocessing.from_timm_config(read_config())
        with contextlib.suppress(OSError):  # a read-only cache only loses this shortcut
            memo.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(memo, json.dumps(preprocessing.to_dict()))
        return preprocessing


def _timm_version() -> str:
    try:
        return version("timm")
    except PackageNotFoundError:
        return "unknown"
