"""Features computed on a Ray cluster: a Ray Data pipeline of paths through a pool of actors,
each holding one backbone engine, reading, decoding and running the images it is given.

The driver still lists and splits the dataset, hashes every file and looks its features up in
the cache or feature store, exactly as on one machine; only the images missing from it go to
the cluster, and their features come back to the driver, which alone writes them. Each actor
reads its files itself and decodes them with the same function as the local path, so a bad
file is skipped and named with the same reason, and nothing is lost with it (Ray's own image
reader drops the whole block around a corrupt file).
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from headstart.backbones.registry import Backbone, check_installed_weights
from headstart.cluster.session import connect, error_line
from headstart.context import RunContext
from headstart.data.locations import image_location, object_column
from headstart.errors import HeadstartError, SettingError
from headstart.features.engines import create_engine
from headstart.features.extract import Computed, FeatureExtractor, decode_file, forward_rows
from headstart.features.views import View


class BackboneWorker:
    """One Ray actor: an engine for the backbone, and threads to read and decode its files."""

    def __init__(
        self, backbone: Backbone, view: View, engine: str, model_dir: str, cpus: int
    ) -> None:
        check_installed_weights(backbone)
        self.backbone, self.view = backbone, view
        self.decoders = ThreadPoolExecutor(cpus)
        self.engine = create_engine(backbone, engine, Path(model_dir), threads=cpus)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        def decode(path: str) -> tuple:
            return decode_file(self.backbone.preprocessing, self.view, image_location(path))

        decoded = self.decoders.map(decode, batch["path"])
        rows = forward_rows(
            self.engine, [(int(i), *row) for i, row in zip(batch["position"], decoded, strict=True)]
        )
        return {
            "position": np.array([row[0] for row in rows], np.int64),
            "digest": object_column(row[1] or b"" for row in rows),
            "vector": object_column(b"" if row[2] is None else row[2].tobytes() for row in rows),
            "reason": object_column(row[3] or "" for row in rows),
        }


class RayCluster:
    """Where a run computes on Ray. Features: `actors` engines (default: one per
    `cpus_per_actor` CPUs of the cluster, or one per GPU), fed `batch_size` images at a time.
    Fine-tuning: `train_workers` data-parallel workers (default: one per GPU, else per CPU),
    Ray Train's records kept under `storage`."""

    def __init__(
        self,
        address: str | None = None,
        actors: int | None = None,
        cpus_per_actor: int = 1,
        batch_size: int = 32,
        worker: type = BackboneWorker,
        train_workers: int | None = None,
        storage: str | Path | None = None,
    ) -> None:
        self.address = address
        self.actors = actors
        self.cpus_per_actor = cpus_per_actor
        self.batch_size = batch_size
        self.worker = worker
        self.train_workers = train_workers
        self.storage = storage

    def finetune(self, **arguments: Any):
        """training.finetune.finetune, data-parallel on Ray Train (same arguments, result)."""
        from headstart.cluster.training import finetune_on_ray

        return finetune_on_ray(self.address, self.train_workers, self.storage, **arguments)

    def compute(
        self, extractor: FeatureExtractor, paths: list[Path], positions: list[int]
    ) -> Iterator[list[Computed]]:
        """Batches of (position, digest, vector, reason), in the order they finish."""
        ray = connect(self.address)
        gpus = int(ray.cluster_resources().get("GPU", 0))
        cpus = int(ray.cluster_resources().get("CPU", 1))
        actors = self.actors or (gpus or max(1, cpus // self.cpus_per_actor))
        engine = "torch" if gpus else extractor.engine_name
        items = [
            {"position": p, "path": str(image_location(path).absolute())}  # actors' cwd differs
            for p, path in zip(positions, paths, strict=True)
        ]
        # Blocks of at least a batch, a few per actor so the work spreads and balances.
        blocks = max(1, min(-(-len(items) // self.batch_size), 4 * actors))
        pool = (
            ray.data.ActorPoolStrategy(size=actors)
            if self.actors
            else ray.data.ActorPoolStrategy(min_size=1, max_size=actors)
        )
        dataset = ray.data.from_items(items, override_num_blocks=blocks).map_batches(
            self.worker,
            fn_constructor_kwargs={
                "backbone": extractor.backbone,
                "view": extractor.view,
                "engine": engine,
                "model_dir": str(extractor.cache.workspace.onnx),
                "cpus": self.cpus_per_actor,
            },
            batch_size=self.batch_size,
            compute=pool,
            num_cpus=self.cpus_per_actor,
            num_gpus=1 if gpus else 0,
        )
        try:
            for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):
                yield [_row(*values) for values in zip(*(batch[k] for k in _COLUMNS), strict=True)]
        except (HeadstartError, ray.exceptions.RayError) as error:  # raised in an actor
            raise HeadstartError(
                f"computing features on Ray failed: {error_line(error)}"
            ) from error


_COLUMNS = ("position", "digest", "vector", "reason")


def _row(position: Any, digest: bytes, vector: bytes, reason: str) -> Computed:
    return (
        int(position),
        bytes(digest) or None,
        np.frombuffer(vector, np.float32).copy() if len(vector) else None,
        str(reason) or None,
    )


def on_ray(
    address: str | None = None,
    context: RunContext | None = None,
    *,
    actors: int | None = None,
    cpus_per_actor: int = 1,
    train_workers: int | None = None,
    storage: str | Path | None = None,
) -> RunContext:
    """`context` (default RunContext()) with its features computed, and its fine-tuning run,
    on a Ray cluster: the one at `address`, else at $RAY_ADDRESS, else a new one on this
    machine ('local' always starts one here). Pass the result as `context=` to train,
    diagnose or Classifier.load. `storage` (a folder or URI every node reaches) keeps the
    fine-tuning run's checkpoints; by default `.ray-train` in the context's feature store,
    else in the cache folder."""
    if address is not None and not address.strip():
        raise SettingError("--ray needs an address: local, auto or HOST:PORT")
    base = context or RunContext()
    if storage is None and base.feature_store:
        storage = f"{base.feature_store.rstrip('/')}/.ray-train"
    runner = RayCluster(
        address, actors, cpus_per_actor, train_workers=train_workers, storage=storage
    )
    return replace(base, cluster=runner)
