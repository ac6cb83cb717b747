"""Which backbones exist, where their weights come from, and what identifies their features."""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import hashlib
import io
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from headstart.backbones.packaged import (
    PACKAGED_WEIGHTS,
    file_sha256,
    load_packaged_module,
)
from headstart.backbones.preprocessing import Preprocessing
from headstart.errors import HeadstartError, SettingError
from headstart.settings import number
from headstart.storage import atomic_write_bytes, atomic_write_text

if TYPE_CHECKING:
    from headstart.backbones.stages import Layout

Parsed = TypeVar("Parsed")
DEFAULT_BACKBONE = "efficientnet_lite0"
# Networks trained on random-resized crops see objects larger than a centre crop of the same
# size shows them; feeding images at about 1.3x the training size undoes that (Touvron et al.,
# "Fixing the train-test resolution discrepancy", 2019: 224 -> 288 for ResNet-50). Measured
# here with EfficientNet-Lite0 and a linear head: hymenoptera 94.8% -> 97.2% validation
# accuracy, flowers5 (227 px photos) 92.5% -> 92.5%.
TEST_SIZE_RATIO = 1.29
INPUT_SIZE = number(32, 1024)
# Pooled outputs of EfficientNet stages 3-6 (strides 16 and 32) beside the pooled head: the
# same forward pass, 1,984 features instead of 1,280 for Lite0. Measured with a linear head at
# 288 px (leaks removed): test top-1 on flowers5 92.8% -> 93.8%, chest X-rays 95.8% -> 96.8%,
# scikit-learn's digits 96.7% -> 98.4%; hymenoptera 97.4% -> 93.5%, which is why the head is
# also fitted without them and validation decides (training/fit.py).
DEFAULT_POOLED_STAGES = (3, 4, 5, 6)


@dataclass(frozen=True)
class Preset:
    """A measured backbone, input size and strategy (bench/accuracy.py; 2-core CPU, cold
    cache)."""

    backbone: str
    input_size: int | None  # None: the backbone's default (1.29x its pretrained size)
    # What `--strategy auto` (the default) becomes: fast means seconds, never fine-tuning;
    # three joined backbones cannot be fine-tuned.
    strategy: str = "auto"


PRESETS = {
    "fast": Preset("efficientnet_lite0", 224, "linear"),
    "balanced": Preset("efficientnet_lite0", None),
    "best": Preset("efficientnet_lite0+efficientnet_lite1+efficientnet_lite2", None, "linear"),
}
DEFAULT_PRESET = "balanced"


