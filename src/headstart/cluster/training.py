"""Data-parallel fine-tuning on Ray Train: the same `finetune` loop in every worker.

`TorchTrainer` starts the workers and their torch.distributed group (gloo on CPU, NCCL on
GPU); the loop itself is plain torch.distributed, so torchrun runs it too. Every worker trains
on its shard of the training images (every N-th, as under torchrun), in its share of each
batch; gradients are averaged at each step. A Ray Data pipeline per shard reads the files on
the cluster and streams them to their worker. Each epoch's checkpoint is reported to Ray
Train, which keeps it in the run's storage path (a folder or URI every node reaches), so
`--resume` continues on any node; a run started on one machine resumes on the cluster too.
The result comes back through a Ray Train checkpoint written without pickle: the tuned
tensors and head as safetensors, the rest as JSON.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from headstart.backbones.registry import check_installed_weights
from headstart.cluster.session import connect, error_line
from headstart.context import RunContext
from headstart.data.locations import image_location, is_uri, open_filesystem, read_batch
from headstart.errors import HeadstartError
from headstart.features.labelled import LabelledFeatures
from headstart.model.record import FinetuneRecord
from headstart.storage import CHECKPOINT_FILE
from headstart.training.checkpoint import Checkpoint
from headstart.training.finetune import FinetuneResult, finetune, process_group

RESULT_TENSORS = "result.safetensors"
RESULT_RECORD = "result.json"


def finetune_on_ray(
    address: str | None, workers: int | None, storage: str | Path | None, **arguments: Any
) -> FinetuneResult:
    """`finetune(**arguments)` on `workers` Ray Train workers (default: one per GPU, else
    one per CPU of the cluster); `storage` (a folder or URI every node reaches) keeps the
    run's checkpoints, by default `ray-train` in the cache folder (one machine's)."""
    ray = connect(address)
    from ray.train import CheckpointConfig, DataConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0))
    workers = workers or gpus or max(1, int(resources.get("CPU", 1)))
    context = arguments.get("context")
    if context is not None:  # the workers compute nothing on the cluster themselves
        arguments["context"] = replace(context, cluster=None, progress=False)
    for split in ("train", "val"):  # workers run in folders of their own
        arguments[split] = _absolute(arguments[split])
    storage = str(storage or (context or RunContext()).workspace.ray_train)
    if not is_uri(storage):  # Ray and pyarrow take absolute paths or URIs
        storage = str(Path(storage).absolute())
    local = arguments.get("checkpoint")
    if local is not None:  # the workers' folder is not the driver's
        local = arguments["checkpoint"] = Checkpoint(Path(local.path).absolute(), local.identity)
    name = _run_name(local)
    if not arguments.get("resume"):  # Ray Train resumes any run of this name it finds
        _forget_run(storage, name)
    trainer = TorchTrainer(
        _worker_loop,
        train_loop_config={"arguments": arguments},
        datasets=_shard_datasets(ray, arguments["train"], workers),
        # Each worker its own dataset whole: the shards are fixed, so runs are reproducible.
        dataset_config=DataConfig(datasets_to_split=[]),
        scaling_config=ScalingConfig(
            num_workers=workers, use_gpu=bool(gpus), resources_per_worker={"CPU": 1}
        ),
        run_config=RunConfig(
            storage_path=storage,
            name=name,
            checkpoint_config=CheckpointConfig(num_to_keep=2),
        ),
    )
    try:
        outcome = trainer.fit()
    except ray.train.TrainingFailedError as error:
        raise HeadstartError(
            f"fine-tuning failed on the Ray workers: {error_line(error)}"
        ) from error
    if outcome.checkpoint is None:
        raise HeadstartError("fine-tuning on the Ray workers ended without a checkpoint")
    with outcome.checkpoint.as_directory() as folder:
        result = _read_result(Path(folder), arguments["backbone"], arguments["head"])
    _forget_run(storage, name)  # finished: nothing left to resume, as with a local run
    result.record = replace(result.record, workers=workers)
    return result


def _run_name(checkpoint: Checkpoint | None) -> str:
    """One run name per model folder, so that --resume finds the run; a new one without."""
    if checkpoint is None:
        return f"finetune-{uuid.uuid4().hex[:16]}"
    where = str(checkpoint.path.parent)
    return f"finetune-{hashlib.sha256(where.encode()).hexdigest()[:16]}"


def _forget_run(storage: str, name: str) -> None:
    import pyarrow.fs as pafs

    filesystem, root = open_filesystem(storage, "the Ray run storage")
    if filesystem.get_file_info(f"{root}/{name}").type != pafs.FileType.NotFound:
        filesystem.delete_dir(f"{root}/{name}")


class TrainRunCheckpoint(Checkpoint):
    """The loop's checkpoint, reported to Ray Train each epoch by every worker (one of them
    with the file), and read back from the run's latest one; before the run has one, from
    the model folder, where a run started on one machine left it."""

    def __init__(self, local: Checkpoint, read_only: bool = False) -> None:
        super().__init__(local.path, local.identity, read_only)
        self.local = local

    def save(self, module, optimizer, scheduler, state) -> None:
        import ray.train

        if self.read_only:
            ray.train.report({"epoch": state.epoch})
            return
        with tempfile.TemporaryDirectory() as folder:
            file = Checkpoint(Path(folder, CHECKPOINT_FILE), self.identity)
            file.save(module, optimizer, scheduler, state)
            reported = ray.train.Checkpoint.from_directory(folder)
            ray.train.report({"epoch": state.epoch}, checkpoint=reported)

    def restore(self, module, optimizer, scheduler):
        import ray.train

        reported = ray.train.get_checkpoint()
        if reported is None:
            return self.local.restore(module, optimizer, scheduler)
        with reported.as_directory() as folder:
            file = Checkpoint(Path(folder, CHECKPOINT_FILE), self.identity)
            return file.restore(module, optimizer, scheduler)

    def reader(self) -> Checkpoint:
        return TrainRunCheckpoint(self.local, read_only=True)


def _absolute(split: LabelledFeatures) -> LabelledFeatures:
    samples = [replace(s, path=image_location(s.path).absolute()) for s in split.samples]
    return replace(split, samples=samples)


SHARD = "train-shard-{}"


def _shard_datasets(ray: Any, train: LabelledFeatures, workers: int) -> dict[str, Any]:
    """Per worker, a dataset of its shard's files: (position, path) in, their bytes out."""
    paths = [str(s.path) for s in train.samples]
    datasets = {}
    for rank in range(workers):
        items = [{"position": i, "path": paths[i]} for i in range(rank, len(paths), workers)]
        if not items:  # more workers than images: an empty shard, as under torchrun
            items = [{"position": -1, "path": ""}]
        # Reading waits on storage, not on a core, and the workers hold the cores: no CPU
        # asked for, or a cluster the workers fill would never read.
        dataset = ray.data.from_items(items).map_batches(
            read_batch, batch_size=64, num_cpus=0, concurrency=2
        )
        datasets[SHARD.format(rank)] = dataset
    return datasets


