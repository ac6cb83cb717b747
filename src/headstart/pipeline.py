"""From a labelled dataset to a trained Classifier: the one function the CLI and API share."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from headstart.backbones.registry import (
    PRESETS,
    Backbone,
    can_finetune,
    check_input_size,
    preset_backbone,
    resolve_backbone,
)
from headstart.context import RunContext
from headstart.data.exclude import read_exclusions
from headstart.data.images import typical_short_side
from headstart.data.sources import Dataset, load_dataset
from headstart.data.split import check_percents
from headstart.errors import HeadstartError, SettingError
from headstart.features.extract import FeatureExtractor
from headstart.features.labelled import LabelledFeatures, labelled_features
from headstart.features.store import open_feature_cache
from headstart.features.views import augmented_views
from headstart.model.classifier import Classifier
from headstart.model.folder import check_model_output
from headstart.model.record import (
    BackboneRecord,
    Calibration,
    FinetuneRecord,
    ModelRecord,
    SplitPercents,
    Summary,
    TrainingRecord,
    class_names,
)
from headstart.model.scoring import digest_array
from headstart.model.unknown import UnknownDetector
from headstart.storage import CHECKPOINT_FILE
from headstart.training.choice import SMALL_VALIDATION, CrossValidated
from headstart.training.fit import fit_head, out_of_fold
from headstart.training.heads import Head
from headstart.training.settings import FitSettings
from headstart.training.strategy import auto_strategy


def train(
    data: str | Path | Dataset,
    output: str | Path | None = None,
    *,
    backbone: str | None = None,
    backbone_weights: str | Path | None = None,
    input_size: int | None = None,
    preset: str | None = None,
    settings: FitSettings | None = None,
    val_percent: float = 10.0,
    test_percent: float = 10.0,
    context: RunContext | None = None,
    resume: bool = False,
    exclude: str | Path | None = None,
) -> Classifier:
    """Train a classifier on a dataset; save it to `output` if given.

    `backbone` (default efficientnet_lite0; `backbone_weights`, a .safetensors file or state
    dict of its architecture, replaces its weights offline) and `input_size` (the square size
    images are fed at; 1.29x the pretrained size by default) may instead come from a `preset`: fast,
    balanced (the default) or best (Lite0, Lite1 and Lite2 side by side). Heads train on
    cached backbone features; `strategy="finetune"` then also tunes the top of the backbone,
    writing a checkpoint into `output` after every epoch, which `resume=True` continues from.
    `exclude` names a list of images to leave out (the doctor's issues.csv, or one path a
    line). `context` binds the feature cache folder, the engine, the fine-tuning device and
    progress bars for the run (and the Classifier). The returned Classifier's
    `summary` says what was used, skipped, chosen and measured. Any setting outside
    its allowed values raises SettingError before work starts.
    """
    settings = settings or FitSettings()
    settings.check()
    context = context or RunContext()
    progress, engine = context.progress, context.engine
    check_percents(val_percent, test_percent)
    check_input_size(input_size)
    backbone, input_size = preset_backbone(preset, backbone, input_size)
    if output is not None:
        check_model_output(Path(output), None if isinstance(data, Dataset) else data)
    started = time.perf_counter()
    dataset = data if isinstance(data, Dataset) else load_dataset(data, val_percent, test_percent)
    unusable = class_names(dataset.classes)
    if unusable:
        raise HeadstartError(f"{dataset.root}: {unusable}")
    notes: list[str] = []
    if exclude is not None:
        dataset, left_out = dataset.without(read_exclusions(Path(exclude)))
        notes.append(f"{left_out} images left out, as listed in {exclude}")
    cache = open_feature_cache(context)
    image_side = None
    if input_size is None:
        image_side = typical_short_side([sample.path for sample in dataset.split("train")])
    resolved = resolve_backbone(
        backbone, cache.directory, input_size, image_side=image_side, weights_file=backbone_weights
    )
    if resolved.size_note:
        notes.append(resolved.size_note)
    if settings.strategy == "finetune" and not can_finetune(resolved):
        raise SettingError(
            f"--strategy finetune tunes one network, not {backbone} (joined backbones); "
            "use --strategy linear or mlp"
        )
    strategy, reason = _strategy(settings, resolved, preset)
    extractor = FeatureExtractor(resolved, cache, engine, runner=context.cluster)
    splits = {
        # float16: exactly the cached values, in half the memory (a large set's features
        # are most of what the driver holds)
        name: labelled_features(
            extractor,
            dataset.split(name),
            dataset.classes,
            progress,
            f"Features ({name})",
            np.float16,
        )
        for name in ("train", "val", "test")
    }
    _check_trainable(dataset, splits["train"])
    train_x, train_y, views = _training_features(
        extractor, splits["train"], settings, strategy, progress
    )
    extracted = time.perf_counter()
    fit = fit_head(
        train_x,
        train_y,
        _or_empty(splits["val"], splits["train"]),
        splits["val"].y,
        len(dataset.classes),
        replace(settings, strategy=strategy),
        progress,
        head_widths=resolved.leading_candidates,
        # Fitting on the validation photos too needs a test split to evaluate on: without
        # one, `evaluate` scores the validation split, which must then stay unseen.
        small_data=not views and len(splits["test"].y) > 0,
    )
    head, backbone_used, history, best_epoch = (
        fit.head,
        extractor.backbone,
        fit.history,
        fit.best_epoch,
    )
    val_logits = head.logits(_or_empty(splits["val"], splits["train"]))
    folds = out_of_fold(fit.details)
    if folds is not None:  # the val images' honest logits: from heads that never saw them
        val_logits = folds.out_of_fold[len(splits["train"].y) :]
        validation = len(splits["val"].y)
        notes.append(_small_data_note(folds, fit.details["refit"], train_x.shape[1], validation))
    if strategy == "auto":
        last_layer_suffices = "features" in fit.details if resolved.leading_candidates else None
        strategy, reason = _auto_strategy(settings, splits, resolved, context, last_layer_suffices)
    finetuned: FinetuneRecord | None = None
    head_history: list[dict[str, Any]] = []
    if strategy == "finetune":
        from headstart.training.finetune import finetune  # torchvision: only when fine-tuning

        run = finetune if context.cluster is None else context.cluster.finetune
        tuned = run(
            backbone=extractor.backbone,
            head=head.module(),
            train=splits["train"],
            val=splits["val"],
            settings=settings,
            model_dir=cache.directory / "onnx",
            checkpoint=_checkpoint(output, settings, extractor, splits),
            resume=resume,
            context=context,
        )
        head = Head.from_module(head.config, tuned.head)
        backbone_used, val_logits = tuned.backbone, tuned.val_logits
        history, best_epoch = tuned.history, tuned.best_epoch
        finetuned = FinetuneRecord.from_dict(tuned.details, "finetune")
        head_history = fit.history
        if not finetuned.improved:
            notes.append(
                "no fine-tuning epoch lowered the validation loss (at its best temperature) of "
                "the linear head it started from, so that head on the pretrained backbone is kept"
            )
    summary = _summary(dataset, splits, history, best_epoch, val_logits)
    summary.strategy, summary.reason, summary.augmented_views = strategy, reason, views
    summary.l2 = fit.details.get("l2")
    if fit.details.get("features") and folds is None:
        notes.append(
            f"the linear head uses the first {fit.details['features']} of {train_x.shape[1]} "
            "features: all of them did worse on the validation split"
        )
    held_out = len(splits["test"].y)
    if held_out and "test" not in dataset.given_splits:
        notes.append(
            f"{held_out} images ({test_percent:g}%) were held out as a test split that "
            "training does not use: `headstart evaluate MODEL DATA` scores them, or "
            "--test-percent 0 trains on them"
        )
    if context.cluster is not None and summary.computed:
        notes.append(f"the {summary.computed} features the cache lacked were computed on Ray")
    if finetuned is not None and finetuned.workers:
        notes.append(f"fine-tuned on {finetuned.workers} Ray Train worker(s)")
    summary.notes = notes
    # A head fitted on training and validation: every photo's out-of-fold logits calibrate it
    refit = folds if folds is not None and fit.details["refit"] else None
    if refit is not None:
        pool_y = np.concatenate([splits["train"].y, splits["val"].y])
        calibration = _calibrate(refit.out_of_fold, pool_y)
    else:
        calibration = _calibrate(val_logits, splits["val"].y)
    tuned_extractor = None
    if backbone_used is not extractor.backbone:  # a fine-tuned backbone sees other features
        tuned_extractor = FeatureExtractor(backbone_used, cache, engine, runner=context.cluster)
    width = extractor.backbone.distance_features  # the pooled head: what an image shows
    if refit is not None:
        unknown = _unknown_detector_out_of_fold(splits, refit.out_of_fold, calibration, width)
    else:
        unknown = _unknown_detector(
            head, dataset, splits, tuned_extractor, calibration, width, progress
        )
    summary.seconds = {
        "features": extracted - started,
        "training": time.perf_counter() - extracted,
        "total": time.perf_counter() - started,
    }
    record = ModelRecord(
        labels=tuple(dataset.classes),
        backbone=_describe(extractor.backbone, backbone_used),
        preprocessing=extractor.backbone.preprocessing,
        head=head.config,
        training=TrainingRecord(
            strategy=strategy,
            settings=settings.to_dict(),
            split=SplitPercents(val_percent, test_percent),
            dataset=str(dataset.root),
        ),
        summary=summary,
        calibration=calibration,
        finetune=finetuned,
        history=history,
        head_history=head_history,
    )
    classifier = Classifier(
        record,
        head,
        backbone_tensors=(
            {name: t.numpy() for name, t in tuned.tensors.items()}
            if strategy == "finetune"
            else None
        ),
        training_digests=_training_digests(splits, fitted_on_val=refit is not None),
        unknown=unknown,
        context=context,
    )
    if output is not None:
        classifier.save(output)
        Path(output, CHECKPOINT_FILE).unlink(missing_ok=True)
    return classifier


def _unknown_detector(
    head: Head,
    dataset: Dataset,
    splits: dict[str, LabelledFeatures],
    tuned: FeatureExtractor | None,
    calibration: Calibration | None,
    width: int | None,
    progress: bool,
) -> UnknownDetector:
    """The unknown-image score, fitted on the leading `width` features of the training and
    validation images: the cached ones, or the fine-tuned backbone's (`tuned`) computed anew."""
    train, val = splits["train"], splits["val"]
    if tuned is not None:
        train, val = (
            labelled_features(
                tuned,
                dataset.split(name),
                dataset.classes,
                progress,
                f"Fine-tuned features ({name})",
                np.float16,
            )
            for name in ("train", "val")
        )
    train_x, val_x = train.x, _or_empty(val, train)
    temperature = calibration.temperature if calibration else 1.0
    return UnknownDetector.fit(
        train_x[:, :width],
        val_x[:, :width],
        head.logits(train_x) / temperature,
        head.logits(val_x) / temperature,
    )