def preset_backbone(
    preset: str | None, backbone: str | None, input_size: int | None
) -> tuple[str, int | None]:
    """The backbone and input size to use: the preset's, unless given; not both."""
    if preset is not None and backbone is not None:
        raise SettingError(
            "give preset or backbone, not both: a preset chooses the network",
            {"preset": "--preset", "backbone": "--backbone"},
        )
    if preset is not None and preset not in PRESETS:
        message = f"preset must be one of {', '.join(PRESETS)}, not {preset!r}"
        raise SettingError(message, {"preset": "--preset"})
    chosen = PRESETS[preset or DEFAULT_PRESET]
    if backbone is not None:
        return backbone, input_size
    return chosen.backbone, chosen.input_size if input_size is None else input_size


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
    # Stages whose pooled outputs join the pooled head in the features (stages.py says what
    # a stage is); empty: the pooled head alone.
    pooled_stages: tuple[int, ...] = ()
    # Backbones whose features are concatenated (each fed this one's input); empty: one network.
    members: tuple[Backbone, ...] = ()
    head_features: int | None = None  # width of the pooled head, when known without torch
    stage_widths: tuple[int, ...] = ()  # output channels of each stage, when known
    # Why the input size is not the usual one, in a sentence for the training summary.
    size_note: str | None = field(default=None, compare=False)
    # The user's own weights for the architecture (safetensors or a state dict), if given.
    weights_file: str | None = None

    @property
    def width(self) -> int | None:
        """How many features it makes, when known without building it."""
        if self.members:
            widths = [member.width for member in self.members]
            return sum(w for w in widths if w is not None) if None not in widths else None
        if self.head_features is None or (self.pooled_stages and not self.stage_widths):
            return None
        return self.head_features + sum(self.stage_widths[i] for i in self.pooled_stages)

    @property
    def leading_candidates(self) -> tuple[int, ...]:
        """Leading feature counts a head may be restricted to: the first pooled head, and for
        joined backbones also the first backbone's features (what it would make alone)."""
        first = self.members[0] if self.members else self
        options = {first.head_features, first.width if self.members else None}
        total = self.width
        return tuple(sorted(w for w in options if w and total and w < total))

    @property
    def distance_features(self) -> int | None:
        """The leading features that say what an image shows (the first pooled head): what
        the unknown-image score compares. None: all of them."""
        return self.head_features if self.pooled_stages or self.members else None

    @property
    def fingerprint(self) -> str:
        """Identifies the features: same fingerprint and same image bytes give the same vector."""
        identity = {
            "architecture": self.architecture,
            "weights": self.weights_id,
            "preprocessing": self.preprocessing.to_dict(),
            "format": _FEATURE_FORMAT,
        }
        if self.pooled_stages:  # absent otherwise, so earlier caches and models stay valid
            identity["pooled_stages"] = list(self.pooled_stages)
        text = json.dumps(identity, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:24]

    def build_module(self, with_classifier: bool = False):
        """The torch module: pooled features (or ImageNet logits with `with_classifier`)."""
        if self.members:
            if with_classifier:
                raise HeadstartError(f"{self.name} has no single ImageNet classifier")
            from headstart.backbones.network import Concatenated

            return Concatenated([member.build_module() for member in self.members])
        module = self._build(with_classifier)
        if self.pooled_stages and not with_classifier:
            from headstart.backbones.network import StagePooled

            module = StagePooled(module, self.pooled_stages)
        return module

    def build_maps_module(self):
        """The torch module whose `maps(images)` gives the maps the features pool (see
        StagePooled); a joined backbone has no single grid to lay them on."""
        if self.members:
            raise HeadstartError(f"{self.name}: joined backbones have no heat maps")
        from headstart.backbones.network import StagePooled

        return StagePooled(self._build(False), self.pooled_stages)

    def head_only(self) -> Backbone:
        """This backbone with the pooled head alone as features (what fine-tuning trains)."""
        members = tuple(member.head_only() for member in self.members)
        return dataclasses.replace(self, pooled_stages=(), members=members)

    def tuned(self, tensors: dict[str, Any]) -> Backbone:
        """This backbone with weights replaced by fine-tuning: a new weights id and features."""
        weights_id = f"{self.weights_id}+tuned:{tensors_sha256(tensors)}"

        def build(with_classifier: bool):
            module = self._build(with_classifier)
            load_tuned_tensors(module, tensors, self.name)
            return module

        return dataclasses.replace(self, weights_id=weights_id, _build=build)

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "architecture": self.architecture,
            "weights": self.weights_id,
            "fingerprint": self.fingerprint,
            **({"pooled_stages": list(self.pooled_stages)} if self.pooled_stages else {}),
            **({"weights_file": self.weights_file} if self.weights_file else {}),
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
        raise SettingError(f"input_size {problem}, not {size!r}", {"input_size": "--input-size"})


def can_finetune(backbone: Backbone) -> bool:
    """Whether fine-tuning can split this backbone into units: any one timm network (joined
    backbones cannot be)."""
    return not backbone.members


def list_backbones() -> list[str]:
    """Backbones that work offline; any timm model name also works when online."""
    return sorted(PACKAGED_WEIGHTS)


