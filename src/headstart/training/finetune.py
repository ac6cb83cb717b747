"""Fine-tuning the top of the backbone together with the head.

The backbone is split into a frozen trunk and a trainable top. The trunk never needs
gradients, so on CPU it runs in ONNX Runtime (several times faster than eager PyTorch), and
on images that don't change between epochs (validation; training without augmentation) it runs
once. Training starts from the head already fitted on cached features, with discriminative
learning rates (warm-up, then cosine decay), gradient clipping and, for small datasets, frozen
BatchNorm statistics. Augmented training images come from worker processes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Sampler

from headstart.backbones.network import PixelNormalize
from headstart.backbones.registry import Backbone
from headstart.backbones.stages import BackboneSplit, split_backbone
from headstart.context import RunContext
from headstart.data.locations import ImagePath, read_image
from headstart.errors import HeadstartError
from headstart.features.augment import AugmentedImages, augmentation, image_for_augmentation
from headstart.features.engines import check_engine, exact_fp32, pixels_engine
from headstart.features.labelled import LabelledFeatures
from headstart.features.views import pixels_or_reason
from headstart.model.record import FinetuneRecord
from headstart.threads import cpu_threads
from headstart.training.checkpoint import Checkpoint
from headstart.training.fit import decisions_right, training_loss
from headstart.training.loop import epoch_seed, run_epochs
from headstart.training.settings import FitSettings
from headstart.training.temperature import calibrated_nll

FROZEN_BN_BELOW = 5000  # training images; fewer give noisy batch statistics


@dataclass
class FinetuneResult:
    backbone: Backbone  # the tuned backbone
    # Its weights that differ from the pretrained ones; none when no epoch beat the start.
    tensors: dict[str, torch.Tensor]
    head: nn.Sequential
    val_logits: np.ndarray
    record: FinetuneRecord  # what the model's record says of the run
    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0


def finetune(
    backbone: Backbone,
    head: nn.Sequential,
    train: LabelledFeatures,
    val: LabelledFeatures,
    settings: FitSettings,
    model_dir: Path,
    *,
    checkpoint: Checkpoint | None = None,
    resume: bool = False,
    context: RunContext | None = None,
    shard_bytes: list[bytes] | None = None,
) -> FinetuneResult:
    """Fine-tune the top `settings.unfreeze` units of `backbone` with `head` on the samples.

    `model_dir` keeps the trunk's ONNX export for later runs. The context's device trains;
    its engine runs the frozen trunk: onnx, torch, or auto (ONNX Runtime on CPU, PyTorch on
    a GPU). Each process trains on its shard of `train` (every N-th image); `shard_bytes`
    are those images' files when the caller has read them already (Ray Data did), else the
    process reads them.
    """
    context = context or RunContext()
    tuning = _Tuning(backbone, head, train, val, settings, model_dir, context, shard_bytes)
    if checkpoint is not None and tuning.rank > 0:  # one process writes it; all may resume
        checkpoint = checkpoint.reader()
    state = run_epochs(
        tuning.model,
        tuning.optimizer,
        tuning.train_epoch,
        tuning.validate,
        epochs=settings.finetune_epochs,
        patience=settings.finetune_patience,
        seed=settings.seed,
        scheduler=tuning.scheduler,
        checkpoint=checkpoint,
        resume=resume,
        keep_start=True,
        select="val_loss_calibrated",
        progress=context.progress and tuning.rank == 0,
        description="Fine-tuning",
    )
    return tuning.result(state.best_epoch, state.history)


class _Tuning:
    """One process's part of a fine-tuning run: the split backbone and head on its device,
    its shard's batches, the optimizer, and what one epoch trains and scores."""

    def __init__(
        self,
        backbone: Backbone,
        head: nn.Sequential,
        train: LabelledFeatures,
        val: LabelledFeatures,
        settings: FitSettings,
        model_dir: Path,
        context: RunContext,
        shard_bytes: list[bytes] | None,
    ) -> None:
        self.backbone, self.head, self.val, self.settings = backbone, head, val, settings
        self.device = device = resolve_device(context.device)
        network = backbone.build_module()
        split = split_backbone(network, settings.unfreeze, backbone.preprocessing.input_size)
        network.requires_grad_(False)
        for parameter in split.tuned_parameters():
            parameter.requires_grad_(True)
        self.split = split
        trunk = Trunk(backbone, split, device, model_dir, context.engine)
        self.model = nn.Sequential(split.top, head.requires_grad_(True))
        self.model.to(device).to(memory_format=torch.channels_last)
        self.rank, self.world = process_group()
        # Several processes (torchrun, Ray Train): gradients averaged over them at each step.
        self.trained = (
            nn.parallel.DistributedDataParallel(self.model) if self.world > 1 else self.model
        )
        self.freeze_bn = settings.freeze_bn == "yes" or (
            settings.freeze_bn == "auto" and len(train.y) < FROZEN_BN_BELOW
        )
        self.val_inputs = trunk.run_all(_eval_pixels(backbone, val)) if len(val.y) else None
        self.classes = cast(nn.Linear, head[-1]).out_features
        self.batches = self._batches(train, trunk, shard_bytes)
        self.optimizer = torch.optim.AdamW(_parameter_groups(split, head, settings))
        steps = settings.finetune_epochs * self.batches.per_epoch
        warmup = round(settings.warmup_epochs * self.batches.per_epoch)
        schedule = warmup_cosine(warmup, steps)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, schedule)
        loss = training_loss(train.y, self.classes, settings)
        self.loss = loss.to(device) if isinstance(loss, nn.Module) else loss
        self.multi_label = train.y.ndim == 2
        self.trainable = [p for p in self.model.parameters() if p.requires_grad]

    def _batches(
        self, train: LabelledFeatures, trunk: Trunk, shard_bytes: list[bytes] | None
    ) -> _Batches:
        """This process's shard of each epoch: every world-th image, in its share of each
        batch; all processes take the same number of steps (a shard one image larger leaves
        one out of each epoch)."""
        rank, world = self.rank, self.world
        others = {i for i in range(len(train.y)) if i % world != rank}
        shard = train.without(others) if others else train
        if shard_bytes is not None and len(shard_bytes) != len(shard.y):
            raise HeadstartError(
                f"process {rank} of {world} was given {len(shard_bytes)} training images "
                f"for a shard of {len(shard.y)}"
            )
        batch_size = max(1, self.settings.finetune_batch_size // world)
        usable = len(train.y) // world
        return _training_batches(
            self.backbone, shard, trunk, self.settings, batch_size, usable, shard_bytes
        )

    def train_epoch(self, epoch: int) -> tuple[float, float]:
        """One epoch's steps; the mean training loss and accuracy over every process."""
        self.trained.train()
        if self.freeze_bn:
            for module in self.split.top.modules():
                if isinstance(module, nn.BatchNorm2d):
                    module.eval()
        total, correct, seen = 0.0, 0.0, 0
        for inputs, labels in self.batches(epoch):
            labels = labels.to(self.device)
            with _precision(self.device):
                logits = self.trained(inputs).float()
            loss = self.loss(logits, labels)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(self.trainable, self.settings.grad_clip)
            self.optimizer.step()
            self.scheduler.step()
            total += loss.item() * len(labels)
            correct += float(self._right(logits, labels).float().mean()) * len(labels)
            seen += len(labels)
        loss_sum, right, count = summed(self.device, total, correct, seen)
        return loss_sum / count, right / count

    def validate(self) -> dict[str, float] | None:
        if self.val_inputs is None:
            return None
        logits = _logits(self.model, self.val_inputs, self.device)
        labels = torch.from_numpy(self.val.y)
        if self.multi_label:  # summed over the labels, as the head's fit measures it
            loss = nn.functional.binary_cross_entropy_with_logits(logits, labels) * self.classes
        else:
            loss = nn.functional.cross_entropy(logits, labels)
        scores = {
            "val_loss": float(loss),
            "val_accuracy": float(self._right(logits, labels).float().mean()),
            # What chooses the epoch: the loss once overconfidence is divided out, as the
            # saved model's temperature does. Fine-tuning often raises the plain loss by
            # growing the logits while it ranks the images better.
            "val_loss_calibrated": calibrated_nll(logits.numpy(), self.val.y),
        }
        # Every process scores the same weights; agreeing on the numbers keeps their choices
        # (best epoch, early stop) the same.
        agreed = summed(self.device, *scores.values())
        return dict(zip(scores, (v / self.world for v in agreed), strict=True))

    def _right(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Which predictions are right: the top class, or each label's decision."""
        return decisions_right(logits, labels) if self.multi_label else logits.argmax(1) == labels

    def result(self, best_epoch: int, history: list[dict[str, float]]) -> FinetuneResult:
        """The kept epoch's backbone, head and validation logits, on the CPU."""
        self.model.to("cpu").to(memory_format=torch.contiguous_format).eval()
        improved = best_epoch > 0
        tensors = self.split.tuned_tensors() if improved else {}
        val_logits = (
            _logits(self.model, self.val_inputs, torch.device("cpu")).numpy()
            if self.val_inputs is not None
            else np.zeros((0, self.classes), np.float32)
        )
        return FinetuneResult(
            backbone=self.backbone.tuned(tensors) if improved else self.backbone,
            tensors=tensors,
            head=self.head.requires_grad_(False),
            val_logits=val_logits,
            record=FinetuneRecord(
                improved=improved,
                tuned=self.split.tuned_prefixes,
                units=self.split.units,
                device=str(self.device),
                freeze_bn=self.freeze_bn,
                augment=self.settings.augment,
            ),
            history=history,
            best_epoch=best_epoch,
        )


def process_group() -> tuple[int, int]:
    """(rank, world size) when torch.distributed runs several processes, else (0, 1)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def summed(device: torch.device, *values: float) -> tuple[float, ...]:
    """The values added up over every process of the group (as they are with one)."""
    if process_group()[1] == 1:
        return values
    import torch.distributed as dist

    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return tuple(tensor.tolist())


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise HeadstartError(f"--device {name}: this machine has no CUDA GPU that torch can use")
    try:
        return torch.device(name)
    except RuntimeError as error:
        raise HeadstartError(f"unknown device {name!r}: auto, cpu or cuda") from error


def warmup_cosine(warmup_steps: int, total_steps: int) -> Callable[[int], float]:
    """Learning-rate factor: linear warm-up to 1, then cosine decay towards 0."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


class Trunk:
    """The frozen bottom of the backbone: uint8 pixels in, activations (on `device`) out."""

    def __init__(
        self,
        backbone: Backbone,
        split: BackboneSplit,
        device: torch.device,
        model_dir: Path,
        engine: str = "auto",
    ) -> None:
        check_engine(engine)
        self.device = device
        self.onnx = engine == "onnx" or (engine == "auto" and device.type == "cpu")
        module = nn.Sequential(PixelNormalize(backbone.preprocessing), split.trunk)
        if self.onnx:
            onnx_file = model_dir / f"{backbone.fingerprint}-trunk-{split.units}.onnx"
            input_size = backbone.preprocessing.input_size
            self._engine = pixels_engine(lambda: module, input_size, "onnx", onnx_file)
        else:
            self.module = module.eval().to(device).to(memory_format=torch.channels_last)

    def __call__(self, pixels: torch.Tensor, exact: bool = False) -> torch.Tensor:
        """Activations for training (bf16 on a GPU), or in full fp32 when `exact`."""
        if self.onnx:
            return torch.from_numpy(self._engine(pixels.numpy())).to(self.device)
        # no_grad, not inference_mode: the top of the network trains on these activations.
        with torch.no_grad(), _precision(self.device, exact):
            return self.module(pixels.to(self.device, non_blocking=True))

    def run_all(self, pixels: np.ndarray, batch_size: int = 32) -> torch.Tensor:
        """Full-precision activations of many images, computed once and kept on the CPU."""
        parts = [
            self(torch.from_numpy(pixels[i : i + batch_size]), exact=True).float().cpu()
            for i in range(0, len(pixels), batch_size)
        ]
        return torch.cat(parts)


def loader_workers(device: torch.device) -> int:
    """Augmenting processes: on CPU the trunk needs the other cores; a GPU waits on them."""
    return min(2 if device.type == "cpu" else 8, cpu_threads())


class EpochBatches(Sampler):
    """Shuffled batches of (epoch, index) keys; the epoch seeds the order and the augmentation.
    The first `usable` (default all) of each epoch's order are batched."""

    def __init__(self, size: int, batch_size: int, seed: int, usable: int | None = None) -> None:
        self.size, self.batch_size, self.seed = size, batch_size, seed
        self.usable = size if usable is None else usable
        self.epoch = 1

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        generator = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch))
        order = torch.randperm(self.size, generator=generator).tolist()[: self.usable]
        for start in range(0, self.usable, self.batch_size):
            yield [(self.epoch, i) for i in order[start : start + self.batch_size]]

    def __len__(self) -> int:
        return math.ceil(self.usable / self.batch_size)