def _training_digests(
    splits: dict[str, LabelledFeatures], fitted_on_val: bool
) -> dict[str, np.ndarray]:
    """What evaluation leaves out as copies: under "train", every image the head was fitted
    on (the validation images too when it was fitted on them)."""
    fitted = splits["train"].digests + (splits["val"].digests if fitted_on_val else [])
    return {"train": digest_array(fitted), "val": digest_array(splits["val"].digests)}


def _unknown_detector_out_of_fold(
    splits: dict[str, LabelledFeatures],
    logits: np.ndarray,
    calibration: Calibration | None,
    width: int | None,
) -> UnknownDetector:
    """The unknown-image score of a head fitted on training and validation alike: every such
    photo is in the bank, so each is scored against the others (itself skipped) with its
    out-of-fold logits, which no head that saw it made."""
    pool = np.concatenate([splits["train"].x, _or_empty(splits["val"], splits["train"])])
    temperature = calibration.temperature if calibration else 1.0
    empty = pool[:0, :width]
    return UnknownDetector.fit(pool[:, :width], empty, logits / temperature, logits[:0])


def _small_data_note(folds: CrossValidated, refit: bool, total_width: int, validation: int) -> str:
    trained_on = (
        f"the head was then fitted on all {folds.photos} of them, and its validation scores, "
        "temperature and unknown-image threshold come from the out-of-fold predictions"
        if refit
        else "the head was fitted on the training photos (fine-tuning needs the validation split)"
    )
    few = f"{validation} validation photos, too few" if validation else "no validation photos"
    return (
        f"{few} to choose on (under {SMALL_VALIDATION}): {folds.describe(total_width)}; "
        f"{trained_on}"
    )