def _shard_bytes(rank: int) -> list[bytes]:
    """This worker's training files as its Ray Data pipeline read them, in shard order."""
    import ray.train

    read: dict[int, bytes] = {}
    rows = ray.train.get_dataset_shard(SHARD.format(rank))
    for batch in rows.iter_batches(batch_format="numpy", batch_size=None):
        for position, path, data, reason in zip(
            batch["position"], batch["path"], batch["data"], batch["reason"], strict=True
        ):
            if reason:
                raise HeadstartError(
                    f"{path}: {reason} (it changed since its features were computed)"
                )
            read[int(position)] = bytes(data)
    return [read[p] for p in sorted(read) if p >= 0]


def _worker_loop(config: dict[str, Any]) -> None:
    import ray.train

    arguments = dict(config["arguments"])
    arguments["shard_bytes"] = _shard_bytes(ray.train.get_context().get_world_rank())
    check_installed_weights(arguments["backbone"])
    if arguments.get("context") is not None:  # the GPU Ray gave this worker, if any
        arguments["context"] = replace(arguments["context"], device=_worker_device())
    if arguments.get("checkpoint") is not None:
        arguments["checkpoint"] = TrainRunCheckpoint(arguments["checkpoint"])
    result = finetune(**arguments)
    if process_group()[0] != 0:
        ray.train.report({})
        return
    with tempfile.TemporaryDirectory() as folder:
        _write_result(Path(folder), result)
        checkpoint = ray.train.Checkpoint.from_directory(folder)
        ray.train.report({"best_epoch": result.best_epoch}, checkpoint=checkpoint)


def _worker_device() -> str:
    import ray.train.torch

    return "cuda" if ray.train.torch.get_device().type == "cuda" else "cpu"


def _write_result(folder: Path, result: FinetuneResult) -> None:
    from safetensors.torch import save_file

    tensors = {f"backbone.{k}": v.contiguous() for k, v in result.tensors.items()}
    tensors |= {f"head.{k}": v.contiguous() for k, v in result.head.state_dict().items()}
    save_file(tensors, folder / RESULT_TENSORS)
    record = {
        "history": result.history,
        "best_epoch": result.best_epoch,
        "details": result.record.to_dict(),
        "val_logits": result.val_logits.tolist(),
        "width": int(result.val_logits.shape[1]),
    }
    (folder / RESULT_RECORD).write_text(json.dumps(record), encoding="utf-8")


def _read_result(folder: Path, backbone, head) -> FinetuneResult:
    from safetensors.torch import load_file

    from headstart.storage import tensor_group

    tensors = load_file(folder / RESULT_TENSORS)
    record = json.loads((folder / RESULT_RECORD).read_text(encoding="utf-8"))
    tuned = tensor_group(tensors, "backbone.")
    head.load_state_dict(tensor_group(tensors, "head."))
    logits = np.asarray(record["val_logits"], np.float32).reshape(-1, record["width"])
    return FinetuneResult(
        backbone=backbone.tuned(tuned) if tuned else backbone,
        tensors=tuned,
        head=head.requires_grad_(False),
        val_logits=logits,
        history=record["history"],
        best_epoch=record["best_epoch"],
        record=FinetuneRecord.from_dict(record["details"], "finetune"),
    )