def resolve_backbone(
    name: str = DEFAULT_BACKBONE,
    config_dir: Path | None = None,
    input_size: int | None = None,
    pooled_stages: tuple[int, ...] | None = None,
    image_side: int | None = None,
    weights_file: str | Path | None = None,
) -> Backbone:
    """Find a backbone by headstart name (offline weights) or timm model name (downloads).

    `weights_file` (safetensors, or a PyTorch state dict read without pickle) gives the
    architecture the user's own weights, offline: a checkpoint copied from elsewhere.

    `config_dir` memoises the preprocessing config read from timm, so that a warm run whose
    features are all cached never imports timm (several seconds on a small machine).
    `input_size` (square, pixels) is the size images are fed at; by default the pretrained
    size times TEST_SIZE_RATIO. The resize-to-crop ratio, interpolation, mean and std stay.
    `pooled_stages` adds those stages' pooled outputs to the features; by default those at
    strides 16 and 32 (stages 3-6 for the EfficientNet-Lites; stages.layout_of). Given the dataset's
    typical shorter `image_side`, the default size never enlarges photos beyond the
    pretrained size: upscaled pixels add no detail, and measured, cost accuracy.
    """
    if "+" in name:
        if weights_file is not None:
            raise HeadstartError(f"backbone {name!r}: one weights file is for one backbone")
        return _concatenated(name, config_dir, input_size, pooled_stages, image_side)
    backbone = _resolve(name, config_dir)
    if weights_file is not None:
        backbone = _with_own_weights(backbone, Path(weights_file))
    if pooled_stages is None:
        pooled_stages = _default_stages(backbone, config_dir)
    backbone.pooled_stages = tuple(pooled_stages)
    height, width = backbone.preprocessing.input_size
    if input_size is None and height != width:
        return backbone
    size = input_size
    if size is None:
        size = round(height * TEST_SIZE_RATIO / 32) * 32
        if image_side is not None and image_side < size:
            backbone.size_note = _not_enlarged(height, size, image_side)
            size = height
    check_input_size(size)
    backbone.preprocessing = dataclasses.replace(backbone.preprocessing, input_size=(size, size))
    return backbone


def _concatenated(
    name: str,
    config_dir: Path | None,
    input_size: int | None,
    pooled_stages: tuple[int, ...] | None,
    image_side: int | None,
) -> Backbone:
    """Backbones joined by '+': one input (the largest member's preprocessing), their features
    side by side. They must agree on normalisation, as the EfficientNet-Lites do."""
    names = name.split("+")
    if len(set(names)) != len(names) or not all(names):
        raise HeadstartError(f"backbone {name!r}: name each backbone once, joined by '+'")
    members = [resolve_backbone(part, config_dir, None, pooled_stages) for part in names]
    largest = max(members, key=lambda m: m.preprocessing.input_size)
    size = input_size or largest.preprocessing.input_size[0]
    note = None
    if input_size is None and image_side is not None and image_side < size:
        # Small photos: the first member's pretrained size, as for one backbone.
        first = resolve_backbone(names[0], config_dir, None, (), image_side)
        smaller = first.preprocessing.input_size[0]
        note, size = _not_enlarged(smaller, size, image_side), smaller
    check_input_size(size)
    preprocessing = dataclasses.replace(largest.preprocessing, input_size=(size, size))
    for member in members:
        kept = (member.preprocessing.mean, member.preprocessing.std)
        if kept != (preprocessing.mean, preprocessing.std):
            raise HeadstartError(
                f"backbone {name!r}: {member.name} normalises its input differently from "
                f"{largest.name}; join backbones that share mean and std"
            )
        member.preprocessing = preprocessing
    return Backbone(
        name,
        "+".join(member.architecture for member in members),
        "+".join(member.weights_id for member in members),
        preprocessing,
        _build=lambda with_classifier: None,  # members build themselves
        pooled_stages=members[0].pooled_stages,
        members=tuple(members),
        head_features=members[0].head_features,
        size_note=note,
    )


def _not_enlarged(size: int, default: int, image_side: int) -> str:
    """Why the input is `size` px rather than the usual `default`, for the summary."""
    return (
        f"input size {size} px, not {default}: the photos' typical shorter side is "
        f"{image_side} px and enlarging them adds no detail (--input-size overrides)"
    )