def _describe(pretrained: Backbone, used: Backbone) -> BackboneRecord:
    """The pretrained backbone's identity, and the tuned weights' when fine-tuned."""
    described = pretrained.describe()
    if used is not pretrained:
        described |= {"tuned_weights": used.weights_id, "tuned_fingerprint": used.fingerprint}
    return BackboneRecord.from_dict(described, "backbone")


def _strategy(
    settings: FitSettings, backbone: Backbone, preset: str | None
) -> tuple[str, str | None]:
    """The strategy to run, as far as it can be chosen before any feature is computed: "auto"
    when that waits for the linear head (`_auto_strategy`)."""
    if settings.strategy != "auto":
        return settings.strategy, None
    if preset is not None and PRESETS[preset].strategy != "auto":
        chosen = PRESETS[preset].strategy
        return chosen, f"--preset {preset} uses --strategy {chosen} (seconds, not minutes)"
    if settings.aug_views:
        return "linear", f"--aug-views {settings.aug_views} trains the head on augmented views"
    if not can_finetune(backbone):
        return "linear", f"{backbone.name} joins several networks: one cannot be fine-tuned alone"
    return "auto", None


def _auto_strategy(
    settings: FitSettings,
    splits: dict[str, LabelledFeatures],
    backbone: Backbone,
    context: RunContext,
    last_layer_suffices: bool | None,
) -> tuple[str, str]:
    """What `auto` does with the linear head fitted (see training/strategy.py)."""

    def cuda() -> bool:
        from headstart.training.finetune import resolve_device  # torch

        return resolve_device(context.device).type == "cuda"

    images = {name: len(splits[name].y) for name in ("train", "val")}
    side = max(backbone.preprocessing.input_size)
    return auto_strategy(images["train"], images["val"], settings, cuda, side, last_layer_suffices)


