"""From a labelled dataset to a trained Classifier: the one function the CLI and API share."""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from headstart.backbones.registry import (
    PRESETS,
    Backbone,
    can_finetune,
    check_input_size,
    imagenet_classifier,
    preset_backbone,
    resolve_backbone,
)
from headstart.context import RunContext
from headstart.data.exclude import read_exclusions
from headstart.data.images import typical_short_side
from headstart.data.sources import Dataset, load_dataset
from headstart.data.split import TEST_PERCENT, VAL_PERCENT, check_percents
from headstart.errors import HeadstartError, SettingError
from headstart.features.extract import FeatureExtractor
from headstart.features.labelled import LabelledFeatures, class_counts, labelled_features
from headstart.features.store import open_feature_cache
from headstart.features.views import augmented_views
from headstart.model.classifier import Classifier
from headstart.model.folder import check_model_output
from headstart.model.heads import Head, output_probabilities
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
from headstart.model.unknown import UnknownDetector, bank_step
from headstart.settings import Strategy
from headstart.storage import CHECKPOINT_FILE
from headstart.training.choice import SMALL_VALIDATION, CrossValidated
from headstart.training.fit import FitResult, fit_head
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
    val_percent: float = VAL_PERCENT,
    test_percent: float = TEST_PERCENT,
    context: RunContext | None = None,
    resume: bool = False,
    exclude: str | Path | None = None,
    multi_label: bool = False,
) -> Classifier:
    """Train a classifier on a dataset; save it to `output` if given.

    `backbone` (default efficientnet_lite0; `backbone_weights`, a .safetensors file or state
    dict of its architecture, replaces its weights offline) and `input_size` (the square size
    images are fed at; 1.29x the pretrained size by default) may instead come from a `preset`: fast,
    balanced (the default) or best (Lite0, Lite1 and Lite2 side by side). Heads train on
    cached backbone features; `strategy="finetune"` then also tunes the top of the backbone,
    writing a checkpoint into `output` after every epoch, which `resume=True` continues from.
    `exclude` names a list of images to leave out (the doctor's issues.csv, or one path a
    line). `multi_label` reads a CSV's labels as sets, a photo's labels split at ';' and
    spaces (chosen anyway when a row carries several): each label then gets a sigmoid and a
    threshold, chosen on validation to maximise its F1. `context` binds the feature cache
    folder, the engine, the fine-tuning device and progress bars for the run (and the
    Classifier). The returned Classifier's `summary` says what was used, skipped, chosen and
    measured. Any setting outside its allowed values raises SettingError before work starts.
    """
    settings = settings or FitSettings()
    settings.check()
    context = context or RunContext()
    check_percents(val_percent, test_percent)
    check_input_size(input_size)
    backbone, input_size = preset_backbone(preset, backbone, input_size)
    if output is not None:
        check_model_output(Path(output), None if isinstance(data, Dataset) else data)
    started = time.perf_counter()
    split = SplitPercents(val_percent, test_percent)
    if isinstance(data, Dataset):
        dataset = data
    else:
        dataset = load_dataset(data, split.val_percent, split.test_percent, multi_label=multi_label)
    run = _plan(
        dataset, split, exclude, backbone, backbone_weights, input_size, preset, settings, context
    )
    splits = {
        # float16: exactly the cached values, in half the memory (a large set's features
        # are most of what the driver holds)
        name: labelled_features(
            run.extractor,
            run.dataset.split(name),
            run.dataset.classes,
            context.progress,
            f"Features ({name})",
            np.float16,
            run.dataset.multi_label,
        )
        for name in ("train", "val", "test")
    }
    _check_trainable(run.dataset, splits["train"])
    extracted = time.perf_counter()
    trained = _fit(run, splits, settings, context, output, resume)
    summary = _summary(run.dataset, splits, trained.history, trained.best_epoch, trained.val_logits)
    summary.strategy, summary.reason = trained.strategy, trained.reason
    summary.augmented_views, summary.l2 = trained.views, trained.fit.l2
    summary.notes = run.notes + _notes(run, splits, trained, summary)
    calibration, unknown = _calibration_and_unknown(run, splits, trained, context)
    thresholds = _thresholds(run, splits, trained, calibration, summary)
    summary.seconds = {
        "features": extracted - started,
        "training": time.perf_counter() - extracted,
        "total": time.perf_counter() - started,
    }
    classifier = _assembled(
        run, splits, trained, summary, calibration, unknown, settings, context, thresholds
    )
    if output is not None:
        classifier.save(output)
        Path(output, CHECKPOINT_FILE).unlink(missing_ok=True)
    return classifier