class _Batches:
    """Per epoch, (trunk activations, labels) batches of the training set."""

    def __init__(self, per_epoch: int, make: Callable[[int], Iterator]) -> None:
        self.per_epoch = per_epoch
        self._make = make

    def __call__(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return self._make(epoch)


def _training_batches(
    backbone: Backbone,
    train: LabelledFeatures,
    trunk: Trunk,
    settings: FitSettings,
    batch_size: int,
    usable: int,
    encoded: list[bytes] | None,
) -> _Batches:
    sampler = EpochBatches(len(train.y), batch_size, settings.seed, usable)
    labels = torch.from_numpy(train.y)
    transform = augmentation(settings.augment, backbone.preprocessing.input_size)
    if transform is None:  # the same images every epoch: run the trunk once
        inputs = trunk.run_all(_eval_pixels(backbone, train, encoded))

        def fixed(epoch: int) -> Iterator:
            sampler.epoch = epoch
            for keys in sampler:
                rows = torch.tensor([i for _, i in keys])
                yield inputs[rows].to(trunk.device), labels[rows]

        return _Batches(len(sampler), fixed)
    images = _images_for_augmentation(backbone, train, encoded)
    loader = DataLoader(
        AugmentedImages(images, train.y, transform, settings.seed),
        batch_sampler=sampler,
        num_workers=loader_workers(trunk.device),
        pin_memory=trunk.device.type == "cuda",
        persistent_workers=True,
        # Its own generator: creating the workers must not draw from torch's global one, or a
        # resumed run (which creates them in a later epoch) would see other dropout masks.
        generator=torch.Generator().manual_seed(settings.seed),
    )

    def augmented(epoch: int) -> Iterator:
        sampler.epoch = epoch
        for pixels, batch_labels in loader:
            yield trunk(pixels), batch_labels

    return _Batches(len(sampler), augmented)


def _parameter_groups(split: BackboneSplit, head: nn.Module, settings: FitSettings) -> list[dict]:
    """Backbone at a fraction of the head's rate; no weight decay on biases and norms."""
    backbone_lr = settings.finetune_learning_rate * settings.backbone_lr_scale
    tuned = split.tuned_parameters()
    decay = [p for p in tuned if p.ndim > 1]
    no_decay = [p for p in tuned if p.ndim <= 1]
    return [
        {"params": decay, "lr": backbone_lr, "weight_decay": settings.weight_decay},
        {"params": no_decay, "lr": backbone_lr, "weight_decay": 0.0},
        {
            "params": list(head.parameters()),
            "lr": settings.finetune_learning_rate,
            "weight_decay": settings.weight_decay,
        },
    ]


def _eval_pixels(
    backbone: Backbone, split: LabelledFeatures, encoded: list[bytes] | None = None
) -> np.ndarray:
    """The split's network inputs, from `encoded` (its files' bytes) when given."""

    def decode(path: ImagePath, data: bytes | None) -> np.ndarray:
        pixels, reason = pixels_or_reason(backbone.preprocessing, path if data is None else data)
        if pixels is None:
            raise HeadstartError(f"{path}: {reason} (it changed since its features were computed)")
        return pixels

    return np.stack(_decoded(decode, split, encoded))


def _images_for_augmentation(
    backbone: Backbone, split: LabelledFeatures, encoded: list[bytes] | None = None
) -> list[torch.Tensor]:
    def decode(path: ImagePath, data: bytes | None) -> torch.Tensor:
        try:
            data = read_image(path) if data is None else data
            return image_for_augmentation(backbone.preprocessing, data)
        except (OSError, ValueError) as error:
            message = f"{path}: {error} (it changed since its features were computed)"
            raise HeadstartError(message) from error

    return _decoded(decode, split, encoded)


def _decoded(decode: Callable, split: LabelledFeatures, encoded: list[bytes] | None) -> list:
    paths = [s.path for s in split.samples]
    with ThreadPoolExecutor(cpu_threads()) as pool:
        return list(pool.map(decode, paths, encoded or [None] * len(paths)))


def _logits(model: nn.Module, inputs: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Full-precision logits: validation losses decide which epoch is kept, so they must be
    comparable with the linear head's (the start, epoch 0) and with the reported one."""
    model.eval()
    with torch.no_grad(), _precision(device, exact=True):
        parts = [
            model(inputs[i : i + 64].to(device)).float().cpu() for i in range(0, len(inputs), 64)
        ]
    return torch.cat(parts)


@contextmanager
def _precision(device: torch.device, exact: bool = False) -> Iterator[None]:
    """bf16 autocast on CUDA for training; on CPU, and when `exact`, fp32 without TF32."""
    if device.type == "cuda" and not exact:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            yield
    else:
        with exact_fp32():
            yield