def _training_features(
    extractor: FeatureExtractor,
    train: LabelledFeatures,
    settings: FitSettings,
    strategy: str,
    progress: bool,
) -> tuple[np.ndarray, np.ndarray, int]:
    """The training features, with `aug_views` cached augmented views of each image for heads."""
    if not settings.aug_views or strategy == "finetune":
        return train.x, train.y, 0
    if settings.augment == "none":
        raise HeadstartError("--aug-views needs an augmentation: --augment light or strong")
    xs, ys = [train.x], [train.y]
    paths = [s.path for s in train.samples]
    for view in augmented_views(settings.augment, settings.aug_views):
        result = extractor.with_view(view).extract_files(
            paths, progress, f"Augmented view {view.index + 1}/{settings.aug_views}", train.x.dtype
        )
        train.computed += result.computed
        xs.append(result.features)
        ys.append(train.y[result.kept])
    return np.concatenate(xs), np.concatenate(ys), settings.aug_views


def _checkpoint(output, settings: FitSettings, extractor, splits):
    if output is None:
        return None
    from headstart.training.checkpoint import Checkpoint, samples_digest  # torch

    identity = {
        **{k: v for k, v in settings.to_dict().items() if k != "time_budget"},
        "backbone": extractor.backbone.fingerprint,
        "samples": samples_digest(splits["train"], splits["val"]),
    }
    return Checkpoint(Path(output) / CHECKPOINT_FILE, identity)


def _calibrate(logits: np.ndarray, labels: np.ndarray) -> Calibration | None:
    """Temperature scaling fitted on the validation split, with its effect on NLL and ECE."""
    from headstart.evaluation.calibration import expected_calibration_error, nll, softmax
    from headstart.training.temperature import fit_temperature

    if not len(labels):
        return None
    logits = logits.astype(np.float64)
    temperature = fit_temperature(logits, labels)
    before, after = softmax(logits), softmax(logits, temperature)
    return Calibration(
        temperature=temperature,
        val_nll_before=nll(before, labels),
        val_nll_after=nll(after, labels),
        val_ece_before=expected_calibration_error(before, labels),
        val_ece_after=expected_calibration_error(after, labels),
    )


def _or_empty(split: LabelledFeatures, like: LabelledFeatures) -> np.ndarray:
    """The split's features, or an empty (0, dim) array when it has none."""
    return split.x if len(split.y) else np.zeros((0, like.x.shape[1]), like.x.dtype)


def _check_trainable(dataset: Dataset, train: LabelledFeatures) -> None:
    counts = np.bincount(train.y, minlength=len(dataset.classes))
    missing = [label for label, n in zip(dataset.classes, counts, strict=True) if n == 0]
    if missing:
        raise HeadstartError(
            f"no usable training images for class(es) {', '.join(missing)}: add images, "
            "or lower --val-percent/--test-percent"
        )


def _summary(dataset, splits, history, best_epoch, val_logits: np.ndarray) -> Summary:
    """The run in numbers; validation scores are those of the model as saved (uncalibrated)."""
    from headstart.evaluation.calibration import nll, softmax

    val_y = splits["val"].y
    return Summary(
        dataset=str(dataset.root),
        layout=dataset.layout,
        classes=len(dataset.classes),
        used={name: len(split.y) for name, split in splits.items()},
        skipped=[(str(p), r) for split in splits.values() for p, r in split.skipped],
        computed=sum(split.computed for split in splits.values()),
        train_per_class={
            label: int(n)
            for label, n in zip(
                dataset.classes,
                np.bincount(splits["train"].y, minlength=len(dataset.classes)),
                strict=True,
            )
        },
        best_epoch=best_epoch,
        epochs_run=len(history),
        val_accuracy=float((val_logits.argmax(1) == val_y).mean()) if len(val_y) else None,
        val_loss=nll(softmax(val_logits.astype(np.float64)), val_y) if len(val_y) else None,
    )
