"""Where and how a run works: bound once and passed along, instead of threaded by hand."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from platformdirs import user_cache_dir

from headstart.settings import (
    Device,
    EngineName,
    as_choices,
    boolean,
    check_settings,
    choice,
    optional_text,
    setting,
)

CACHE_ENV = "HEADSTART_CACHE_DIR"


def default_cache_dir() -> Path:
    """$HEADSTART_CACHE_DIR, else the user's cache folder (~/.cache/headstart on Linux)."""
    return Path(os.environ.get(CACHE_ENV) or user_cache_dir("headstart")).expanduser()


@dataclass(frozen=True)
class Workspace:
    """The folder a run keeps its work in (the cache folder) and its rooms: the one place
    that says where each kind of file goes."""

    root: Path

    @classmethod
    def at(cls, cache_dir: str | Path | None) -> Workspace:
        """The workspace a --cache-dir names (~ expanded), else the default one."""
        return cls(Path(cache_dir).expanduser() if cache_dir else default_cache_dir())

    @property
    def features(self) -> Path:
        """The SQLite feature cache."""
        return self.root / "features.sqlite3"

    @property
    def backbones(self) -> Path:
        """Backbone configs read from timm once, so that warm runs never import it."""
        return self.root / "backbones"

    @property
    def onnx(self) -> Path:
        """Backbones (and fine-tuning trunks) exported for ONNX Runtime."""
        return self.root / "onnx"

    @property
    def served(self) -> Path:
        """Whole models exported for `serve` and the torch-free runtime."""
        return self.root / "served"

    @property
    def ray_train(self) -> Path:
        """Ray Train's run folders, so that --resume finds an interrupted run."""
        return self.root / "ray-train"

    @property
    def ray_log(self) -> Path:
        """Where Ray's own output goes instead of the terminal."""
        return self.root / "ray-output.log"


@dataclass(frozen=True)
class RunContext:
    """The feature cache folder (or a shared feature store), the feature engine, the
    fine-tuning device, whether to show progress bars, and the cluster features are computed
    on if any (made by `headstart.cluster.on_ray`); the same for every stage of one run."""

    cache_dir: str | Path | None = setting(
        None, None, "Feature cache folder [default: $HEADSTART_CACHE_DIR or user cache]"
    )
    engine: EngineName = setting(
        EngineName.AUTO, choice(EngineName), "Feature engine: auto, onnx (CPU) or torch"
    )
    device: Device = setting(Device.AUTO, choice(Device), "Fine-tuning device: auto, cpu or cuda")
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
        as_choices(self)
        check_settings(self)

    @property
    def workspace(self) -> Workspace:
        """The cache folder's rooms (features, ONNX exports, served models, Ray runs)."""
        return Workspace.at(self.cache_dir)
