"""The model folder's JSON checked field by field when it is read: a tampered or damaged
record is one line naming the file and the field, never a traceback or a wrong answer (a
temperature of -1 would silently invert every prediction)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from headstart.errors import HeadstartError
from headstart.training.heads import HeadConfig


def check_record(metadata: dict[str, Any], where: Path) -> None:
    """Raise HeadstartError naming `where` and the first field that is not as written."""
    problem = _first_problem(metadata)
    if problem:
        raise HeadstartError(f"{where}: {problem}")


def _first_problem(m: dict[str, Any]) -> str | None:
    head = m.get("head")
    checks = [
        ("labels", _labels(m.get("labels"))),
        ("head", None if isinstance(head, dict) else "missing or not an object"),
        ("backbone", _backbone(m.get("backbone"))),
        ("preprocessing", None if isinstance(m.get("preprocessing"), dict) else "missing"),
    ]
    if isinstance(head, dict):
        problem = HeadConfig.problem(head)
        if problem:
            checks.append((f"head.{problem[0]}", problem[1]))
        labels = m.get("labels")
        if isinstance(labels, list) and head.get("num_classes") != len(labels):
            checks.append(
                ("labels", f"{len(labels)} labels for a head of {head.get('num_classes')} classes")
            )
    calibration = m.get("calibration", {})
    if not isinstance(calibration, dict):
        checks.append(("calibration", "not an object"))
    elif "temperature" in calibration:
        checks.append(("calibration.temperature", _positive(calibration["temperature"])))
    unknown = m.get("unknown")
    if unknown is not None:
        checks.append(("unknown", _unknown(unknown)))
    for optional in ("training", "summary", "finetune"):
        if optional in m and not isinstance(m[optional], dict):
            checks.append((optional, "not an object"))
    for field, wrong in checks:
        if wrong:
            return f"{field}: {wrong}"
    return None


def _labels(labels: Any) -> str | None:
    if not isinstance(labels, list) or not labels:
        return "must be a list of class names"
    if not all(isinstance(label, str) and label for label in labels):
        return "every label must be a non-empty string"
    if len(set(labels)) != len(labels):
        return "labels must be unique"
    return None


def _backbone(backbone: Any) -> str | None:
    if not isinstance(backbone, dict):
        return "missing or not an object"
    missing = [
        k for k in ("name", "weights", "fingerprint") if not isinstance(backbone.get(k), str)
    ]
    if missing:
        return f"needs {', '.join(missing)}"
    stages = backbone.get("pooled_stages", [])
    if not isinstance(stages, list) or not all(
        isinstance(i, int) and not isinstance(i, bool) and 0 <= i < 32 for i in stages
    ):
        return "pooled_stages must be a list of stage numbers"
    return None


def _positive(value: Any) -> str | None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    return None if ok and math.isfinite(value) and value > 0 else "must be a finite number > 0"


def _unknown(stats: Any) -> str | None:
    if not isinstance(stats, dict):
        return "not an object"
    for key in ("distance_mean", "energy_mean", "threshold"):
        value = stats.get(key)
        if (
            not isinstance(value, (int, float))
            or isinstance(value, bool)
            or not math.isfinite(value)
        ):
            return f"{key} must be a finite number"
    for key in ("distance_std", "energy_std"):
        if _positive(stats.get(key)):
            return f"{key} must be a finite number > 0"
    return None
