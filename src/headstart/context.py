"""Where and how a run works: bound once and passed along, instead of threaded by hand."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from headstart.settings import (
    Device,
    EngineName,
    boolean,
    check_settings,
    choice,
    optional_text,
    setting,
)


@dataclass(frozen=True)
class RunContext:
    """The feature cache folder (or a shared feature store), the feature engine, the
    fine-tuning device, whether to show progress bars, and the cluster features are computed
    on if any (made by `headstart.cluster.on_ray`); the same for every stage of one run."""

    cache_dir: str | Path | None = setting(
        None, None, "Feature cache folder [default: $HEADSTART_CACHE_DIR or user cache]"
    )
    engine: str = setting("auto", choice(EngineName), "Feature engine: auto, onnx (CPU) or torch")
    device: str = setting("auto", choice(Device), "Fine-tuning device: auto, cpu or cuda")
    progress: bool = setting(False, boolean, "Show progress bars")
    feature_store: str | None = setting(
        None,
        optional_text,
        "Keep features in Parquet parts at this folder or URI (s3://...) that a cluster shares, "
        "instead of the local cache (needs headstart[ray])",
    )
    # A features.extract.Runner: computes the features the cache lacks elsewhere.
    cluster: Any = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        check_settings(self)