def imagenet_classifier(
    backbone: Backbone, config_dir: Path | None
) -> tuple[np.ndarray, np.ndarray] | None:
    """The ImageNet classifier on the backbone's pooled head (the first member's, when joined):
    weight (1000, features) and bias, for the packaged EfficientNet-Lites, whose packages keep
    it; None for any other backbone. Kept in `config_dir` (.npz, read without pickle), so that
    only the first run needs PyTorch for it."""
    first = backbone.members[0] if backbone.members else backbone
    packaged = PACKAGED_WEIGHTS.get(first.name)
    if packaged is None or first.weights_file or "+tuned:" in first.weights_id:
        return None
    memo = None
    if config_dir is not None:
        memo = (
            Path(config_dir) / "backbones" / f"{first.name}-classifier-{first.weights_id[7:23]}.npz"
        )
        with contextlib.suppress(OSError, ValueError, KeyError):
            with np.load(memo, allow_pickle=False) as kept:
                weight, bias = kept["weight"], kept["bias"]
            if weight.shape == (len(bias), first.head_features) and weight.dtype == np.float32:
                return weight, bias
    classifier = load_packaged_module(packaged, with_classifier=True).get_classifier()
    weight = classifier.weight.detach().numpy().astype(np.float32)
    bias = classifier.bias.detach().numpy().astype(np.float32)
    if memo is not None:
        with contextlib.suppress(OSError):  # a read-only cache only loses this shortcut
            buffer = io.BytesIO()
            np.savez(buffer, weight=weight, bias=bias)
            memo.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(memo, buffer.getvalue())
    return weight, bias


def check_installed_weights(backbone: Backbone) -> None:
    """Refuse to run `backbone` where its packaged weights differ from those it was resolved
    with (another machine of a cluster with another package version, say): its features
    would be filed under the other weights' fingerprint."""
    for part in backbone.members or (backbone,):
        packaged = PACKAGED_WEIGHTS.get(part.name)
        if packaged is None:
            continue
        expected = part.weights_id.split("+tuned:")[0]
        installed = f"sha256:{file_sha256(packaged.weights_file())}"
        if installed != expected:
            raise HeadstartError(
                f"{part.name}: the weights installed on this machine ({installed[:19]}) differ "
                f"from the driver's ({expected[:19]}); install the same package version"
            )


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
            head_features=1280,  # every EfficientNet-Lite keeps a 1,280-wide head
            stage_widths=packaged.stage_widths,
        )
    return _timm_backbone(name, config_dir)


WEIGHTS_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")  # --backbone-weights reads these


def _with_own_weights(backbone: Backbone, weights_file: Path) -> Backbone:
    """`backbone`'s architecture and preprocessing with the weights in `weights_file`."""
    file = weights_file.expanduser().absolute()
    if not file.is_file():
        raise HeadstartError(f"{file}: no such weights file (--backbone-weights)")
    if file.suffix.lower() not in WEIGHTS_SUFFIXES:
        raise HeadstartError(
            f"{file}: weights are read from {', '.join(WEIGHTS_SUFFIXES)} files (safetensors, "
            "or a PyTorch state dict, read without pickle)"
        )
    architecture = backbone.architecture

    def build(with_classifier: bool):
        return _own_weights_module(architecture, file, with_classifier)

    return dataclasses.replace(
        backbone,
        weights_id=f"sha256:{file_sha256(file)}",
        _build=build,
        weights_file=str(file),
    )


def _own_weights_module(architecture: str, file: Path, with_classifier: bool):
    import timm

    # "source" cleared: a configuration naming the Hugging Face hub would fetch from it.
    overlay = {"file": str(file), "source": ""}
    headless: dict[str, Any] = {} if with_classifier else {"num_classes": 0}
    try:
        model: Any = timm.create_model(
            architecture, pretrained=True, pretrained_cfg_overlay=overlay, **headless
        )
    except Exception as error:  # torch and safetensors fail with many types on a bad file
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise HeadstartError(f"{file}: not weights for {architecture} ({reason[:300]})") from error
    return model.eval()