@dataclass
class _Run:
    """What a training run works on, settled before any feature is computed."""

    dataset: Dataset
    extractor: FeatureExtractor
    strategy: str  # "auto" until the features decide
    reason: str | None
    notes: list[str]  # for the summary, in order
    split: SplitPercents


@dataclass
class _Trained:
    """The head (and, when fine-tuned, the backbone) a run ends with, and how it got there."""

    fit: FitResult
    head: Head
    backbone: Backbone  # the backbone used: the pretrained one, or the tuned one
    strategy: str
    reason: str | None
    views: int
    features: int  # width of the features the head was chosen on
    val_logits: np.ndarray
    history: list[dict[str, Any]]
    best_epoch: int
    finetuned: FinetuneRecord | None = None
    tensors: dict[str, np.ndarray] | None = None  # the backbone weights fine-tuning changed
    head_history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def refit_folds(self) -> CrossValidated | None:
        """The folds, when the head was then fitted on training and validation alike."""
        return self.fit.folds if self.fit.refit else None


def _plan(
    dataset: Dataset,
    split: SplitPercents,
    exclude: str | Path | None,
    backbone: str,
    backbone_weights: str | Path | None,
    input_size: int | None,
    preset: str | None,
    settings: FitSettings,
    context: RunContext,
) -> _Run:
    """The dataset (less the images `exclude` lists), the backbone and the strategy, or the
    reason none can train, before any feature is computed."""
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
        backbone,
        cache.workspace.root,
        input_size,
        image_side=image_side,
        weights_file=backbone_weights,
    )
    if resolved.size_note:
        notes.append(resolved.size_note)
    if settings.strategy == "finetune" and not can_finetune(resolved):
        raise SettingError(
            f"--strategy finetune tunes one network, not {backbone} (joined backbones); "
            "use --strategy linear or mlp"
        )
    strategy, reason = _strategy(settings, resolved, preset)
    extractor = FeatureExtractor(resolved, cache, context.engine, runner=context.cluster)
    return _Run(dataset, extractor, strategy, reason, notes, split)


def _fit(
    run: _Run,
    splits: dict[str, LabelledFeatures],
    settings: FitSettings,
    context: RunContext,
    output: str | Path | None,
    resume: bool,
) -> _Trained:
    """The head on cached features; then, if the strategy says so, fine-tuning."""
    train_x, train_y, views = _training_features(
        run.extractor, splits["train"], settings, run.strategy, context.progress
    )
    backbone = run.extractor.backbone
    fit = fit_head(
        train_x,
        train_y,
        _or_empty(splits["val"], splits["train"]),
        splits["val"].y,
        len(run.dataset.classes),
        replace(settings, strategy=Strategy(run.strategy)),
        context.progress,
        head_widths=backbone.leading_candidates,
        # Fitting on the validation photos too needs a test split to evaluate on: without
        # one, `evaluate` scores the validation split, which must then stay unseen.
        small_data=not views and len(splits["test"].y) > 0,
        prior=lambda: imagenet_classifier(backbone, context.workspace.root),
    )
    val_logits = fit.head.logits(_or_empty(splits["val"], splits["train"]))
    if fit.folds is not None:  # the val images' honest logits: from heads that never saw them
        val_logits = fit.folds.out_of_fold[len(splits["train"].y) :]
    strategy, reason = run.strategy, run.reason
    if strategy == "auto":
        last_layer_suffices = fit.features is not None if backbone.leading_candidates else None
        strategy, reason = _auto_strategy(settings, splits, backbone, context, last_layer_suffices)
    trained = _Trained(
        fit, fit.head, backbone, strategy, reason, views, train_x.shape[1], val_logits,
        fit.history, fit.best_epoch,
    )  # fmt: skip
    if strategy == "finetune":
        _finetune(trained, run, splits, settings, context, output, resume)
    return trained


