"""`headstart doctor`: examine a dataset and write what was found where a user can act on it."""

from __future__ import annotations

import json
from pathlib import Path

from headstart.backbones.registry import DEFAULT_BACKBONE, resolve_backbone
from headstart.context import RunContext
from headstart.data.sources import load_dataset
from headstart.data.split import TEST_PERCENT, VAL_PERCENT
from headstart.doctor.examine import Diagnosis, examine
from headstart.doctor.findings import write_issues_csv
from headstart.doctor.page import doctor_page
from headstart.features.extract import FeatureExtractor
from headstart.features.store import open_feature_cache
from headstart.storage import atomic_write_text, check_output_folder

DOCTOR_FILES = ("issues.csv", "doctor.html", "doctor.json")  # what an earlier run left


def diagnose(
    data: str | Path,
    output: str | Path | None = None,
    *,
    backbone: str = DEFAULT_BACKBONE,
    input_size: int | None = None,
    val_percent: float = VAL_PERCENT,
    test_percent: float = TEST_PERCENT,
    context: RunContext | None = None,
    multi_label: bool = False,
) -> Diagnosis:
    """Look for duplicates, leakage, likely label errors, outliers and unhealthy images.

    With `output`, writes issues.csv, doctor.html and doctor.json there. The split is the
    one `train` would use with the same percentages, so "leak" means what training would see.
    `context` binds the feature cache folder, the engine and progress bars. `multi_label`
    reads a CSV's labels as sets (chosen anyway when a row carries several).
    """
    context = context or RunContext()
    if output is not None:
        check_output_folder(Path(output), "doctor output", DOCTOR_FILES, data)
    dataset = load_dataset(data, val_percent, test_percent, multi_label=multi_label)
    cache = open_feature_cache(context)
    extractor = FeatureExtractor(
        # The pooled head alone: the duplicate thresholds were measured on it.
        resolve_backbone(backbone, cache.workspace.root, input_size, pooled_stages=()),
        cache,
        context.engine,
        runner=context.cluster,
    )
    diagnosis = examine(dataset, extractor, context.progress)
    if output is not None:
        folder = Path(output)
        folder.mkdir(parents=True, exist_ok=True)
        issues, page, record = (folder / name for name in DOCTOR_FILES)
        write_issues_csv(issues, diagnosis.findings)
        atomic_write_text(page, doctor_page(diagnosis))
        atomic_write_text(record, json.dumps(diagnosis.to_dict(), indent=1))
    return diagnosis
