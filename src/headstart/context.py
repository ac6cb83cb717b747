"""Where and how a run works: bound once and passed along, instead of threaded by hand."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from headstart.settings import Device, EngineName, boolean, check_settings, choice, setting


@dataclass(frozen=True)
class RunContext:
    """The feature cache folder, the feature engine, the fine-tuning device and whether to
    show progress bars; the same for every stage of one run."""

    cache_dir: str | Path | None = setting(
        None, None, "Feature cache folder [default: $HEADSTART_CACHE_DIR or user cache]"
    )
    engine: str = setting("auto", choice(EngineName), "Feature engine: auto, onnx (CPU) or torch")
    device: str = setting("auto", choice(Device), "Fine-tuning device: auto, cpu or cuda")
    progress: bool = setting(False, boolean, "Show progress bars")

    def __post_init__(self) -> None:
        check_settings(self)