def _finetune(
    trained: _Trained,
    run: _Run,
    splits: dict[str, LabelledFeatures],
    settings: FitSettings,
    context: RunContext,
    output: str | Path | None,
    resume: bool,
) -> None:
    """Fine-tune the top of the backbone with the fitted head; `trained` takes the result."""
    from headstart.training.finetune import finetune  # torchvision: only when fine-tuning

    tune = finetune if context.cluster is None else context.cluster.finetune
    tuned = tune(
        backbone=run.extractor.backbone,
        head=trained.head.module(),
        train=splits["train"],
        val=splits["val"],
        settings=settings,
        model_dir=context.workspace.onnx,
        checkpoint=_checkpoint(output, settings, run.extractor, splits),
        resume=resume,
        context=context,
    )
    trained.head = Head.from_module(trained.head.config, tuned.head)
    trained.backbone, trained.val_logits = tuned.backbone, tuned.val_logits
    trained.history, trained.best_epoch = tuned.history, tuned.best_epoch
    trained.finetuned = tuned.record
    trained.tensors = {name: t.numpy() for name, t in tuned.tensors.items()}
    trained.head_history = trained.fit.history


def _notes(
    run: _Run, splits: dict[str, LabelledFeatures], trained: _Trained, summary: Summary
) -> list[str]:
    """What the summary says of the choices made and the photos held back."""
    notes = []
    if trained.fit.folds is not None:
        validation = len(splits["val"].y)
        folds, refit = trained.fit.folds, trained.fit.refit
        notes.append(_small_data_note(folds, refit, validation))
    if trained.finetuned is not None and not trained.finetuned.improved:
        notes.append(
            "no fine-tuning epoch lowered the validation loss (at its best temperature) of "
            "the linear head it started from, so that head on the pretrained backbone is kept"
        )
    chosen_width = trained.fit.features
    if chosen_width and trained.fit.folds is None:
        notes.append(
            f"the linear head uses the first {chosen_width} of {trained.features} "
            "features: all of them did worse on the validation split"
        )
    if run.dataset.multi_label:
        notes += _multi_label_notes(run.dataset, splits)
    held_out = len(splits["test"].y)
    if held_out and "test" not in run.dataset.given_splits:
        notes.append(
            f"{held_out} images ({run.split.test_percent:g}%) were held out as a test split that "
            "training does not use: `headstart evaluate MODEL DATA` scores them, or "
            "--test-percent 0 trains on them"
        )
    if run.extractor.runner is not None and summary.computed:
        notes.append(f"the {summary.computed} features the cache lacked were computed on Ray")
    if trained.finetuned is not None and trained.finetuned.workers:
        notes.append(f"fine-tuned on {trained.finetuned.workers} Ray Train worker(s)")
    return notes


def _multi_label_notes(dataset: Dataset, splits: dict[str, LabelledFeatures]) -> list[str]:
    """Photos with no label, and labels too rare in validation to judge."""
    used = sum(len(split.y) for split in splits.values())
    empty = sum(int((split.y.sum(axis=1) == 0).sum()) for split in splits.values() if len(split.y))
    notes = [
        f"multi-label: {len(dataset.classes)} labels, "
        f"{sum(float(s.y.sum()) for s in splits.values()) / max(used, 1):.2f} a photo on average"
        + (f"; {empty} photos carry none (negatives for every label)" if empty else "")
    ]
    val = splits["val"].y
    if len(val):
        rare = [c for c, n in zip(dataset.classes, val.sum(axis=0), strict=True) if n < 2]
        if rare:
            notes.append(
                f"warning: fewer than 2 validation photos show {', '.join(rare[:10])}"
                + (f" and {len(rare) - 10} more" if len(rare) > 10 else "")
                + ": their validation scores are noise"
            )
    return notes


