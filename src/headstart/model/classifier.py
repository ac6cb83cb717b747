"""A trained classifier: backbone reference, preprocessing, head and labels, with its metadata."""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from dataclasses import replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np

from headstart.backbones.preprocessing import Preprocessing
from headstart.backbones.registry import Backbone, resolve_backbone
from headstart.context import RunContext
from headstart.data.locations import ImagePath, image_location
from headstart.data.sources import Dataset, load_dataset
from headstart.errors import HeadstartError
from headstart.features.extract import FeatureExtractor
from headstart.features.labelled import LabelledFeatures, labelled_features
from headstart.features.store import open_feature_cache
from headstart.features.views import TTA_VIEWS
from headstart.model.explanation import (
    Explanation,
    Neighbour,
    explain_files,
    heat_map_network,
)
from headstart.model.folder import METADATA_FILE, read_model_folder, write_model_folder
from headstart.model.heads import Head, HeadConfig, output_probabilities
from headstart.model.prediction import Prediction, expand_image_paths, top_k_predictions
from headstart.model.record import (
    BackboneRecord,
    Calibration,
    FinetuneRecord,
    ModelRecord,
    SplitPercents,
    Summary,
    TrainingRecord,
)
from headstart.model.scoring import (
    EvaluationSet,
    choose_samples,
    digest_set,
    leave_out_training_copies,
)
from headstart.model.unknown import UnknownDetector
from headstart.storage import tensor_group


