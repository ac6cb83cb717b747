"""`--strategy auto`: fine-tune when it fits the time budget, else a linear head on the cache."""

from __future__ import annotations

from headstart.settings import parse_duration
from headstart.threads import cpu_threads
from headstart.training.settings import FitSettings

# Seconds per training image per fine-tuning epoch with the default settings, measured with
# bench/strategies.py on a 2-core CPU (288 px, trunk in ONNX Runtime, top three units trained).
CPU_SECONDS_PER_IMAGE_EPOCH_2_CORES = 0.03
GPU_SPEEDUP = 20.0
FIXED_SECONDS = 30.0  # trunk export, decoding, and features of the tuned model afterwards


MEASURED_AT = 288  # px: the input size of that measurement; the cost scales with the area


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
    per_image = CPU_SECONDS_PER_IMAGE_EPOCH_2_CORES * 2 / cpu_threads()
    per_image *= (input_size / MEASURED_AT) ** 2
    if cuda:
        per_image /= GPU_SPEEDUP
    # Validation runs only the small top each epoch; count it as a tenth of a training image.
    images = train_images + val_images / 10
    estimate = FIXED_SECONDS + settings.finetune_epochs * images * per_image
    where = "the GPU" if cuda else f"{cpu_threads()} CPU cores"
    if estimate <= budget:
        return "finetune", (
            f"fine-tuning {train_images} images for up to {settings.finetune_epochs} epochs "
            f"takes about {_minutes(estimate)} on {where}, within the {settings.time_budget} "
            "budget (the linear head it starts from is kept if no epoch beats it)"
        )
    return "linear", (
        f"fine-tuning {train_images} images would take about {_minutes(estimate)} on {where}, "
        f"over the {settings.time_budget} budget; a linear head on cached features takes seconds"
    )


def _minutes(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min"