def _timm_backbone(name: str, config_dir: Path | None) -> Backbone:
    architecture = name.removeprefix("timm/")
    weights_id = f"timm:{architecture}"
    preprocessing = _memoised(
        config_dir, architecture, weights_id, _timm_config_of(architecture), Preprocessing.from_dict
    )
    return Backbone(
        name,
        architecture,
        weights_id,
        preprocessing,
        lambda with_classifier: _download_timm_module(architecture, with_classifier),
    )


def _default_stages(backbone: Backbone, config_dir: Path | None) -> tuple[int, ...]:
    """The stages pooled beside the head when none are asked for (stages.layout_of); for a
    packaged EfficientNet-Lite, the measured DEFAULT_POOLED_STAGES, known without timm."""
    if backbone.name in PACKAGED_WEIGHTS:
        return DEFAULT_POOLED_STAGES
    architecture = backbone.architecture
    layout = _memoised(config_dir, architecture, "layout", lambda: _layout(architecture), _parsed)
    backbone.head_features, backbone.stage_widths = layout.head_features, layout.stage_widths
    return layout.default_stages


def _layout(architecture: str) -> dict[str, Any]:
    import timm
    import torch

    from headstart.backbones.stages import layout_of

    with torch.device("meta"):  # shapes only: no weights allocated or read
        network = timm.create_model(architecture, pretrained=False, num_classes=0)
    return dataclasses.asdict(layout_of(network))


def _parsed(memo: dict[str, Any]) -> Layout:
    from headstart.backbones.stages import Layout

    layout = Layout(
        int(memo["head_features"]),
        tuple(int(w) for w in memo["stage_widths"]),
        tuple(int(s) for s in memo["default_stages"]),
    )
    if not all(0 <= s < len(layout.stage_widths) for s in layout.default_stages):
        raise ValueError("stage out of range")
    return layout


def _timm_config_of(architecture: str) -> Callable[[], dict[str, Any]]:
    def read() -> dict[str, Any]:
        import timm
        from timm.data import resolve_data_config

        if not timm.is_model(architecture):
            raise HeadstartError(_unknown_backbone_message(architecture, timm.list_models()))
        pretrained = timm.get_pretrained_cfg(architecture)
        if pretrained is None:
            raise HeadstartError(f"timm has no pretrained weights for {architecture!r}")
        config = resolve_data_config(pretrained_cfg=pretrained.to_dict())
        return Preprocessing.from_timm_config(config).to_dict()

    return read


def _unknown_backbone_message(name: str, timm_names: list[str]) -> str:
    close = difflib.get_close_matches(name, list_backbones() + timm_names, n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    offline = ", ".join(list_backbones())
    return f"unknown backbone {name!r} (offline: {offline}; or any timm model name){hint}"


def _download_timm_module(architecture: str, with_classifier: bool):
    import timm

    try:
        model: Any = timm.create_model(architecture, pretrained=True)
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


def _memoised(
    config_dir: Path | None,
    architecture: str,
    purpose: str,
    read: Callable[[], dict[str, Any]],
    parse: Callable[[dict[str, Any]], Parsed],
) -> Parsed:
    """`parse(read())`, with what `read` returns kept as JSON under `config_dir`: a warm run
    whose features are all cached then never imports timm (seconds on a small machine)."""
    if config_dir is None:
        return parse(read())
    key = hashlib.sha256(f"{architecture}|{purpose}|{_timm_version()}".encode()).hexdigest()
    memo = Path(config_dir) / "backbones" / f"{architecture}-{key[:16]}.json"
    try:
        return parse(json.loads(memo.read_text()))
    except (OSError, ValueError, KeyError, TypeError):  # absent, or not what was written
        value = read()
        with contextlib.suppress(OSError):  # a read-only cache only loses this shortcut
            memo.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(memo, json.dumps(value))
        return parse(value)


def _timm_version() -> str:
    try:
        return version("timm")
    except PackageNotFoundError:
        return "unknown"
