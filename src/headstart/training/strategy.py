"""`--strategy auto`: fine-tune when the photos look unlike ImageNet's and fine-tuning fits the
time budget; else a linear head on the cached features.

It decides once the linear head it would start from is fitted: that head has just measured
whether the photos are far from ImageNet, on validation, by whether the backbone's earlier
stages help it beyond the last layer; the budget is then estimated from the image counts."""

from __future__ import annotations

from collections.abc import Callable

from headstart.settings import parse_duration
from headstart.threads import cpu_threads
from headstart.training.settings import FitSettings

# Seconds per training image per fine-tuning epoch with the default settings on a 2-core CPU
# (trunk in ONNX Runtime, top three units trained): flowers5's 3,240 photos took 35-38 s an
# epoch at 224 px, 0.019 s an image at 288 px.
CPU_SECONDS_PER_IMAGE_EPOCH_2_CORES = 0.019
GPU_SPEEDUP = 20.0
FIXED_SECONDS = 30.0  # trunk export, decoding, and features of the tuned model afterwards
MEASURED_AT = 288  # px: the input size of that cost; it scales with the area
# Fewer validation images cannot tell a better fine-tuning epoch from luck: one image would be
# more than a point of accuracy.
MIN_VAL_IMAGES = 100


def choose_strategy(
    train_images: int,
    val_images: int,
    settings: FitSettings,
    cuda: bool,
    input_size: int = MEASURED_AT,
) -> tuple[str, str]:
    """The strategy for this dataset and budget (images fed at `input_size` px square), and
    the reason in one sentence."""
    budget = parse_duration(settings.time_budget)
    estimate = finetune_seconds(train_images, val_images, settings, cuda, input_size)
    where = "the GPU" if cuda else f"{cpu_threads()} CPU cores"
    if estimate <= budget:
        return "finetune", (
            f"fine-tuning {train_images} images for up to {settings.finetune_epochs} epochs "
            f"takes about {_minutes(estimate)} on {where}, within the {settings.time_budget} "
            "budget"
        )
    return "linear", (
        f"fine-tuning {train_images} images would take about {_minutes(estimate)} on {where}, "
        f"over the {settings.time_budget} budget; a linear head on cached features takes seconds"
    )


def finetune_seconds(
    train_images: int, val_images: int, settings: FitSettings, cuda: bool, input_size: int
) -> float:
    """About how long fine-tuning takes, from the cost measured per image and epoch."""
    per_image = CPU_SECONDS_PER_IMAGE_EPOCH_2_CORES * 2 / cpu_threads()
    per_image *= (input_size / MEASURED_AT) ** 2
    if cuda:
        per_image /= GPU_SPEEDUP
    # Validation runs only the small top each epoch; count it as a tenth of a training image.
    images = train_images + val_images / 10
    # One pass more: the tuned backbone's features of the images, for the unknown-image score.
    return FIXED_SECONDS + (settings.finetune_epochs + 1) * images * per_image


def auto_strategy(
    train_images: int,
    val_images: int,
    settings: FitSettings,
    cuda: Callable[[], bool],
    input_size: int,
    last_layer_suffices: bool | None,
) -> tuple[str, str]:
    """`--strategy auto`, once the linear head is fitted: fine-tune only where validation can
    judge it, the photos are unlike ImageNet's and the budget allows. `last_layer_suffices`:
    the head did best on the backbone's pooled last layer alone (None when the backbone offers
    no earlier stages to compare). `cuda` is asked only when it matters (it imports torch)."""
    if val_images < MIN_VAL_IMAGES:
        return "linear", (
            f"only {val_images} validation images, fewer than {MIN_VAL_IMAGES}: too few to tell "
            "whether fine-tuning helps, so the linear head on cached features is used"
        )
    if last_layer_suffices:
        return "linear", (
            "the linear head did best on the backbone's last layer alone, so these photos are "
            "like the ImageNet ones it was trained on, where fine-tuning seldom pays; the linear "
            "head on cached features is used"
        )
    strategy, reason = choose_strategy(train_images, val_images, settings, cuda(), input_size)
    if strategy == "linear":
        return strategy, reason
    if last_layer_suffices is not None:
        reason = (
            "the backbone's earlier stages helped the linear head, a sign that these photos are "
            f"unlike ImageNet's; {reason}"
        )
    return strategy, f"{reason} (the linear head is kept if no epoch beats it)"


def _minutes(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min"
