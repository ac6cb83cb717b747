"""Per-epoch training checkpoints: one safetensors file, written atomically, read without pickle.

Tensors (weights, best weights, optimizer moments) go in the tensor table; everything else
(epoch, history, scheduler, early-stopping state, the run's identity) in its JSON metadata.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save

from headstart.errors import HeadstartError
from headstart.storage import atomic_write_bytes, tensor_group


@dataclass
class LoopState:
    """Everything the epoch loop needs to continue exactly where it stopped."""

    epoch: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    best_loss: float = float("inf")
    best_epoch: int = 0
    waited: int = 0
    finished: bool = False
    stopped_early: bool = False
    best_state: dict[str, torch.Tensor] | None = None


class Checkpoint:
    """A checkpoint file for one run; `identity` must match for a resume to be accepted."""

    def __init__(self, path: Path, identity: dict[str, Any], read_only: bool = False) -> None:
        self.path = Path(path)
        self.identity = json.loads(json.dumps(identity))  # as it will read back
        self.read_only = read_only

    def save(self, module, optimizer, scheduler, state: LoopState) -> None:
        if self.read_only:
            return
        tensors = {f"module.{k}": v for k, v in module.state_dict().items()}
        if state.best_state is not None:
            tensors |= {f"best.{k}": v for k, v in state.best_state.items()}
        optimizer_state = optimizer.state_dict()
        for index, moments in optimizer_state["state"].items():
            tensors |= {f"optimizer.{index}.{k}": v for k, v in moments.items()}
        document = {
            "identity": self.identity,
            "loop": {k: v for k, v in state.__dict__.items() if k != "best_state"},
            "param_groups": optimizer_state["param_groups"],
            "scheduler": scheduler.state_dict() if scheduler is not None else None,
        }
        tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
        atomic_write_bytes(self.path, save(tensors, metadata={"state": json.dumps(document)}))

    def restore(self, module, optimizer, scheduler) -> LoopState | None:
        """Load the checkpoint into the objects and return the loop state; None if absent."""
        if not self.path.exists():
            return None
        try:
            with safe_open(str(self.path), framework="pt") as file:
                document = json.loads(file.metadata()["state"])
                tensors = {k: file.get_tensor(k) for k in file.keys()}  # noqa: SIM118
        except (OSError, ValueError, KeyError, TypeError, SafetensorError) as error:
            raise HeadstartError(f"{self.path}: unreadable checkpoint ({error})") from error
        if document["identity"] != self.identity:
            raise HeadstartError(
                f"{self.path}: the checkpoint is from a run with different data or settings "
                f"({_difference(document['identity'], self.identity)}); "
                "run without --resume to start again"
            )
        module.load_state_dict(tensor_group(tensors, "module."))
        moments: dict[int, dict[str, torch.Tensor]] = {}
        for key, value in tensor_group(tensors, "optimizer.").items():
            index, name = key.split(".", 1)
            moments.setdefault(int(index), {})[name] = value
        optimizer.load_state_dict({"state": moments, "param_groups": document["param_groups"]})
        if scheduler is not None:
            scheduler.load_state_dict(document["scheduler"])
        best = tensor_group(tensors, "best.")
        return LoopState(**document["loop"], best_state=best or None)

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)

    def reader(self) -> Checkpoint:
        """This checkpoint for a process that resumes from it but never writes it."""
        return Checkpoint(self.path, self.identity, read_only=True)


def _difference(saved: dict[str, Any], current: dict[str, Any]) -> str:
    keys = sorted(k for k in saved.keys() | current.keys() if saved.get(k) != current.get(k))
    return ", ".join(f"{k}: {saved.get(k)!r} then, {current.get(k)!r} now" for k in keys[:3])


def samples_digest(*splits) -> str:
    """Identifies the images and labels a run trains and validates on (for resume checks)."""
    digest = hashlib.sha256()
    for split in splits:
        for sample in split.samples:
            digest.update(f"{sample.path}|{sample.label}\n".encode("utf-8", "surrogateescape"))
        digest.update(b"--\n")
    return digest.hexdigest()[:24]