class Classifier:
    """A trained classifier: predicts and saves (headstart.evaluate judges it). PyTorch is needed
    only to compute features that are not cached yet, or for a fine-tuned backbone.

    `context` says where features are cached, which engine computes them and whether progress
    shows; it is bound at load (or training) and may be replaced: `classifier.context = ...`.
    """

    def __init__(
        self,
        record: ModelRecord,
        head: Head,
        backbone_tensors: dict[str, np.ndarray] | None = None,
        training_digests: dict[str, np.ndarray] | None = None,
        unknown: UnknownDetector | None = None,
        context: RunContext | None = None,
    ) -> None:
        # The detector's statistics are the record's: one copy of them.
        self.record = replace(
            record,
            unknown=unknown.stats if unknown is not None else None,
            bank_photos=unknown.photos if unknown is not None else (),
        )
        self.head = head
        self.backbone_tensors = backbone_tensors or None  # weights changed by fine-tuning
        # Content digests of the training and validation images, (n, 20) uint8 per split.
        self.training_digests = training_digests or {}
        self.unknown = unknown  # scores how unlike the training data an image is
        self.context = context or RunContext()
        self._extractors: dict[tuple[RunContext, int], FeatureExtractor] = {}
        self._heat_map_network: Any = None  # built on the first `explain`

    # -- what was fitted, as typed attributes (scikit-learn's `classes_`, say) ----------------

    @property
    def labels(self) -> list[str]:
        """The class names, in the order of the head's outputs."""
        return list(self.record.labels)

    @property
    def backbone(self) -> BackboneRecord:
        """Which pretrained backbone, and the tuned weights' identity when fine-tuned."""
        return self.record.backbone

    @property
    def preprocessing(self) -> Preprocessing:
        """How a photo becomes the backbone's input: size, crop, interpolation, mean, std."""
        return self.record.preprocessing

    @property
    def head_config(self) -> HeadConfig:
        """The head's kind and shape."""
        return self.record.head

    @property
    def training(self) -> TrainingRecord | None:
        """How it was trained: strategy, settings, split, dataset (None if not recorded)."""
        return self.record.training

    @property
    def summary(self) -> Summary | None:
        """The training run in numbers: used, skipped, chosen and measured."""
        return self.record.summary

    @property
    def calibration(self) -> Calibration | None:
        """The temperature fitted on validation, and what it did there (None without one)."""
        return self.record.calibration

    @property
    def finetune(self) -> FinetuneRecord | None:
        """What fine-tuning did (the units tuned, where), or None for a head alone."""
        return self.record.finetune

    @property
    def temperature(self) -> float:
        """Fitted on the validation split at training time; 1.0 when there was none."""
        return self.record.temperature

    @property
    def multi_label(self) -> bool:
        """Whether a photo may carry several labels (or none): a sigmoid a label, each with
        its `thresholds` entry, not one softmax."""
        return self.record.multi_label

    def require_single_label(self, what: str) -> None:
        """Refuse, in one line, what only a single-label (softmax) model can do."""
        if self.multi_label:
            raise HeadstartError(
                f"{what} takes single-label models, and this one is multi-label (its ONNX "
                "export, predict, evaluate, report and serve take it)"
            )

    @property
    def thresholds(self) -> tuple[float, ...]:
        """A multi-label model's threshold a label, on its probability; () otherwise."""
        return self.record.thresholds

    @property
    def history(self) -> list[dict[str, Any]]:
        """One row of losses and accuracies a training epoch."""
        return self.record.history

    @property
    def info(self) -> Mapping[str, Any]:
        """The record's training parts as plain JSON values, read-only (kept for one release:
        read `summary`, `training`, `calibration`, `history` instead)."""
        record = self.record.to_dict()
        kept = ("training", "summary", "calibration", "history", "finetune", "head_history")
        return MappingProxyType({key: record[key] for key in kept if key in record})

    def with_head(self, head: Head) -> Classifier:
        """This classifier with another head of the same kind and shape (refitted on more
        photos, say): backbone, feature extractors, calibration and unknown-image score shared."""
        if head.config != self.head.config:
            raise HeadstartError(f"a {head.config} head cannot replace a {self.head.config} one")
        other = copy.copy(self)
        other.head, other._heat_map_network = head, None
        return other

    # -- persistence -------------------------------------------------------------------------

    def save(self, folder: str | Path) -> Path:
        """Write the model folder atomically: safetensors weights and a JSON record."""
        folder = Path(folder)
        tensors = {f"head.{name}": t for name, t in self.head.parameters.items()}
        tensors |= {f"backbone.{name}": t for name, t in (self.backbone_tensors or {}).items()}
        tensors |= {f"digests.{split}": d for split, d in self.training_digests.items()}
        if self.unknown is not None:
            tensors["unknown.bank"] = self.unknown.bank.astype(np.float16)
        broken = [name for name, t in tensors.items() if not np.isfinite(np.asarray(t)).all()]
        if broken:  # checked before the commit: the model already there is kept
            raise HeadstartError(f"{folder}: not saved, {broken[0]} holds NaN or infinity")
        write_model_folder(folder, tensors, self.record.to_dict())
        return folder

    @classmethod
    def load(cls, folder: str | Path, context: RunContext | None = None) -> Classifier:
        """Read a model folder, checking every field of its record; no pickle is involved."""
        tensors, metadata = read_model_folder(Path(folder))
        record = ModelRecord.from_dict(metadata, Path(folder) / METADATA_FILE)
        broken = next((n for n, t in tensors.items() if not np.isfinite(t).all()), None)
        if broken is not None:  # NaN weights would predict NaN, with exit code 0
            raise HeadstartError(f"{folder}: the tensor {broken} holds NaN or infinity")
        try:
            head = Head(record.head, tensor_group(tensors, "head."))
            return cls(
                record,
                head,
                tensor_group(tensors, "backbone."),
                tensor_group(tensors, "digests."),
                _unknown_detector(tensors, record),
                context,
            )
        except (KeyError, RuntimeError, TypeError, ValueError) as error:
            raise HeadstartError(f"{folder}: damaged model folder ({error})") from error

    # -- inference ---------------------------------------------------------------------------

    def logits(self, features: np.ndarray) -> np.ndarray:
        """The head's raw scores for backbone features (n, dim): (n, classes)."""
        return self.head.logits(features)

    def unknown_scores(self, features: np.ndarray) -> np.ndarray | None:
        """How unlike the training data each image is (above `unknown.stats.threshold`: none
        of the classes); None for a model saved without a detector (by an older headstart)."""
        if self.unknown is None:
            return None
        return self.unknown.scores(features, self.logits(features) / self.temperature)

    def probabilities(self, features: np.ndarray) -> np.ndarray:
        """Calibrated class probabilities: softmax of the logits over the temperature (of a
        multi-label model, each label's sigmoid)."""
        return output_probabilities(self.logits(features) / self.temperature, self.multi_label)

    def predict(
        self,
        images: str | ImagePath | Iterable[str | ImagePath],
        top_k: int = 5,
        *,
        tta: bool = False,
        reject: bool = False,
    ) -> list[Prediction]:
        """Top-k labels for image files or folders of images (searched recursively).

        Each prediction carries `unknown_score` and `unknown` (none of the classes, by the
        threshold set at training time); `reject` makes the label of those "unknown". `tta`
        averages the probabilities over flips and crops (test-time augmentation).
        """
        return self.predict_files(expand_image_paths(images), top_k, tta=tta, reject=reject)

    def predict_files(
        self, paths: list[ImagePath], top_k: int = 5, *, tta: bool = False, reject: bool = False
    ) -> list[Prediction]:
        """`predict` for exactly these files, in order; one that is missing or unreadable gets
        a prediction with the reason as its error."""
        extractor = self.extractor()
        result = extractor.extract_files(paths, self.context.progress, "Predicting")
        if not result.kept:
            probabilities = np.zeros((0, len(self.labels)), np.float32)
        elif tta:
            kept = [paths[i] for i in result.kept]
            probabilities = self._averaged(extractor, kept, result.features)
        else:
            probabilities = self.probabilities(result.features)
        predictions = top_k_predictions(
            paths, result.kept, probabilities, result.skipped, self.labels, top_k, self.thresholds
        )
        scores = self.unknown_scores(result.features) if result.kept else None
        if scores is not None and self.unknown is not None:
            flags = self.unknown.flags(scores)
            for index, score, flag in zip(result.kept, scores, flags, strict=True):
                predictions[index].mark_unknown(float(score), bool(flag), reject)
        return predictions

    def explain(
        self,
        images: str | ImagePath | Iterable[str | ImagePath],
        label: str | None = None,
        neighbours: int = 3,
    ) -> list[Explanation]:
        """Per image, the heat map of `label` (else of its top label): where the photo speaks
        for it and against it, in calibrated logit units whose mean over the map is the logit
        minus its bias (model/explanation.py says how); and the `neighbours` training photos
        closest to it, where the model knows them. Needs PyTorch."""
        paths = expand_image_paths(images)
        explained = explain_files(
            paths, self.preprocessing, self.labels, self.explain_pixels, label
        )
        if not neighbours or self.unknown is None or not self.unknown.photos:
            return explained
        return self._with_neighbours(explained, neighbours)

    def _with_neighbours(self, explained: list[Explanation], count: int) -> list[Explanation]:
        """The explanations with the training photos nearest to each, by the features the
        unknown-image score compares (cached ones: predict has computed them)."""
        assert self.unknown is not None
        readable = [e.path for e in explained if e.heatmap is not None]
        if not readable:
            return explained
        result = self.extractor().extract_files(readable, False, "Nearest training photos")
        rows, similarities = self.unknown.nearest(result.features, count)
        found = {
            str(readable[i]): (r, s)
            for i, r, s in zip(result.kept, rows, similarities, strict=True)
        }
        root = Path(self.training.dataset) if self.training and self.training.dataset else None
        out = []
        for explanation in explained:
            if str(explanation.path) not in found:
                out.append(explanation)
                continue
            near = [
                Neighbour(
                    str(image_location(self.unknown.photos[row][0], root)),
                    self.labels[self.unknown.photos[row][1]],
                    float(similarity),
                )
                for row, similarity in zip(*found[str(explanation.path)], strict=True)
            ]
            out.append(replace(explanation, neighbours=tuple(near)))
        return out

    def explain_pixels(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Probabilities (N, K) and every label's heat map (N, K, h, w) for network inputs
        (N, H, W, 3) uint8."""
        import torch

        if self._heat_map_network is None:
            self._heat_map_network = heat_map_network(
                self.backbone_maps(),
                self.head.module(self.temperature),
                self.head_config,
                self.preprocessing,
            )
        network: Any = self._heat_map_network
        with torch.no_grad():
            _, logits, maps = network(torch.from_numpy(pixels))
        return output_probabilities(logits.numpy(), self.multi_label), maps.numpy()

    def evaluation_set(
        self,
        data: str | Path | Dataset,
        split: str | None = None,
        *,
        keep_duplicates: bool = False,
    ) -> EvaluationSet:
        """The images an evaluation of `data` scores, with their features: its held-out split
        (test, else validation) if it is the dataset the model was trained on, else every image
        in it; or the named `split` (headstart.evaluate scores them)."""
        dataset = data if isinstance(data, Dataset) else self.evaluation_dataset(data)
        unknown = sorted(set(dataset.classes) - set(self.labels))
        if unknown:
            raise HeadstartError(f"{dataset.root}: classes the model does not know: {unknown}")
        trained_on = self.training.dataset if self.training else None
        split, samples, scope = choose_samples(dataset, split, trained_on)
        labelled = labelled_features(
            self.extractor(),
            samples,
            self.labels,
            self.context.progress,
            "Evaluating",
            multi_label=self.multi_label,
        )
        labelled, copies = leave_out_training_copies(
            labelled, digest_set(self.training_digests.get("train")), keep_duplicates
        )
        if copies and not len(labelled.y):
            raise HeadstartError(
                f"{dataset.root}: all {len(copies)} readable images are identical to images the "
                "model was trained on; nothing unseen to score (--keep-duplicates scores them "
                "anyway)"
            )
        if not len(labelled.y):
            raise HeadstartError(f"{dataset.root}: no readable images to score ({scope})")
        return EvaluationSet(dataset, split, scope, labelled, copies, keep_duplicates)

    def scored_probabilities(self, labelled: LabelledFeatures, tta: bool = False) -> np.ndarray:
        """Calibrated probabilities of images whose features are in hand (an evaluation
        set's); with `tta`, averaged over the test-time views."""
        if not tta:
            return self.probabilities(labelled.x)
        paths = [sample.path for sample in labelled.samples]
        return self._averaged(self.extractor(), paths, labelled.x)

    def _averaged(
        self, extractor: FeatureExtractor, paths: list, features: np.ndarray
    ) -> np.ndarray:
        """Mean probabilities over the test-time views; `features` are those of the plain one."""
        total = self.probabilities(features)
        for number, view in enumerate(TTA_VIEWS[1:], start=2):
            result = extractor.with_view(view).extract_files(
                paths, self.context.progress, f"TTA view {number}/{len(TTA_VIEWS)}"
            )
            if len(result.kept) != len(paths):
                failed = ", ".join(f"{p}: {r}" for p, r in result.skipped[:3])
                raise HeadstartError(f"test-time augmentation could not read {failed}")
            total += self.probabilities(result.features)
        return total / len(TTA_VIEWS)

    def evaluation_dataset(self, data: str | Path) -> Dataset:
        """`data` read with the split percentages the model was trained with."""
        split = self.training.split if self.training else SplitPercents()
        dataset = load_dataset(
            data, split.val_percent, split.test_percent, multi_label=self.multi_label
        )
        if dataset.multi_label and not self.multi_label:
            raise HeadstartError(
                f"{dataset.root}: lists several labels a photo; this model gives one"
            )
        return dataset

    def extractor(self) -> FeatureExtractor:
        """The feature extractor of this model's backbone, in this classifier's context."""
        key = (self.context, id(self.context.cluster))  # the cluster is not compared
        if key not in self._extractors:
            cache = open_feature_cache(self.context)
            backbone = self._backbone(self.context.workspace.root)
            self._extractors[key] = FeatureExtractor(
                backbone, cache, self.context.engine, runner=self.context.cluster
            )
        return self._extractors[key]

    def backbone_network(self):
        """The backbone as a torch module (pooled features out), fine-tuned weights included."""
        return self._backbone(self.context.workspace.root).build_module()

    def backbone_maps(self):
        """The backbone as a torch module whose `maps(images)` gives the maps its features
        pool (what heat maps are made of), fine-tuned weights included."""
        return self._backbone(self.context.workspace.root).build_maps_module()

    def _backbone(self, config_dir: Path) -> Backbone:
        """The backbone as trained: the pretrained one, with the fine-tuned weights if any."""
        height, width = self.preprocessing.input_size
        size = height if height == width else None
        recorded = self.backbone
        stages = recorded.pooled_stages  # none in older models
        pretrained = resolve_backbone(
            recorded.name, config_dir, size, stages, weights_file=recorded.weights_file
        )
        if pretrained.fingerprint != recorded.fingerprint and recorded.weights_file:
            raise HeadstartError(
                f"{recorded.weights_file}: not the weights this model was trained with "
                f"({pretrained.weights_id[:19]}, the model expects {recorded.weights[:19]})"
            )
        if pretrained.fingerprint != recorded.fingerprint:
            raise HeadstartError(
                f"backbone {recorded.name!r} installed here differs from the one this "
                f"model was trained with (weights {pretrained.weights_id}, model expects "
                f"{recorded.weights}); install the same weights package version"
            )
        if not self.backbone_tensors:
            return pretrained
        tuned = pretrained.tuned(self.backbone_tensors)
        if tuned.weights_id != recorded.tuned_weights:
            raise HeadstartError("the fine-tuned backbone weights do not match their checksum")
        return tuned

    @property
    def fine_tuned(self) -> bool:
        """Whether the backbone's top was fine-tuned (its weights are in the model folder)."""
        return bool(self.backbone_tensors)

    def __repr__(self) -> str:
        kind = "labels, multi-label" if self.multi_label else "classes"
        return (
            f"Classifier({len(self.labels)} {kind}, backbone={self.backbone.name}, "
            f"head={self.head_config.kind})"
        )


def _unknown_detector(
    tensors: dict[str, np.ndarray], record: ModelRecord
) -> UnknownDetector | None:
    bank = tensors.get("unknown.bank")
    if bank is None or record.unknown is None:
        return None
    width = record.head.in_features
    if bank.ndim != 2 or not len(bank) or not 0 < bank.shape[1] <= width:
        raise ValueError(f"unknown.bank of shape {bank.shape} for {width} features")
    photos = record.bank_photos
    if photos and len(photos) != len(bank):
        raise ValueError(f"bank_photos names {len(photos)} photos for {len(bank)} bank rows")
    return UnknownDetector(bank.astype(np.float32), record.unknown, photos)