def _calibration_and_unknown(
    run: _Run, splits: dict[str, LabelledFeatures], trained: _Trained, context: RunContext
) -> tuple[Calibration | None, UnknownDetector]:
    """The temperature and the unknown-image score: on the validation split, or on every
    photo's out-of-fold logits when the head was fitted on training and validation alike."""
    refit = trained.refit_folds
    if refit is not None:
        calibration = _calibrate(refit.out_of_fold, _pool_y(splits))
    else:
        calibration = _calibrate(trained.val_logits, splits["val"].y)
    width = run.extractor.backbone.distance_features  # the pooled head: what an image shows
    if refit is not None:
        return calibration, _unknown_detector_out_of_fold(
            splits, refit.out_of_fold, calibration, width, run.dataset
        )
    tuned_extractor = None
    if trained.backbone is not run.extractor.backbone:  # a tuned backbone sees other features
        extractor = run.extractor
        tuned_extractor = FeatureExtractor(
            trained.backbone, extractor.cache, context.engine, runner=context.cluster
        )
    unknown = _unknown_detector(
        trained.head, run.dataset, splits, tuned_extractor, calibration, width, context.progress
    )
    return calibration, unknown


def _assembled(
    run: _Run,
    splits: dict[str, LabelledFeatures],
    trained: _Trained,
    summary: Summary,
    calibration: Calibration | None,
    unknown: UnknownDetector,
    settings: FitSettings,
    context: RunContext,
    thresholds: tuple[float, ...],
) -> Classifier:
    """The trained model: its record, head, tuned weights and what evaluation leaves out."""
    pretrained = run.extractor.backbone
    record = ModelRecord(
        labels=tuple(run.dataset.classes),
        backbone=_describe(pretrained, trained.backbone),
        preprocessing=pretrained.preprocessing,
        head=trained.head.config,
        training=TrainingRecord(
            strategy=trained.strategy,
            settings=settings.to_dict(),
            split=run.split,
            dataset=str(run.dataset.root),
        ),
        summary=summary,
        calibration=calibration,
        finetune=trained.finetuned,
        history=trained.history,
        head_history=trained.head_history,
        thresholds=thresholds,
    )
    return Classifier(
        record,
        trained.head,
        backbone_tensors=trained.tensors,
        training_digests=_training_digests(splits, fitted_on_val=trained.fit.refit),
        unknown=unknown,
        context=context,
    )


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
                dataset.multi_label,
            )
            for name in ("train", "val")
        )
    train_x, val_x = train.x, _or_empty(val, train)
    temperature = calibration.temperature if calibration else 1.0
    detector = UnknownDetector.fit(
        train_x[:, :width],
        val_x[:, :width],
        head.logits(train_x) / temperature,
        head.logits(val_x) / temperature,
    )
    return replace(detector, photos=_bank_photos(train.samples, dataset))


def _bank_photos(samples: list, dataset: Dataset) -> tuple[tuple[str, int], ...]:
    """The photo behind each bank row (UnknownDetector.fit keeps every bank_step-th): local
    paths, relative to the dataset when inside it; none when any is in an object store (a
    URI may carry credentials, and a model file is shared)."""
    kept = samples[:: bank_step(len(samples))]
    if dataset.multi_label or not all(isinstance(sample.path, Path) for sample in kept):
        return ()  # a multi-label photo has no one label to show it under
    root = dataset.root.resolve()

    def shown(path: Path) -> str:
        absolute = path.resolve()
        return (
            absolute.relative_to(root).as_posix()
            if absolute.is_relative_to(root)
            else str(absolute)
        )

    return tuple((shown(s.path), dataset.classes.index(s.label)) for s in kept)


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
    dataset: Dataset,
) -> UnknownDetector:
    """The unknown-image score of a head fitted on training and validation alike: every such
    photo is in the bank, so each is scored against the others (itself skipped) with its
    out-of-fold logits, which no head that saw it made."""
    pool = np.concatenate([splits["train"].x, _or_empty(splits["val"], splits["train"])])
    temperature = calibration.temperature if calibration else 1.0
    empty = pool[:0, :width]
    detector = UnknownDetector.fit(pool[:, :width], empty, logits / temperature, logits[:0])
    samples = splits["train"].samples + splits["val"].samples
    return replace(detector, photos=_bank_photos(samples, dataset))


