"""Fine-tuning launched by torchrun, to show the loop Ray Train runs is plain torch.distributed.

    torchrun --nproc_per_node=2 tests/torchrun_finetune.py DATA CACHE_DIR OUT.safetensors

The arguments come from `finetune_arguments`, which tests/test_cluster.py also hands to Ray.
"""

from __future__ import annotations

import sys
from pathlib import Path

from headstart import FitSettings, RunContext, load_dataset
from headstart.backbones.registry import resolve_backbone
from headstart.features.cache import FeatureCache
from headstart.features.extract import FeatureExtractor
from headstart.features.labelled import labelled_features
from headstart.model.heads import HeadConfig, build_head

SETTINGS = FitSettings(strategy="finetune", finetune_epochs=2, unfreeze="2", augment="none")


def finetune_arguments(data: Path, cache_dir: Path) -> dict:
    """The same inputs wherever it runs: training images alone, a head drawn from seed 0."""
    import torch

    dataset = load_dataset(data, 0, 0)
    backbone = resolve_backbone("efficientnet_lite0", cache_dir).head_only()
    extractor = FeatureExtractor(backbone, FeatureCache(cache_dir))
    train = labelled_features(extractor, dataset.split("train"), dataset.classes)
    torch.manual_seed(0)
    head = build_head(HeadConfig("linear", train.x.shape[1], len(dataset.classes)))
    return {
        "backbone": backbone,
        "head": head,
        "train": train,
        "val": train.without(set(range(len(train.y)))),
        "settings": SETTINGS,
        "model_dir": cache_dir / "onnx",
        "context": RunContext(cache_dir=cache_dir),
    }


def main() -> None:
    import torch.distributed as dist
    from safetensors.torch import save_file

    from headstart.training.finetune import finetune

    data, cache_dir, output = (Path(arg) for arg in sys.argv[1:4])
    dist.init_process_group("gloo")
    result = finetune(**finetune_arguments(data, cache_dir))
    if dist.get_rank() == 0:
        save_file({k: v.contiguous() for k, v in result.tensors.items()}, output)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
