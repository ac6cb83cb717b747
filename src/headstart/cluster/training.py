"""Data-parallel fine-tuning on Ray Train: the same `finetune` loop in every worker.

`TorchTrainer` starts the workers and their torch.distributed group (gloo on CPU, NCCL on
GPU); the loop itself is plain torch.distributed, so torchrun runs it too. Every worker reads
and runs only its shard of the training images (every N-th), in its share of each batch;
gradients are averaged at each step, and one worker writes the per-epoch checkpoint into the
model folder, which every worker can resume from. One worker is the local run. The result
comes back through a Ray Train checkpoint written without pickle: the tuned tensors and head
as safetensors, the rest as JSON.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from headstart.backbones.registry import check_installed_weights
from headstart.cluster.session import connect, error_line
from headstart.errors import HeadstartError
from headstart.features.labelled import LabelledFeatures
from headstart.training.finetune import FinetuneResult, finetune, process_group

RESULT_TENSORS = "result.safetensors"
RESULT_RECORD = "result.json"


def finetune_on_ray(
    address: str | None, workers: int | None, storage: str | None, **arguments: Any
) -> FinetuneResult:
    """`finetune(**arguments)` on `workers` Ray Train workers (default: one per GPU, else
    one per CPU of the cluster); `storage` (a shared folder or URI for a multi-node cluster)
    keeps Ray Train's run records, a temporary folder when None."""
    ray = connect(address)
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0))
    workers = workers or gpus or max(1, int(resources.get("CPU", 1)))
    context = arguments.get("context")
    if context is not None:  # the workers compute nothing on the cluster themselves
        arguments["context"] = replace(context, cluster=None, progress=False)
    for split in ("train", "val"):  # workers run in folders of their own
        arguments[split] = _absolute(arguments[split])
    storage = storage or tempfile.mkdtemp(prefix="headstart-ray-train-")
    trainer = TorchTrainer(
        _worker_loop,
        train_loop_config={"arguments": arguments},
        scaling_config=ScalingConfig(
            num_workers=workers, use_gpu=bool(gpus), resources_per_worker={"CPU": 1}
        ),
        run_config=RunConfig(storage_path=str(storage), name="finetune"),
    )
    try:
        outcome = trainer.fit()
    except ray.train.TrainingFailedError as error:
        raise HeadstartError(
            f"fine-tuning failed on the Ray workers: {error_line(error)}"
        ) from error
    with outcome.checkpoint.as_directory() as folder:
        result = _read_result(Path(folder), arguments["backbone"], arguments["head"])
    result.details["workers"] = workers
    return result


def _absolute(split: LabelledFeatures) -> LabelledFeatures:
    samples = [replace(s, path=Path(s.path).absolute()) for s in split.samples]
    return replace(split, samples=samples)


def _worker_loop(config: dict[str, Any]) -> None:
    import ray.train

    arguments = dict(config["arguments"])
    check_installed_weights(arguments["backbone"])
    if arguments.get("context") is not None:  # the GPU Ray gave this worker, if any
        arguments["context"] = replace(arguments["context"], device=_worker_device())
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
        "details": result.details,
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
        details=record["details"],
    )