def _small_data_note(folds: CrossValidated, refit: bool, validation: int) -> str:
    trained_on = (
        f"the head was then fitted on all {folds.photos} of them, and its validation scores, "
        "temperature and unknown-image threshold come from the out-of-fold predictions"
        if refit
        else "the head was fitted on the training photos (fine-tuning needs the validation split)"
    )
    few = f"{validation} validation photos, too few" if validation else "no validation photos"
    return f"{few} to choose on (under {SMALL_VALIDATION}): {folds.describe()}; {trained_on}"


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
    from headstart.evaluation.calibration import expected_calibration_error, nll
    from headstart.training.temperature import fit_temperature

    if not len(labels):
        return None
    logits = logits.astype(np.float64)
    temperature = fit_temperature(logits, labels)
    multi_label = labels.ndim == 2
    before = output_probabilities(logits, multi_label)
    after = output_probabilities(logits / temperature, multi_label)
    return Calibration(
        temperature=temperature,
        val_nll_before=nll(before, labels),
        val_nll_after=nll(after, labels),
        val_ece_before=expected_calibration_error(before, labels),
        val_ece_after=expected_calibration_error(after, labels),
    )


def _pool_y(splits: dict[str, LabelledFeatures]) -> np.ndarray:
    """The labels of training then validation photos (the order out-of-fold logits are in)."""
    return np.concatenate([splits["train"].y, splits["val"].y])


def _thresholds(
    run: _Run,
    splits: dict[str, LabelledFeatures],
    trained: _Trained,
    calibration: Calibration | None,
    summary: Summary,
) -> tuple[float, ...]:
    """A multi-label model's threshold a label, each maximising that label's F1 on the
    validation photos' calibrated probabilities (out-of-fold ones when the head was fitted
    on them too); none for a single-label model."""
    from headstart.evaluation.multilabel import f1_thresholds

    if not run.dataset.multi_label:
        return ()
    refit = trained.refit_folds
    logits, truth = (
        (refit.out_of_fold, _pool_y(splits))
        if refit is not None
        else (trained.val_logits, splits["val"].y)
    )
    temperature = calibration.temperature if calibration else 1.0
    chosen = f1_thresholds(output_probabilities(logits / temperature, multi_label=True), truth)
    where = "out-of-fold predictions" if refit is not None else "validation split"
    summary.notes.append(
        f"each label's threshold maximises its F1 on the {where} ({len(truth)} photos); "
        "0.5 where a label has fewer than 2 positives there"
    )
    return chosen


def _or_empty(split: LabelledFeatures, like: LabelledFeatures) -> np.ndarray:
    """The split's features, or an empty (0, dim) array when it has none."""
    return split.x if len(split.y) else np.zeros((0, like.x.shape[1]), like.x.dtype)


def _check_trainable(dataset: Dataset, train: LabelledFeatures) -> None:
    counts = class_counts(train.y, len(dataset.classes))
    missing = [label for label, n in zip(dataset.classes, counts, strict=True) if n == 0]
    if missing:
        raise HeadstartError(
            f"no usable training images for class(es) {', '.join(missing)}: add images, "
            "or lower --val-percent/--test-percent"
        )


def _summary(dataset, splits, history, best_epoch, val_logits: np.ndarray) -> Summary:
    """The run in numbers; validation scores are those of the model as saved (uncalibrated)."""
    from headstart.evaluation.calibration import nll

    val_y = splits["val"].y
    return Summary(
        dataset=str(dataset.root),
        layout=dataset.layout,
        classes=len(dataset.classes),
        multi_label=dataset.multi_label,
        used={name: len(split.y) for name, split in splits.items()},
        skipped=[(str(p), r) for split in splits.values() for p, r in split.skipped],
        computed=sum(split.computed for split in splits.values()),
        train_per_class={
            label: int(n)
            for label, n in zip(
                dataset.classes, class_counts(splits["train"].y, len(dataset.classes)), strict=True
            )
        },
        best_epoch=best_epoch,
        epochs_run=len(history),
        val_accuracy=_val_accuracy(val_logits, val_y),
        val_loss=nll(output_probabilities(val_logits.astype(np.float64), val_y.ndim == 2), val_y)
        if len(val_y)
        else None,
        val_map=_val_map(val_logits, val_y),
    )


def _val_accuracy(val_logits: np.ndarray, val_y: np.ndarray) -> float | None:
    if not len(val_y) or val_y.ndim == 2:  # multi-label: mAP, before thresholds exist
        return None
    return float((val_logits.argmax(1) == val_y).mean())


def _val_map(val_logits: np.ndarray, val_y: np.ndarray) -> float | None:
    from headstart.evaluation.multilabel import mean_average_precision

    if not len(val_y) or val_y.ndim == 1:
        return None
    return mean_average_precision(val_logits, val_y)
